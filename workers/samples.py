"""Storing generated programs: one ``samples`` row per completion, linked to its problem, with
one ``line_scores`` row per line when the record carries lines (PRM score, labels, reward)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from app.db import session_scope
from app.orm import LineScore, ProblemSet, Sample
from app.orm import Problem as ProblemRow

LINE_FIELDS = ("score", "label", "ground_truth", "dense_reward")


def store_samples(run_id: int, step: int, set_name: str, records: Sequence[Any]) -> int:
    """Store evaluation or rollout records (``models.evaluation.SampleRecord``,
    ``models.ppo.RolloutRecord``); returns the count. One transaction for the batch."""
    with session_scope() as session:
        problem_ids = dict(
            session.execute(
                select(ProblemRow.task_id, ProblemRow.id)
                .join(ProblemSet, ProblemRow.problem_set_id == ProblemSet.id)
                .where(ProblemSet.name == set_name)
            ).all()
        )
        for record in records:
            sample = Sample(
                run_id=run_id,
                step=step,
                problem_id=problem_ids.get(record.task_id),
                code=record.program,
                verdict=record.verdict,
                passed=record.passed,
                tests_passed=record.tests_passed,
                tests_total=record.tests_total,
                error_line=record.error_line,
                detail=record.detail,
                meta={"mode": record.mode, "sample_index": record.sample_index},
            )
            session.add(sample)
            lines = getattr(record, "lines", None) or []
            if lines:
                session.flush()  # the sample's id, for its lines
                session.add_all(
                    LineScore(
                        sample_id=sample.id,
                        line_no=line["line_no"],
                        text=line["text"],
                        **{name: line.get(name) for name in LINE_FIELDS},
                    )
                    for line in lines
                )
    return len(records)
