"""The Celery application, configured from settings.

Embedded default: Celery's SQLAlchemy transport on an SQLite file (no services to install).
Production: Redis. Run state never lives in Celery — it lives in the database — so every broker
behaves the same, including for cancellation (a DB flag the running job polls).
"""

from __future__ import annotations

import functools

from celery import Celery
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

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


@functools.cache
def prepare_broker(broker_url: str) -> None:
    """Create an SQL broker's tables and the job queues' rows before kombu looks for them.

    Kombu's SQLAlchemy transport creates both lazily, so two processes opening a new broker at
    once (a worker starting while the dashboard or the CLI submits) race. A lost CREATE TABLE
    raises OperationalError, which kombu retries; a lost INSERT of a queue row raises the UNIQUE
    constraint's IntegrityError, which it does not: the publisher's job fails to enqueue, or the
    worker exits and the job waits forever. Every worker and publisher calls this first (once
    per process); racing calls cannot fail, as the tables are retried and the rows inserted
    with ON CONFLICT DO NOTHING. Other brokers (Redis) need nothing."""
    if not broker_url.startswith("sqla+"):
        return
    from kombu import Connection

    options = broker_transport_options(broker_url)
    with Connection(broker_url, transport_options=options) as connection:
        channel = connection.default_channel
        for attempt in range(3):
            try:
                session = channel.session  # the first use runs CREATE TABLE where missing
                break
            except OperationalError:  # another process created a table since the check
                if attempt == 2:
                    raise
        dialects = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
        insert = dialects.get(session.bind.dialect.name)
        if insert is None:  # kombu creates the rows itself (and may race) on other databases
            return
        rows = [{"name": queue} for queue in QUEUES]
        table = channel.queue_cls.__table__
        session.execute(insert(table).values(rows).on_conflict_do_nothing(index_elements=["name"]))
        session.commit()


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
