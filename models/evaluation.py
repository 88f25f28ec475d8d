"""Evaluation: sample completions, run them against the unit tests, and score pass@k.

pass@1 is reported two ways: *greedy* (one temperature-0 completion per problem) and *sampled*
(the unbiased estimate from ``n_samples`` completions at the sampling temperature, 1 by default
— the number the paper's curves and our calibration use). pass@k for k > 1 uses the unbiased
estimator of Chen et al. (2021). Every number is also broken down by ``meta["difficulty"]``.

The sandbox is passed in as ``run_batch`` (a list of DESIGN §3 request dicts in, one result per
request out, each with ``status``, ``passed``, ``total``, ``error_line`` and ``detail``), so this
module stays free of the worker layer and tests can substitute it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from models.policy_config import EvalConfig, SamplingParams
from models.problems import Problem, exec_request, verdict_fields
from models.reporting import Reporter
from models.sampling import Sampler, make_sampler


class ExecOutcome(Protocol):
    """What evaluation reads from a sandbox result (DESIGN §3)."""

    status: str
    passed: int
    total: int
    error_line: int | None
    detail: str


RunBatch = Callable[[list[dict[str, Any]]], Sequence[ExecOutcome]]


@dataclass(frozen=True)
class SampleRecord:
    """One completion and its verdict: what the ``samples`` table stores."""

    task_id: str
    problem_index: int  # position in the evaluated list
    difficulty: int | None
    mode: str  # "greedy" or "sampled"
    sample_index: int
    completion: str
    program: str  # prompt + completion, the text the sandbox ran (error_line refers to it)
    verdict: str  # passed | failed | error | timeout | memory | killed
    passed: bool
    tests_passed: int
    tests_total: int
    error_line: int | None
    detail: str
    n_tokens: int
    finish_reason: str
    # the sampling policy's mean log-probability per completion token (EOS included, at
    # temperature 1): the policy's own confidence, the reranker a PRM has to beat; None for an
    # empty completion
    mean_logprob: float | None = None


@dataclass
class EvalResult:
    records: list[SampleRecord]
    metrics: dict[str, float]  # eval/pass@1_greedy, eval/pass@1_sampled, eval/pass@k, …
    by_difficulty: dict[int, dict[str, float]]  # difficulty -> {pass@1_greedy, …, n_problems}
    elapsed_s: float
    generated_tokens: int

    def summary(self) -> dict[str, Any]:
        """Everything but the records: small enough for a run's result."""
        return {
            "metrics": self.metrics,
            "by_difficulty": {str(d): v for d, v in self.by_difficulty.items()},
            "elapsed_s": round(self.elapsed_s, 3),
            "generated_tokens": self.generated_tokens,
            "n_records": len(self.records),
        }

    def record_dicts(self) -> list[dict[str, Any]]:
        return [asdict(record) for record in self.records]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` pass: 1 - C(n-c, k) / C(n, k),
    computed as a product so large n does not overflow (Chen et al. 2021, Fig. 3)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def difficulty_of(problem: Problem) -> int | None:
    value = problem.meta.get("difficulty")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def score(
    records: Sequence[SampleRecord], problems: Sequence[Problem], ks: Sequence[int]
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Overall metrics and the same per difficulty, from the records."""
    passed: dict[tuple[str, int], list[bool]] = defaultdict(list)  # (mode, problem) -> verdicts
    for record in records:
        passed[record.mode, record.problem_index].append(record.passed)

    def metrics_for(indices: list[int]) -> dict[str, float]:
        out: dict[str, float] = {"n_problems": float(len(indices))}
        greedy = [passed["greedy", i][0] for i in indices if ("greedy", i) in passed]
        if greedy:
            out["pass@1_greedy"] = float(np.mean(greedy))
        sampled = [passed["sampled", i] for i in indices if ("sampled", i) in passed]
        if sampled:
            n = min(len(v) for v in sampled)
            for k in ks:
                if k <= n:
                    name = "pass@1_sampled" if k == 1 else f"pass@{k}"
                    out[name] = float(np.mean([pass_at_k(len(v), sum(v), k) for v in sampled]))
        return out

    everything = metrics_for(list(range(len(problems))))
    metrics = {f"eval/{name}": value for name, value in everything.items()}
    groups: dict[int, list[int]] = defaultdict(list)
    for i, problem in enumerate(problems):
        difficulty = difficulty_of(problem)
        if difficulty is not None:
            groups[difficulty].append(i)
    by_difficulty = {d: metrics_for(groups[d]) for d in sorted(groups)}
    return metrics, by_difficulty


def evaluate(
    model,
    tokenizer,
    problems: Sequence[Problem],
    cfg: EvalConfig,
    run_batch: RunBatch,
    reporter: Reporter,
    *,
    step: int = 0,
    sampler: Sampler | None = None,
) -> EvalResult:
    """Generate greedy and/or sampled completions for ``problems``, run them, score them.

    Reports progress (with an ETA) after every batch; metrics are returned, not reported, so
    the caller decides the step they belong to. A caller that evaluates a model it is training
    passes the ``sampler`` it keeps (its weights are synced here); otherwise one is made for
    ``cfg.backend``.
    """
    started = time.perf_counter()
    if sampler is None:
        sampler = make_sampler(model, tokenizer, backend=cfg.backend, batch_size=cfg.batch_size)
    else:
        sampler.sync_weights()  # score the model as it is now
    # (mode, problem index, sample index) for every completion, greedy first
    jobs = [("greedy", i, 0) for i in range(len(problems))] if cfg.greedy else []
    jobs += [("sampled", i, s) for i in range(len(problems)) for s in range(cfg.n_samples)]
    records: list[SampleRecord] = []
    generated = 0
    for batch_no, first in enumerate(range(0, len(jobs), cfg.batch_size)):
        chunk = jobs[first : first + cfg.batch_size]
        records_chunk, tokens = _run_chunk(sampler, problems, chunk, cfg, run_batch, batch_no)
        records.extend(records_chunk)
        generated += tokens
        done = len(records) / len(jobs)
        elapsed = time.perf_counter() - started
        reporter.progress(
            done,
            f"eval step {step}: {len(records)}/{len(jobs)} completions, "
            f"ETA {elapsed / done - elapsed:.0f}s",
        )
    metrics, by_difficulty = score(records, problems, cfg.ks)
    return EvalResult(records, metrics, by_difficulty, time.perf_counter() - started, generated)


def _run_chunk(
    sampler: Sampler,
    problems: Sequence[Problem],
    chunk: list[tuple[str, int, int]],
    cfg: EvalConfig,
    run_batch: RunBatch,
    batch_no: int,
) -> tuple[list[SampleRecord], int]:
    """Generate one batch of completions (one mode per call: greedy rows come first) and run
    them in the sandbox."""
    generations = []
    for mode in ("greedy", "sampled"):
        rows = [job for job in chunk if job[0] == mode]
        if not rows:
            continue
        params = SamplingParams(
            temperature=0.0 if mode == "greedy" else cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed + batch_no,  # a fixed seed per batch: the same config, the same samples
        )
        generations += sampler.generate([problems[i].prompt for _, i, _ in rows], params)
    requests = [
        exec_request(problems[i], gen.text, f"{mode}/{i}/{s}")
        for (mode, i, s), gen in zip(chunk, generations, strict=True)
    ]
    results = run_batch(requests)
    records = [
        SampleRecord(
            task_id=problems[i].task_id,
            problem_index=i,
            difficulty=difficulty_of(problems[i]),
            mode=mode,
            sample_index=s,
            completion=gen.text,
            program=request["program"],
            **verdict_fields(result),
            n_tokens=len(gen.token_ids),
            finish_reason=gen.finish_reason,
            mean_logprob=float(np.mean(gen.logprobs)) if gen.logprobs else None,
        )
        for (mode, i, s), gen, request, result in zip(
            chunk, generations, requests, results, strict=True
        )
    ]
    return records, sum(len(gen.token_ids) for gen in generations)


def pass_metrics(result: EvalResult) -> dict[str, float]:
    """The pass@k figures of an evaluation (its problem count left out)."""
    return {name: value for name, value in result.metrics.items() if "pass@" in name}


def difficulty_metrics(result: EvalResult) -> dict[str, float]:
    """``eval/pass@1_sampled/difficulty_3``-style curves, one per difficulty and figure."""
    return {
        f"eval/{name}/difficulty_{difficulty}": value
        for difficulty, values in result.by_difficulty.items()
        for name, value in values.items()
        if "pass@" in name
    }
