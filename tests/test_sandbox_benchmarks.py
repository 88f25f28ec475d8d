"""The sandbox on the real benchmarks: every reference solution passes, and a function whose body
is ``pass`` passes no problem. The problems come through the project's own importers, so the
requests are the ones training and evaluation send."""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.importers import load_problems
from models.problems import Problem, exec_request, quiet_compile
from tests.conftest import require
from workers.sandbox import SandboxPool

DATASETS = Path(
    os.environ.get("PRM_STUDIO_SHARED_DATASETS")
    or Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)
BENCHMARKS = [
    ("HumanEval.jsonl.gz", "humaneval", 164),
    ("mbpp.jsonl", "mbpp", 974),
    ("sanitized-mbpp.json", "mbpp", 427),
]


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    require(
        shutil.which("bwrap") is not None,
        "bubblewrap is not installed (apt-get install bubblewrap)",
    )
    with SandboxPool(workers=2) as pool:
        yield pool


def problems(file: str, fmt: str) -> list[Problem]:
    path = DATASETS / file
    require(path.exists(), f"{path} is missing (set PRM_STUDIO_SHARED_DATASETS)")
    return load_problems(path, fmt)


def emptied(program: str) -> str:
    """``program`` with the body of every function replaced by ``pass``."""
    tree = quiet_compile(program, "<program>", ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.body = [ast.Pass()]
    return ast.unparse(tree)


@pytest.mark.parametrize(("file", "fmt", "count"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_reference_solutions_pass_and_empty_bodies_do_not(
    pool: SandboxPool, file: str, fmt: str, count: int
) -> None:
    loaded = problems(file, fmt)
    assert len(loaded) == count
    references = [exec_request(p, p.reference or "", p.task_id) for p in loaded]
    results = pool.run_batch(references)
    failures = [(r.id, r.status, r.detail) for r in results if r.status != "passed"]
    assert failures == []
    assert all(r.passed == r.total > 0 for r in results)

    empty = [{**request, "program": emptied(request["program"])} for request in references]
    passing = [r.id for r in pool.run_batch(empty) if r.status == "passed"]
    assert passing == []
