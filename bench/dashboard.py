"""Dashboard latency at volume: seed a throwaway database with 1,000 runs, 100,000 samples and
1,000,000 line scores (plus about a million metric rows and 20 workers), then time every view
function the dashboard calls — median of a few calls each. The goal: every view under 1 s.

    python -m bench.dashboard                                    # SQLite file in a temp folder
    python -m bench.dashboard --database-url postgresql+psycopg://postgres@127.0.0.1/postgres
    python -m bench.dashboard --scale 0.1                        # a tenth of the volume

With a PostgreSQL URL, a fresh database ``prm_bench_<random>`` is created on that server and
dropped at the end; the database the URL names is only used to connect. Seeding uses bulk
``INSERT … VALUES`` batches with explicit ids, so lines can point at samples without reading
anything back. The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from app.orm import Artifact, LineScore, Metric, Problem, ProblemSet, Run, Sample, Worker

VARIANTS = ("baseline", "dense", "value-init", "dense+value-init")
SEEDS = 3
RL_METRICS = (
    "eval/pass@1_greedy",
    "eval/pass@1_sampled",
    "rollout/pass_rate",
    "rollout/response_tokens",
    "rollout/response_lines",
    "rollout/comment_line_fraction",
    "rewards/sparse",
    "rewards/dense",
    "rewards/kl",
    "rewards/prm_score",
    "losses/policy",
    "losses/value",
    "losses/entropy",
    "charts/approx_kl",
    "charts/clipfrac",
    "charts/explained_variance",
    "charts/kl_coef",
    "time/rollout_s",
    "time/update_s",
    "time/tokens_per_s",
)
DIFFICULTIES = range(2, 8)
BATCH = 20_000


# ----------------------------------------------------------------------------- database


@contextmanager
def throwaway_database(url: str | None) -> Iterator[str]:
    """An empty database URL: an SQLite file in a temp folder, or a new PostgreSQL database
    on the server ``url`` points at (dropped afterwards)."""
    if not url or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="prm-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.sqlite'}"
        return
    import psycopg

    admin = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"prm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_database(url: str) -> None:
    """Point the app's settings and engine at ``url`` and create the schema."""
    os.environ["PRM_STUDIO_DATABASE_URL"] = url
    from app.db import migrate, reset_engine
    from app.settings import get_settings

    reset_engine()
    get_settings.cache_clear()
    migrate()


def bulk(session, table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        session.execute(insert(table), rows[start : start + BATCH])


# ----------------------------------------------------------------------------- seeding


def seed(scale: float, rng: random.Random) -> dict[str, Any]:
    """The volume the dashboard must stay fast on; returns ids worth timing views with."""
    from app.db import get_engine, session_scope

    n_runs = int(1000 * scale)
    n_samples = int(100_000 * scale)
    lines_per_sample = 10
    now = datetime.now(UTC)
    problems = [
        {
            "id": i + 1,
            "problem_set_id": 1,
            "task_id": f"bench/{i}",
            "split": "test",
            "difficulty": DIFFICULTIES[i % len(DIFFICULTIES)],
            "prompt": f"def f_{i}(xs):\n",
            "data": {"tests": ["assert True"]},
        }
        for i in range(500)
    ]
    kinds = ["sft", "eval", "rl", "rl", "rl", "rl", "rl", "rl", "prm-data", "prm-train"]
    runs, metrics, artifacts = [], [], []
    rl_index = 0
    for run_id in range(1, n_runs + 1):
        kind = kinds[(run_id - 1) % len(kinds)]
        created = now - timedelta(minutes=n_runs - run_id)
        config: dict[str, Any] = {"seed": run_id % SEEDS}
        group = None
        if kind == "rl":
            config |= {"variant": VARIANTS[(rl_index // SEEDS) % 4], "sft_run_id": 1}
            group = f"sweep-{rl_index // (SEEDS * 4)}"
            rl_index += 1
        elif kind == "prm-data":
            config |= {"rl_run_id": max(run_id - 1, 1), "k": 8}
        elif kind == "prm-train":
            config |= {"dataset_run_id": max(run_id - 10, 1), "policy_run_id": 1}
        status = "running" if run_id > n_runs - 5 else "succeeded"
        runs.append(
            {
                "id": run_id,
                "kind": kind,
                "name": f"{kind} seed {run_id % SEEDS}",
                "group_name": group,
                "status": status,
                "config": config,
                "created_at": created,
                "started_at": created + timedelta(seconds=5),
                "finished_at": None if status == "running" else created + timedelta(minutes=30),
                "progress": 0.5 if status == "running" else 1.0,
                "progress_message": "",
                "result": prm_result(rng) if kind == "prm-train" else {},
                "cancel_requested": False,
            }
        )
        metrics += run_metrics(run_id, kind, rng, now)
        artifact = {
            "sft": "checkpoint",
            "rl": "checkpoint",
            "prm-data": "prm-dataset",
            "prm-train": "prm-checkpoint",
        }.get(kind)
        if artifact:
            artifacts.append(
                {
                    "run_id": run_id,
                    "kind": artifact,
                    "step": 60,
                    "path": f"/artifacts/runs/{run_id}/{artifact}",
                    "meta": {},
                    "created_at": now,
                }
            )
    samples, lines = [], []
    for sample_id in range(1, n_samples + 1):
        run_id = rng.randrange(1, n_runs + 1)
        passed = rng.random() < 0.4
        meta: dict[str, Any] = {"mode": "rollout", "sample_index": sample_id % 8}
        if runs[run_id - 1]["kind"] == "prm-data":
            meta |= {
                "m_star": rng.randrange(0, 10),
                "completions_sampled": rng.randrange(8, 40),
                "n_code_lines": rng.randrange(3, 10),
            }
        samples.append(
            {
                "id": sample_id,
                "run_id": run_id,
                "step": rng.randrange(0, 60),
                "problem_id": rng.randrange(1, 501),
                "code": "def f(xs):\n" + "    x = 1\n" * 10,
                "verdict": "passed" if passed else "failed",
                "passed": passed,
                "tests_passed": 3,
                "tests_total": 5,
                "error_line": None if passed else 5,
                "detail": "",
                "meta": meta,
                "created_at": now,
            }
        )
        for line_no in range(1, lines_per_sample + 1):
            lines.append(
                {
                    "sample_id": sample_id,
                    "line_no": line_no,
                    "text": "    x = 1",
                    "score": rng.uniform(-1, 1),
                    "label": rng.choice((-1, 0, 1)),
                    "ground_truth": rng.choice((-1, 1)),
                    "dense_reward": rng.uniform(-0.1, 0.1),
                }
            )
    workers = [
        {
            "name": f"celery@gpu{i}",
            "host": f"gpu{i}",
            "queues": "gpu",
            "started_at": now,
            "facts": {"gpus": ["NVIDIA H100"], "cpu_count": 16, "torch": "2.13.0"},
            "last_seen": now - timedelta(seconds=30 * i),
            "current_run_id": n_runs - i % 5,
        }
        for i in range(20)
    ]
    started = time.perf_counter()
    with session_scope() as session:
        session.execute(
            insert(ProblemSet),
            [
                {
                    "id": 1,
                    "name": "bench",
                    "source": "bench",
                    "content_hash": "0" * 64,
                    "n_problems": len(problems),
                    "meta": {},
                    "created_at": now,
                }
            ],
        )
        for table, rows in (
            (Problem, problems),
            (Run, runs),
            (Metric, metrics),
            (Artifact, artifacts),
            (Sample, samples),
            (LineScore, lines),
            (Worker, workers),
        ):
            bulk(session, table, rows)
    if get_engine().dialect.name == "postgresql":
        analyze()
    counts = {
        "runs": len(runs),
        "metrics": len(metrics),
        "samples": len(samples),
        "line_scores": len(lines),
    }
    print(f"seeded {counts} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    rl = next(r["id"] for r in runs if r["kind"] == "rl")
    return {
        "counts": counts,
        "rl_run": rl,
        "group": runs[rl - 1]["group_name"],
        "prm_data_run": next(r["id"] for r in runs if r["kind"] == "prm-data"),
        "prm_train_run": next(r["id"] for r in runs if r["kind"] == "prm-train"),
        "sft_run": next(r["id"] for r in runs if r["kind"] == "sft"),
        "sample": samples[len(samples) // 2]["id"],
    }


def analyze() -> None:
    """Refresh PostgreSQL's planner statistics, as autovacuum would soon after a bulk load:
    timing views against a freshly loaded, never-analysed database measures a state no
    running deployment is in."""
    from sqlalchemy import text

    from app.db import get_engine

    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def run_metrics(run_id: int, kind: str, rng: random.Random, now: datetime) -> list[dict]:
    """An RL run logs ~20 curves over 60 steps plus pass@1 by difficulty every 10; the other
    kinds a few numbers."""
    rows = []
    if kind == "rl":
        for step in range(60):
            for name in RL_METRICS:
                rows.append(metric(run_id, step, name, rng.random(), now))
            if step % 10 == 0:
                for d in DIFFICULTIES:
                    for mode in ("greedy", "sampled"):
                        name = f"eval/pass@1_{mode}/difficulty_{d}"
                        rows.append(metric(run_id, step, name, rng.random(), now))
    elif kind == "prm-data":
        for name in (
            "completions_per_failing_mean",
            "linear_scan_completions_per_failing_mean",
            "rescued_fraction",
            "audit/exact_match",
        ):
            rows.append(metric(run_id, 0, f"labeling/{name}", rng.random() * 30, now))
    elif kind == "prm-train":
        for step in range(0, 600, 10):
            rows.append(metric(run_id, step, "losses/prm_train", rng.random(), now))
        for name in ("auc", "accuracy", "ece"):
            rows.append(metric(run_id, 600, f"prm/{name}", rng.random(), now))
    else:
        for step in range(0, 500, 10):
            rows.append(metric(run_id, step, "losses/sft", rng.random(), now))
    return rows


def metric(run_id: int, step: int, name: str, value: float, now: datetime) -> dict[str, Any]:
    return {"run_id": run_id, "step": step, "name": name, "value": value, "time": now}


def prm_result(rng: random.Random) -> dict[str, Any]:
    calibration = [
        {
            "lo": b / 10,
            "hi": (b + 1) / 10,
            "predicted": b / 10 + 0.05,
            "observed": min(max(b / 10 + rng.uniform(-0.1, 0.1), 0), 1),
            "count": 100,
        }
        for b in range(10)
    ]
    table = {
        str(k): {"prm_min": 0.5, "prm_last": 0.48, "prm_mean": 0.47, "random": 0.4, "oracle": 0.7}
        for k in (4, 8, 16, 30)
    }
    return {"calibration": calibration, "rerank": {"table": table}}


# ----------------------------------------------------------------------------- timing


def median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm: the first call pays for imports and connection set-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def view_calls(ids: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Every view the dashboard calls, with the arguments a user would give it."""
    from app import compare, ui, views

    rl, group, sample = ids["rl_run"], ids["group"], ids["sample"]

    def comparison() -> None:
        data = compare.load_comparison(compare.compare_run_ids(group, ""))
        compare.paper_table(data), compare.curves_figure(data)
        compare.difficulty_figure(data), compare.hacking_figure(data)

    calls: dict[str, Callable[[], Any]] = {
        "runs_table": lambda: views.runs_table(),
        "runs_table(kind=rl,status=succeeded,page=5)": lambda: views.runs_table(
            "rl", "succeeded", page=5
        ),
        "runs_table(text)": lambda: views.runs_table(text="seed 2"),
        "runs_table(group)": lambda: views.runs_table(group=group),
        "group_choices": views.group_choices,
        "run_summary": lambda: views.run_summary(rl),
        "lineage(sft run used by 600)": lambda: views.lineage(ids["sft_run"]),
        "run_metrics_figure(rl, all)": lambda: views.run_metrics_figure(rl, 0.6),
        "run_metrics_figure(rl, eval)": lambda: views.run_metrics_figure(rl, 0.0, "eval"),
        "pass_rate_figure(12 siblings)": lambda: views.pass_rate_figure(rl, 0.6),
        "difficulty_figure": lambda: views.difficulty_figure(rl),
        "labeling_panel": lambda: views.labeling_panel(ids["prm_data_run"]),
        "prm_panel": lambda: views.prm_panel(ids["prm_train_run"]),
        "run tab, everything (ui.render_run)": lambda: ui.render_run(rl, 0.6, "all"),
        "samples_table": lambda: views.samples_table(),
        "samples_table(run)": lambda: views.samples_table(run_id=rl),
        "samples_table(failed, difficulty 5, page 20)": lambda: views.samples_table(
            outcome="failed", difficulty=5, page=20
        ),
        "samples_table(task)": lambda: views.samples_table(task_id="bench/7"),
        "sample_heatmap": lambda: views.sample_heatmap(sample),
        "same_problem_table": lambda: views.same_problem_table(sample),
        "compare(group of 12)": comparison,
        "workers_table": views.workers_table,
        "problem_sets_table": views.problem_sets_table,
    }
    for picker in (*views.RUN_PICKERS, *views.ARTIFACT_PICKERS, "problem-sets"):
        calls[f"picker_choices({picker})"] = lambda picker=picker: views.picker_choices(picker)
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="PostgreSQL server (default SQLite)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full volume")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per view")
    args = parser.parse_args(argv)
    with throwaway_database(args.database_url) as url:
        use_database(url)
        ids = seed(args.scale, random.Random(0))
        latencies = {name: median_s(fn, args.repeats) for name, fn in view_calls(ids).items()}
        from app.db import reset_engine

        reset_engine()  # close connections before a PostgreSQL database is dropped
    backend = url.split(":", 1)[0]
    print(f"{'view':<48} {'median s':>9}")
    for name, seconds in latencies.items():
        print(f"{name:<48} {seconds:>9.3f}")
    slowest = max(latencies, key=latencies.__getitem__)
    print(
        json.dumps(
            {
                "bench": "dashboard",
                "backend": backend,
                **ids["counts"],
                "max_view_s": round(latencies[slowest], 4),
                "slowest_view": slowest,
                "views": {name: round(s, 4) for name, s in latencies.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
