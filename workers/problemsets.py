"""Problem sets in the database: full validation (structure, then every reference run against
its own tests in the sandbox), content-hashed imports, the embedded benchmark, and the listings
job forms offer.

Nothing is stored unless the whole file is valid. Helpers never commit: the caller's
``session_scope()`` decides what one transaction holds. Validation (the slow part) happens
before the session is touched, so it holds no database lock while the sandbox works.

CLI entry points (``prm-studio problems …``)::

    report = validate_file(path, fmt)            # report.ok, report.summary()
    with session_scope() as session:
        problem_set = import_file(session, path, name=name, fmt=fmt)   # InvalidProblemFile
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from app.orm import Problem as ProblemRow
from app.orm import ProblemSet
from models.benchmark import BenchmarkConfig, generate, held_out_pairs
from models.problems import (
    InvalidProblemFile,
    Problem,
    ProblemError,
    ValidationReport,
    content_hash,
    exec_request,
    validate_jsonl,
)
from workers.sandbox import run_batch as sandbox_run_batch

RunBatch = Callable[[list[dict[str, Any]]], Sequence[Any]]
"""The sandbox: DESIGN §3 request dicts in, one result (``status``, ``passed``, …) each out."""


class ProblemSetConflict(ValueError):
    """A name already taken by a set with different content."""


class ProblemSetNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"no problem set named {name!r} (see `prm-studio problems list` for the names)"
        )


# ----------------------------------------------------------------------------- validation


def reference_errors(
    problems: Sequence[Problem], lines: Sequence[int], run_batch: RunBatch
) -> list[ProblemError]:
    """An error for every reference that fails its own tests in the sandbox."""
    checked = [(p, line) for p, line in zip(problems, lines, strict=True) if p.reference]
    requests = [exec_request(p, p.reference or "", str(i)) for i, (p, _) in enumerate(checked)]
    if not requests:
        return []
    errors = []
    for (_, line), result in zip(checked, run_batch(requests), strict=True):
        if result.status != "passed":
            errors.append(
                ProblemError(
                    line,
                    "reference",
                    f"the reference fails its own tests in the sandbox: {result.status}, "
                    f"{result.passed}/{result.total} passed ({result.detail}); fix the reference "
                    "or the tests, or set reference to null",
                )
            )
    return errors


def validate_file(
    path: str | Path | bytes, fmt: str = "jsonl", *, run_batch: RunBatch = sandbox_run_batch
) -> ValidationReport:
    """The full check behind ``prm-studio problems validate``: structure, then references."""
    report = validate_jsonl(path, fmt)
    failed = reference_errors(report.problems, report.lines, run_batch)
    bad = {error.line for error in failed}
    kept = [(p, line) for p, line in zip(report.problems, report.lines, strict=True)]
    kept = [(p, line) for p, line in kept if line not in bad]
    return ValidationReport(
        problems=[p for p, _ in kept],
        lines=[line for _, line in kept],
        errors=sorted([*report.errors, *failed], key=lambda error: error.line),
    )


# ----------------------------------------------------------------------------- storage


def _row(problem: Problem, problem_set_id: int) -> dict[str, Any]:
    difficulty = problem.meta.get("difficulty")
    data = problem.model_dump(mode="json", exclude={"task_id", "prompt"})
    return {
        "problem_set_id": problem_set_id,
        "task_id": problem.task_id,
        "split": problem.split,
        "difficulty": difficulty if isinstance(difficulty, int) else None,
        "prompt": problem.prompt,
        "data": data,
    }


def _split_counts(problems: Sequence[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.split] = counts.get(problem.split, 0) + 1
    return dict(sorted(counts.items()))


def find_problem_set(session: Session, name: str) -> ProblemSet | None:
    return session.scalar(select(ProblemSet).where(ProblemSet.name == name))


def import_problem_set(
    session: Session,
    name: str,
    problems: Sequence[Problem],
    source: str,
    meta: dict[str, Any] | None = None,
) -> ProblemSet:
    """Store ``problems`` as set ``name``; the same content under the same name is a no-op.

    Raises ``ProblemSetConflict`` when ``name`` holds different content, and ``ValueError``
    for an empty list or repeated task ids (validated files have neither).
    """
    if not name.strip():
        raise ValueError("a problem set needs a non-empty name")
    if not problems:
        raise ValueError("a problem set needs at least one problem")
    task_ids = [p.task_id for p in problems]
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("task ids must be unique within a problem set")
    digest = content_hash(problems)
    existing = find_problem_set(session, name)
    if existing is not None:
        if existing.content_hash == digest:
            return existing
        raise ProblemSetConflict(
            f"a problem set named {name!r} already exists with different content "
            f"(sha256 {existing.content_hash[:12]}…, this one {digest[:12]}…); "
            "import it under another name"
        )
    problem_set = ProblemSet(
        name=name,
        source=source,
        content_hash=digest,
        n_problems=len(problems),
        meta={"splits": _split_counts(problems), **(meta or {})},
    )
    session.add(problem_set)
    session.flush()
    session.execute(insert(ProblemRow), [_row(p, problem_set.id) for p in problems])
    return problem_set


def import_file(
    session: Session,
    path: str | Path,
    *,
    name: str,
    fmt: str = "jsonl",
    run_batch: RunBatch = sandbox_run_batch,
) -> ProblemSet:
    """Validate fully, then import; raises ``InvalidProblemFile`` (all errors) and stores
    nothing if any line is bad."""
    report = validate_file(path, fmt, run_batch=run_batch)
    if not report.ok:
        raise InvalidProblemFile(report)
    return import_problem_set(session, name, report.problems, fmt, meta={"file": str(path)})


def embedded_name(cfg: BenchmarkConfig) -> str:
    """``embedded`` for the default config; other configs get a name from their settings."""
    if cfg == BenchmarkConfig():
        return "embedded"
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    return f"embedded-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def ensure_embedded(session: Session, cfg: BenchmarkConfig | None = None) -> ProblemSet:
    """The embedded benchmark for ``cfg`` (default config: the set named ``embedded``),
    generated and stored with its train/test splits on first use."""
    cfg = cfg or BenchmarkConfig()
    meta = {
        "config": cfg.model_dump(mode="json"),
        "held_out": [list(pair) for pair in held_out_pairs(cfg)],
    }
    return import_problem_set(session, embedded_name(cfg), generate(cfg), "embedded", meta)


def list_problem_sets(session: Session) -> Sequence[ProblemSet]:
    return session.scalars(select(ProblemSet).order_by(ProblemSet.name)).all()


def problem_set_splits(session: Session, name: str) -> dict[str, int]:
    """{split: number of problems} of set ``name``, for job forms."""
    problem_set = find_problem_set(session, name)
    if problem_set is None:
        raise ProblemSetNotFound(name)
    query = (
        select(ProblemRow.split, func.count())
        .where(ProblemRow.problem_set_id == problem_set.id)
        .group_by(ProblemRow.split)
        .order_by(ProblemRow.split)
    )
    return {split: int(count) for split, count in session.execute(query)}


def load_problem_set(session: Session, name: str, split: str | None = None) -> list[Problem]:
    """The problems of set ``name`` (one split, or all), in import order."""
    problem_set = find_problem_set(session, name)
    if problem_set is None:
        raise ProblemSetNotFound(name)
    query = select(ProblemRow).where(ProblemRow.problem_set_id == problem_set.id)
    if split is not None:
        query = query.where(ProblemRow.split == split)
    rows = session.scalars(query.order_by(ProblemRow.id))
    return [
        Problem.model_validate({"task_id": r.task_id, "prompt": r.prompt, **r.data}) for r in rows
    ]
