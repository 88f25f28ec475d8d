"""The Celery application, configured from settings.

Embedded default: Celery's SQLAlchemy transport on an SQLite file (no services to install).
Production: Redis. Run state never lives in Celery — it lives in the database — so every broker
behaves the same, including for cancellation (a DB flag the running job polls).
"""

from __future__ import annotations

from celery import Celery
from sqlalchemy.engine import make_url

from app.settings import Settings, get_settings

QUEUES = ("cpu", "gpu")
"""``gpu`` jobs hold an accelerator; ``cpu`` jobs are sandbox- or I/O-heavy."""


def broker_transport_options(broker_url: str) -> dict:
    """SQLite as a broker needs a busy timeout: the dashboard and workers poll it at once."""
    if broker_url.startswith("sqla+"):
        backend = make_url(broker_url.removeprefix("sqla+")).get_backend_name()
        if backend == "sqlite":
            return {"connect_args": {"timeout": 30}}
    # Redis: a job may run for hours with acks_late; the lease in the DB (runner) guards
    # against a second delivery, and a long visibility timeout makes one rare.
    if broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": 12 * 3600}
    return {}


def create_celery(settings: Settings) -> Celery:
    settings.ensure_dirs()
    celery = Celery("prm_studio", broker=settings.broker_url, backend=settings.result_backend)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A job is acknowledged only when it finishes, so a worker that dies mid-job does not
        # lose it; one job at a time per process, since jobs hold a GPU or all CPU cores.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings.broker_url),
        worker_hijack_root_logger=False,
        include=["workers.tasks"],
    )
    return celery


app = create_celery(get_settings())
