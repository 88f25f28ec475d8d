"""The sandbox's contract: request validation, verdicts, formats, the pool and ``exec_jsonl``.

Hostile programs are in ``test_sandbox_hostile.py``, the real benchmarks in
``test_sandbox_benchmarks.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Thread

import psutil
import pytest
from pydantic import ValidationError

from tests.conftest import require
from workers.sandbox import (
    ExecRequest,
    ExecResult,
    RequestFileError,
    SandboxLimits,
    SandboxPool,
    SandboxUnavailable,
    exec_jsonl,
    isolation_level,
    run_batch,
    sandbox_mode,
)
from workers.sandbox.models import split_check
from workers.sandbox.pool import verdict

HUMANEVAL_TEST = """
METADATA = {}


def check(candidate):
    assert candidate(1) == 2
    x = 3
    assert candidate(x) == 4
    for i in range(3):
        assert candidate(i) == i + 1
    assert candidate(10) == 11
"""


def require_bwrap() -> None:
    require(
        shutil.which("bwrap") is not None,
        "bubblewrap is not installed (apt-get install bubblewrap)",
    )


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    require_bwrap()
    with SandboxPool(workers=2, limits=SandboxLimits(memory_mb=512)) as pool:
        yield pool


def run(pool: SandboxPool, program: str, tests: list | None = None, **fields) -> ExecResult:
    request = {"id": "r", "program": program, "timeout_s": 3.0, **fields}
    if tests is not None:
        request["tests"] = tests
    return pool.run_batch([request])[0]


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of 'tests'"),
        (
            {"tests": ["assert True"], "test": "def check(c): pass", "entry_point": "f"},
            "exactly one",
        ),
        ({"tests": []}, "'tests' is empty"),
        ({"test": HUMANEVAL_TEST}, "needs 'entry_point'"),
        ({"test": "x = 1", "entry_point": "f"}, "must define check(candidate)"),
        ({"test": "def check(:", "entry_point": "f"}, "does not parse"),
        ({"tests": ["assert True"], "entry_point": "not an identifier"}, "not a Python identifier"),
        ({"tests": ["assert True"], "timeout_s": 0}, "greater than 0"),
        ({"tests": ["assert True"], "color": "red"}, "Extra inputs"),
        ({"tests": [{"input": "1"}]}, "output"),
        ({"tests": [{"input": "1", "output": "1"}], "setup": "import os"}, "'setup' is for"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ExecRequest(id="x", program="", **fields)


def test_check_is_split_into_one_unit_per_assertion() -> None:
    param, units = split_check(HUMANEVAL_TEST)
    assert param == "candidate"
    assert units == [
        "assert candidate(1) == 2",
        "x = 3\nassert candidate(x) == 4",
        "for i in range(3):\n    assert candidate(i) == i + 1",
        "assert candidate(10) == 11",
    ]


def test_a_check_that_cannot_run_statement_by_statement_is_one_unit() -> None:
    test = "def check(f):\n    if f(0):\n        return\n    assert f(1)\n"
    assert split_check(test) == ("f", ["check(f)"])
    assert split_check("def check(f):\n    f(1)\n") == ("f", ["check(f)"])


def test_the_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRM_STUDIO_SANDBOX_MODE", raising=False)
    assert (sandbox_mode(), isolation_level()) == ("bubblewrap", "bubblewrap")
    monkeypatch.setenv("PRM_STUDIO_SANDBOX_MODE", "rlimits")
    assert (sandbox_mode(), isolation_level()) == ("rlimits", "rlimits-only (WEAK)")
    monkeypatch.setenv("PRM_STUDIO_SANDBOX_MODE", "docker")
    with pytest.raises(ValueError, match="sandbox_mode"):
        sandbox_mode()


def test_without_bubblewrap_the_pool_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PRM_STUDIO_SANDBOX_MODE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"), SandboxPool(1):
        pass


def test_a_pass_needs_every_unit_reported_and_a_clean_end() -> None:
    request = ExecRequest(id="v", program="", tests=["assert True", "assert True"])
    passed = [{"test": 0, "outcome": "passed", "detail": "", "error_line": None}]
    both = [*passed, {**passed[0], "test": 1}]
    end = {"end": True, "stopped": None, "stdout": "", "stderr": ""}
    shown = ["assert True", "assert True"]
    assert verdict(request, shown, [*both, end], {"judge": "done"}, 0.1).status == "passed"
    assert verdict(request, shown, both, {"judge": "done"}, 0.1).status == "killed"
    assert verdict(request, shown, [*both, end], {"judge": "died"}, 0.1).status == "killed"
    assert verdict(request, shown, [*passed, end], {"judge": "done"}, 0.1).status == "killed"
    late = verdict(request, shown, passed, {"judge": "deadline"}, 0.1)
    assert (late.status, late.passed, late.failed_test) == ("timeout", 1, "assert True")
    assert verdict(request, shown, [*both, end], None, 0.1).status == "killed"


# ----------------------------------------------------------------------------- verdicts


def test_verdicts_report_status_counts_line_and_failing_test(pool: SandboxPool) -> None:
    program = "def f(x):\n    if x == 3:\n        raise ValueError('three')\n    return x + 1\n"
    tests = ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 4", "assert f(0) == 1"]
    result = run(pool, program, tests)
    assert (result.status, result.passed, result.total) == ("failed", 2, 4)
    assert result.failed_test == "assert f(2) == 4"
    assert result.detail.startswith("test 2/4 failed") and "returned 3" in result.detail
    assert result.error_line is None

    error = run(pool, program, ["assert f(3) == 4"])
    assert (error.status, error.error_line, error.passed) == ("error", 3, 0)
    assert "ValueError: three" in error.detail

    good = run(pool, program, ["assert f(1) == 2"])
    assert (good.status, good.passed, good.total, good.detail) == (
        "passed",
        1,
        1,
        "1/1 tests passed",
    )


def test_a_syntax_error_reports_its_line(pool: SandboxPool) -> None:
    result = run(pool, "def f(x):\n    return x +\n", ["assert f(1) == 2", "assert f(2) == 3"])
    assert (result.status, result.error_line, result.passed, result.total) == ("error", 2, 0, 2)
    assert "SyntaxError" in result.detail


def test_an_import_time_error_fails_every_test(pool: SandboxPool) -> None:
    program = "import math\n\nVALUE = 1 / 0\n\ndef f(x):\n    return x\n"
    result = run(pool, program, ["assert f(1) == 1", "assert f(2) == 2"])
    assert (result.status, result.passed, result.total, result.error_line) == ("error", 0, 2, 3)
    assert "ZeroDivisionError" in result.detail and result.failed_test is None


def test_the_error_line_is_the_innermost_line_of_the_program(pool: SandboxPool) -> None:
    program = "def g(x):\n    return [][x]\n\ndef f(x):\n    return g(x)\n"
    assert run(pool, program, ["assert f(1) == 1"]).error_line == 2


def test_humaneval_checks_count_each_assertion(pool: SandboxPool) -> None:
    program = "def add_one(x):\n    return x + 1 if x < 5 else x\n"
    result = run(pool, program, test=HUMANEVAL_TEST, entry_point="add_one")
    assert (result.status, result.passed, result.total) == ("failed", 3, 4)
    assert result.failed_test == "assert candidate(10) == 11"
    missing = run(pool, "def other(x):\n    return x\n", test=HUMANEVAL_TEST, entry_point="add_one")
    assert (missing.status, missing.passed) == ("error", 0)
    assert "NameError" in missing.detail


def test_setup_runs_before_the_tests_and_may_build_program_objects(pool: SandboxPool) -> None:
    program = (
        "class Node:\n    def __init__(self, v):\n"
        "        self.v, self.left, self.right = v, None, None\n"
        "def size(n):\n    return 0 if n is None else 1 + size(n.left) + size(n.right)\n"
    )
    setup = "root = Node(1)\nroot.left = Node(2)\nroot.left.right = Node(3)"  # as MBPP 367 does
    result = run(pool, program, ["assert size(root) == 3", "assert root.left.v == 2"], setup=setup)
    assert (result.status, result.passed) == ("passed", 2), result.detail


def test_values_cross_by_copy(pool: SandboxPool) -> None:
    program = "items = [1]\ndef get():\n    return items\n"
    result = run(pool, program, ["got = get()\ngot.append(2)\nassert get() == [1]"])
    assert result.status == "passed", result.detail


def test_values_cross_exactly(pool: SandboxPool) -> None:
    program = (
        "import collections, fractions, decimal\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def values():\n"
        "    return [(1, 2.5), {1, 2}, frozenset({3}), {(1, 2): 'a'}, b'\\x00', 3j, None,\n"
        "            collections.Counter('aab'), fractions.Fraction(1, 3),\n"
        "            decimal.Decimal('1.10'),\n"
        "            range(3), 2**20000, float('inf'), -0.0, 'é✓']\n"
        "def point():\n    return Point(1, 2)\n"
        "def gen(n):\n    yield from range(n)\n"
        "def apply(f, xs):\n    return [f(x) for x in xs]\n"
    )
    tests = [
        "assert values() == [(1, 2.5), {1, 2}, frozenset({3}), {(1, 2): 'a'}, b'\\x00', 3j, None,"
        " {'a': 2, 'b': 1}, __import__('fractions').Fraction(1, 3),"
        " __import__('decimal').Decimal('1.10'), range(3), 2**20000, float('inf'), -0.0, 'é✓']",
        "assert type(values()[0]) is tuple and type(values()[-2]) is float",
        "assert point() == (1, 2) and point().y == 2",
        "assert list(gen(4)) == [0, 1, 2, 3] and 2 in gen(3)",
        "assert apply(lambda x: x * 10, [1, 2]) == [10, 20]",
        "assert apply(len, ['ab', 'c']) == [2, 1]",
    ]
    result = run(pool, program, tests)
    assert (result.status, result.passed) == ("passed", len(tests)), result.detail


def test_stdin_stdout_cases_compare_the_output(pool: SandboxPool) -> None:
    program = (
        "import sys\nn = int(input())\nif n < 0:\n    raise ValueError(n)\n"
        "print(n * 2)\nsys.exit(0)\n"
    )
    cases = [
        {"input": "21\n", "output": "42"},
        {"input": "2\n", "output": "5\n"},
        {"input": "-1\n", "output": ""},
        {"input": "  7 \n", "output": "14  \n\n"},
    ]
    result = run(pool, program, cases)
    assert (result.status, result.passed, result.total) == ("failed", 2, 4)
    assert "expected '5', got '4'" in result.detail and result.failed_test.startswith("input:\n2")
    error = run(pool, program, [cases[2]])
    assert (error.status, error.error_line) == ("error", 4)


def test_output_is_captured_and_capped(pool: SandboxPool) -> None:
    program = (
        "import sys\nprint('héllo ✓')\nprint('x' * 10000, file=sys.stderr)\n"
        "def f():\n    return 1\n"
    )
    result = run(pool, program, ["assert f() == 1"])
    assert result.status == "passed" and result.stdout == "héllo ✓\n"
    assert result.stderr.startswith("x" * 4096) and "more bytes" in result.stderr
    assert len(result.stderr) < 4200


def test_memory_and_time_limits(pool: SandboxPool) -> None:
    hog = run(pool, "def f():\n    return len(bytearray(2 << 30))\n", ["assert f() > 0"])
    assert (hog.status, hog.error_line) == ("memory", 2)
    spin = run(pool, "def f():\n    while True:\n        pass\n", ["assert f()"], timeout_s=1.0)
    assert spin.status == "timeout" and 1.0 <= spin.elapsed_s < 3.0


def test_results_keep_request_order_and_ids(pool: SandboxPool) -> None:
    requests = [
        {
            "id": f"r{i}",
            "program": f"def f():\n    return {i}\n",
            "tests": [f"assert f() == {i % 3}"],
        }
        for i in range(12)
    ]
    results = pool.run_batch(requests)
    assert [r.id for r in results] == [r["id"] for r in requests]
    assert [r.status == "passed" for r in results] == [i % 3 == i for i in range(12)]


def test_run_batch_starts_a_pool_for_the_occasion() -> None:
    require_bwrap()
    results = run_batch([{"id": "a", "program": "x = 1", "tests": ["assert x == 1"]}], workers=1)
    assert results[0].status == "passed"


def test_the_pool_restarts_a_sandbox_that_was_killed(pool: SandboxPool) -> None:
    victims = [psutil.Process(pid) for pid in pool.root_pids()]

    def kill_soon() -> None:
        time.sleep(0.5)
        for victim in victims:
            victim.children()[0].send_signal(signal.SIGKILL)  # each zygote, from outside

    killer = Thread(target=kill_soon)
    killer.start()
    requests = [
        {"id": str(i), "program": "import time\ntime.sleep(5)", "tests": ["assert True"]}
        for i in range(2)
    ]
    results = pool.run_batch(requests)
    killer.join()
    assert [r.status for r in results] == ["killed", "killed"]
    assert "restarted" in results[0].detail
    assert run(pool, "x = 1", ["assert x == 1"]).status == "passed"


def test_a_hung_sandbox_is_killed_from_outside(pool: SandboxPool) -> None:
    zygote = psutil.Process(pool.root_pids()[0]).children()[0]
    zygote.suspend()  # it can no longer answer, nor enforce its own deadline
    try:
        requests = [
            {"id": str(i), "program": "x = 1", "tests": ["assert x == 1"], "timeout_s": 0.5}
            for i in range(2)
        ]
        statuses = sorted(r.status for r in pool.run_batch(requests))
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            zygote.resume()
    assert statuses == ["killed", "passed"]  # the hung one, and the other sandbox
    assert not zygote.is_running()  # killed and reaped
    assert run(pool, "x = 1", ["assert x == 1"]).status == "passed"


# ----------------------------------------------------------------------------- exec_jsonl


def test_exec_jsonl_writes_one_result_per_request(tmp_path: Path) -> None:
    require_bwrap()
    requests = [
        {"id": "ok", "program": "def f():\n    return 1\n", "tests": ["assert f() == 1"]},
        {"id": "bad", "program": "def f():\n    return 2\n", "tests": ["assert f() == 1"]},
    ]
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in requests) + "\n\n")
    progress: list[tuple[int, int]] = []
    summary = exec_jsonl(
        source, tmp_path / "results.jsonl", workers=1, on_progress=lambda *p: progress.append(p)
    )
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    results = [ExecResult.model_validate_json(line) for line in lines]
    assert [(r.id, r.status) for r in results] == [("ok", "passed"), ("bad", "failed")]
    assert summary["requests"] == 2 and summary["passed"] == 1
    assert summary["by_status"] == {"passed": 1, "failed": 1}
    assert progress == [(1, 2), (2, 2)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "program": "", "tests": ["assert True"]}', "{oops"], ":2: not valid JSON"),
        (['{"id": "a", "program": "", "tests": "assert True"}'], ":1: field 'tests': "),
        (
            ['{"id": "a", "program": "", "tests": ["assert True"], "timeout_s": -1}'],
            "field 'timeout_s'",
        ),
        (['{"id": "a", "program": ""}'], ":1: give exactly one of 'tests'"),
        (['{"id": "a", "program": "", "tests": ["assert True"]}'] * 2, ":2: field 'id': duplicate"),
    ],
)
def test_exec_jsonl_names_the_bad_line_and_field(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(RequestFileError, match=re.escape(message)):
        exec_jsonl(source, tmp_path / "results.jsonl")
    assert not (tmp_path / "results.jsonl").exists()  # nothing ran


# ----------------------------------------------------------------------------- weak mode


def test_the_weak_mode_is_opt_in_and_loud(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PRM_STUDIO_SANDBOX_MODE", "rlimits")
    with caplog.at_level(logging.WARNING), SandboxPool(workers=1) as weak:
        result = weak.run_batch([{"id": "w", "program": "x = 2", "tests": ["assert x == 2"]}])[0]
    assert result.status == "passed"
    assert any("WITHOUT isolation" in r.message for r in caplog.records)
