"""Crash safety with real processes: a worker killed with SIGKILL in the middle of an ``rl``, a
``prm-train`` or a ``prm-data`` run leaves a lost run (its heartbeat stops) that is queued again —
by another worker's retry policy or by the user's ``prm-studio resume`` — and continues from its
last checkpoint: every step's metrics logged exactly once, no labelled response stored twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import select

from app import crud
from app.db import read_session
from app.orm import Artifact, Metric, Run, RunStatus, Sample
from models.benchmark import BenchmarkConfig, generate
from tests.conftest import BWRAP, REPO, SMALL_BENCHMARK, require, wait_for
from tests.test_jobs import cli_submit
from tests.test_prm import labelled_records
from tests.test_rl_job import rl_config

pytestmark = pytest.mark.slow
LEASE_S = 4  # seconds without a heartbeat before a run is lost


def metric_steps(run_id: int, name: str) -> list[int]:
    with read_session() as session:
        query = select(Metric.step).where(Metric.run_id == run_id, Metric.name == name)
        return list(session.scalars(query))


def artifact_steps(run_id: int, kind: str) -> list[int]:
    with read_session() as session:
        query = select(Artifact.step).where(Artifact.run_id == run_id, Artifact.kind == kind)
        return list(session.scalars(query))


def load_run(run_id: int) -> Run:
    with read_session() as session:
        return crud.get_run(session, run_id=run_id)


def wait_until_finished(run_id: int, timeout: float) -> Run:
    wait_for(
        lambda: RunStatus(load_run(run_id).status).finished,
        timeout=timeout,
        what=f"run {run_id} to finish",
        every=1,
    )
    return load_run(run_id)


def kill_9(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool child, mid-run
    worker.wait()


def assert_each_once(steps: list[int], expected: list[int]) -> None:
    counts = Counter(steps)
    assert sorted(counts) == expected, counts  # no step missing
    assert set(counts.values()) == {1}, counts  # and none logged twice


def test_kill_9_mid_rl_run_resumes_from_the_checkpoint_on_another_worker(
    data_dir,
    start_worker,
    tiny_policy,
    monkeypatch,
    tmp_path,
):
    require(BWRAP.exists(), "bubblewrap is not installed")
    monkeypatch.setenv("PRM_STUDIO_LEASE_S", str(LEASE_S))
    config = {**rl_config(tiny_policy, 8), "eval_every": 0, "log_rollout_fraction": 0.0}
    first = start_worker()
    run_id = cli_submit("rl", config, tmp_path)
    wait_for(
        lambda: len(metric_steps(run_id, "losses/policy")) >= 2, timeout=180, what="two PPO steps"
    )
    kill_9(first)

    start_worker()  # another worker: its heartbeat thread finds the lost run and requeues it
    run = wait_until_finished(run_id, timeout=300)
    assert run.status == RunStatus.succeeded, run.error
    assert run.attempts == 2
    assert_each_once(metric_steps(run_id, "losses/policy"), list(range(1, 9)))


# an ensemble of two PRMs of 150 steps each: the run's steps 1–150 are member 0's, 151–300
# member 1's, and the kill comes in member 1, which must keep member 0 and train nothing twice
PRM_STEPS, PRM_CHECKPOINT_EVERY, PRM_EVAL_EVERY = 150, 40, 20
PRM_CHECKPOINTS = [40, 80, 120, 150, 190, 230, 270, 300]


def test_kill_9_mid_prm_train_run_resumes_from_its_checkpoint_on_another_worker(
    data_dir, start_worker, tiny_policy, monkeypatch, tmp_path
):
    monkeypatch.setenv("PRM_STUDIO_LEASE_S", str(LEASE_S))
    problems = generate(BenchmarkConfig(**{**SMALL_BENCHMARK, "n_train": 24}))
    rng = random.Random(0)
    records = [r for p in problems if p.split == "train" for r in labelled_records(p, rng)]
    dataset = data_dir / "prm.jsonl"
    dataset.write_text("".join(r.model_dump_json() + "\n" for r in records))
    config = {
        "dataset_path": str(dataset),
        "init_from": tiny_policy,
        "steps": PRM_STEPS,
        "ensemble": 2,
        "batch_size": 8,
        "log_every": 1,
        "eval_every": PRM_EVAL_EVERY,
        "patience": PRM_STEPS,  # no early stop: every step is trained
        "checkpoint_every": PRM_CHECKPOINT_EVERY,
        "val_fraction": 0.25,
        "device": "cpu",
        "rerank": {"n_problems": 0},
    }
    first = start_worker()
    run_id = cli_submit("prm-train", config, tmp_path)
    wait_for(
        lambda: len(artifact_steps(run_id, "prm-train-state")) >= 5,
        timeout=240,
        what="member 1's first training checkpoint",
    )
    kill_9(first)
    lost_at = max(metric_steps(run_id, "losses/prm_train"))
    assert lost_at < 2 * PRM_STEPS, "the run finished before the kill: make it longer"
    wait_for(
        lambda: crud.is_lost(load_run(run_id), lease_s=LEASE_S),
        timeout=30,
        what="the heartbeat to go stale",
    )

    start_worker()  # its retry policy requeues the lost run, and it resumes
    run = wait_until_finished(run_id, timeout=300)
    assert run.status == RunStatus.succeeded, run.error
    assert run.attempts == 2
    steps = list(range(1, 2 * PRM_STEPS + 1))
    assert_each_once(metric_steps(run_id, "losses/prm_train"), steps)
    evals = [*range(PRM_EVAL_EVERY, PRM_STEPS, PRM_EVAL_EVERY), PRM_STEPS]  # and at the end
    evals += [PRM_STEPS + step for step in evals]  # member 1's
    assert_each_once(metric_steps(run_id, "losses/prm_val"), evals)
    assert_each_once(metric_steps(run_id, "charts/n_train_records"), [0])
    assert_each_once(metric_steps(run_id, "prm/auc"), [2 * PRM_STEPS])
    assert_each_once(artifact_steps(run_id, "prm-train-state"), PRM_CHECKPOINTS)
    assert_each_once(artifact_steps(run_id, "prm-member"), [PRM_STEPS, 2 * PRM_STEPS])
    assert_each_once(artifact_steps(run_id, "prm-checkpoint"), [2 * PRM_STEPS])
    assert len(run.result["members"]) == 2


def labelled_keys(run_id: int) -> list[tuple[str, str, int]]:
    with read_session() as session:
        metas = session.scalars(select(Sample.meta).where(Sample.run_id == run_id))
        return [(m["source_checkpoint"], m["task_id"], m["response_index"]) for m in metas]


PRM_DATA_PROBLEMS, PRM_DATA_RESPONSES = 8, 6


def test_kill_9_mid_prm_data_run_resumes_on_the_users_request_without_duplicates(
    data_dir, start_worker, tiny_policy, monkeypatch, tmp_path
):
    require(BWRAP.exists(), "bubblewrap is not installed")
    monkeypatch.setenv("PRM_STUDIO_LEASE_S", str(LEASE_S))
    config = {
        "checkpoints": [tiny_policy],
        "data": {"benchmark": SMALL_BENCHMARK},
        "max_problems": PRM_DATA_PROBLEMS,
        "n_responses": PRM_DATA_RESPONSES,
        "k": 4,
        "chunk_size": 2,
        "max_new_tokens": 32,
        "problems_per_block": 1,
        "selection": "full",
        "synthetic_mistakes": 2,
        "device": "cpu",
    }
    # the sampled responses, then each problem's reference and two one-line mistakes
    total = PRM_DATA_PROBLEMS * (PRM_DATA_RESPONSES + 3)
    first = start_worker()
    run_id = cli_submit("prm-data", config, tmp_path)
    wait_for(lambda: labelled_keys(run_id), timeout=180, what="a stored labelled response")
    kill_9(first)
    stored = len(labelled_keys(run_id))
    assert stored < total, "the run finished before the kill: make it longer"
    wait_for(
        lambda: crud.is_lost(load_run(run_id), lease_s=LEASE_S),
        timeout=30,
        what="the heartbeat to go stale",
    )

    resumed = subprocess.run(  # the user's resume; no worker is alive to retry it
        [sys.executable, "-m", "app.cli", "resume", str(run_id)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "will resume it" in resumed.stdout
    start_worker()
    run = wait_until_finished(run_id, timeout=300)
    assert run.status == RunStatus.succeeded, run.error
    assert run.attempts == 2
    assert run.result["resumed_with"] >= stored  # what the lost attempt stored was kept
    keys = labelled_keys(run_id)
    assert len(keys) == len(set(keys)) == total  # every response labelled once
    assert run.result["selected"] == total  # and exported once
    with read_session() as session:
        names = session.scalars(select(Metric.name).where(Metric.run_id == run_id)).all()
    assert len(names) == len(set(names))  # each metric once
