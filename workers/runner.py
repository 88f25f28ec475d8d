"""The job lifecycle, the same for every kind: submit → queued → running → succeeded / failed /
cancelled.

``submit`` validates the config, stores the run and enqueues it. ``execute_run`` (called by the
Celery task) claims the run with one atomic UPDATE, calls the kind's entry point with a
``JobContext`` — the reporter through which the ML core writes progress and metrics — and
records the outcome. Cancellation is a database flag that ``JobContext.progress`` polls, so it
works on every broker (the SQLAlchemy transport has no remote control).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app import crud
from app.db import retrying, session_scope
from app.orm import Run, RunStatus
from app.security import PathNotAllowed, check_paths
from app.settings import get_settings
from workers import artifacts, heartbeat
from workers.registry import ConfigError, JobKind, get_kind, validate_config, walk_fields

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job when its cancel flag is seen; the runner marks the run cancelled."""


class JobContext:
    """What a running job sees: its run id, artifact folder, and a database-backed reporter."""

    def __init__(self, run_id: int) -> None:
        settings = get_settings()
        self.run_id = run_id
        self.artifacts_dir: Path = settings.artifacts_dir / "runs" / str(run_id)
        self._poll_s = settings.cancel_poll_s
        self._last_write = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        """Store progress (throttled to one write per poll interval) and honour cancellation."""
        now = time.monotonic()
        if now - self._last_write < self._poll_s and fraction < 1.0:
            return
        self._last_write = now
        cancel = retrying(
            lambda session: crud.set_progress(
                session, run_id=self.run_id, fraction=min(max(fraction, 0.0), 1.0), message=message
            )
        )
        if cancel:
            raise JobCancelled(f"run {self.run_id} cancelled by request")

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        retrying(
            lambda session: crud.add_metrics(session, run_id=self.run_id, step=step, values=values)
        )

    def add_artifact(
        self, kind: str, path: Path, step: int | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Publish a file or folder the job wrote to the artifact store and record where."""
        stored = artifacts.publish(path)
        retrying(
            lambda session: crud.add_artifact(
                session, run_id=self.run_id, kind=kind, path=stored, step=step, meta=meta
            )
        )


# Fields that name a model folder, which must exist and hold a Hugging Face config.json
# (``init_from`` may also be a hub id, so it is only checked when it exists locally).
MODEL_FIELDS = frozenset({"policy", "prm", "checkpoints"})


def marker_files(name: str) -> tuple[str, ...]:
    """The files, one of which a folder in config field ``name`` must hold: a Hugging Face
    model's config.json, or for a PRM also an ensemble's prm.json (its members are folders)."""
    return ("config.json", "prm.json") if name == "prm" else ("config.json",)


def reference_errors(cfg: BaseModel) -> list[str]:
    """What a config points at that is not there: runs (``*_run_id``), model folders,
    problem sets — each as ``field: problem``."""
    from workers.problemsets import find_problem_set

    errors = []
    with session_scope() as session:
        for field, name, value in walk_fields(cfg):
            if value is None:
                continue
            if name.endswith("_run_id") or name.endswith("_run_ids"):
                if session.get(Run, value) is None:
                    errors.append(f"{field}: run {value} does not exist")
            elif (name in MODEL_FIELDS or name == "init_from") and artifacts.in_store(value):
                if not any(artifacts.exists(f"{value}/{file}") for file in marker_files(name)):
                    errors.append(f"{field}: {value} is not a model folder in the artifact store")
            elif name in MODEL_FIELDS or (name == "init_from" and Path(value).exists()):
                folder = Path(value).expanduser()
                if not folder.is_dir():
                    errors.append(f"{field}: {value} does not exist")
                elif not any((folder / file).is_file() for file in marker_files(name)):
                    errors.append(
                        f"{field}: {value} is not a model folder (no config.json): point at a "
                        "checkpoint saved by an sft/rl/prm-train run or a Hugging Face model"
                    )
            elif name == "problem_set" and find_problem_set(session, value) is None:
                errors.append(f"{field}: no problem set named {value!r} (prm-studio problems list)")
    return errors


def checked_config(kind: JobKind, raw: dict[str, Any]) -> BaseModel:
    """What every entry point (CLI, dashboard, API) accepts: a config that validates, whose
    path fields stay inside the allowed folders, and whose runs, model folders and problem
    sets exist; else one ConfigError naming each bad field."""
    cfg = validate_config(kind, raw)
    try:
        check_paths(cfg, get_settings())
    except PathNotAllowed as error:
        raise ConfigError(kind.name, [str(error)]) from None
    errors = reference_errors(cfg)
    if errors:
        raise ConfigError(kind.name, errors)
    return cfg


def submit(
    kind_name: str,
    config: dict[str, Any] | None = None,
    *,
    name: str = "",
    group_name: str | None = None,
    parent_id: int | None = None,
    depends_on: list[int] | None = None,
) -> int:
    """Validate, store and enqueue a run; returns its id. Invalid input writes nothing.

    With ``depends_on``, the run waits until those runs succeed (it is enqueued by the last of
    them to finish, see ``execute_run``), and fails if one of them does not."""
    kind = get_kind(kind_name)
    cfg = checked_config(kind, config or {})
    with session_scope() as session:
        for dependency in depends_on or []:
            crud.get_run(session, run_id=dependency)  # RunNotFound before anything is stored
        run = crud.create_run(
            session,
            kind=kind.name,
            config=cfg.model_dump(mode="json"),
            name=name or kind.name,
            group_name=group_name,
            parent_id=parent_id,
            depends_on=depends_on,
        )
        run_id, waiting = run.id, run.status == RunStatus.waiting
    if not waiting:
        enqueue(run_id, kind_name)
        return run_id
    # the dependencies may have finished (or failed) while this run was being stored
    with session_scope() as session:
        ready = crud.release_if_ready(session, run_id=run_id)
        failed_upstream = crud.upstream_failure(session, run=crud.get_run(session, run_id=run_id))
        if failed_upstream is not None:
            crud.finish_run(
                session,
                run_id=run_id,
                status=RunStatus.failed,
                error=f"upstream run {failed_upstream} did not succeed",
            )
    if ready:
        enqueue(run_id, kind_name)
    return run_id


def enqueue(run_id: int, kind_name: str) -> None:
    """Send a queued run to its kind's queue; a broker failure fails the run, loudly."""
    from workers.celery_app import prepare_broker
    from workers.tasks import TASKS

    task = TASKS[kind_name]
    try:
        prepare_broker(task.app.conf.broker_url)
        task.apply_async(args=[run_id], queue=get_kind(kind_name).queue)
    except Exception as error:
        with session_scope() as session:
            crud.finish_run(
                session, run_id=run_id, status=RunStatus.failed, error=f"could not enqueue: {error}"
            )
        raise


def after_finish(run_id: int, status: RunStatus) -> None:
    """Release the runs waiting on this one (success) or fail them (anything else)."""
    released: list[tuple[int, str]] = []
    with session_scope() as session:
        if status != RunStatus.succeeded:
            crud.fail_dependents(session, run_id=run_id)
            return
        for dependent in crud.waiting_dependents(session, run_id=run_id):
            if crud.release_if_ready(session, run_id=dependent.id):
                released.append((dependent.id, dependent.kind))
    for dependent_id, kind_name in released:
        enqueue(dependent_id, kind_name)


def submit_sweep(
    kind_name: str,
    config: dict[str, Any],
    *,
    field: str,
    values: list[Any],
    seeds: list[int],
    group_name: str,
) -> list[int]:
    """Submit ``kind_name`` once per (value of ``field``) × seed as one group of sibling runs —
    e.g. the four PPO variants × 3 seeds. Every config is validated before any is stored."""
    kind = get_kind(kind_name)
    configs = [{**config, field: value, "seed": seed} for value in values for seed in seeds]
    for each in configs:
        checked_config(kind, each)
    return [
        submit(kind_name, each, name=f"{each[field]} seed {each['seed']}", group_name=group_name)
        for each in configs
    ]


def cancel(run_id: int) -> Run:
    with session_scope() as session:
        return crud.request_cancel(session, run_id=run_id)


@contextmanager
def run_heartbeat(run_id: int, interval_s: float) -> Iterator[None]:
    """Refresh the run's heartbeat from a thread while its job runs — also through long
    stretches without progress calls — so only a dead worker's run ever looks lost."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                retrying(lambda session: crud.beat_run(session, run_id=run_id), retry_s=interval_s)
            except Exception:  # a database blip: the next beat tries again
                log.exception("heartbeat of run %s failed", run_id)

    thread = threading.Thread(target=beat, name=f"run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reap_lost_runs() -> list[int]:
    """Requeue runs whose worker died (heartbeat older than the lease), up to the retry
    policy's ``max_attempts``; fail the rest. Any worker may call this; the conditional
    UPDATEs make concurrent reapers harmless. Returns the requeued run ids."""
    settings = get_settings()
    requeued: list[tuple[int, str]] = []
    with session_scope() as session:
        for run in crud.lost_runs(session, lease_s=settings.lease_s):
            if run.attempts >= settings.max_attempts:
                crud.finish_run(
                    session,
                    run_id=run.id,
                    status=RunStatus.failed,
                    error=f"lost {run.attempts} times (its worker stopped); not retried again",
                )
                crud.fail_dependents(session, run_id=run.id)
            elif crud.requeue_run(session, run_id=run.id, from_status=(RunStatus.running,)):
                requeued.append((run.id, run.kind))
    for run_id, kind_name in requeued:
        log.warning("run %s was lost; queued again to resume from its last checkpoint", run_id)
        enqueue(run_id, kind_name)
    return [run_id for run_id, _ in requeued]


def resume(run_id: int) -> Run:
    """The user's "resume": a failed, cancelled or lost run is queued again; its job picks up
    from its last checkpoint (jobs that checkpoint) or starts over."""
    settings = get_settings()
    with session_scope() as session:
        run = crud.get_run(session, run_id=run_id)
        lost = crud.is_lost(run, lease_s=settings.lease_s)
        if run.status not in (RunStatus.failed, RunStatus.cancelled) and not lost:
            raise ValueError(
                f"run {run_id} is {run.status}: only a failed, cancelled or lost run resumes"
            )
        crud.requeue_run(session, run_id=run_id, from_status=(run.status,))
        kind_name = run.kind
    enqueue(run_id, kind_name)
    with session_scope() as session:
        return crud.get_run(session, run_id=run_id)


def error_summary(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def execute_run(run_id: int, task_id: str | None = None, worker_name: str | None = None) -> str:
    """Run one job to completion; returns the final status (or ``skipped``).

    ``worker_name`` (the Celery node) is shown as this run's worker in the Workers view."""
    settings = get_settings()
    with session_scope() as session:
        if not crud.claim_run(
            session,
            run_id=run_id,
            task_id=task_id,
            worker_host=socket.gethostname(),
            lease_s=settings.lease_s,
        ):
            log.info("run %s is held by another runner or not queued; skipping", run_id)
            return "skipped"
        run = crud.get_run(session, run_id=run_id)
        kind_name, raw_config = run.kind, dict(run.config)

    if worker_name:
        heartbeat.set_current_run(worker_name, run_id)
    import torch  # here, not at import: the dashboard and the CLI import this module too

    torch.set_num_threads(settings.torch_threads())
    ctx = JobContext(run_id)
    status, error, result = RunStatus.succeeded, None, None
    with run_heartbeat(run_id, interval_s=settings.lease_s / 6):
        try:
            kind = get_kind(kind_name)
            cfg: BaseModel = artifacts.localized(validate_config(kind, raw_config))
            ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
            result = kind.load()(ctx, cfg)
        except JobCancelled:
            status = RunStatus.cancelled
        except Exception as exc:
            status, error = RunStatus.failed, error_summary(exc)
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
    retrying(
        lambda session: crud.finish_run(
            session, run_id=run_id, status=status, error=error, result=result
        )
    )
    if worker_name:
        heartbeat.set_current_run(worker_name, None)
    after_finish(run_id, status)
    return status.value
