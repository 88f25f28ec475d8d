"""The prm-data job end to end: a tiny policy, the real sandbox, a throwaway SQLite database,
through ``workers.runner.execute_run``; stored rows, the exported dataset, metrics, the source
checkpoints, and a resume after a crash that yields the very same dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app import crud
from app.db import read_session, session_scope
from app.orm import Artifact, LineScore, Metric, Run, RunStatus, Sample
from models.benchmark import BenchmarkConfig, generate
from models.labeling import SYNTHETIC, synthetic_mistakes
from models.policy import build_tiny_policy, save_policy
from models.policy_config import TinyModelConfig
from models.tokenizer import train_tokenizer
from tests.conftest import require
from tests.test_labeling import ReferenceSampler
from workers import jobs_prm_data, runner
from workers.jobs_prm_data import (
    PrmDataJobConfig,
    evenly_spaced,
    export_prm_dataset,
    resolve_checkpoints,
)
from workers.runner import execute_run

BENCH = BenchmarkConfig(n_train=12, n_test=2, min_steps=2, max_steps=4)
N_PROBLEMS, N_RESPONSES = 4, 2


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> list[str]:
    """Two tiny random policies: plumbing (loading, sampling, storing), not skill."""
    folder = tmp_path_factory.mktemp("policies")
    problems = generate(BENCH)
    tokenizer = train_tokenizer([p.prompt + (p.reference or "") for p in problems], 300)
    shape = TinyModelConfig(n_layer=1, n_embd=32, n_head=2)
    return [
        str(save_policy(build_tiny_policy(tokenizer, shape, seed), tokenizer, folder / f"p{seed}"))
        for seed in (0, 1)
    ]


def job_config(policies: list[str], **changes) -> dict:
    return {
        "checkpoints": policies,
        "data": {"benchmark": BENCH.model_dump()},
        "max_problems": N_PROBLEMS,
        "n_responses": N_RESPONSES,
        "k": 4,
        "chunk_size": 2,
        "max_new_tokens": 48,
        "problems_per_block": 2,
        "device": "cpu",
        **changes,
    }


def new_run(config: dict) -> int:
    with session_scope() as session:
        return crud.create_run(session, kind="prm-data", config=config).id


def exported(run_id: int) -> list[dict]:
    with read_session() as session:
        path = session.scalar(
            select(Artifact.path).where(Artifact.run_id == run_id, Artifact.kind == "prm-dataset")
        )
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def count(model, run_id: int) -> int:
    with read_session() as session:
        query = select(func.count()).select_from(model)
        if model is LineScore:
            query = query.join(Sample, LineScore.sample_id == Sample.id)
            return session.scalar(query.where(Sample.run_id == run_id)) or 0
        return session.scalar(query.where(model.run_id == run_id)) or 0


def needs_sandbox() -> None:
    require(os.path.exists("/usr/bin/bwrap"), "bubblewrap (/usr/bin/bwrap) is not installed")


def test_the_job_stores_labels_and_exports_the_dataset(data_dir, policies, tmp_path):
    needs_sandbox()
    run_id = new_run(
        job_config(
            policies,
            selection="full",
            synthetic_mistakes=2,
            synthetic_problems=12,
            misplaced_arguments=1,
        )
    )
    assert execute_run(run_id) == "succeeded"
    with read_session() as session:
        run = session.get(Run, run_id)
        assert run.status == RunStatus.succeeded, run.error
        samples = session.scalars(select(Sample).where(Sample.run_id == run_id)).all()
        metrics = {m.name: m.value for m in session.scalars(select(Metric))}

    # every policy's responses, then the reference, two one-line mistakes and a misplaced
    # argument (where the problem has one to move) of each of the 12 train problems: the 4
    # sampled and 8 that no policy was asked to answer
    train = [p for p in generate(BENCH) if p.meta["split"] == "train"]
    synthetic = len(synthetic_mistakes(train, 2, seed=0, misplaced_arguments=1))
    assert 12 * 3 < synthetic <= 12 * 4
    total = len(policies) * N_PROBLEMS * N_RESPONSES + synthetic
    assert len(samples) == total
    keys = {
        (s.meta["source_checkpoint"], s.meta["task_id"], s.meta["response_index"]) for s in samples
    }
    assert len(keys) == total
    assert sum(s.meta["search"] == SYNTHETIC for s in samples) == synthetic
    train_ids = [p.task_id for p in train]
    assert {s.meta["task_id"] for s in samples if s.meta["search"] == SYNTHETIC} == set(train_ids)
    assert {s.meta["task_id"] for s in samples if s.meta["search"] != SYNTHETIC} == set(
        train_ids[:N_PROBLEMS]
    )
    assert metrics["labeling/synthetic_responses"] == synthetic
    for sample in samples:
        meta = sample.meta
        assert {"m_star", "labels", "completions_sampled", "tests_run", "probes"} <= set(meta)
        sampled = meta["search"] != SYNTHETIC
        assert meta["tests_run"] == (1 + meta["completions_sampled"] if sampled else 0)
        assert meta["ground_truth"] is not None  # the embedded benchmark knows every line

    rows = exported(run_id)
    assert len(rows) == total  # selection "full"
    for row in rows:
        assert set(row) == {
            "prompt",
            "completions",
            "labels",
            "m_star",
            "passed",
            "completions_sampled",
            "source_checkpoint",
            "task_id",
        }
        assert len(row["completions"]) == len(row["labels"])
        # the response's own outcome: a passing response has no line labelled wrong
        assert not row["passed"] or all(label >= 0 for label in row["labels"])
    again = export_prm_dataset(run_id, tmp_path / "cli.jsonl")
    assert [json.loads(x) for x in (tmp_path / "cli.jsonl").read_text().splitlines()] == rows
    assert Path(again["trl_path"]).is_file()

    for name in (
        "completions_per_failing_mean",
        "completions_per_failing_p95",
        "linear_scan_completions_per_failing_mean",
        "rescued_fraction",
        "label_pos_fraction",
        "label_neg_fraction",
        "label_neutral_fraction",
        "sampling_s",
        "execution_s",
        "audit/exact_match",
        "audit/mean_offset",
    ):
        assert f"labeling/{name}" in metrics, name
    assert (
        0
        <= metrics["labeling/completions_per_failing_mean"]
        <= (metrics["labeling/linear_scan_completions_per_failing_mean"])
    )


@pytest.fixture
def noisy_policy(monkeypatch):
    """Every checkpoint name loads a ReferenceSampler that slips on 40% of its completions."""
    problems = generate(BENCH)
    monkeypatch.setattr(
        jobs_prm_data,
        "policy_sampler",
        lambda device, batch_size: lambda name: ReferenceSampler(problems, 0.4, name),
    )
    return ["noisy-a", "noisy-b"]


def test_labels_of_a_noisy_policy_follow_the_first_wrong_line(data_dir, noisy_policy):
    needs_sandbox()
    run_id = new_run(job_config(noisy_policy, k=8, selection="revised-only"))
    assert execute_run(run_id) == "succeeded"
    with read_session() as session:
        metrics = {m.name: m.value for m in session.scalars(select(Metric))}
        samples = session.scalars(select(Sample).where(Sample.run_id == run_id)).all()
        for sample in samples:
            lines = session.scalars(
                select(LineScore)
                .where(LineScore.sample_id == sample.id)
                .order_by(LineScore.line_no)
            ).all()
            assert [line.label for line in lines] == sample.meta["labels"]
            assert [line.ground_truth for line in lines] == sample.meta["ground_truth"]
            assert (
                "".join(line.text + "\n" for line in lines)
                == sample.code[sample.meta["prompt_chars"] :]
            )
    failing = [s for s in samples if not s.passed]
    assert failing and len(failing) < len(samples)
    # a correct prefix is completed correctly 60% of the time: best-of-8 nearly always finds it
    assert metrics["labeling/audit/exact_match"] >= 0.9
    assert metrics["labeling/rescued_fraction"] > 0
    rows = exported(run_id)
    kept = [
        s
        for s in samples
        if s.passed or s.meta["m_star"] >= 1 or s.meta["search"] == SYNTHETIC  # kept whole
    ]
    assert len(rows) == len(kept) == metrics["labeling/selected/responses"]


def test_a_resumed_run_gives_the_same_dataset(data_dir, noisy_policy, monkeypatch):
    needs_sandbox()
    config = job_config(noisy_policy, selection="full")
    straight = new_run(config)
    assert execute_run(straight) == "succeeded"

    crashed = new_run(config)
    calls = 0
    original = runner.JobContext.progress

    def crash_after_five(self, fraction, message=""):
        nonlocal calls
        calls += 1
        if calls > 5:
            raise RuntimeError("worker lost")
        original(self, fraction, message)

    monkeypatch.setattr(runner.JobContext, "progress", crash_after_five)
    assert execute_run(crashed) == "failed"
    stored = count(Sample, crashed)
    assert 0 < stored < len(noisy_policy) * N_PROBLEMS * N_RESPONSES
    monkeypatch.setattr(runner.JobContext, "progress", original)
    with session_scope() as session:  # what a retry of the lost run does
        session.execute(update(Run).where(Run.id == crashed).values(status=RunStatus.queued))
    assert execute_run(crashed) == "succeeded"

    assert count(Sample, crashed) == count(Sample, straight)
    assert count(LineScore, crashed) == count(LineScore, straight)
    assert exported(crashed) == exported(straight)
    assert any(row["completions_sampled"] for row in exported(crashed))  # probes were sampled
    with read_session() as session:
        result = session.get(Run, crashed).result
    assert result["resumed_with"] == stored


def test_sources_sft_runs_and_evenly_spaced_rl_checkpoints(data_dir, tmp_path):
    assert evenly_spaced([str(i) for i in range(8)], 4) == ["1", "3", "5", "7"]
    assert evenly_spaced(["a", "b"], 4) == ["a", "b"]
    with session_scope() as session:
        rl = crud.create_run(session, kind="rl", config={}).id
        sft = crud.create_run(session, kind="sft", config={}).id
        for step in range(1, 11):
            folder = tmp_path / f"rl/step_{step}"
            if step != 10:  # the last one is incomplete: no policy/ folder
                (folder / "policy").mkdir(parents=True)
            crud.add_artifact(session, run_id=rl, kind="checkpoint", path=str(folder), step=step)
        for step in (5, 9):
            crud.add_artifact(
                session, run_id=sft, kind="checkpoint", path=f"/sft/step_{step}", step=step
            )
    rl_cfg = PrmDataJobConfig(rl_run_id=rl)
    assert resolve_checkpoints(rl_cfg) == [
        str(tmp_path / f"rl/step_{step}/policy") for step in (3, 5, 7, 9)
    ]
    assert resolve_checkpoints(PrmDataJobConfig(sft_run_ids=[sft])) == ["/sft/step_9"]
    with pytest.raises(ValueError, match="exactly one source"):
        PrmDataJobConfig()
    with pytest.raises(ValueError, match="exactly one source"):
        PrmDataJobConfig(checkpoints=["a"], rl_run_id=1)
