"""The paper's pipeline at a micro budget, end to end through a real worker: every stage runs
in order, and running ``reproduce`` again reuses what finished."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app import crud
from app.db import read_session
from app.orm import RunStatus
from tests.conftest import BWRAP, REPO, require, wait_for
from workers.pipeline import ReproduceConfig, plan

pytestmark = pytest.mark.slow


def reproduce_cli() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "reproduce", "--budget", "micro", "--seeds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.strip().splitlines()[1:]  # one line per stage


def test_plan_orders_stages_after_their_inputs():
    stages = plan(ReproduceConfig(seeds=3))
    seen: set[str] = set()
    for stage in stages:
        assert set(stage.refs.values()) <= seen, stage.key
        seen.add(stage.key)
    rl = [s for s in stages if s.kind == "rl"]
    assert len(rl) == 4 * 3  # the seed-0 baseline doubles as the PRM data's source
    assert {s.config["variant"] for s in rl} == {
        "baseline",
        "dense",
        "value-init",
        "dense+value-init",
    }


def test_the_mbpp_preset_also_scores_every_ppo_run_on_humaneval():
    stages = plan(ReproduceConfig(preset="mbpp", policy="/models/coder", seeds=2))
    rl = [s.key for s in stages if s.kind == "rl"]
    evals = {s.refs["policy_run_id"]: s for s in stages if s.kind == "eval"}
    assert sorted(evals) == sorted(rl) and len(rl) == 4 * 2
    assert all(s.config["data"] == {"problem_set": "humaneval"} for s in evals.values())
    assert not any(s.kind == "eval" for s in plan(ReproduceConfig(seeds=2)))  # embedded: none


def test_micro_reproduction_runs_through_a_real_worker_and_reuses_finished_stages(
    data_dir, start_worker
):
    require(BWRAP.exists(), "bubblewrap is not installed")
    start_worker()
    first = reproduce_cli()
    assert len(first) == 7 and all("submitted" in line for line in first)

    def group_finished() -> bool:
        with read_session() as session:
            runs = crud.list_runs(session, group_name="reproduce-embedded-micro")
            return all(RunStatus(run.status).finished for run in runs)

    wait_for(group_finished, timeout=900, what="the micro pipeline to finish", every=2)
    with read_session() as session:
        runs = crud.list_runs(session, group_name="reproduce-embedded-micro")
        outcome = {run.name: (run.status, run.error) for run in runs}
    assert all(status == RunStatus.succeeded for status, _ in outcome.values()), outcome

    again = reproduce_cli()
    assert len(again) == 7 and all("reused" in line for line in again)
