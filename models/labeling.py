"""PRM training data by binary search over line prefixes (paper Alg. 1), with cost accounting.

Terms (DESIGN §1.2): a response ``y`` to problem ``x`` has lines ``y_1 … y_T``
(``models.lines.split_lines``); ``ok(m)`` is true when at least one of K completions sampled
from the policy continuing ``x + y_{≤m}`` passes every test (best-of-K).

What is searched
----------------
Only prefixes that end at a **code line** are probed: a blank or comment line changes no
program, so ``ok`` cannot change across it, and its label is 0 whatever happens. With ``C`` code
lines, ``c ∈ [0, C)`` counts the code lines of a prefix (``c = 0``: the bare prompt) and

    c* = max{c ∈ [1, C) : ok(c)},   or 0 when there is none.

``ok(C)`` is the response's own failing verdict, so it is never sampled. ``ok(0)`` is never
sampled by the binary search either: ``c* = 0`` labels every code line −1 whether or not the bare
prompt could be solved, so its answer cannot change a label. In lines, ``m*`` is the number of
lines up to and including code line ``c*`` (0 when ``c* = 0``; ``T`` for a passing response).
Labels: code lines ``1..m*`` → +1, later code lines → −1, blank and comment lines → 0.

The binary search assumes ``ok`` is monotone (a prefix that cannot be rescued stays unrescuable
when it grows) and needs at most ``⌈log2 C⌉ ≤ ⌈log2(T+1)⌉`` probes, K completions each. The
**linear scan** probes every ``c ∈ [0, C)`` — K·C completions at most — and takes the literal
``max{c : ok(c)}``: it is the oracle the binary search is tested against and the measure of how
often monotonicity holds (a violation: some prefix passes after a shorter one failed). Its
violations are counted and reported, never smoothed over.

Throughput and reproducibility
------------------------------
Responses are processed in **blocks** of whole problems. Within a block the searches advance in
lockstep: each round gathers the pending probe of every unfinished search, samples a chunk of
completions for all of them in one ``sampler.generate`` call, runs all of them in one
``run_batch`` call, and moves every search whose probe is decided. A probe stops early at the
chunk that brings its first passing completion. Responses of one problem often share prefixes;
a probe is sampled once and shared (its cost is charged to the response that asked first).

Batched sampling draws from one random generator per call, so a completion depends on the whole
batch it was drawn in. Every batch is therefore fixed by the config alone: seeds are derived from
(seed, checkpoint, block, round), and a block is always labelled whole. A job resumed after a
crash skips every block it finished and relabels the interrupted one in full (without storing
its stored responses twice), so the resumed dataset is identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.benchmark import (
    ground_truth_requests,
    judge_program,
    labels_from_results,
    misplaced_argument_mistakes,
    one_line_mistakes,
    problem_steps,
    render_reference,
)
from models.lines import Line, split_lines
from models.policy_config import SamplingParams
from models.problems import Problem, exec_request, verdict_fields
from models.reporting import Reporter

if TYPE_CHECKING:  # torch stays out of this module's imports: the job registry imports it
    from models.evaluation import ExecOutcome, RunBatch
    from models.sampling import Sampler

SearchMode = Literal["binary", "linear"]
Selection = Literal["full", "remove-hard", "medium-only", "revised-only"]
SELECTIONS: tuple[Selection, ...] = ("full", "remove-hard", "medium-only", "revised-only")

SYNTHETIC = "synthetic"
"""The ``search`` and ``source_checkpoint`` of a reference or one-line-mistake record: written,
not sampled, so the data selection and the cost metrics leave it out."""
MISPLACED = "misplaced"  # the seed name of the misplaced-argument mistakes


class LabelingConfig(BaseModel):
    """How responses are sampled and labelled. The paper publishes neither K nor n."""

    model_config = ConfigDict(extra="forbid")

    n_responses: int = Field(
        default=4, ge=1, le=1000, description="Responses sampled per problem from each checkpoint."
    )
    k: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Completions per probed prefix (best-of-K). Use 8–16: a weak policy misses "
        "completions of correct prefixes, and at K=4 binary search and the linear scan "
        "disagreed on up to 20% of responses in a trial.",
    )
    chunk_size: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Completions a probe gets per round; a probe stops after the chunk that "
        "brings its first passing completion. ≥ k: all K at once (fewest rounds, no saving).",
    )
    search: SearchMode = Field(
        default="binary",
        description="binary: paper Alg. 1, at most K·⌈log2 T⌉ completions per failing response. "
        "linear: probe every prefix (K·T), the oracle that measures monotonicity violations.",
    )
    temperature: float = Field(
        default=1.0, gt=0.0, le=5.0, description="Sampling temperature of responses and probes."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        default=256, ge=1, le=8192, description="Most tokens per response or completion."
    )
    problems_per_block: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Problems labelled together (their searches share every batched call). "
        "Larger blocks batch better; a crash loses at most one block's work.",
    )
    batch_size: int = Field(
        default=64, ge=1, le=4096, description="Rows per forward pass of the sampler."
    )
    ground_truth: bool = Field(
        default=True,
        description="On embedded-benchmark problems, also compute the exact line labels "
        "(models.benchmark) to audit m* against the first wrong line.",
    )
    synthetic_mistakes: int = Field(
        default=6,
        ge=0,
        le=64,
        description="On embedded-benchmark problems, also store the reference solution and up "
        "to N copies of it with one line wrong (an argument changed, an op swapped, a step "
        "left out), labelled exactly (ours; the paper labels sampled responses only). Each "
        "differs from the reference in one line's content, not in length or position: what a "
        "small PRM must learn to see. On the embedded benchmark a 2M PRM trained on sampled "
        "responses alone ranked a problem's responses no better than chance; trained on 6 "
        "mistakes per train problem, 4 trainings of 6 picked a passing response among 16 "
        "test samples 8-15 points more often than a random pick, and the mean of two such "
        "PRMs did on both policies tried (README). 0: off.",
    )
    misplaced_arguments: int = Field(
        default=0,
        ge=0,
        le=64,
        description="On embedded-benchmark problems, up to N more one-line mistakes (beside "
        "synthetic_mistakes) that give a step another step's argument: a number the prompt "
        "holds, on the wrong line, as the policy's own failures often do (ours). On the "
        "policy where every PRM had failed, two PRMs trained with 3 (and lm_weight 1) picked a "
        "passing response among 16 test samples 9 and 12 points more often than a random "
        "pick; the first seed without them was below random. On two other policies one PRM "
        "each with 3 (and lm_weight 1) was below random, so it is no reliable fix (README). "
        "0: off.",
    )
    seed: int = Field(default=0, description="Root of every sampling seed.")


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (Python's ``hash`` differs between processes)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ----------------------------------------------------------------------------- the search


class Search(Protocol):
    """A search over ``c ∈ [0, C)``: ask which probes to run, record their outcomes."""

    probed: dict[int, bool]

    def next_probes(self) -> list[int]:
        """Probes to run now (all independent of each other); empty when finished."""

    def record(self, c: int, ok: bool) -> None: ...

    @property
    def c_star(self) -> int: ...


class BinarySearch:
    """Invariant: ``ok(lo)`` (or ``lo = 0``) and ``not ok(hi)``; ``hi = C`` holds by the
    response's own failure. Each probe halves ``hi - lo``."""

    def __init__(self, n_code: int) -> None:
        self.lo, self.hi = 0, n_code
        self.probed: dict[int, bool] = {}

    def next_probes(self) -> list[int]:
        return [(self.lo + self.hi) // 2] if self.hi - self.lo > 1 else []

    def record(self, c: int, ok: bool) -> None:
        self.probed[c] = ok
        if ok:
            self.lo = c
        else:
            self.hi = c

    @property
    def c_star(self) -> int:
        return self.lo


class LinearScan:
    """Every prefix, all at once (no probe depends on another's outcome)."""

    def __init__(self, n_code: int) -> None:
        self.n_code = n_code
        self.probed: dict[int, bool] = {}

    def next_probes(self) -> list[int]:
        return [c for c in range(self.n_code) if c not in self.probed]

    def record(self, c: int, ok: bool) -> None:
        self.probed[c] = ok

    @property
    def c_star(self) -> int:
        return max((c for c, ok in self.probed.items() if ok), default=0)


def make_search(mode: SearchMode, n_code: int) -> Search:
    return BinarySearch(n_code) if mode == "binary" else LinearScan(n_code)


def run_search(search: Search, ok: Callable[[int], bool]) -> tuple[int, list[int]]:
    """Drive ``search`` with the oracle ``ok``; returns ``(c*, probes in order)``."""
    while probes := search.next_probes():
        for c in probes:
            search.record(c, ok(c))
    return search.c_star, list(search.probed)


def binary_search_m_star(n: int, ok: Callable[[int], bool]) -> tuple[int, list[int]]:
    """``max{m ∈ [1, n) : ok(m)}`` (0 if none) for a monotone ``ok``, with ``ok(n)`` known
    false; at most ``⌈log2 n⌉`` probes. Returns ``(m*, probes)``."""
    return run_search(BinarySearch(n), ok)


def linear_scan_m_star(n: int, ok: Callable[[int], bool]) -> tuple[int, list[int]]:
    """``max{m ∈ [0, n) : ok(m)}`` (0 if none) by probing every ``m``: any ``ok``."""
    return run_search(LinearScan(n), ok)


def is_monotone(probed: Mapping[int, bool]) -> bool:
    """No prefix passes after a shorter one failed."""
    outcomes = [probed[c] for c in sorted(probed)]
    return all(a or not b for a, b in pairwise(outcomes))


# ----------------------------------------------------------------------------- labels


def code_lines(lines: Sequence[Line]) -> list[Line]:
    return [line for line in lines if not line.neutral]


def m_star_in_lines(lines: Sequence[Line], c_star: int) -> int:
    """Lines up to and including code line ``c_star`` (0 for none)."""
    return code_lines(lines)[c_star - 1].index + 1 if c_star else 0


def line_labels(lines: Sequence[Line], m_star: int) -> list[int]:
    """+1 for code lines within the first ``m_star`` lines, −1 after, 0 for neutral lines."""
    return [0 if line.neutral else 1 if line.index < m_star else -1 for line in lines]


def m_star_of_labels(labels: Sequence[int]) -> int:
    """The ``m*`` that ``labels`` encode: the position of the last +1 (0 if none)."""
    return max((i + 1 for i, label in enumerate(labels) if label > 0), default=0)


# ----------------------------------------------------------------------------- records


@dataclass
class Response:
    """A sampled response and its own verdict, waiting to be labelled."""

    problem: Problem
    checkpoint: str
    index: int  # response_index: its position among the problem's responses from this checkpoint
    text: str
    result: ExecOutcome
    ground_truth: list[int] | None = None


@dataclass
class LabeledResponse:
    """A response with its line labels and what they cost: what the prm-data job stores."""

    task_id: str
    response_index: int
    source_checkpoint: str
    prompt: str
    response: str
    verdict: str
    passed: bool
    tests_passed: int
    tests_total: int
    error_line: int | None
    detail: str
    search: str  # "binary", "linear", "none" (passing), "ground-truth" or SYNTHETIC
    m_star: int  # in lines; T for a passing response
    labels: list[int]
    n_code_lines: int
    probes: list[list[Any]] = field(default_factory=list)  # [m in lines, ok, charged completions]
    completions_sampled: int = 0  # charged to this response (shared probes: to the first asker)
    cache_hits: int = 0  # probes answered by another response's completions
    ground_truth: list[int] | None = None
    monotone: bool | None = None  # linear scan only: did its probes satisfy monotonicity?

    @property
    def tests_run(self) -> int:
        """Programs this response sent to the sandbox: itself and its completions (a
        synthetic record none: it is judged from the benchmark's templates)."""
        return 0 if self.search == SYNTHETIC else 1 + self.completions_sampled

    @property
    def lines(self) -> list[str]:
        return [line.text for line in split_lines(self.response)]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tests_run": self.tests_run}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabeledResponse:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def passing_record(response: Response) -> LabeledResponse:
    lines = split_lines(response.text)
    return _record(response, "none", len(lines), line_labels(lines, len(lines)))


def ground_truth_record(response: Response) -> LabeledResponse:
    """A response labelled by the embedded benchmark's exact check of each line (sampled with
    ``ground_truth``) instead of by a search: the labels a perfect search would give, so that a
    PRM's failures can be told apart from the labeller's (``bench.prm_scale --labels``)."""
    if response.ground_truth is None:
        raise ValueError(
            f"{response.problem.task_id}: no ground-truth labels; sample with ground_truth=true "
            "on embedded-benchmark problems"
        )
    m_star = m_star_of_labels(response.ground_truth)
    return _record(response, "ground-truth", m_star, response.ground_truth)


def _record(response: Response, search: str, m_star: int, labels: list[int]) -> LabeledResponse:
    result = response.result
    return LabeledResponse(
        task_id=response.problem.task_id,
        response_index=response.index,
        source_checkpoint=response.checkpoint,
        prompt=response.problem.prompt,
        response=response.text,
        **verdict_fields(result),
        search=search,
        m_star=m_star,
        labels=labels,
        n_code_lines=len(code_lines(split_lines(response.text))),
        ground_truth=response.ground_truth,
    )


def synthetic_mistakes(
    problems: Sequence[Problem], n_mistakes: int, seed: int = 0, misplaced_arguments: int = 0
) -> list[LabeledResponse]:
    """Per embedded-benchmark problem, its reference (response 0, every line +1) and up to
    ``n_mistakes`` one-line mistakes of it (``models.benchmark.one_line_mistakes``, drawn
    with a seed of the problem's id), then up to ``misplaced_arguments`` more that give a step
    another step's argument (``models.benchmark.misplaced_argument_mistakes``, drawn with a
    seed of their own from those not drawn already), all labelled exactly. The mistakes use
    only (op, argument) pairs that ``problems`` themselves contain. None at all when both
    counts are 0."""
    wanted = n_mistakes or misplaced_arguments
    embedded = [p for p in problems if has_ground_truth(p)] if wanted else []
    seen = {step for problem in embedded for step in problem_steps(problem)}
    records = []
    for problem in embedded:
        steps = problem_steps(problem)
        mistakes = one_line_mistakes(steps, seen)
        rng = random.Random(derive_seed(seed, problem.task_id, SYNTHETIC))
        drawn = rng.sample(mistakes, min(n_mistakes, len(mistakes)))
        if misplaced_arguments:
            misplaced = [m for m in misplaced_argument_mistakes(steps, seen) if m not in drawn]
            misplaced_rng = random.Random(derive_seed(seed, problem.task_id, MISPLACED))
            drawn += misplaced_rng.sample(misplaced, min(misplaced_arguments, len(misplaced)))
        for index, program in enumerate([steps, *drawn]):
            tests_passed, verdicts = judge_program(steps, program, problem.meta["inputs"])
            text = render_reference(program)
            records.append(_synthetic_record(problem, index, text, tests_passed, verdicts))
    return records


def _synthetic_record(
    problem: Problem, index: int, text: str, tests_passed: int, verdicts: list[bool]
) -> LabeledResponse:
    labels = labels_from_results(text, verdicts)
    lines = split_lines(text)
    passed = verdicts[0]
    return LabeledResponse(
        task_id=problem.task_id,
        response_index=index,
        source_checkpoint=SYNTHETIC,
        prompt=problem.prompt,
        response=text,
        verdict="passed" if passed else "failed",
        passed=passed,
        tests_passed=tests_passed,
        tests_total=len(problem.meta["inputs"]),
        error_line=None,
        detail="the reference" if index == 0 else "the reference with one line wrong",
        search=SYNTHETIC,
        m_star=m_star_of_labels(labels),
        labels=labels,
        n_code_lines=len(code_lines(lines)),
        ground_truth=labels,
    )


# ----------------------------------------------------------------------------- lockstep driver


@dataclass
class Timing:
    sampling_s: float = 0.0
    execution_s: float = 0.0
    rounds: int = 0


@dataclass
class _Probe:
    """One prefix's best-of-K test, shared by every response that reaches the same prefix."""

    problem: Problem
    head: str  # y_{≤m}: the response's part of the prefix
    owner: int  # the task charged for its completions
    sampled: int = 0
    passed: bool = False

    def decided(self, k: int) -> bool:
        return self.passed or self.sampled >= k


@dataclass
class _Task:
    index: int  # position in the input: the owner id of the probes it creates
    response: Response
    lines: list[Line]
    search: Search
    waiting: dict[int, _Probe] = field(default_factory=dict)  # c -> probe
    cache_hits: int = 0

    def head(self, c: int) -> str:
        """``y_{≤m}`` for the prefix through code line ``c``."""
        return self.response.text[: code_lines(self.lines)[c - 1].stop] if c else ""

    def key(self, c: int) -> str:
        return self.response.problem.prompt + self.head(c)


def label_responses(
    responses: Sequence[Response],
    sampler: Sampler,
    run_batch: RunBatch,
    cfg: LabelingConfig,
    *,
    seed: int,
    on_labeled: Callable[[LabeledResponse], None] = lambda record: None,
    timing: Timing | None = None,
) -> list[LabeledResponse]:
    """Label ``responses`` (their verdicts already known) with all searches in lockstep.

    Passing responses are labelled at once; each failing one is handed to ``on_labeled`` the
    round its search ends. Returns the records in input order.
    """
    timing = timing or Timing()
    records: dict[int, LabeledResponse] = {}
    tasks: dict[int, _Task] = {}
    for i, response in enumerate(responses):
        if response.result.status == "passed":
            records[i] = passing_record(response)
            on_labeled(records[i])
        else:
            lines = split_lines(response.text)
            search = make_search(cfg.search, len(code_lines(lines)))
            tasks[i] = _Task(i, response, lines, search)
    cache: dict[str, _Probe] = {}  # prefix text -> probe

    def advance(task: _Task) -> None:
        """Record the task's decided probes and ask for its next ones, or finish it."""
        while all(probe.decided(cfg.k) for probe in task.waiting.values()):
            for c, probe in sorted(task.waiting.items()):
                task.search.record(c, probe.passed)
            task.waiting.clear()
            for c in task.search.next_probes():
                key = task.key(c)
                if key in cache:
                    task.cache_hits += 1
                else:
                    cache[key] = _Probe(task.response.problem, task.head(c), owner=task.index)
                task.waiting[c] = cache[key]
            if not task.waiting:
                records[task.index] = _finish(task, cache, cfg.search)
                on_labeled(records[task.index])
                del tasks[task.index]
                return

    for task in list(tasks.values()):
        advance(task)
    round_index = 0  # seeds come from the round within this call only: a fixed batch each
    while tasks:
        # every undecided probe that some search waits for, once each, in a fixed order
        pending = list(
            {
                id(probe): probe
                for task in tasks.values()
                for probe in task.waiting.values()
                if not probe.decided(cfg.k)
            }.values()
        )
        counts = [min(cfg.chunk_size, cfg.k - probe.sampled) for probe in pending]
        rows = [probe for probe, n in zip(pending, counts, strict=True) for _ in range(n)]
        params = SamplingParams(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=derive_seed(seed, "round", round_index),
        )
        started = time.perf_counter()
        generations = sampler.generate([p.problem.prompt + p.head for p in rows], params)
        sampled = time.perf_counter()
        results = run_batch(
            [
                exec_request(probe.problem, probe.head + generation.text, f"probe/{j}")
                for j, (probe, generation) in enumerate(zip(rows, generations, strict=True))
            ]
        )
        timing.sampling_s += sampled - started
        timing.execution_s += time.perf_counter() - sampled
        timing.rounds += 1
        for probe, n in zip(pending, counts, strict=True):
            probe.sampled += n
        for probe, result in zip(rows, results, strict=True):
            probe.passed |= result.status == "passed"
        for task in list(tasks.values()):
            advance(task)
        round_index += 1
    return [records[i] for i in range(len(responses))]


def _finish(task: _Task, cache: Mapping[str, _Probe], mode: SearchMode) -> LabeledResponse:
    search = task.search
    m_star = m_star_in_lines(task.lines, search.c_star)
    record = _record(task.response, mode, m_star, line_labels(task.lines, m_star))
    for c, ok in search.probed.items():
        probe = cache[task.key(c)]
        cost = probe.sampled if probe.owner == task.index else 0
        record.probes.append([m_star_in_lines(task.lines, c), ok, cost])
        record.completions_sampled += cost
    record.cache_hits = task.cache_hits
    if mode == "linear":
        record.monotone = is_monotone(search.probed)
    return record


# ----------------------------------------------------------------------------- collection


def has_ground_truth(problem: Problem) -> bool:
    """Embedded-benchmark problems know their reference state after every step."""
    return problem.meta.get("source") == "embedded" and isinstance(problem.meta.get("steps"), list)


def sample_responses(
    problems: Sequence[Problem],
    sampler: Sampler,
    run_batch: RunBatch,
    cfg: LabelingConfig,
    *,
    checkpoint: str,
    seed: int,
    timing: Timing | None = None,
) -> list[Response]:
    """``cfg.n_responses`` responses per problem, run against their tests (and, on the embedded
    benchmark, against the reference's state after each line) in one sandbox batch."""
    timing = timing or Timing()
    jobs = [(problem, i) for problem in problems for i in range(cfg.n_responses)]
    params = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
    )
    started = time.perf_counter()
    texts = [g.text for g in sampler.generate([problem.prompt for problem, _ in jobs], params)]
    sampled = time.perf_counter()
    requests, spans = [], []
    for (problem, i), text in zip(jobs, texts, strict=True):
        first = len(requests)
        requests.append(exec_request(problem, text, f"{problem.task_id}/{i}"))
        if cfg.ground_truth and has_ground_truth(problem):
            # request 0 of ground_truth_requests is the whole program again: it is ``own`` here
            requests += ground_truth_requests(problem, text, f"gt/{problem.task_id}/{i}")[1:]
        spans.append((first, len(requests)))
    results = run_batch(requests)
    timing.sampling_s += sampled - started
    timing.execution_s += time.perf_counter() - sampled
    responses = []
    for (problem, i), text, (first, end) in zip(jobs, texts, spans, strict=True):
        truth = None
        if cfg.ground_truth and has_ground_truth(problem):
            verdicts = [result.status == "passed" for result in results[first:end]]
            truth = labels_from_results(text, verdicts)
        responses.append(Response(problem, checkpoint, i, text, results[first], truth))
    return responses


def collect(
    checkpoints: Sequence[str],
    problems: Sequence[Problem],
    cfg: LabelingConfig,
    run_batch: RunBatch,
    reporter: Reporter,
    *,
    load_sampler: Callable[[str], Sampler],
    on_labeled: Callable[[LabeledResponse], None],
    done: Collection[tuple[str, str, int]] = (),
) -> Timing:
    """Sample and label ``n_responses`` per problem from every checkpoint, block by block.

    ``done`` holds the (checkpoint, task_id, response_index) keys stored by an earlier attempt:
    finished blocks are skipped, an interrupted one is relabelled whole (module docstring) and
    only its new records reach ``on_labeled``. Progress (with an ETA) after every record.
    """
    timing = Timing()
    total = len(checkpoints) * len(problems) * cfg.n_responses
    size = cfg.problems_per_block
    already = sum(
        (checkpoint, problem.task_id, i) in done
        for checkpoint in checkpoints
        for problem in problems
        for i in range(cfg.n_responses)
    )
    labelled = 0
    started = time.perf_counter()

    def store(record: LabeledResponse) -> None:
        nonlocal labelled
        if (record.source_checkpoint, record.task_id, record.response_index) in done:
            return
        on_labeled(record)
        labelled += 1
        elapsed = time.perf_counter() - started
        remaining = total - already - labelled
        reporter.progress(
            (already + labelled) / total,
            f"{already + labelled}/{total} responses labelled, "
            f"ETA {elapsed / labelled * remaining:.0f}s",
        )

    for checkpoint in checkpoints:
        blocks = [problems[first : first + size] for first in range(0, len(problems), size)]
        todo = [
            (b, block)
            for b, block in enumerate(blocks)
            if any(
                (checkpoint, problem.task_id, i) not in done
                for problem in block
                for i in range(cfg.n_responses)
            )
        ]
        if not todo:
            continue
        sampler = load_sampler(checkpoint)
        for b, block in todo:
            responses = sample_responses(
                block,
                sampler,
                run_batch,
                cfg,
                checkpoint=checkpoint,
                seed=derive_seed(cfg.seed, checkpoint, b, "responses"),
                timing=timing,
            )
            label_responses(
                responses,
                sampler,
                run_batch,
                cfg,
                seed=derive_seed(cfg.seed, checkpoint, b, "probes"),
                on_labeled=store,
                timing=timing,
            )
    return timing


def policy_sampler(device: str, batch_size: int) -> Callable[[str], Sampler]:
    """Loads a checkpoint folder into a sampler of the ``auto`` backend (torch is imported
    only here)."""

    def load(checkpoint: str) -> Sampler:
        from models.policy import load_policy
        from models.sampling import make_sampler

        model, tokenizer = load_policy(checkpoint, device=device)
        return make_sampler(model, tokenizer, batch_size=batch_size)

    return load


# ----------------------------------------------------------------------------- data selection


def pass_rates(records: Sequence[LabeledResponse]) -> dict[str, float]:
    """Per problem: the share of all its sampled responses (every checkpoint) that pass."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        outcomes[record.task_id].append(record.passed)
    return {task: float(np.mean(passed)) for task, passed in outcomes.items()}


def sampled_responses(records: Sequence[LabeledResponse]) -> list[LabeledResponse]:
    """The responses a policy wrote, without the synthetic ones: what the pass rates, the
    labelling cost and the audit are about."""
    return [r for r in records if r.search != SYNTHETIC]


def select_responses(
    records: Sequence[LabeledResponse],
    selection: Selection,
    medium_range: tuple[float, float] = (0.0, 1.0),
) -> list[LabeledResponse]:
    """Paper Table 2's data selection (definitions in the prm-data job's help text) of the
    sampled responses; synthetic records are kept whole and count in no pass rate."""
    sampled = sampled_responses(records)
    synthetic = [r for r in records if r.search == SYNTHETIC]
    if selection == "full":
        return [*sampled, *synthetic]
    if selection == "revised-only":
        return [*(r for r in sampled if r.passed or r.m_star >= 1), *synthetic]
    rates = pass_rates(sampled)
    low, high = medium_range
    keep = {
        "remove-hard": lambda rate: rate > 0,
        "medium-only": lambda rate: low < rate < high,
    }[selection]
    return [*(r for r in sampled if keep(rates[r.task_id])), *synthetic]


# ----------------------------------------------------------------------------- metrics


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def label_balance(records: Sequence[LabeledResponse], prefix: str) -> dict[str, float]:
    labels = [label for record in records for label in record.labels]
    return {
        f"{prefix}/responses": float(len(records)),
        f"{prefix}/label_pos_fraction": _mean([label > 0 for label in labels]),
        f"{prefix}/label_neg_fraction": _mean([label < 0 for label in labels]),
        f"{prefix}/label_neutral_fraction": _mean([label == 0 for label in labels]),
    }


def cost_metrics(records: Sequence[LabeledResponse], k: int) -> dict[str, float]:
    """What the labels cost, beside what a linear scan (K per code line) would have."""
    failing = [r for r in records if not r.passed]
    costs = [r.completions_sampled for r in failing]
    linear = [k * r.n_code_lines for r in failing]
    metrics = {
        "labeling/failing_responses": float(len(failing)),
        "labeling/pass_fraction": _mean([r.passed for r in records]),
        "labeling/completions_per_failing_mean": _mean(costs),
        "labeling/completions_per_failing_p95": float(np.percentile(costs, 95)) if costs else 0.0,
        "labeling/linear_scan_completions_per_failing_mean": _mean(linear),
        "labeling/linear_over_search_completions": sum(linear) / max(sum(costs), 1),
        "labeling/rescued_fraction": _mean([r.m_star >= 1 for r in failing]),
        "labeling/cache_hits_per_failing": _mean([r.cache_hits for r in failing]),
    }
    scanned = [r.monotone for r in failing if r.monotone is not None]
    if scanned:
        metrics["labeling/monotonicity_violation_fraction"] = _mean([not m for m in scanned])
    return metrics


def audit_metrics(records: Sequence[LabeledResponse], prefix: str = "labeling/audit") -> dict:
    """m* against the ground truth's first wrong line, on failing responses that have one."""
    judged = [r for r in records if not r.passed and r.ground_truth is not None]
    if not judged:
        return {}
    offsets = [r.m_star - m_star_of_labels(r.ground_truth or []) for r in judged]
    return {
        f"{prefix}/responses": float(len(judged)),
        f"{prefix}/exact_match": _mean([offset == 0 for offset in offsets]),
        f"{prefix}/mean_offset": _mean(offsets),
        f"{prefix}/mean_abs_offset": _mean([abs(offset) for offset in offsets]),
    }


# ----------------------------------------------------------------------------- export


def dataset_record(record: LabeledResponse) -> dict[str, Any]:
    """The DESIGN §3 line-labels format (its prompt/completions/labels are TRL's stepwise
    keys, with +1/0/−1 labels)."""
    return {
        "prompt": record.prompt,
        "completions": record.lines,
        "labels": record.labels,
        "m_star": record.m_star,
        "passed": record.passed,
        "completions_sampled": record.completions_sampled,
        "source_checkpoint": record.source_checkpoint,
        "task_id": record.task_id,
    }


def trl_record(record: LabeledResponse) -> dict[str, Any]:
    """TRL's stepwise-supervision format exactly: one step per code line, boolean labels.
    TRL has no neutral label, so blank and comment lines join the step of the next code line
    (trailing ones the last step)."""
    steps: list[str] = []
    labels: list[bool] = []
    pending: list[str] = []
    for text, label in zip(record.lines, record.labels, strict=True):
        pending.append(text)
        if label != 0:
            steps.append("\n".join(pending))
            labels.append(label > 0)
            pending = []
    if pending and steps:
        steps[-1] = "\n".join([steps[-1], *pending])
    return {"prompt": record.prompt, "completions": steps, "labels": labels}


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
