"""The ``prm-train`` job through the real runner and sandbox on a throwaway SQLite database:
it resolves its dataset and policy from other runs' artifacts, stores losses, ``prm/…``
metrics, a loadable checkpoint artifact and pool samples with line scores; training resumed
from a checkpoint continues exactly; ``score_command`` prints a run's PRM scores for a file; bad
configs name the field."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from sqlalchemy import select
from transformers import AutoTokenizer

from app import crud
from app.db import read_session, session_scope
from app.orm import Artifact, LineScore, Metric, Run, RunStatus, Sample
from models.benchmark import BenchmarkConfig, generate
from models.evaluation import SampleRecord
from models.policy import build_tiny_policy, save_policy
from models.policy_config import TinyModelConfig
from models.prm import PRM_JSON, PooledResponse, load_prm, read_records, train_prm
from models.prm_config import PRMTrainConfig
from models.reporting import MemoryReporter
from models.tokenizer import train_tokenizer
from tests.conftest import require
from tests.test_prm import labelled_records
from workers.jobs_prm import pool_samples, score_command
from workers.registry import ConfigError, get_kind, validate_config
from workers.runner import execute_run

SMALL = BenchmarkConfig(n_train=24, n_test=4, min_steps=2, max_steps=3)


@pytest.fixture
def inputs(tmp_path) -> tuple[str, str]:
    """A tiny random policy folder and a JSONL dataset of labelled benchmark responses."""
    problems = generate(SMALL)
    tokenizer = train_tokenizer([p.prompt + (p.reference or "") for p in problems], 300)
    model = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), 0)
    policy = str(save_policy(model, tokenizer, tmp_path / "policy"))
    rng = random.Random(0)
    records = [r for p in problems if p.split == "train" for r in labelled_records(p, rng)]
    dataset = tmp_path / "prm.jsonl"
    dataset.write_text("".join(r.model_dump_json() + "\n" for r in records))
    return policy, str(dataset)


def run_with_artifact(kind: str, artifact_kind: str, path: str) -> int:
    """A finished run of ``kind`` holding one artifact (what prm-data / sft leave behind)."""
    with session_scope() as session:
        run = crud.create_run(session, kind=kind, config={})
        crud.add_artifact(session, run_id=run.id, kind=artifact_kind, path=path, step=1)
        return run.id


@pytest.mark.parametrize("ensemble", [1, 2])
def test_prm_train_job_stores_metrics_checkpoint_and_scored_samples(
    data_dir, inputs, tmp_path, ensemble
):
    require(os.path.exists("/usr/bin/bwrap"), "bubblewrap is not installed")
    policy, dataset = inputs
    config = {
        "ensemble": ensemble,
        "dataset_run_id": run_with_artifact("prm-data", "prm-dataset", dataset),
        "policy_run_id": run_with_artifact("sft", "checkpoint", policy),
        "steps": 12,
        "batch_size": 8,
        "eval_every": 6,
        "log_every": 3,
        "val_fraction": 0.25,
        "device": "cpu",
        "data": {"benchmark": SMALL.model_dump()},
        "rerank": {
            "n_problems": 2,
            "pool": {"n_samples": 4, "ks": [2, 4, 8], "max_new_tokens": 24, "batch_size": 8},
            "store_samples": 3,
        },
    }
    with session_scope() as session:
        run_id = crud.create_run(session, kind="prm-train", config=config).id
    assert execute_run(run_id) == "succeeded"

    with read_session() as session:
        run = session.get(Run, run_id)
        assert run.status == RunStatus.succeeded, run.error
        result = dict(run.result)
        names = set(session.scalars(select(Metric.name).where(Metric.run_id == run_id)))
        artifacts = session.execute(
            select(Artifact.kind, Artifact.path, Artifact.step).where(Artifact.run_id == run_id)
        ).all()
        samples = session.scalars(select(Sample).where(Sample.run_id == run_id)).all()
        scores = session.scalars(
            select(LineScore.score).where(LineScore.sample_id.in_([s.id for s in samples]))
        ).all()
    assert {"losses/prm_train", "losses/prm_val", "prm/auc", "prm/accuracy"} <= names
    assert {"prm/rerank@4/prm_min", "prm/rerank@4/random", "prm/rerank@4/oracle"} <= names
    assert result["policy"] == policy and result["dataset"] == dataset
    assert set(result["rerank"]["table"]) == {"2", "4"}  # K = 8 exceeds the pool of 4
    assert result["rerank"]["n_pool"] == 8 and "prm/auc" in result["metrics"]

    [(path, step)] = [(path, step) for kind, path, step in artifacts if kind == "prm-checkpoint"]
    assert step == result["best_step"]
    # the default checkpoint_every: only when a member's training ends; an ensemble's members
    ends = range(12, 12 * ensemble + 1, 12)
    assert {(kind, step) for kind, _, step in artifacts if kind != "prm-checkpoint"} == {
        ("prm-train-state", step) for step in ends
    } | {("prm-member", step) for step in ends if ensemble > 1}
    prm, _, loss = load_prm(path, device="cpu")
    assert loss == "mse" and len(getattr(prm, "members", [prm])) == ensemble
    assert len(samples) == 3 and all(s is not None for s in scores)  # a random policy's
    # completions are mostly empty: pool_samples' own test checks the lines

    code = tmp_path / "solution.py"
    task = generate(SMALL)[-1]
    code.write_text(task.prompt + (task.reference or ""))  # the whole program works too
    table = score_command(str(run_id), result["rerank"]["problem_set"], task.task_id, str(code))
    rows = table.splitlines()
    assert rows[0].split() == ["line", "score", "code"]
    assert len(rows) == 1 + (task.reference or "").count("\n") + 1
    assert rows[-1].startswith(("first code line scored below 0", "no code line"))


def test_pool_samples_carry_each_lines_prm_score():
    record = SampleRecord(
        task_id="t",
        problem_index=0,
        difficulty=None,
        mode="sampled",
        sample_index=3,
        completion="    a = 1\n\n    return a\n",
        program="def f():\n    a = 1\n\n    return a\n",
        verdict="passed",
        passed=True,
        tests_passed=1,
        tests_total=1,
        error_line=None,
        detail="",
        n_tokens=9,
        finish_reason="eos",
    )
    response = PooledResponse(0, True, [0.5, 0.1, -0.25], [False, True, False], record)
    [sample] = pool_samples(7, [response])
    assert sample.step == 7 and sample.sample_index == 3 and sample.passed
    assert [(line["line_no"], line["score"], line["text"]) for line in sample.lines] == [
        (1, 0.5, "    a = 1"),
        (2, 0.1, ""),
        (3, -0.25, "    return a"),
    ]


def test_prm_train_config_names_the_missing_sources():
    kind = get_kind("prm-train")
    with pytest.raises(ConfigError, match="dataset_run_id"):
        validate_config(kind, {"init_from": "/some/policy"})
    with pytest.raises(ConfigError, match="init_from"):
        validate_config(kind, {"dataset_path": "/some/data.jsonl"})
    with pytest.raises(ConfigError, match="patience"):
        validate_config(kind, {"dataset_path": "x", "init_from": "y", "patience": 0})


def test_score_command_explains_an_unknown_task(data_dir, inputs, tmp_path):
    from workers.problemsets import ensure_embedded

    with session_scope() as session:
        name = ensure_embedded(session, SMALL).name
    with pytest.raises(ValueError, match="no problem with task id 'nope'"):
        score_command(str(tmp_path), name, "nope", str(tmp_path / "code.py"))


class CrashAt(MemoryReporter):
    """A reporter whose job dies (as a killed worker would) when step ``step`` reports."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        if message.startswith(f"step {self.step}/"):
            raise RuntimeError("worker lost")


@pytest.mark.parametrize("ensemble", [1, 2])
def test_training_resumed_from_a_checkpoint_continues_exactly(inputs, tmp_path, ensemble):
    policy, dataset = inputs
    records = read_records(dataset)
    cfg = PRMTrainConfig(
        init_from=policy,
        ensemble=ensemble,  # 2: the crash is in the second member, the first one is kept
        steps=14,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        eval_every=3,
        patience=10,
        log_every=2,
        checkpoint_every=5,  # not a multiple of log_every: a half-filled loss window is saved
        val_fraction=0.25,
        device="cpu",
    )
    straight = MemoryReporter()
    expected = train_prm(cfg, records, straight, tmp_path / "straight")

    offset = (ensemble - 1) * cfg.steps  # the last member's step 0 is the run's step offset
    crashed, saved = CrashAt(offset + 12), []
    with pytest.raises(RuntimeError, match="worker lost"):
        train_prm(
            cfg,
            records,
            crashed,
            tmp_path / "crashed",
            on_checkpoint=lambda folder, step: saved.append((folder, step)),
        )
    (folder, step), *_ = reversed(saved)
    assert [s for _, s in saved] == [5, 10, 14, 19, 24][: 2 + 3 * (ensemble - 1)]
    assert step == offset + 10
    resumed = MemoryReporter()
    result = train_prm(cfg, records, resumed, tmp_path / "crashed", resume_dir=folder)

    kept = [entry for entry in crashed.history if entry[0] <= step]  # what the job keeps
    assert kept + resumed.history == straight.history  # every value, each step once
    assert (result.best_step, result.steps_done) == (expected.best_step, expected.steps_done)
    assert result.metrics == expected.metrics
    resumed_prm, _, _ = load_prm(result.checkpoint, device="cpu")
    straight_prm, _, _ = load_prm(expected.checkpoint, device="cpu")
    for (name, a), (_, b) in zip(
        resumed_prm.state_dict().items(), straight_prm.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_an_ensemble_trains_its_members_in_turn_on_one_split_and_scores_by_their_mean(
    inputs, tmp_path
):
    policy, dataset = inputs
    cfg = PRMTrainConfig(
        init_from=policy,
        ensemble=2,
        steps=6,
        batch_size=8,
        lr=3e-3,
        eval_every=3,
        log_every=2,
        val_fraction=0.25,
        device="cpu",
    )
    reporter = MemoryReporter()
    result = train_prm(cfg, read_records(dataset), reporter, tmp_path)

    # member i's step s is the run's step 6i + s: one axis, no step logged twice
    assert [s for s, _ in reporter.series("losses/prm_train")] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in reporter.series("losses/prm_val")] == [3, 6, 9, 12]
    assert "member 2/2" in reporter.messages[-1] and reporter.fractions[-1] == 1.0
    # the ensemble's metrics are logged once, where training ended
    assert {s for s, name, _ in reporter.history if name.startswith("prm/")} == {12}
    assert result.checkpoint == tmp_path / "ensemble" and result.best_step == 12

    meta = json.loads((result.checkpoint / PRM_JSON).read_text())
    members = {
        m: json.loads((result.checkpoint / m / PRM_JSON).read_text()) for m in meta["members"]
    }
    assert sorted(members) == ["member_0", "member_1"]
    assert [members[m]["config"]["seed"] for m in sorted(members)] == [0, 1]
    losses = [members[m]["metrics"]["prm/val_loss"] for m in meta["members"]]
    assert losses == sorted(losses)  # the lowest validation loss first (ValueInit's)
    assert len({m["metrics"]["prm/n_lines"] for m in members.values()}) == 1  # one split
    assert [m["seed"] for m in result.summary()["members"]] == [0, 1]
    assert result.steps_done == 12  # optimizer steps, both members'

    # the checkpoint scores by the mean of two different PRMs, and its metrics are the mean's
    ensemble, _, _ = load_prm(result.checkpoint, device="cpu")
    first, second = (m.head.weight for m in ensemble.members)
    assert not torch.equal(first, second)
    assert result.metrics["prm/val_loss"] not in losses
    assert result.best_val_loss == result.metrics["prm/val_loss"]


def test_an_rl_run_takes_an_ensemble_folder_as_its_prm(data_dir, inputs, tmp_path):
    from models.prm import save_ensemble
    from models.value_model import ValueModel
    from workers.runner import reference_errors

    policy, _ = inputs
    cfg = PRMTrainConfig(init_from=policy, ensemble=2)
    for seed in (0, 1):
        ValueModel.from_policy(policy, seed=seed).save(tmp_path / "ens" / f"member_{seed}")
    save_ensemble(
        tmp_path / "ens",
        ["member_0", "member_1"],
        AutoTokenizer.from_pretrained(policy),
        cfg,
        2,
        {},
    )
    rl = get_kind("rl")
    for prm, errors in (
        (tmp_path / "ens", []),
        (tmp_path / "ens" / "member_0", []),
        (tmp_path, ["prm: "]),
    ):
        found = reference_errors(
            validate_config(rl, {"variant": "dense", "policy": policy, "prm": str(prm)})
        )
        assert [e[: len("prm: ")] for e in found] == errors


def test_training_that_stopped_early_resumes_into_the_final_evaluation(inputs, tmp_path):
    policy, dataset = inputs
    cfg = PRMTrainConfig(
        init_from=policy,
        steps=40,
        batch_size=8,
        lr=0.5,  # far too high: the validation loss soon stops improving
        eval_every=2,
        patience=1,
        checkpoint_every=100,
        val_fraction=0.25,
        device="cpu",
    )
    records, saved = read_records(dataset), []
    first = train_prm(
        cfg, records, MemoryReporter(), tmp_path, on_checkpoint=lambda f, s: saved.append(f)
    )
    assert first.stopped_early and len(saved) == 1  # written when training ended
    reporter = MemoryReporter()
    again = train_prm(cfg, records, reporter, tmp_path, resume_dir=saved[0])
    assert (again.best_step, again.steps_done, again.stopped_early) == (
        first.best_step,
        first.steps_done,
        True,
    )
    assert again.metrics == first.metrics
    assert {name for _, name, _ in reporter.history} == set(first.metrics)  # no training step
