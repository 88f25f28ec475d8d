"""Crash safety with real processes: a worker killed with SIGKILL in the middle of an ``rl`` run
leaves a lost run that another worker resumes from its last checkpoint, with every step's
metrics logged exactly once."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from sqlalchemy import select

from app import crud
from app.db import read_session
from app.orm import Metric, RunStatus
from tests.conftest import BWRAP, require, wait_for
from tests.test_jobs import cli_submit
from tests.test_rl_job import rl_config

pytestmark = pytest.mark.slow


def policy_steps(run_id: int) -> list[int]:
    with read_session() as session:
        query = select(Metric.step).where(Metric.run_id == run_id, Metric.name == "losses/policy")
        return list(session.scalars(query))


def test_kill_9_mid_rl_run_resumes_from_the_checkpoint_on_another_worker(
    data_dir,
    start_worker,
    tiny_policy,
    monkeypatch,
    tmp_path,
):
    require(BWRAP.exists(), "bubblewrap is not installed")
    monkeypatch.setenv("PRM_STUDIO_LEASE_S", "4")
    config = {**rl_config(tiny_policy, 8), "eval_every": 0, "log_rollout_fraction": 0.0}
    first = start_worker()
    run_id = cli_submit("rl", config, tmp_path)
    wait_for(lambda: len(policy_steps(run_id)) >= 2, timeout=180, what="two PPO steps")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, mid-run
    first.wait()

    start_worker()  # another worker: its heartbeat thread finds the lost run and requeues it

    def finished() -> bool:
        with read_session() as session:
            return RunStatus(crud.get_run(session, run_id=run_id).status).finished

    wait_for(finished, timeout=300, what="the resumed run to finish", every=1)
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
    assert run.status == RunStatus.succeeded, run.error
    assert run.attempts == 2
    counts = Counter(policy_steps(run_id))
    assert sorted(counts) == list(range(1, 9)), counts  # no step missing
    assert set(counts.values()) == {1}, counts  # and none logged twice
