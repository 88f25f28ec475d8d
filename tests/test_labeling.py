"""PRM labels by binary search (paper Alg. 1): the search equals the linear scan under every
monotone oracle, labels and costs follow the definitions, searches advance in lockstep, and on
the embedded benchmark with the real sandbox m* lands on the first wrong line."""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.benchmark import BenchmarkConfig, generate, ground_truth_labels
from models.labeling import (
    SYNTHETIC,
    LabeledResponse,
    LabelingConfig,
    Response,
    audit_metrics,
    binary_search_m_star,
    cost_metrics,
    derive_seed,
    ground_truth_record,
    is_monotone,
    label_responses,
    linear_scan_m_star,
    sample_responses,
    select_responses,
    synthetic_mistakes,
    trl_record,
)
from models.lines import split_lines
from models.problems import Problem, exec_request
from tests.conftest import require

PASS, FAIL = "    return 'PASS'\n", "    return 'FAIL'\n"
PROBLEM = Problem(task_id="t/0", prompt="def f():\n", tests=["assert f() == 'PASS'"])


def verdict(status: str) -> SimpleNamespace:
    return SimpleNamespace(
        status=status, passed=int(status == "passed"), total=1, error_line=None, detail=""
    )


def fake_run_batch(requests):
    """Passes exactly the programs whose completion ends with the PASS line."""
    return [verdict("passed" if r["program"].endswith(PASS) else "failed") for r in requests]


class OracleSampler:
    """Completes a prefix with PASS when ``ok(c)`` holds, ``c`` being its number of code lines
    after the prompt; counts its calls and rows."""

    def __init__(self, ok) -> None:
        self.ok = ok
        self.calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        outs = []
        for prompt in prompts:
            head = prompt.removeprefix(PROBLEM.prompt)
            c = sum(not line.neutral for line in split_lines(head))
            outs.append(SimpleNamespace(text=PASS if self.ok(c) else FAIL))
        return outs


def failing(text: str, index: int = 0) -> Response:
    return Response(PROBLEM, "ckpt", index, text, verdict("failed"))


def code_response(pattern: list[bool]) -> str:
    """One line per entry: a code line (True) or a comment/blank line (False)."""
    lines = [
        f"    v{i} = {i}\n" if code else ("    # why\n" if i % 2 else "\n")
        for i, code in enumerate(pattern)
    ]
    return "".join(lines)


# ----------------------------------------------------------------------------- the pure search


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_binary_search_equals_the_linear_scan_under_any_monotone_oracle(data):
    n = data.draw(st.integers(0, 70), label="n")
    boundary = data.draw(st.integers(0, max(n - 1, 0)), label="m*")
    ok_zero = data.draw(st.booleans(), label="ok(0)")  # never read by the binary search

    def ok(m: int) -> bool:
        assert 0 <= m < n, "probed outside [0, n)"
        return ok_zero if m == 0 else m <= boundary

    m_star, probes = binary_search_m_star(n, ok)
    assert m_star == boundary == linear_scan_m_star(n, ok)[0]
    assert 0 not in probes
    assert len(probes) <= (math.ceil(math.log2(n)) if n > 1 else 0)
    assert len(probes) <= math.ceil(math.log2(n + 1))


def test_edge_lengths():
    assert binary_search_m_star(0, lambda m: True) == (0, [])
    assert binary_search_m_star(1, lambda m: True) == (0, [])  # only ok(0): cannot matter
    assert binary_search_m_star(2, lambda m: True) == (1, [1])
    assert binary_search_m_star(9, lambda m: True)[0] == 8  # m* = T - 1
    assert binary_search_m_star(9, lambda m: False)[0] == 0


def test_monotonicity_check():
    assert is_monotone({0: True, 1: True, 2: False}) and is_monotone({})
    assert not is_monotone({0: True, 1: False, 2: True})


# ----------------------------------------------------------------------------- the driver


CFG = LabelingConfig(k=8, chunk_size=2, ground_truth=False)


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.lists(st.booleans(), min_size=1, max_size=20),
    boundary=st.integers(0, 25),
    mode=st.sampled_from(["binary", "linear"]),
)
def test_labels_and_costs_follow_the_definitions(pattern, boundary, mode):
    text = code_response(pattern)
    lines = split_lines(text)
    n_code = sum(pattern)
    c_star = min(boundary, max(n_code - 1, 0))
    sampler = OracleSampler(lambda c: c <= c_star)
    cfg = CFG.model_copy(update={"search": mode})
    (record,) = label_responses([failing(text)], sampler, fake_run_batch, cfg, seed=0)

    code_seen = 0
    for line, label in zip(lines, record.labels, strict=True):
        code_seen += not line.neutral
        assert label == (0 if line.neutral else 1 if code_seen <= c_star else -1)
    if c_star:
        assert record.m_star == [ln.index for ln in lines if not ln.neutral][c_star - 1] + 1
    else:
        assert record.m_star == 0
    assert record.completions_sampled == sum(sampler.calls)
    if mode == "binary":
        assert record.completions_sampled <= CFG.k * math.ceil(math.log2(len(lines) + 1))
    else:
        assert record.completions_sampled <= CFG.k * n_code and record.monotone


def test_a_passing_response_costs_nothing():
    sampler = OracleSampler(lambda c: True)
    response = Response(PROBLEM, "ckpt", 0, "    # ok\n" + PASS, verdict("passed"))
    (record,) = label_responses([response], sampler, fake_run_batch, CFG, seed=0)
    assert sampler.calls == [] and record.completions_sampled == 0 and record.tests_run == 1
    assert record.labels == [0, 1] and record.m_star == 2 and record.search == "none"


def test_an_all_comment_response_is_neutral_and_free():
    sampler = OracleSampler(lambda c: True)
    (record,) = label_responses(
        [failing("    # a\n\n    # b\n")], sampler, fake_run_batch, CFG, seed=0
    )
    assert record.labels == [0, 0, 0] and record.m_star == 0 and sampler.calls == []


def test_early_stop_charges_one_chunk_to_a_passing_probe():
    # 2 code lines: the only binary probe is c = 1
    for ok, cost in ((True, CFG.chunk_size), (False, CFG.k)):
        sampler = OracleSampler(lambda c, ok=ok: ok)
        (record,) = label_responses(
            [failing("    a = 1\n    b = 2\n")], sampler, fake_run_batch, CFG, seed=0
        )
        assert record.probes == [[1, ok, cost]] and record.completions_sampled == cost


def test_searches_advance_in_lockstep_and_share_prefixes():
    text = code_response([True] * 8)
    responses = [failing(text, i) for i in range(10)]
    sampler = OracleSampler(lambda c: c <= 5)
    cfg = CFG.model_copy(update={"chunk_size": CFG.k})
    records = label_responses(responses, sampler, fake_run_batch, cfg, seed=0)
    # one generate call per round, ⌈log2 8⌉ rounds for all ten; equal prefixes sampled once
    assert len(sampler.calls) == 3 and all(rows == cfg.k for rows in sampler.calls)
    assert [r.m_star for r in records] == [5] * 10
    assert records[0].completions_sampled == 3 * cfg.k and records[0].cache_hits == 0
    assert all(r.completions_sampled == 0 and r.cache_hits == 3 for r in records[1:])


def test_the_linear_scan_reports_monotonicity_violations():
    sampler = OracleSampler(lambda c: c in (0, 3))  # ok(1) fails, ok(3) passes again
    cfg = CFG.model_copy(update={"search": "linear"})
    (record,) = label_responses(
        [failing(code_response([True] * 5))], sampler, fake_run_batch, cfg, seed=0
    )
    assert record.monotone is False and record.m_star == 3  # the literal max{m : ok(m)}
    assert [probe[:2] for probe in record.probes] == [
        [0, True],
        [1, False],
        [2, False],
        [3, True],
        [4, False],
    ]
    metrics = cost_metrics([record], cfg.k)
    assert metrics["labeling/monotonicity_violation_fraction"] == 1.0


def test_seeds_are_stable_and_distinct():
    assert derive_seed(0, "ckpt", 1, "probes") == derive_seed(0, "ckpt", 1, "probes")
    assert derive_seed(0, "ckpt", 1, "probes") != derive_seed(0, "ckpt", 2, "probes")
    assert 0 <= derive_seed("x") < 2**63


# ----------------------------------------------------------------------------- selection, metrics


def record(task: str, passed: bool, m_star: int, truth: list[int] | None = None):
    labels = [1] * m_star + [-1] * (3 - m_star) if not passed else [1, 1, 1]
    return LabeledResponse(
        task_id=task,
        response_index=0,
        source_checkpoint="c",
        prompt="p",
        response="a\nb\nc\n",
        verdict="passed" if passed else "failed",
        passed=passed,
        tests_passed=0,
        tests_total=1,
        error_line=None,
        detail="",
        search="binary",
        m_star=3 if passed else m_star,
        labels=labels,
        n_code_lines=3,
        completions_sampled=0 if passed else 8,
        ground_truth=truth,
    )


def test_data_selection_strategies():
    records = [
        record("easy", True, 3),
        record("easy", True, 3),  # pass rate 1
        record("mid", True, 3),
        record("mid", False, 0),
        record("mid", False, 2),  # 1/3
        record("hard", False, 1),
        record("hard", False, 0),  # 0
    ]

    def kept(selection):
        return [(r.task_id, r.passed, r.m_star) for r in select_responses(records, selection)]

    assert len(kept("full")) == 7
    assert {task for task, _, _ in kept("remove-hard")} == {"easy", "mid"}
    assert {task for task, _, _ in kept("medium-only")} == {"mid"}
    assert kept("revised-only") == [
        ("easy", True, 3),
        ("easy", True, 3),
        ("mid", True, 3),
        ("mid", False, 2),
        ("hard", False, 1),
    ]

    # Synthetic records (a reference, a mistake at line 1) are kept by every selection and
    # count in no pass rate: "hard" stays hard although its reference passes.
    synthetic = [
        replace(record("hard", True, 3), search=SYNTHETIC),
        replace(record("hard", False, 0), search=SYNTHETIC),
    ]
    records += synthetic
    for selection in ("full", "remove-hard", "medium-only", "revised-only"):
        assert select_responses(records, selection)[-2:] == synthetic
    assert {task for task, _, _ in kept("remove-hard")[:-2]} == {"easy", "mid"}


def test_cost_and_audit_metrics():
    records = [
        record("a", False, 2, [1, -1, -1]),
        record("b", False, 0, [-1, -1, -1]),
        record("c", True, 3, [1, 1, 1]),
    ]
    costs = cost_metrics(records, k=8)
    assert costs["labeling/failing_responses"] == 2
    assert costs["labeling/completions_per_failing_mean"] == 8
    assert costs["labeling/linear_scan_completions_per_failing_mean"] == 24
    assert costs["labeling/rescued_fraction"] == 0.5
    audit = audit_metrics(records)
    assert audit["labeling/audit/exact_match"] == 0.5 and audit["labeling/audit/mean_offset"] == 0.5


def test_trl_format_folds_neutral_lines_into_the_next_step():
    r = record("a", False, 1)
    r.response = "    # note\n    x = 1\n\n    y = 2\n    # end\n"
    r.labels = [0, 1, 0, -1, 0]
    row = trl_record(r)
    assert row["completions"] == ["    # note\n    x = 1", "\n    y = 2\n    # end"]
    assert row["labels"] == [True, False]


# ----------------------------------------------------------------------------- real sandbox


class ReferenceSampler:
    """A policy that knows the references: it continues a prefix of the reference with the
    reference's remaining lines — one of them wrong with probability ``slip`` — and any other
    prefix with a wrong line. Its randomness depends on the call's seed and the row, as a
    batched sampler's does."""

    def __init__(self, problems, slip: float = 0.0, name: str = "") -> None:
        self.by_prompt = {p.prompt: p for p in problems}
        self.slip, self.name = slip, name

    def generate(self, prompts, params):
        outs = []
        for row, prompt in enumerate(prompts):
            problem = next(p for text, p in self.by_prompt.items() if prompt.startswith(text))
            head = prompt.removeprefix(problem.prompt)
            if not problem.reference.startswith(head):
                outs.append(SimpleNamespace(text="    return []\n"))
                continue
            rng = random.Random(f"{self.name}/{params.seed}/{row}")
            text = problem.reference
            if rng.random() < self.slip:
                text = corrupt(text, rng.randrange(head.count("\n"), text.count("\n")))
            outs.append(SimpleNamespace(text=text[len(head) :]))
        return outs


def corrupt(reference: str, line: int) -> str:
    """``reference`` with line ``line`` (0-based) computing a wrong value."""
    lines = reference.splitlines(keepends=True)
    last = len(lines) - 1
    lines[line] = (
        f"    v{line + 1} = [x + 1000 for x in v{line}]\n" if line < last else ("    return []\n")
    )
    return "".join(lines)


@pytest.mark.parametrize("mode", ["binary", "linear"])
def test_m_star_is_the_first_wrong_line_with_a_perfect_policy(mode):
    require(os.path.exists("/usr/bin/bwrap"), "bubblewrap (/usr/bin/bwrap) is not installed")
    from workers.problemsets import sandbox_run_batch

    bench = BenchmarkConfig(n_train=6, n_test=1, min_steps=4, max_steps=6)
    problems = [p for p in generate(bench) if p.split == "train"]
    sampler = ReferenceSampler(problems)
    cfg = LabelingConfig(n_responses=1, k=2, chunk_size=2, search=mode)
    answers = sample_responses(problems, sampler, sandbox_run_batch, cfg, checkpoint="c", seed=0)
    assert all(a.result.status == "passed" and set(a.ground_truth) == {1} for a in answers)

    wrong = [corrupt(p.reference, j % 3) for j, p in enumerate(problems)]
    results = sandbox_run_batch(
        [exec_request(p, w, "x") for p, w in zip(problems, wrong, strict=True)]
    )
    responses = [
        Response(p, "c", 1, w, result, ground_truth_labels(p, w, sandbox_run_batch))
        for p, w, result in zip(problems, wrong, results, strict=True)
    ]
    records = label_responses(responses, sampler, sandbox_run_batch, cfg, seed=0)
    assert [r.m_star for r in records] == [j % 3 for j in range(len(problems))]
    assert audit_metrics(records)["labeling/audit/exact_match"] == 1.0
    # the exact labels are what a search with a perfect policy finds, with no completions
    exact = [ground_truth_record(r) for r in responses]
    assert [(r.labels, r.m_star, r.completions_sampled) for r in exact] == [
        (r.labels, r.m_star, 0) for r in records
    ]
    assert {r.search for r in exact} == {"ground-truth"}


def test_misplaced_argument_mistakes_come_after_the_others_and_are_labelled_exactly():
    cfg = BenchmarkConfig(n_train=60, n_test=20, seed=5)
    train = [p for p in generate(cfg) if p.meta["split"] == "train"]
    plain = synthetic_mistakes(train, n_mistakes=3, seed=1)
    records = synthetic_mistakes(train, n_mistakes=3, seed=1, misplaced_arguments=2)
    assert [r for r in records if r.response_index <= 3] == plain  # the others unchanged
    extra = [r for r in records if r.response_index > 3]
    assert len(extra) > len(train)  # most problems have 2 or more numbers to move
    by_task = {p.task_id: p for p in train}
    for r in extra:
        source = by_task[r.task_id]
        old, new = source.reference.splitlines(), r.response.splitlines()
        (line,) = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        assert r.response not in {p.response for p in plain if p.task_id == r.task_id}
        if not r.passed:  # a mistake the tests cannot see is right on every line and passes
            assert r.labels == [1] * line + [-1] * (len(r.labels) - line)
    assert synthetic_mistakes(train, 0, seed=1, misplaced_arguments=2)  # alone: with references


def test_a_ground_truth_record_needs_responses_sampled_with_the_ground_truth():
    with pytest.raises(ValueError, match="ground_truth=true"):
        ground_truth_record(failing("    v1 = v0\n"))


def test_synthetic_mistakes_are_the_reference_and_its_one_line_mistakes_labelled_exactly():
    problems = generate(BenchmarkConfig(n_train=40, n_test=0, seed=5))
    records = synthetic_mistakes([*problems, PROBLEM], n_mistakes=3, seed=1)
    assert records == synthetic_mistakes([*problems, PROBLEM], n_mistakes=3, seed=1)
    assert {r.task_id for r in records} == {p.task_id for p in problems}  # not PROBLEM
    by_task = {p.task_id: p for p in problems}
    for r in records:
        problem = by_task[r.task_id]
        assert r.search == r.source_checkpoint == SYNTHETIC and r.completions_sampled == 0
        assert r.ground_truth == r.labels and r.prompt == problem.prompt
        if r.response_index == 0:
            assert r.response == problem.reference and r.passed and set(r.labels) == {1}
            continue
        # One line wrong: every line before it +1, it and every line after it -1 (a mistake
        # the tests cannot see is right on every line and passes).
        changed = [a != b for a, b in zip(r.lines, problem.reference.splitlines(), strict=False)]
        first_changed = changed.index(True) if any(changed) else len(r.lines) - 1
        if r.passed:
            assert set(r.labels) == {1}
        else:
            assert r.labels[: r.m_star] == [1] * r.m_star and set(r.labels[r.m_star :]) == {-1}
            assert r.m_star >= first_changed  # the lines before it are the reference's
    assert [r.response_index for r in records if r.task_id == problems[0].task_id] == [0, 1, 2, 3]
    assert synthetic_mistakes(problems, n_mistakes=0) == []  # off
