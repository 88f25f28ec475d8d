"""Evaluation: the unbiased pass@k estimator, scoring by difficulty, evaluate() end to end with
a stand-in sandbox, and the sft → eval jobs through the runner with the real sandbox."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, func, select, update

from app import crud
from app.db import read_session, session_scope
from app.orm import Artifact, Metric, Run, RunStatus, Sample
from models.evaluation import SampleRecord, evaluate, pass_at_k, score
from models.policy import build_tiny_policy
from models.policy_config import EvalConfig, TinyModelConfig
from models.problems import Problem
from models.reporting import MemoryReporter
from models.tokenizer import train_tokenizer
from tests.conftest import require
from workers.runner import execute_run


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 3, 1, 0.3),  # pass@1 is the fraction passed
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 1, 3, 1 - 4 / 10),  # 1 - C(4,3)/C(5,3)
        (4, 2, 3, 1.0),  # fewer than k failures: some k-subset always passes
        (200, 0, 100, 0.0),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 100/200
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def problem(i: int, difficulty: int) -> Problem:
    return Problem(
        task_id=f"t{i}",
        prompt=f"def f{i}(x):\n",
        entry_point=f"f{i}",
        tests=[f"assert f{i}(1) == 1"],
        reference="    return x\n",
        meta={"difficulty": difficulty},
    )


def record(i: int, difficulty: int, mode: str, s: int, passed: bool) -> SampleRecord:
    return SampleRecord(
        task_id=f"t{i}",
        problem_index=i,
        difficulty=difficulty,
        mode=mode,
        sample_index=s,
        completion="",
        program="",
        verdict="passed" if passed else "failed",
        passed=passed,
        tests_passed=int(passed),
        tests_total=1,
        error_line=None,
        detail="",
        n_tokens=0,
        finish_reason="eos",
    )


def test_scores_by_difficulty():
    problems = [problem(0, 2), problem(1, 2), problem(2, 5)]
    verdicts = {0: [True, True, False, False], 1: [False] * 4, 2: [True, False, False, False]}
    records = [record(i, problems[i].meta["difficulty"], "greedy", 0, i != 1) for i in range(3)]
    records += [
        record(i, problems[i].meta["difficulty"], "sampled", s, ok)
        for i, oks in verdicts.items()
        for s, ok in enumerate(oks)
    ]
    metrics, by_difficulty = score(records, problems, ks=[1, 2, 8])
    assert metrics["eval/pass@1_greedy"] == pytest.approx(2 / 3)
    assert metrics["eval/pass@1_sampled"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert metrics["eval/pass@2"] == pytest.approx((5 / 6 + 0 + 0.5) / 3)
    assert "eval/pass@8" not in metrics  # needs 8 samples per problem
    assert by_difficulty[2] == pytest.approx(
        {"n_problems": 2, "pass@1_greedy": 0.5, "pass@1_sampled": 0.25, "pass@2": 5 / 12}
    )
    assert by_difficulty[5]["pass@1_sampled"] == 0.25


def test_evaluate_runs_every_completion_and_reports_progress():
    problems = [problem(i, 2 + i % 2) for i in range(5)]
    tokenizer = train_tokenizer([p.prompt + (p.reference or "") for p in problems] * 5, 290)
    model = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), seed=0)
    seen: list[dict] = []

    def sandbox(requests):  # passes the programs with an even length: any fixed rule will do
        seen.extend(requests)
        return [
            SimpleNamespace(
                status="passed" if len(r["program"]) % 2 == 0 else "failed",
                passed=1 - len(r["program"]) % 2,
                total=1,
                error_line=None,
                detail="",
            )
            for r in requests
        ]

    cfg = EvalConfig(n_samples=3, ks=[1, 2], max_new_tokens=8, batch_size=4, seed=5)
    reporter = MemoryReporter()
    result = evaluate(model, tokenizer, problems, cfg, sandbox, reporter)
    assert len(result.records) == len(seen) == 5 * (1 + 3)
    assert {r.mode for r in result.records} == {"greedy", "sampled"}
    assert all(r.program == problems[r.problem_index].prompt + r.completion for r in result.records)
    # the policy's own confidence in each completion, for reranking baselines
    confidences = [r.mean_logprob for r in result.records if r.n_tokens]
    assert confidences and all(c is not None and c <= 0 for c in confidences)
    assert all(r.mean_logprob is None for r in result.records if not r.n_tokens)
    assert seen[0]["tests"] == problems[0].tests and seen[0]["entry_point"] == "f0"
    assert result.metrics == score(result.records, problems, [1, 2])[0]
    assert set(result.by_difficulty) == {2, 3}
    assert reporter.fractions[-1] == 1.0 and "ETA" in reporter.messages[-1]
    again = evaluate(model, tokenizer, problems, cfg, sandbox, MemoryReporter())
    assert [r.completion for r in again.records] == [r.completion for r in result.records]


# ----------------------------------------------------------------------------- jobs


def make_run(kind: str, config: dict) -> int:
    with session_scope() as session:
        return crud.create_run(session, kind=kind, config=config).id


def test_sft_then_eval_jobs_store_checkpoints_samples_and_scores(data_dir):
    require(Path("/usr/bin/bwrap").exists(), "bubblewrap (/usr/bin/bwrap) is missing: no sandbox")
    benchmark = {"n_train": 200, "n_test": 10, "min_steps": 2, "max_steps": 3}
    sft_run = make_run(
        "sft",
        {
            "steps": 20,
            "batch_size": 8,
            "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 300},
            "eval_every": 10,
            "eval_subset": 4,
            "eval": {"max_new_tokens": 40, "batch_size": 16},
            "data": {"benchmark": benchmark},
        },
    )
    assert execute_run(sft_run) == "succeeded"
    eval_run = make_run(
        "eval",
        {
            "policy_run_id": sft_run,
            "data": {"benchmark": benchmark},
            "max_problems": 6,
            "eval": {"n_samples": 2, "ks": [1, 2], "max_new_tokens": 40},
        },
    )
    assert execute_run(eval_run) == "succeeded"

    with read_session() as session:
        runs = {
            r.id: r for r in session.scalars(select(Run).where(Run.id.in_([sft_run, eval_run])))
        }
        assert all(r.status == RunStatus.succeeded and r.error is None for r in runs.values())
        checkpoint = session.scalar(select(Artifact).where(Artifact.run_id == sft_run))
        assert checkpoint.kind == "checkpoint" and checkpoint.step == 20
        assert (Path(checkpoint.path) / "model.safetensors").is_file()
        assert runs[eval_run].result["policy"] == checkpoint.path
        assert runs[eval_run].result["problem_set"] == runs[sft_run].result["problem_set"]

        samples = session.scalars(select(Sample).where(Sample.run_id == eval_run)).all()
        assert len(samples) == 6 * (1 + 2)
        assert all(s.problem_id is not None for s in samples)
        verdicts = {"passed", "failed", "error", "timeout", "memory", "killed"}
        assert {s.verdict for s in samples} <= verdicts
        assert all(s.passed == (s.verdict == "passed") for s in samples)
        sft_samples = session.scalar(
            select(func.count()).select_from(Sample).where(Sample.run_id == sft_run)
        )
        assert sft_samples == 10 * 2  # the final evaluation: greedy + one sample per problem

        names = set(crud.metric_names(session, run_id=eval_run))
        assert {"eval/pass@1_greedy", "eval/pass@1_sampled", "eval/pass@2"} <= names
        assert "eval/pass@1_sampled/difficulty_2" in names
        sft_names = set(crud.metric_names(session, run_id=sft_run))
        assert {"losses/sft", "eval/pass@1_greedy", "eval/pass@1_sampled"} <= sft_names
        sampled = session.scalar(
            select(Metric.value).where(
                Metric.run_id == eval_run, Metric.name == "eval/pass@1_sampled"
            )
        )
        passed = [s.passed for s in samples if s.meta["mode"] == "sampled"]
        assert sampled == pytest.approx(sum(passed) / len(passed))


def test_a_redelivered_sft_run_resumes_from_its_last_checkpoint(data_dir):
    config = {
        "steps": 6,
        "batch_size": 4,
        "log_every": 1,
        "checkpoint_every": 3,
        "eval_every": 0,
        "final_eval": False,
        "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 280},
        "data": {"benchmark": {"n_train": 60, "n_test": 5, "min_steps": 2, "max_steps": 3}},
    }
    run_id = make_run("sft", config)
    assert execute_run(run_id) == "succeeded"
    with session_scope() as session:  # as if the worker died after the step-3 checkpoint
        losses = crud.metric_series(session, run_id=run_id, name="losses/sft")
        session.execute(delete(Artifact).where(Artifact.run_id == run_id, Artifact.step == 6))
        session.execute(update(Run).where(Run.id == run_id).values(status=RunStatus.queued))
    assert execute_run(run_id) == "succeeded"
    with read_session() as session:
        assert crud.metric_series(session, run_id=run_id, name="losses/sft") == losses
        assert len(crud.metric_series(session, run_id=run_id, name="charts/n_parameters")) == 1
        query = select(Artifact.step).where(Artifact.run_id == run_id).order_by(Artifact.id)
        assert list(session.scalars(query)) == [3, 6]
        assert session.get(Run, run_id).result["step"] == 6
