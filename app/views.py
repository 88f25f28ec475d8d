"""What each dashboard view shows, as plain data read from the database. UI callbacks call
these and only render; all querying and shaping lives here (and in ``app.crud``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from app import crud
from app.db import read_session
from app.orm import RunStatus
from app.plots import metrics_figure

RUN_COLUMNS = ["id", "kind", "name", "group", "status", "progress", "eta", "created", "worker"]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def eta_text(status: str, progress: float, started_at: datetime | None) -> str:
    """Remaining time extrapolated from progress so far (empty when unknown)."""
    started = _aware(started_at)
    if status != RunStatus.running or started is None or progress <= 0.0:
        return ""
    elapsed = (datetime.now(UTC) - started).total_seconds()
    remaining = max(elapsed * (1.0 - progress) / progress, 0.0)
    minutes, seconds = divmod(int(remaining), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def runs_table(
    kind: str | None = None, status: str | None = None, text: str | None = None
) -> pd.DataFrame:
    """The runs list, newest first, filtered by kind, status and name text."""
    with read_session() as session:
        runs = crud.list_runs(session, kind=kind or None, status=status or None, text=text or None)
        rows = [
            [
                run.id,
                run.kind,
                run.name,
                run.group_name or "",
                run.status,
                f"{run.progress:.0%} {run.progress_message}".strip(),
                eta_text(run.status, run.progress, run.started_at),
                run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                run.worker_host or "",
            ]
            for run in runs
        ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_details(run_id: int) -> dict[str, Any]:
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        return {
            "id": run.id,
            "kind": run.kind,
            "name": run.name,
            "status": run.status,
            "progress": round(run.progress, 4),
            "message": run.progress_message,
            "error": run.error,
            "worker_host": run.worker_host,
            "created_at": str(run.created_at),
            "started_at": str(run.started_at) if run.started_at else None,
            "finished_at": str(run.finished_at) if run.finished_at else None,
            "config": run.config,
            "result": run.result,
        }


def run_metrics_figure(run_id: int):
    with read_session() as session:
        names = crud.metric_names(session, run_id=run_id)
        series = {name: crud.metric_series(session, run_id=run_id, name=name) for name in names}
    return metrics_figure(series, title=f"run {run_id} metrics")
