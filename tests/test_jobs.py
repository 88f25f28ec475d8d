"""The job lifecycle: directly through the runner, then through a real Celery worker
subprocess on the embedded SQLite transport and on Redis."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
from kombu import Connection
from sqlalchemy import func, select

from app import crud
from app.db import read_session, session_scope
from app.orm import Metric, Run, RunStatus, Worker
from tests.conftest import reset_app_state, wait_for
from workers.celery_app import broker_transport_options, prepare_broker
from workers.runner import execute_run


def make_run(config: dict) -> int:
    with session_scope() as session:
        return crud.create_run(session, kind="healthcheck", config=config).id


def load_run(run_id: int) -> Run:
    with read_session() as session:
        return crud.get_run(session, run_id=run_id)


def metric_count(run_id: int) -> int:
    with read_session() as session:
        query = select(func.count()).select_from(Metric).where(Metric.run_id == run_id)
        return session.scalar(query) or 0


# ----------------------------------------------------------------------------- runner


def test_runner_success_records_progress_metrics_and_worker_facts(data_dir):
    run_id = make_run({"steps": 3, "step_seconds": 0.0})
    assert execute_run(run_id) == "succeeded"
    run = load_run(run_id)
    assert run.status == RunStatus.succeeded and run.progress == 1.0
    assert run.started_at and run.finished_at and run.worker_host
    assert {"host", "cpu_count", "torch", "cuda_available"} <= set(run.result)
    assert metric_count(run_id) == 6  # two metrics at each of three steps


def test_runner_failure_stores_the_error(data_dir):
    run_id = make_run({"steps": 1, "step_seconds": 0.0, "fail": True})
    assert execute_run(run_id) == "failed"
    run = load_run(run_id)
    assert run.status == RunStatus.failed
    assert run.error == "RuntimeError: healthcheck asked to fail (fail=true)"


def test_a_run_is_claimed_once(data_dir):
    run_id = make_run({"steps": 1, "step_seconds": 0.0})
    assert execute_run(run_id) == "succeeded"
    assert execute_run(run_id) == "skipped"  # a second delivery does nothing


def test_cancelling_a_queued_run_means_it_never_starts(data_dir):
    run_id = make_run({"steps": 1, "step_seconds": 0.0})
    with session_scope() as session:
        crud.request_cancel(session, run_id=run_id)
    assert execute_run(run_id) == "skipped"
    assert load_run(run_id).status == RunStatus.cancelled


# ----------------------------------------------------------------------------- a new broker


def open_new_broker_as(role: str, url: str, start: Barrier, outcomes: Queue) -> None:
    """What a starting worker (declares its queue) or a submitter (publishes) does first."""
    try:
        start.wait(timeout=30)
        prepare_broker(url)
        with Connection(url, transport_options=broker_transport_options(url)) as connection:
            channel = connection.default_channel
            if role == "worker":
                channel._new_queue("gpu")
            else:
                channel._put("gpu", {"body": role})
        outcomes.put((role, "ok"))
    except Exception as error:
        outcomes.put((role, f"{type(error).__name__}: {error}"))


def test_a_worker_and_a_submitter_opening_a_new_sqlite_broker_at_once_both_succeed(tmp_path):
    """Kombu creates the broker's tables and queue rows lazily; without ``prepare_broker`` one
    of two processes doing so at once fails (UNIQUE constraint) in most rounds."""
    context = multiprocessing.get_context("fork")
    for round_ in range(5):
        url = f"sqla+sqlite:///{tmp_path / f'broker-{round_}.sqlite'}"
        start, outcomes = context.Barrier(2), context.Queue()
        processes = [
            context.Process(target=open_new_broker_as, args=(role, url, start, outcomes))
            for role in ("worker", "submitter")
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert sorted(outcomes.get(timeout=5) for _ in processes) == [
            ("submitter", "ok"),
            ("worker", "ok"),
        ]
        with Connection(url, transport_options=broker_transport_options(url)) as connection:
            assert connection.default_channel._get("gpu") == {"body": "submitter"}


# ----------------------------------------------------------------------------- real worker


@pytest.fixture(params=["sqlite-transport", "redis"])
def broker(request, data_dir, monkeypatch) -> str:
    """The embedded SQLite transport or Redis; jobs are submitted by a separate CLI process,
    as a user would, so the test process holds no broker connection of its own."""
    if request.param == "redis":
        monkeypatch.setenv("PRM_STUDIO_BROKER_URL", request.getfixturevalue("redis_url"))
        reset_app_state()
    return request.param


def cli_submit(kind: str, config: dict, tmp_path) -> int:
    config_file = tmp_path / f"config-{time.monotonic_ns()}.json"
    config_file.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "submit", kind, "--config", str(config_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_worker_runs_a_healthcheck_end_to_end(broker, start_worker, tmp_path):
    run_id = cli_submit("healthcheck", {"steps": 4, "step_seconds": 0.5}, tmp_path)
    assert load_run(run_id).status == RunStatus.queued
    worker = start_worker()
    seen_status = {load_run(run_id).status}
    progress_seen = set()

    def finished() -> bool:
        run = load_run(run_id)
        seen_status.add(run.status)
        progress_seen.add(round(run.progress, 2))
        return RunStatus(run.status).finished

    wait_for(finished, timeout=60, what="the healthcheck to finish", every=0.1)
    assert worker.poll() is None, "worker died"
    run = load_run(run_id)
    assert run.status == RunStatus.succeeded, run.error
    assert {"queued", "running", "succeeded"} <= seen_status
    assert any(0 < p < 1 for p in progress_seen), f"no intermediate progress: {progress_seen}"
    assert metric_count(run_id) == 8
    assert run.result["cpu_count"] >= 1
    with read_session() as session:  # the worker announced itself and is idle again
        worker = session.scalars(select(Worker)).one()
    assert worker.queues == "cpu,gpu" and worker.current_run_id is None
    assert worker.facts["cpu_count"] >= 1 and worker.name.startswith("celery@")


def test_worker_honours_cancellation_mid_run(broker, start_worker, monkeypatch, tmp_path):
    monkeypatch.setenv("PRM_STUDIO_CANCEL_POLL_S", "0.2")
    start_worker()
    run_id = cli_submit("healthcheck", {"steps": 100, "step_seconds": 0.2}, tmp_path)
    wait_for(lambda: load_run(run_id).progress > 0, timeout=60, what="the run to make progress")
    with session_scope() as session:
        crud.request_cancel(session, run_id=run_id)
    wait_for(
        lambda: load_run(run_id).status == RunStatus.cancelled,
        timeout=30,
        what="the run to stop",
    )
    run = load_run(run_id)
    assert 0 < run.progress < 1 and run.finished_at is not None


# ----------------------------------------------------------------------------- lost runs


def age_heartbeat(run_id: int, seconds: float) -> None:
    from datetime import timedelta

    from app.orm import utcnow

    with session_scope() as session:
        session.get(Run, run_id).heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_a_run_held_by_a_live_runner_is_not_taken_but_a_lost_one_is(data_dir):
    run_id = make_run({"steps": 1, "step_seconds": 0.0})
    with session_scope() as session:  # a runner holds it, heartbeat fresh
        assert crud.claim_run(session, run_id=run_id, task_id="a", worker_host="h", lease_s=60)
    assert execute_run(run_id) == "skipped"  # a second delivery exits cleanly
    age_heartbeat(run_id, 120)  # that runner's worker died two minutes ago
    assert execute_run(run_id) == "succeeded"
    assert load_run(run_id).attempts == 2


def test_reaper_requeues_lost_runs_then_gives_up_after_max_attempts(data_dir, monkeypatch):
    from workers import runner
    from workers.tasks import TASKS

    sent: list[int] = []
    monkeypatch.setattr(TASKS["healthcheck"], "apply_async", lambda args, **_: sent.append(args[0]))
    monkeypatch.setenv("PRM_STUDIO_MAX_ATTEMPTS", "2")
    reset_app_state()
    run_id = make_run({"steps": 1, "step_seconds": 0.0})
    for attempt in (1, 2):
        with session_scope() as session:
            crud.claim_run(session, run_id=run_id, task_id="t", worker_host="h", lease_s=60)
        age_heartbeat(run_id, 120)
        requeued = runner.reap_lost_runs()
        if attempt == 1:
            assert requeued == [run_id] and sent == [run_id]
            assert load_run(run_id).status == RunStatus.queued
    run = load_run(run_id)
    assert run.status == RunStatus.failed and "lost 2 times" in run.error
    assert sent == [run_id]


def test_resume_requeues_a_failed_run_and_refuses_a_finished_one(data_dir, monkeypatch):
    from workers import runner
    from workers.tasks import TASKS

    monkeypatch.setattr(TASKS["healthcheck"], "apply_async", lambda *a, **k: None)
    failing = make_run({"steps": 1, "step_seconds": 0.0, "fail": True})
    assert execute_run(failing) == "failed"
    assert runner.resume(failing).status == RunStatus.queued
    fine = make_run({"steps": 1, "step_seconds": 0.0})
    execute_run(fine)
    with pytest.raises(ValueError, match="only a failed, cancelled or lost run resumes"):
        runner.resume(fine)
