"""Multi-process training (``models.distributed``) on CPU: 2 processes on gloo, rank 0 in the
test's process and rank 1 a subprocess, as a job runs them.

PRM training in 2 processes gives the loss curve of 1 process; PPO in 2 processes runs end to
end with the same policy on both ranks and globally whitened advantages; a rank that fails
fails the whole run promptly, naming the rank, and no process is left behind."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from sqlalchemy import select

from app import crud
from app.db import read_session, session_scope
from app.orm import Artifact
from models import ppo
from models.benchmark import BenchmarkConfig, generate
from models.distributed import RankFailed, launch, rank
from models.policy import build_tiny_policy, save_policy
from models.policy_config import TinyModelConfig
from models.ppo_config import PPOConfig
from models.prm import train_prm
from models.prm_config import PRMTrainConfig
from models.problems import Problem
from models.reporting import MemoryReporter
from models.tokenizer import train_tokenizer
from tests.conftest import BWRAP, require
from tests.test_ppo import fake_sandbox
from tests.test_prm import labelled_records
from tests.test_prm_job import run_with_artifact
from tests.test_rl_job import crud_error, metric_steps, rl_config
from workers.runner import execute_run

TEXT = ["def f(xs):\n    ys = [x + 1 for x in xs]\n    return ys\n"] * 20
PROBLEMS = [  # prompts that end mid-line, so that responses have several tokens
    Problem(task_id=f"t{i}", prompt=f"def f(xs):\n    ys = [x + {i}", tests=["assert f([1])"])
    for i in range(4)
]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on two cores: one thread each (the subprocesses inherit it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = train_tokenizer(TEXT, 300)
    policy = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), 0)
    return save_policy(policy, tokenizer, tmp_path_factory.mktemp("tiny") / "policy")


def child_ranks() -> list[str]:
    """Command lines of this process's children that are ranks."""
    out = subprocess.run(
        ["ps", "--ppid", str(os.getpid()), "-o", "args="], capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if "models.distributed" in line]


# ----------------------------------------------------------------------------- PRM


def test_prm_training_in_two_processes_follows_the_one_process_loss_curve(policy_dir, tmp_path):
    problems = generate(BenchmarkConfig(n_train=30, n_test=0, min_steps=2, max_steps=3))
    rng = random.Random(0)
    records = [record for p in problems for record in labelled_records(p, rng)]
    cfg = PRMTrainConfig(
        init_from=str(policy_dir),
        steps=18,
        batch_size=7,  # an odd batch: the processes hold 4 and 3 responses
        lr=3e-3,
        warmup_steps=2,
        eval_every=3,
        patience=1,
        log_every=1,
        checkpoint_every=0,
        val_fraction=0.2,
        device="cpu",
        rank_weight=0.0,  # exact for the pointwise loss; ranking pairs stay within a share
        lm_weight=1.0,  # the LM loss's mean over all processes' tokens: exact too
    )
    alone, together = MemoryReporter(), MemoryReporter()
    one = train_prm(cfg, records, alone, tmp_path / "one")
    two = launch(
        2,
        train_prm,
        {"cfg": cfg.model_copy(update={"processes": 2}), "records": records, "out_dir": tmp_path},
        reporter=together,
        device="cpu",
        timeout_s=120,
    )
    for name in ("losses/prm_train", "losses/prm_val", "losses/prm_lm"):
        steps, values = zip(*alone.series(name), strict=True)
        assert [step for step, _ in together.series(name)] == list(steps)
        np.testing.assert_allclose([v for _, v in together.series(name)], values, rtol=1e-4)
    # early stopping (rank 0's decision, broadcast) ends both processes at the same step
    assert one.stopped_early and one.steps_done < cfg.steps
    assert (two.best_step, two.steps_done, two.stopped_early) == (
        one.best_step,
        one.steps_done,
        True,
    )
    assert two.metrics["prm/auc"] == pytest.approx(one.metrics["prm/auc"], abs=1e-3)


@pytest.mark.parametrize("ensemble", [1, 2])
def test_a_prm_train_job_with_two_processes_logs_and_checkpoints_once(
    data_dir, policy_dir, ensemble
):
    problems = generate(BenchmarkConfig(n_train=20, n_test=0, min_steps=2, max_steps=3))
    rng = random.Random(0)
    dataset = data_dir / "prm.jsonl"
    dataset.write_text(
        "".join(r.model_dump_json() + "\n" for p in problems for r in labelled_records(p, rng))
    )
    config = {
        "dataset_run_id": run_with_artifact("prm-data", "prm-dataset", str(dataset)),
        "policy_run_id": run_with_artifact("sft", "checkpoint", str(policy_dir)),
        "ensemble": ensemble,
        "steps": 6,
        "batch_size": 4,
        "eval_every": 3,
        "log_every": 1,
        "checkpoint_every": 3,
        "val_fraction": 0.25,
        "device": "cpu",
        "processes": 2,
        "rerank": {"n_problems": 0},
    }
    with session_scope() as session:
        run_id = crud.create_run(session, kind="prm-train", config=config).id
    assert execute_run(run_id) == "succeeded", crud_error(run_id)
    steps = list(range(1, 6 * ensemble + 1))  # member i's step s is the run's 6i + s
    assert metric_steps(run_id, "losses/prm_train") == steps
    assert metric_steps(run_id, "losses/prm_val") == steps[2::3]
    with read_session() as session:
        kinds = session.execute(
            select(Artifact.kind, Artifact.step).where(Artifact.run_id == run_id)
        )
        members = [("prm-member", step) for step in steps[5::6]] if ensemble > 1 else []
        assert sorted(kinds) == sorted(
            [("prm-checkpoint", 6 * ensemble), *members]
            + [("prm-train-state", step) for step in steps[2::3]]
        )


# ----------------------------------------------------------------------------- PPO


def ppo_rank(*, reporter, capture: Path, **kwargs) -> ppo.PPOResult:
    """``train_ppo`` on one rank, keeping for the test what it cannot see from outside: the
    final policy weights (caught on their way into the sampler) and every whitened batch."""
    policies, whitened = [], []
    make_sampler, masked_whiten = ppo.make_sampler, ppo.masked_whiten

    def catch_policy(model, *args, **kw):
        policies.append(model)
        return make_sampler(model, *args, **kw)

    def catch_whitened(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        white = masked_whiten(x, mask)
        whitened.append(white[mask.bool()])
        return white

    with (
        mock.patch.object(ppo, "make_sampler", catch_policy),
        mock.patch.object(ppo, "masked_whiten", catch_whitened),
    ):
        result = ppo.train_ppo(reporter=reporter, **kwargs)
    state = {"policy": policies[0].state_dict(), "whitened": whitened}
    torch.save(state, capture / f"rank{rank()}.pt")
    return result


def ppo_kwargs(policy: Path, out: Path, **overrides) -> dict:
    cfg = PPOConfig(
        variant="baseline",
        steps=2,
        problems_per_step=2,
        samples_per_problem=2,
        minibatch_size=2,
        max_new_tokens=16,
        eval_every=0,
        eval_problems=2,
        eval_samples=0,
        checkpoint_every=0,
        log_rollout_fraction=1.0,
        processes=2,
        device="cpu",
    )
    return {
        "cfg": cfg,
        "policy_dir": policy,
        "prm_dir": None,
        "train_problems": PROBLEMS,
        "eval_problems": PROBLEMS,
        "run_batch": fake_sandbox,
        "out_dir": out,
        **overrides,
    }


def test_ppo_in_two_processes_keeps_one_policy_and_whitens_globally(policy_dir, tmp_path):
    reporter = MemoryReporter()
    result = launch(
        2,
        ppo_rank,
        {**ppo_kwargs(policy_dir, tmp_path / "out"), "capture": tmp_path},
        reporter=reporter,
        device="cpu",
        timeout_s=120,
    )
    # rank 0 reported every step once, evaluated and saved
    assert [step for step, _ in reporter.series("losses/policy")] == [1, 2]
    assert [p.name for p in result.checkpoints] == ["step_000002"]
    assert "eval/pass@1_greedy" in result.final_eval

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    before = ppo.load_policy(policy_dir)[0].state_dict()
    for name, weight in ranks[0]["policy"].items():
        torch.testing.assert_close(ranks[1]["policy"][name], weight, rtol=0, atol=0)
    assert any(not torch.equal(ranks[0]["policy"][n], w) for n, w in before.items())

    for step in range(2):  # advantages are whitened over both ranks' tokens together
        per_rank = [r["whitened"][step] for r in ranks]
        both = torch.cat(per_rank)
        assert abs(float(both.mean())) < 1e-5
        assert float(both.pow(2).mean()) == pytest.approx(1.0, abs=1e-3)
        # not each rank on its own (which would also give a global mean of 0)
        assert max(abs(float(x.mean())) for x in per_rank) > 1e-3


def test_an_rl_job_with_two_processes_reports_each_step_once(data_dir, tiny_policy):
    require(BWRAP.exists(), "bubblewrap is not installed: the rl job runs the sandbox")
    config = {**rl_config(tiny_policy, 2), "processes": 2, "device": "cpu"}
    with session_scope() as session:
        run_id = crud.create_run(session, kind="rl", config=config).id
    assert execute_run(run_id) == "succeeded", crud_error(run_id)
    assert metric_steps(run_id, "losses/policy") == [1, 2]
    assert metric_steps(run_id, "eval/pass@1_greedy") == [0, 1, 2]
    with read_session() as session:
        steps = session.scalars(select(Artifact.step).where(Artifact.run_id == run_id))
        assert sorted(steps) == [1, 2]


# ----------------------------------------------------------------------------- failures


def sandbox_down_on_rank_1(requests: list[dict]) -> list[SimpleNamespace]:
    if rank() == 1:
        raise ConnectionError("the sandbox of rank 1 is down")
    return fake_sandbox(requests)


def test_a_failing_rank_fails_the_run_promptly_and_names_itself(policy_dir, tmp_path):
    started = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 2 failed: ConnectionError: the sandbox"):
        launch(
            2,
            ppo.train_ppo,
            ppo_kwargs(policy_dir, tmp_path, run_batch=sandbox_down_on_rank_1),
            reporter=MemoryReporter(),
            device="cpu",
            timeout_s=300,  # far longer than the test: the failure must not wait for it
        )
    assert time.monotonic() - started < 120
    assert child_ranks() == []


class Cancelled(Exception):
    pass


class CancelOnFirstProgress(MemoryReporter):
    def progress(self, fraction: float, message: str = "") -> None:
        raise Cancelled("the user cancelled the run")


def test_rank_0_failing_raises_its_own_error_and_ends_the_others(policy_dir, tmp_path):
    with pytest.raises(Cancelled):
        launch(
            2,
            ppo.train_ppo,
            ppo_kwargs(policy_dir, tmp_path),
            reporter=CancelOnFirstProgress(),
            device="cpu",
            timeout_s=300,
        )
    assert child_ranks() == []


def explode(message: str) -> None:
    raise ImportError(message)


class LoadsOnlyInRank0:
    """Unpickling fails (as a module missing on the subprocesses' path would)."""

    def __reduce__(self):
        return explode, ("no module named 'elsewhere'",)


def noop(*, reporter, payload: LoadsOnlyInRank0) -> None:
    pass


def test_a_rank_that_cannot_start_fails_the_run_without_waiting_for_the_timeout():
    started = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 2 failed: ImportError: no module"):
        launch(2, noop, {"payload": LoadsOnlyInRank0()}, reporter=MemoryReporter(), timeout_s=300)
    assert time.monotonic() - started < 90
    assert child_ranks() == []


def test_more_processes_than_gpus_is_an_error_naming_the_field():
    with pytest.raises(ValueError, match="processes: 2 processes take one GPU each"):
        launch(2, noop, {}, reporter=MemoryReporter(), device="cuda")


def threads_in_use(*, reporter) -> int:
    return torch.get_num_threads()


def test_rank_0_takes_its_share_of_the_cores_while_the_others_run(monkeypatch):
    """The job's process may use every core; beside rank 1 it uses at most OMP_NUM_THREADS
    threads, as the subprocesses do, never more than it had, and gets its own count back."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert launch(2, threads_in_use, {}, reporter=MemoryReporter(), device="cpu") == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(1)  # a job given fewer threads than the share keeps its count
        assert launch(2, threads_in_use, {}, reporter=MemoryReporter(), device="cpu") == 1
    finally:
        torch.set_num_threads(before)
