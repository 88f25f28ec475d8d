"""The ``prm-studio`` command line.

Every command that takes input validates all of it before it touches the database, and reports
bad input as one line ``prm-studio: error: …`` with exit status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- helpers


def read_config_file(path: str | None) -> dict[str, Any]:
    """A job config from a JSON or TOML file (by extension; JSON otherwise)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise CliError(f"config file {path} does not exist")
    text = file.read_text(encoding="utf-8", errors="replace")
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"config file {path} is not valid JSON: line {error.lineno} column {error.colno}: "
            f"{error.msg}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise CliError(f"config file {path} is not valid TOML: {error}") from None
    if not isinstance(data, dict):
        raise CliError(
            f"config file {path} must hold an object of fields, not {type(data).__name__}"
        )
    return data


def ensure_database() -> None:
    """Create or upgrade the schema (idempotent): every command may be the first one run."""
    from app.db import migrate
    from app.settings import get_settings

    get_settings().ensure_dirs()
    migrate()


def parse_run_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"run id must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"run id must be positive, got {value}")
    return value


# ----------------------------------------------------------------------------- commands


def cmd_migrate(_args: argparse.Namespace) -> int:
    ensure_database()
    from app.security import masked_url
    from app.settings import get_settings

    print(f"database at head: {masked_url(get_settings().database_url)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from workers.registry import get_kind, validate_config

    config = read_config_file(args.config)
    validate_config(get_kind(args.kind), config)  # fail before anything is written
    ensure_database()
    from workers.runner import submit

    run_id = submit(args.kind, config, name=args.name or "", group_name=args.group)
    print(f"submitted {args.kind} run")
    print(run_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ensure_database()
    from app import crud
    from app.db import read_session

    with read_session() as session:
        run = crud.get_run(session, run_id=args.run)
        data = crud.run_summary(run)
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key:>12}: {value}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    ensure_database()
    from workers.runner import cancel

    run = cancel(args.run)
    print(f"run {run.id}: {run.status}{' (cancel requested)' if run.cancel_requested else ''}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    ensure_database()
    from workers.runner import resume

    try:
        run = resume(args.run)
    except ValueError as error:
        raise CliError(str(error)) from None
    print(f"run {run.id}: {run.status} (attempt {run.attempts + 1} will resume it)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    ensure_database()
    from app import crud
    from app.db import read_session

    with read_session() as session:
        rows = crud.list_runs(session, kind=args.kind, status=args.status, limit=args.limit)
        table = [
            (r.id, r.kind, r.name, r.status, f"{r.progress:.0%}", r.created_at.strftime("%F %T"))
            for r in rows
        ]
    header = ("id", "kind", "name", "status", "progress", "created")
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    ensure_database()
    from app.settings import get_settings
    from workers.celery_app import app as celery_app
    from workers.celery_app import prepare_broker

    prepare_broker(celery_app.conf.broker_url)
    if args.concurrency:  # the jobs size their torch threads by it (Settings.torch_threads)
        os.environ["PRM_STUDIO_WORKER_CONCURRENCY"] = str(args.concurrency)
        get_settings.cache_clear()
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={args.loglevel}",
            f"--queues={args.queues}",
            f"--concurrency={get_settings().concurrency()}",
            f"--hostname={args.name}",
            "--pool=prefork",
            # Gossip/mingle/heartbeat need broadcast, which the SQLite transport lacks; workers
            # report liveness through the database instead.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the whole group (the worker and its pool children), SIGKILL what is left."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def cmd_up(args: argparse.Namespace) -> int:
    from app.security import ExposureError, check_exposure
    from app.settings import get_settings

    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    try:
        auth = check_exposure(host, settings)
    except ExposureError as error:
        raise CliError(str(error)) from None
    ensure_database()
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--loglevel=WARNING"],
            start_new_session=True,  # its own process group: we stop it and its children as one
        )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from app.ui import build_ui

    # Gradio runs one call of each event at a time by default; submissions and reads are short
    # database transactions that the database serialises itself, so let clients overlap.
    demo = build_ui().queue(default_concurrency_limit=16)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            auth=auth,
            max_file_size=f"{settings.max_upload_mb}mb",
        )
        print(f"PRM Studio is running at http://{host}:{port} (Ctrl+C to stop)", flush=True)
        while not stop.wait(1.0):
            if worker is not None and worker.poll() is not None:
                print(f"worker exited with status {worker.returncode}; stopping", file=sys.stderr)
                return 1
    finally:
        demo.close()
        if worker is not None:
            stop_process_group(worker)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from workers.registry import get_kind

    kind = get_kind(args.kind)
    if args.field not in kind.config.model_fields:
        raise CliError(f"--field {args.field!r} is not a field of the {kind.name} config")
    values = args.values.split(",") if args.values else sweep_defaults(kind.name, args.field)
    config = read_config_file(args.config)
    ensure_database()
    from workers.runner import submit_sweep

    ids = submit_sweep(
        kind.name,
        config,
        field=args.field,
        values=values,
        seeds=list(range(args.seeds)),
        group_name=args.group,
    )
    print(f"submitted {len(ids)} {kind.name} runs in group {args.group!r}")
    print(" ".join(str(run_id) for run_id in ids))
    return 0


def sweep_defaults(kind: str, field: str) -> list[str]:
    """The paper's four PPO variants are the default sweep of an ``rl`` job's ``variant``."""
    if (kind, field) == ("rl", "variant"):
        from models.ppo_config import VARIANTS

        return list(VARIANTS)
    raise CliError(f"give --values for field {field!r} of {kind}")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from workers.pipeline import ReproduceConfig
    from workers.registry import format_validation_error

    try:
        cfg = ReproduceConfig(
            preset=args.preset,
            budget=args.budget,
            seeds=args.seeds,
            policy=args.policy,
            group=args.group,
        )
    except ValidationError as error:
        raise CliError("; ".join(format_validation_error(error))) from None
    ensure_database()
    from workers.pipeline import reproduce

    stages = reproduce(cfg)
    print(f"group {cfg.group_name!r}: {len(stages)} stages")
    for stage in stages:
        print(
            f"  {stage.key:<28} run {stage.run_id:<6} {'reused' if stage.reused else 'submitted'}"
        )
    if args.wait:
        return follow_group(cfg.group_name)
    return 0


def follow_group(group: str, poll_s: float = 5.0) -> int:
    """Print the group's progress until every run has finished; 0 if all succeeded."""
    import time

    from app import crud
    from app.db import read_session
    from app.orm import RunStatus

    last = ""
    while True:
        with read_session() as session:
            runs = crud.list_runs(session, group_name=group, limit=1000)
            states = [(run.name, RunStatus(run.status), run.progress) for run in runs]
        done = sum(status.finished for _, status, _ in states)
        running = [
            f"{name} {progress:.0%}" for name, status, progress in states if status == "running"
        ]
        line = f"{done}/{len(states)} finished; running: {', '.join(running) or '-'}"
        if line != last:
            print(line, flush=True)
            last = line
        if done == len(states):
            return 0 if all(status == RunStatus.succeeded for _, status, _ in states) else 1
        time.sleep(poll_s)


def cmd_problems_validate(args: argparse.Namespace) -> int:
    from workers.problemsets import validate_file

    if not Path(args.path).is_file():
        raise CliError(f"{args.path} does not exist")
    report = validate_file(Path(args.path), args.format)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_problems_import(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from models.problems import InvalidProblemFile
    from workers.problemsets import ProblemSetConflict, import_file

    if not Path(args.path).is_file():
        raise CliError(f"{args.path} does not exist")
    ensure_database()
    try:
        with session_scope() as session:
            stored = import_file(session, Path(args.path), name=args.name, fmt=args.format)
            summary = f"problem set {stored.name!r}: {stored.n_problems} problems"
    except InvalidProblemFile as error:
        print(error.report.summary(), file=sys.stderr)
        return 1
    except ProblemSetConflict as error:
        raise CliError(str(error)) from None
    print(summary)
    return 0


def cmd_problems_list(_args: argparse.Namespace) -> int:
    ensure_database()
    from app.db import read_session
    from workers.problemsets import list_problem_sets, problem_set_splits

    with read_session() as session:
        for problem_set in list_problem_sets(session):
            splits = problem_set_splits(session, problem_set.name)
            parts = ", ".join(f"{split} {count}" for split, count in sorted(splits.items()))
            print(f"{problem_set.name}  ({problem_set.source}; {parts})")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if not Path(args.code).is_file():
        raise CliError(f"--code {args.code} does not exist")
    ensure_database()
    from workers.jobs_prm import score_command

    try:
        print(score_command(args.prm, args.problem_set, args.task_id, args.code))
    except (LookupError, FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from None
    return 0


def cmd_export_prm_data(args: argparse.Namespace) -> int:
    ensure_database()
    from app import crud
    from app.db import read_session
    from workers.jobs_prm_data import export_prm_dataset

    with read_session() as session:
        run = crud.get_run(session, run_id=args.run)
        if run.kind != "prm-data":
            raise CliError(f"run {args.run} is a {run.kind} run, not a prm-data run")
    summary = export_prm_dataset(args.run, args.out)
    print(json.dumps(summary))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Read-only: the report of a stored group; the database is neither migrated nor written."""
    from sqlalchemy.exc import OperationalError

    from app.report import GroupNotFound, load_report, write_bundle

    try:
        report = load_report(args.group, args.metric)
    except GroupNotFound as error:
        raise CliError(str(error)) from None
    except OperationalError as error:
        raise CliError(f"cannot read the database: {error.orig}") from None
    for path in write_bundle(report, Path(args.out)):
        print(path)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from workers.sandbox import RequestFileError, exec_jsonl

    if not Path(args.requests).is_file():
        raise CliError(f"{args.requests} does not exist")
    try:
        summary = exec_jsonl(Path(args.requests), Path(args.out), workers=args.workers)
    except RequestFileError as error:
        raise CliError(str(error)) from None
    print(json.dumps(summary))
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prm-studio",
        description="Process reward models for code RL: jobs, sandbox and dashboard.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_: str):
        command = sub.add_parser(name, help=help_, description=help_)
        command.set_defaults(handler=handler)
        return command

    up = add("up", cmd_up, "Migrate, start an embedded worker and serve the dashboard.")
    up.add_argument("--host", help="address to bind (default: PRM_STUDIO_HOST, 127.0.0.1)")
    up.add_argument("--port", type=int, help="port (default: PRM_STUDIO_PORT, 7860)")
    up.add_argument(
        "--no-worker", action="store_true", help="serve the dashboard only (workers run elsewhere)"
    )

    worker = add("worker", cmd_worker, "Run a Celery worker (on this or another host).")
    worker.add_argument("--queues", default="cpu,gpu", help="comma-separated queues to consume")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default: settings)")
    worker.add_argument(
        "--name",
        default="celery@%h",
        help="this worker's name in the Workers view; give each worker on a host its own, "
        "e.g. gpu0@%%h (%%h: the host name)",
    )
    worker.add_argument("--loglevel", default="INFO")

    add("migrate", cmd_migrate, "Create or upgrade the database schema.")

    submit = add("submit", cmd_submit, "Submit a job; prints the run id on its last line.")
    submit.add_argument("kind", help="job kind, e.g. healthcheck")
    submit.add_argument("--config", help="JSON or TOML file with the job's config fields")
    submit.add_argument("--name", help="a name for the run")
    submit.add_argument("--group", help="group the run with its siblings")

    status = add("status", cmd_status, "Show one run.")
    status.add_argument("run", type=parse_run_id)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    cancel = add("cancel", cmd_cancel, "Cancel a queued or running run.")
    cancel.add_argument("run", type=parse_run_id)

    resume = add("resume", cmd_resume, "Queue a failed, cancelled or lost run again.")
    resume.add_argument("run", type=parse_run_id)

    runs = add("runs", cmd_runs, "List recent runs.")
    runs.add_argument("--kind")
    runs.add_argument("--status")
    runs.add_argument("--limit", type=int, default=50)

    sweep = add("sweep", cmd_sweep, "Submit a group of sibling runs: values × seeds.")
    sweep.add_argument("kind", help="job kind, e.g. rl")
    sweep.add_argument("--config", help="JSON or TOML file with the shared config fields")
    sweep.add_argument("--group", required=True, help="the group's name")
    sweep.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    sweep.add_argument("--field", default="variant", help="the field that varies")
    sweep.add_argument("--values", help="comma-separated values (rl: all four variants)")

    reproduce = add(
        "reproduce",
        cmd_reproduce,
        "Run the paper's pipeline as one group (reuses finished stages).",
    )
    reproduce.add_argument("--preset", choices=("embedded", "mbpp"), default="embedded")
    reproduce.add_argument("--budget", choices=("micro", "small", "full"), default="small")
    reproduce.add_argument("--seeds", type=int, default=3, help="seeds per PPO variant")
    reproduce.add_argument("--policy", help="mbpp preset: the local model folder to start from")
    reproduce.add_argument("--group", help="group name (default: reproduce-PRESET-BUDGET)")
    reproduce.add_argument("--wait", action="store_true", help="follow progress until done")

    problems = sub.add_parser("problems", help="Validate, import and list problem sets.")
    problems_sub = problems.add_subparsers(dest="problems_command", required=True)
    formats = ("jsonl", "humaneval", "mbpp")
    validate = problems_sub.add_parser("validate", help="Check a problem file (exit 1 if bad).")
    validate.add_argument("path")
    validate.add_argument("--format", choices=formats, default="jsonl")
    validate.set_defaults(handler=cmd_problems_validate)
    import_ = problems_sub.add_parser("import", help="Validate and store a named problem set.")
    import_.add_argument("path")
    import_.add_argument("--name", required=True)
    import_.add_argument("--format", choices=formats, default="jsonl")
    import_.set_defaults(handler=cmd_problems_import)
    problems_sub.add_parser("list", help="Stored problem sets and their splits.").set_defaults(
        handler=cmd_problems_list
    )

    score = add("score", cmd_score, "Print a PRM's score of every line of a program.")
    score.add_argument("--prm", required=True, help="a prm-train run id or a PRM folder")
    score.add_argument("--problem-set", required=True, help="the problem set's name")
    score.add_argument("--task-id", required=True, help="the problem's task_id")
    score.add_argument("--code", required=True, help="file with the completion (or whole program)")

    export = add(
        "export-prm-data",
        cmd_export_prm_data,
        "Write a prm-data run's labelled lines as JSONL (DESIGN §3; TRL's stepwise format beside).",
    )
    export.add_argument("run", type=parse_run_id)
    export.add_argument("--out", required=True, help="the .jsonl file to write")

    report = add(
        "report",
        cmd_report,
        "Write a group's report: report.md (the paper's table, curves, labeling, PRM quality, "
        "monitors, configs), PNG charts and configs.json.",
    )
    report.add_argument("group", help="the run group, e.g. reproduce-embedded-small")
    report.add_argument("--out", required=True, help="the folder to write")
    report.add_argument("--metric", help="held-out pass@1 metric (default: sampled, else greedy)")

    exec_ = add("exec", cmd_exec, "Run execution requests (JSONL) in the sandbox.")
    exec_.add_argument("requests", help="JSONL file of execution requests")
    exec_.add_argument("--out", required=True, help="where to write one result per request")
    exec_.add_argument("--workers", type=int, help="parallel sandboxes (default: CPU cores)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.crud import RunNotFound
    from workers.registry import ConfigError, UnknownJobKind

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CliError, ConfigError, UnknownJobKind, RunNotFound) as error:
        print(f"prm-studio: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
