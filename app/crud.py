"""Queries and writes on the run database. Keyword-only, and none of them commits:
the caller's ``session_scope()`` decides what one transaction holds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.orm import Artifact, Metric, Run, RunStatus, utcnow


class RunNotFound(LookupError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} does not exist (see `prm-studio runs` for the list)")
        self.run_id = run_id


def create_run(
    session: Session,
    *,
    kind: str,
    config: dict[str, Any],
    name: str = "",
    group_name: str | None = None,
    parent_id: int | None = None,
    depends_on: list[int] | None = None,
) -> Run:
    depends_on = depends_on or []
    run = Run(
        kind=kind,
        config=config,
        name=name,
        group_name=group_name,
        parent_id=parent_id,
        depends_on=depends_on,
        status=RunStatus.waiting if depends_on else RunStatus.queued,
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, *, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def list_runs(
    session: Session,
    *,
    kind: str | None = None,
    status: str | None = None,
    group_name: str | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[Run]:
    """Runs newest first, filtered as the dashboard filters them."""
    from app.queries import runs_page

    runs, _total = runs_page(
        session,
        kind=kind,
        status=status,
        group_name=group_name,
        text=text,
        limit=limit,
        offset=offset,
    )
    return runs


def run_summary(run: Run) -> dict[str, Any]:
    """A run as plain data: ``prm-studio status --json`` and the ``run_status`` endpoint."""

    def moment(value):
        return value.isoformat() if value else None

    return {
        "id": run.id,
        "kind": run.kind,
        "name": run.name,
        "group": run.group_name,
        "status": run.status,
        "progress": round(run.progress, 4),
        "message": run.progress_message,
        "error": run.error,
        "worker_host": run.worker_host,
        "attempts": run.attempts,
        "created_at": moment(run.created_at),
        "started_at": moment(run.started_at),
        "finished_at": moment(run.finished_at),
        "parent_id": run.parent_id,
        "depends_on": run.depends_on,
        "config": run.config,
        "result": run.result,
    }


def claim_run(
    session: Session, *, run_id: int, task_id: str | None, worker_host: str, lease_s: float
) -> bool:
    """Atomically take a queued run — or a running one whose heartbeat is older than
    ``lease_s`` (its worker died) — and mark it running with a fresh heartbeat. False if
    someone else holds it: the single-runner guarantee rests on this one conditional UPDATE
    (two claimers of a lost run cannot both match, the winner refreshes the heartbeat)."""
    now = utcnow()
    lost = (Run.status == RunStatus.running) & (Run.heartbeat_at < now - timedelta(seconds=lease_s))
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, (Run.status == RunStatus.queued) | lost)
        .values(
            status=RunStatus.running,
            started_at=func.coalesce(Run.started_at, now),
            heartbeat_at=now,
            task_id=task_id,
            worker_host=worker_host,
            attempts=Run.attempts + 1,
        )
    )
    return result.rowcount == 1


def beat_run(session: Session, *, run_id: int) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))


def is_lost(run: Run, *, lease_s: float) -> bool:
    """Running, but its heartbeat stopped more than ``lease_s`` ago (its worker died)."""
    beat = run.heartbeat_at
    if run.status != RunStatus.running or beat is None:
        return False
    beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)  # SQLite returns naive UTC
    return utcnow() - beat > timedelta(seconds=lease_s)


def lost_runs(session: Session, *, lease_s: float) -> Sequence[Run]:
    """Running runs whose heartbeat stopped more than ``lease_s`` ago."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    query = select(Run).where(Run.status == RunStatus.running, Run.heartbeat_at < cutoff)
    return session.scalars(query).all()


def requeue_run(session: Session, *, run_id: int, from_status: tuple[str, ...]) -> bool:
    """Put a run back in the queue if it is (still) in one of ``from_status``."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(from_status))
        .values(
            status=RunStatus.queued,
            cancel_requested=False,
            finished_at=None,
            error=None,
            progress_message="queued again",
        )
    )
    return result.rowcount == 1


def finish_run(
    session: Session,
    *,
    run_id: int,
    status: RunStatus,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if status == RunStatus.succeeded:
        values["progress"] = 1.0
    if result is not None:
        values["result"] = result
    session.execute(update(Run).where(Run.id == run_id).values(**values))


def set_progress(session: Session, *, run_id: int, fraction: float, message: str) -> bool:
    """Write progress and heartbeat; returns the run's cancel flag (read in the same trip)."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(progress=fraction, progress_message=message[:500], heartbeat_at=utcnow())
    )
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def dependencies_met(session: Session, *, run: Run) -> bool:
    if not run.depends_on:
        return True
    statuses = session.scalars(select(Run.status).where(Run.id.in_(run.depends_on))).all()
    return len(statuses) == len(set(run.depends_on)) and all(
        status == RunStatus.succeeded for status in statuses
    )


def upstream_failure(session: Session, *, run: Run) -> int | None:
    """A dependency of ``run`` that finished without succeeding, if there is one."""
    failed = (RunStatus.failed, RunStatus.cancelled)
    query = select(Run.id).where(Run.id.in_(run.depends_on or []), Run.status.in_(failed))
    return session.scalars(query.limit(1)).first()


def release_if_ready(session: Session, *, run_id: int) -> bool:
    """Waiting → queued once every dependency succeeded; True for exactly one caller (the
    UPDATE is conditional), who then enqueues it."""
    run = get_run(session, run_id=run_id)
    if run.status != RunStatus.waiting or not dependencies_met(session, run=run):
        return False
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.waiting)
        .values(status=RunStatus.queued)
    )
    return result.rowcount == 1


def waiting_dependents(session: Session, *, run_id: int) -> list[Run]:
    """Waiting runs that list ``run_id`` among their dependencies."""
    waiting = session.scalars(select(Run).where(Run.status == RunStatus.waiting)).all()
    return [run for run in waiting if run_id in (run.depends_on or [])]


def fail_dependents(session: Session, *, run_id: int) -> list[int]:
    """A run that did not succeed fails everything downstream of it (transitively)."""
    failed, frontier = [], [run_id]
    while frontier:
        upstream = frontier.pop()
        for run in waiting_dependents(session, run_id=upstream):
            run.status = RunStatus.failed
            run.finished_at = utcnow()
            run.error = f"upstream run {upstream} did not succeed"
            failed.append(run.id)
            frontier.append(run.id)
    return failed


def request_cancel(session: Session, *, run_id: int) -> Run:
    """A queued run is cancelled at once; a running one is flagged and stops at its next poll."""
    run = get_run(session, run_id=run_id)
    if run.status in (RunStatus.queued, RunStatus.waiting):
        run.status = RunStatus.cancelled
        run.finished_at = utcnow()
    elif run.status == RunStatus.running:
        run.cancel_requested = True
    return run


def add_metrics(session: Session, *, run_id: int, step: int, values: Mapping[str, float]) -> None:
    """Store scalars; an undefined value (NaN, ±inf — e.g. explained variance of constant
    returns) is left out rather than stored as a number no database agrees on."""
    now = utcnow()
    session.add_all(
        Metric(run_id=run_id, step=step, name=name, value=float(value), time=now)
        for name, value in values.items()
        if math.isfinite(value)
    )


def metric_names(session: Session, *, run_id: int) -> list[str]:
    query = select(Metric.name).where(Metric.run_id == run_id).distinct().order_by(Metric.name)
    return list(session.scalars(query))


def metric_series(
    session: Session, *, run_id: int, name: str, max_points: int = 2000
) -> list[tuple[int, float]]:
    """(step, value) pairs of one curve, evenly downsampled in SQL to at most ``max_points``."""
    where = (Metric.run_id == run_id, Metric.name == name)
    count = session.scalar(select(func.count()).select_from(Metric).where(*where)) or 0
    query = select(Metric.step, Metric.value).where(*where).order_by(Metric.step, Metric.id)
    if count > max_points:
        stride = -(-count // max_points)
        numbered = query.add_columns(
            func.row_number().over(order_by=(Metric.step, Metric.id)).label("n")
        ).subquery()
        query = select(numbered.c.step, numbered.c.value).where((numbered.c.n - 1) % stride == 0)
    return [(int(step), float(value)) for step, value in session.execute(query)]


def add_artifact(
    session: Session,
    *,
    run_id: int,
    kind: str,
    path: str,
    step: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Artifact:
    artifact = Artifact(run_id=run_id, kind=kind, path=path, step=step, meta=meta or {})
    session.add(artifact)
    session.flush()
    return artifact
