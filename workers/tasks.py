"""Celery tasks: one per job kind (so monitoring shows what runs), each a one-line hand-off
to the runner, which does the rest."""

from __future__ import annotations

from celery import Task

from workers import heartbeat  # noqa: F401  (connects the worker's heartbeat signals)
from workers.celery_app import app
from workers.registry import JOB_KINDS, JobKind
from workers.runner import execute_run


def task_name(kind_name: str) -> str:
    return f"prm_studio.{kind_name}"


def _make_task(kind: JobKind) -> Task:
    @app.task(name=task_name(kind.name), bind=True)
    def run_job(self: Task, run_id: int) -> str:
        return execute_run(run_id, task_id=self.request.id, worker_name=self.request.hostname)

    return run_job


TASKS: dict[str, Task] = {name: _make_task(kind) for name, kind in JOB_KINDS.items()}
