"""A run's artifacts as jobs use them: the newest checkpoint of an input run, and resuming a
run of their own from its last checkpoint (forgetting what a lost attempt logged after it)."""

from __future__ import annotations


def latest_artifact(run_id: int, kind: str) -> tuple[str, int | None] | None:
    """Path and step of a run's newest artifact of ``kind`` (None if it has none)."""
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Artifact

    with read_session() as session:
        row = session.execute(
            select(Artifact.path, Artifact.step)
            .where(Artifact.run_id == run_id, Artifact.kind == kind)
            .order_by(Artifact.step.desc(), Artifact.id.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


def required_artifact(run_id: int, kind: str, field: str) -> str:
    found = latest_artifact(run_id, kind)
    if found is None:
        raise ValueError(f"{field}: run {run_id} has no {kind} artifact (has it finished?)")
    return found[0]


def forget_after(run_id: int, step: int) -> None:
    """Delete the metrics and samples a lost attempt logged after ``step``."""
    from sqlalchemy import delete

    from app.db import session_scope
    from app.orm import Metric, Sample

    with session_scope() as session:
        session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.step > step))
        session.execute(delete(Sample).where(Sample.run_id == run_id, Sample.step > step))
