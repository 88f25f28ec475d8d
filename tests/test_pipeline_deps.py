"""Runs that depend on other runs wait, start when all their inputs succeeded, and fail when
one of them did not — the mechanism pipeline stages are chained with."""

from __future__ import annotations

import pytest

from app import crud
from app.db import read_session
from app.orm import RunStatus
from workers import runner


@pytest.fixture
def sent(data_dir, monkeypatch) -> list[int]:
    """Record what would be sent to the broker instead of sending it."""
    from workers.tasks import TASKS

    queue: list[int] = []
    for task in TASKS.values():
        monkeypatch.setattr(
            task, "apply_async", lambda args, queue_=queue, **_: queue_.append(args[0])
        )
    return queue


def status(run_id: int) -> str:
    with read_session() as session:
        return crud.get_run(session, run_id=run_id).status


FAST = {"steps": 1, "step_seconds": 0.0}


def test_a_dependent_waits_then_starts_when_its_inputs_succeed(sent):
    first = runner.submit("healthcheck", FAST)
    second = runner.submit("healthcheck", FAST)
    joined = runner.submit("healthcheck", FAST, depends_on=[first, second])
    assert sent == [first, second] and status(joined) == RunStatus.waiting

    assert runner.execute_run(first) == "succeeded"
    assert status(joined) == RunStatus.waiting and sent == [first, second]
    assert runner.execute_run(second) == "succeeded"
    assert status(joined) == RunStatus.queued and sent == [first, second, joined]
    assert runner.execute_run(joined) == "succeeded"


def test_a_failed_input_fails_everything_downstream(sent):
    broken = runner.submit("healthcheck", {**FAST, "fail": True})
    middle = runner.submit("healthcheck", FAST, depends_on=[broken])
    last = runner.submit("healthcheck", FAST, depends_on=[middle])
    assert runner.execute_run(broken) == "failed"
    for run_id, upstream in ((middle, broken), (last, middle)):
        with read_session() as session:
            run = crud.get_run(session, run_id=run_id)
        assert run.status == RunStatus.failed
        assert run.error == f"upstream run {upstream} did not succeed"
    assert sent == [broken]


def test_depending_on_a_finished_run_starts_or_fails_at_once(sent):
    done = runner.submit("healthcheck", FAST)
    runner.execute_run(done)
    assert status(runner.submit("healthcheck", FAST, depends_on=[done])) == RunStatus.queued
    broken = runner.submit("healthcheck", {**FAST, "fail": True})
    runner.execute_run(broken)
    assert status(runner.submit("healthcheck", FAST, depends_on=[broken])) == RunStatus.failed


def test_an_unknown_dependency_is_refused_before_anything_is_stored(sent):
    with pytest.raises(crud.RunNotFound):
        runner.submit("healthcheck", FAST, depends_on=[999])
    with read_session() as session:
        assert crud.list_runs(session) == []
