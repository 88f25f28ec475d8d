"""The Problem format and the structural validator: every error names its line and field."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.problems import (
    MAX_LINE_BYTES,
    Problem,
    ValidationReport,
    content_hash,
    exec_request,
    validate_jsonl,
    write_jsonl,
)

GOOD = {
    "task_id": "t/1",
    "prompt": "def inc(x):\n",
    "entry_point": "inc",
    "tests": ["assert inc(1) == 2", "assert inc(-1) == 0"],
    "reference": "    return x + 1\n",
}


def jsonl(*records: object) -> bytes:
    return "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records).encode()


def errors_at(report: ValidationReport, line: int) -> list[str]:
    return [str(e) for e in report.errors if e.line == line]


def test_good_file_gives_problems_and_lines() -> None:
    second = {**GOOD, "task_id": "t/2", "tests": None, "test": "def check(c):\n    pass\n"}
    report = validate_jsonl(jsonl(GOOD, "\n", second))
    assert report.ok, report.summary()
    assert [p.task_id for p in report.problems] == ["t/1", "t/2"]
    assert report.lines == [1, 3]  # the blank line is skipped but counted
    assert report.summary() == "2 problems, no errors"


def test_io_tests_are_accepted() -> None:
    report = validate_jsonl(jsonl({**GOOD, "tests": [{"input": "1\n", "output": "2\n"}]}))
    assert report.ok, report.summary()
    request = exec_request(report.problems[0], "    return 1\n", "r")
    assert request["tests"] == [{"input": "1\n", "output": "2\n"}]


def test_every_error_names_line_and_field() -> None:
    data = jsonl(
        GOOD,  # 1
        "{not json\n",  # 2
        "[1, 2]\n",  # 3
        {k: v for k, v in GOOD.items() if k != "prompt"} | {"task_id": "t/4"},  # 4
        {**GOOD, "task_id": "t/5", "tests": "assert True"},  # 5
        {**GOOD, "task_id": "t/6", "test": "def check(c): pass"},  # 6
        {**GOOD, "task_id": "t/7", "tests": None},  # 7
        {**GOOD},  # 8: duplicate of line 1
        {**GOOD, "task_id": "t/9", "tests": ["assert inc(1) ==", "assert True"]},  # 9
        {**GOOD, "task_id": "t/10", "reference": "    return x +\n"},  # 10
        {**GOOD, "task_id": 11},  # 11
        {**GOOD, "task_id": "t/12", "test_list": []},  # 12
        {**GOOD, "task_id": "t/13", "entry_point": "not a name"},  # 13
    )
    report = validate_jsonl(data)
    assert [p.task_id for p in report.problems] == ["t/1"]
    expect = {
        2: ("line 2", "not valid JSON"),
        3: ("line 3", "expected a JSON object, got an array"),
        4: ("field 'prompt'", "missing required field"),
        5: ("field 'tests'", "non-empty list of assertion strings"),
        6: ("field 'tests/test'", "both are set"),
        7: ("field 'tests/test'", "neither is set"),
        8: ("field 'task_id'", "already used on line 1"),
        9: ("field 'tests.0'", "does not compile"),
        10: ("field 'reference'", "prompt + reference does not compile"),
        11: ("field 'task_id'", "Input should be a valid string"),
        12: ("field 'test_list'", "unknown field"),
        13: ("field 'entry_point'", "not a Python identifier"),
    }
    for line, (where, what) in expect.items():
        found = errors_at(report, line)
        assert len(found) == 1 and where in found[0] and what in found[0], (line, found)
    assert len(report.errors) == len(expect)
    assert not report.ok and report.summary().startswith(f"{len(expect)} errors:")


def test_empty_file() -> None:
    for data in (b"", b"\n  \n"):
        report = validate_jsonl(data)
        assert [str(e) for e in report.errors] == [
            "line 1: the file is empty; expected one JSON object per line"
        ]


def test_json_array_is_refused_with_a_fix() -> None:
    report = validate_jsonl(json.dumps([GOOD], indent=2).encode())
    assert len(report.errors) == 1 and "JSON array, not JSONL" in str(report.errors[0])
    assert "jq -c" in report.errors[0].message


def test_non_utf8_line() -> None:
    report = validate_jsonl(jsonl(GOOD) + b'{"task_id": "\xff\xfe"}\n')
    assert [e.line for e in report.errors] == [2]
    assert "not valid UTF-8" in str(report.errors[0])
    assert len(report.problems) == 1


def test_line_over_the_size_limit(tmp_path) -> None:
    big = {**GOOD, "task_id": "big", "meta": {"pad": "x" * MAX_LINE_BYTES}}
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(GOOD, big))
    report = validate_jsonl(path)
    assert [e.line for e in report.errors] == [2]
    assert "1 MB per line" in report.errors[0].message


def test_gzip_and_paths_round_trip(tmp_path) -> None:
    problems = [Problem.model_validate(GOOD), Problem.model_validate({**GOOD, "task_id": "t/2"})]
    path = tmp_path / "p.jsonl.gz"
    write_jsonl(problems, path)
    assert gzip.decompress(path.read_bytes())
    report = validate_jsonl(path)
    assert report.problems == problems
    assert content_hash(report.problems) == content_hash(problems)
    assert content_hash(problems[:1]) != content_hash(problems)


def test_lone_surrogate_is_an_error_not_a_crash() -> None:
    report = validate_jsonl(b'{"task_id": "\\ud800", "prompt": "", "tests": ["assert 1"]}\n')
    assert [e.line for e in report.errors] == [1] and "surrogate" in report.errors[0].message


def test_unknown_format() -> None:
    report = validate_jsonl(jsonl(GOOD), fmt="csv")
    assert "unknown format" in report.errors[0].message


def test_exec_request_timeout_from_meta() -> None:
    problem = Problem.model_validate({**GOOD, "meta": {"timeout_s": 30}})
    assert exec_request(problem, "    return x + 1\n", "a")["timeout_s"] == 30.0
    problem = Problem.model_validate({**GOOD, "meta": {"timeout_s": "slow"}})
    assert exec_request(problem, "", "a")["timeout_s"] > 0


@pytest.mark.parametrize("fmt", ["jsonl", "humaneval", "mbpp"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        st.lists(
            st.dictionaries(
                st.sampled_from([*GOOD, "test", "setup", "meta", "text", "code", "test_list"]),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=3),
                    max_leaves=6,
                ),
            ),
            max_size=4,
        ).map(lambda records: "\n".join(json.dumps(r) for r in records).encode()),
    )
)
def test_no_input_crashes_the_validator(fmt: str, data: bytes) -> None:
    report = validate_jsonl(data, fmt=fmt)
    assert isinstance(report, ValidationReport)
    assert report.errors or report.problems
    assert all(e.line >= 1 and e.message for e in report.errors)
