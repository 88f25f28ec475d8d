"""ORM models: the one place the database schema is defined (migrations are generated from it).

Runs are jobs of any kind; everything a job produces (metrics, artifacts, samples with per-line
scores) hangs off its run. Indexes follow the dashboard's queries: curves by (run, name, step),
samples by (run, step), line scores by sample.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    # Named constraints: Alembic's batch mode on SQLite can only drop what has a name.
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class RunStatus(enum.StrEnum):
    waiting = "waiting"  # for the runs it depends on to succeed (a pipeline stage)
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


class Run(Base):
    """One job: its kind, validated config, lifecycle and lineage."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    group_name: Mapped[str | None] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.queued, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(500), default="")
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    worker_host: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    depends_on: Mapped[list[int]] = mapped_column(JSON, default=list)

    parent: Mapped[Run | None] = relationship(remote_side=[id])


class Metric(Base):
    """A scalar a run logged at a step (``losses/policy``, ``eval/pass@1``, …)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(120))
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A file or folder a run produced: a checkpoint, a dataset, a report."""

    __tablename__ = "artifacts"
    __table_args__ = (
        Index("ix_artifacts_run_kind_step", "run_id", "kind", "step"),
        Index("ix_artifacts_kind_id", "kind", "id"),  # checkpoint pickers: newest of a kind
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProblemSet(Base):
    """A named, content-hashed collection of problems (an import or the embedded benchmark)."""

    __tablename__ = "problem_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    n_problems: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Problem(Base):
    """One problem in the DESIGN §3 format; ``data`` holds tests/test/setup/reference/meta."""

    __tablename__ = "problems"
    __table_args__ = (
        UniqueConstraint("problem_set_id", "task_id"),
        Index("ix_problems_set_split", "problem_set_id", "split"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    problem_set_id: Mapped[int] = mapped_column(ForeignKey("problem_sets.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(200))
    split: Mapped[str] = mapped_column(String(32), default="test")
    difficulty: Mapped[int | None] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Sample(Base):
    """A generated program with its sandbox verdict (evaluation samples and logged rollouts)."""

    __tablename__ = "samples"
    __table_args__ = (
        Index("ix_samples_run_step", "run_id", "step"),
        Index("ix_samples_run_problem", "run_id", "problem_id"),
        Index("ix_samples_problem", "problem_id"),  # the same problem across runs
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer, default=0)
    problem_id: Mapped[int | None] = mapped_column(ForeignKey("problems.id", ondelete="SET NULL"))
    code: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(16))
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    tests_passed: Mapped[int] = mapped_column(Integer, default=0)
    tests_total: Mapped[int] = mapped_column(Integer, default=0)
    error_line: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineScore(Base):
    """One line of a sample: the PRM's score, labels and the dense reward PPO paid for it."""

    __tablename__ = "line_scores"
    __table_args__ = (Index("ix_line_scores_sample_line", "sample_id", "line_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[int | None] = mapped_column(Integer)
    ground_truth: Mapped[int | None] = mapped_column(Integer)
    dense_reward: Mapped[float | None] = mapped_column(Float)


class Worker(Base):
    """A worker process that announced itself; ``last_seen`` is its heartbeat."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    queues: Mapped[str] = mapped_column(String(200))
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    current_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
