"""Problem sets in a throwaway database, and full validation with references run in the sandbox.

Also home of the ``sandbox_run_batch`` fixture that the benchmark and importer tests share.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import create_db_engine, migrate
from app.orm import Problem as ProblemRow
from app.orm import ProblemSet
from models.benchmark import BenchmarkConfig
from models.problems import InvalidProblemFile, Problem
from workers.problemsets import (
    ProblemSetConflict,
    ProblemSetNotFound,
    embedded_name,
    ensure_embedded,
    import_file,
    import_problem_set,
    list_problem_sets,
    load_problem_set,
    problem_set_splits,
    validate_file,
)


@pytest.fixture
def session(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/t.sqlite"
    engine = create_db_engine(url)
    migrate(url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def make(task_id: str, split: str = "test", reference: str = "    return x + 1\n") -> Problem:
    return Problem(
        task_id=task_id,
        prompt="def inc(x):\n",
        entry_point="inc",
        tests=["assert inc(1) == 2"],
        reference=reference,
        meta={"split": split},
    )


def test_import_is_content_hashed(session: Session) -> None:
    problems = [make("a", "train"), make("b"), make("c")]
    first = import_problem_set(session, "mine", problems, "jsonl")
    session.commit()
    assert first.n_problems == 3 and first.meta["splits"] == {"test": 2, "train": 1}
    again = import_problem_set(session, "mine", list(problems), "jsonl")
    assert again.id == first.id
    assert session.scalar(select(ProblemSet.id).where(ProblemSet.name == "mine")) == first.id
    with pytest.raises(ProblemSetConflict, match="already exists with different content"):
        import_problem_set(session, "mine", problems[:2], "jsonl")
    assert load_problem_set(session, "mine") == problems
    assert load_problem_set(session, "mine", split="train") == problems[:1]
    assert problem_set_splits(session, "mine") == {"test": 2, "train": 1}
    assert [s.name for s in list_problem_sets(session)] == ["mine"]


def test_import_refuses_bad_input(session: Session) -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        import_problem_set(session, "empty", [], "jsonl")
    with pytest.raises(ValueError, match="unique"):
        import_problem_set(session, "dup", [make("a"), make("a")], "jsonl")
    with pytest.raises(ProblemSetNotFound, match="no problem set named 'nope'"):
        problem_set_splits(session, "nope")


def test_ensure_embedded_stores_splits_once(session: Session) -> None:
    cfg = BenchmarkConfig(n_train=60, n_test=20)
    stored = ensure_embedded(session, cfg)
    session.commit()
    assert stored.name == embedded_name(cfg) != "embedded"
    assert embedded_name(BenchmarkConfig()) == "embedded"
    assert problem_set_splits(session, stored.name) == {"test": 20, "train": 60}
    assert stored.meta["held_out"] and stored.meta["config"]["n_train"] == 60
    assert ensure_embedded(session, cfg).id == stored.id
    rows = session.scalars(select(ProblemRow).where(ProblemRow.split == "test")).all()
    assert {row.difficulty for row in rows} == set(range(2, 11))


def write(path: Path, problems: list[Problem]) -> Path:
    path.write_text("".join(json.dumps(p.model_dump()) + "\n" for p in problems))
    return path


def test_reference_that_fails_its_tests(tmp_path: Path, sandbox_run_batch) -> None:
    path = write(tmp_path / "p.jsonl", [make("good"), make("bad", reference="    return x\n")])
    report = validate_file(path, run_batch=sandbox_run_batch)
    assert [p.task_id for p in report.problems] == ["good"]
    assert [(e.line, e.field) for e in report.errors] == [(2, "reference")]
    assert "fails its own tests" in report.errors[0].message


def test_nothing_is_stored_unless_the_whole_file_is_valid(
    tmp_path: Path, session: Session, sandbox_run_batch
) -> None:
    bad = write(tmp_path / "bad.jsonl", [make("good"), make("bad", reference="    return 0\n")])
    with pytest.raises(InvalidProblemFile, match="line 2, field 'reference'"):
        import_file(session, bad, name="set", run_batch=sandbox_run_batch)
    assert list_problem_sets(session) == []
    good = write(tmp_path / "good.jsonl", [make("good"), make("also")])
    stored = import_file(session, good, name="set", run_batch=sandbox_run_batch)
    assert stored.n_problems == 2 and stored.source == "jsonl"
