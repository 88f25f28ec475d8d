"""Workers announce themselves in the database and beat every few seconds, so the dashboard's
Workers view (and lost-run detection) works on every broker — the SQLAlchemy transport has no
remote control to ask workers what they are doing."""

from __future__ import annotations

import logging
import socket
import threading

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import select, update

from app.db import session_scope
from app.orm import Worker, utcnow

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
_stop = threading.Event()


def register(name: str, queues: list[str], facts: dict) -> None:
    with session_scope() as session:
        worker = session.scalar(select(Worker).where(Worker.name == name))
        if worker is None:
            worker = Worker(name=name, host=socket.gethostname(), queues="", facts={})
            session.add(worker)
        worker.queues = ",".join(sorted(queues))
        worker.facts = facts
        worker.started_at = worker.last_seen = utcnow()
        worker.current_run_id = None


def beat(name: str) -> None:
    with session_scope() as session:
        session.execute(update(Worker).where(Worker.name == name).values(last_seen=utcnow()))


def set_current_run(name: str, run_id: int | None) -> None:
    with session_scope() as session:
        session.execute(
            update(Worker)
            .where(Worker.name == name)
            .values(current_run_id=run_id, last_seen=utcnow())
        )


def _beat_forever(name: str) -> None:
    """Beat, and adopt runs whose workers died (``runner.reap_lost_runs``)."""
    from workers.runner import reap_lost_runs

    while not _stop.wait(HEARTBEAT_S):
        try:
            beat(name)
            reap_lost_runs()
        except Exception:  # a database or broker blip must not kill the heartbeat
            log.exception("heartbeat of %s failed", name)


@worker_ready.connect
def _on_ready(sender, **_kwargs) -> None:
    from workers.healthcheck import worker_facts

    queues = [queue.name for queue in sender.task_consumer.queues]
    register(sender.hostname, queues, worker_facts())
    threading.Thread(target=_beat_forever, args=(sender.hostname,), daemon=True).start()


@worker_shutdown.connect
def _on_shutdown(**_kwargs) -> None:
    _stop.set()
