"""Database engine, sessions and migrations.

One engine per process (re-created after a fork: Celery's prefork pool must not share the
parent's connections). Sessions are units of work: ``session_scope()`` commits once at the end
or rolls back on error, so a job decides what belongs in one transaction — helpers never commit.

SQLite is the zero-install default. It runs in WAL mode with a busy timeout, and every writing
transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads first and then
writes gets ``SQLITE_BUSY`` at once (without waiting) when another writer committed in between,
which is exactly the "database is locked" a dashboard sees while a worker writes metrics.
Read-only sessions (``read_session()``) use a deferred BEGIN and never block a writer in WAL mode.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_engine: Engine | None = None
_engine_pid: int | None = None


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        readonly = connection.get_execution_options().get("prm_readonly", False)
        connection.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL + busy timeout, servers get pre-ping."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        _install_sqlite_pragmas(engine)
        return engine
    # pre_ping: a restarted PostgreSQL must not surface as an error on the next query.
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def get_engine() -> Engine:
    """The process-wide engine, rebuilt in a forked child so connections are never shared."""
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)  # the parent's connections stay the parent's
        _engine = create_db_engine(get_settings().database_url)
        _engine_pid = os.getpid()
    return _engine


def reset_engine() -> None:
    """Forget the engine (tests that switch DATABASE_URL call this)."""
    global _engine, _engine_pid
    if _engine is not None and _engine_pid == os.getpid():
        _engine.dispose()
    _engine, _engine_pid = None, None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A writing unit of work: commit on success, roll back on any error."""
    session = sessionmaker(get_engine(), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def retrying(
    work: Callable[[Session], T], *, retry_s: float = 120.0, first_wait_s: float = 0.5
) -> T:
    """Run ``work`` in its own transaction; while the database is unreachable (a restart, a
    network blip) wait and try again, for up to ``retry_s``. Jobs write progress, metrics and
    heartbeats through this, so a PostgreSQL restart costs a pause, not a run or a metric.
    Only connection failures are retried: a failed commit wrote nothing, so trying again
    cannot write twice."""
    deadline = time.monotonic() + retry_s
    wait = first_wait_s
    while True:
        try:
            with session_scope() as session:
                return work(session)
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() + wait > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1fs", type(error).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only unit of work (dashboard queries): never takes SQLite's write lock."""
    engine = get_engine().execution_options(prm_readonly=True)
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()  # ends the transaction; loaded objects stay readable, detached


def alembic_config(url: str | None = None):
    """Alembic configuration pointing at this package's migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def at_head(url: str) -> bool:
    """Whether the database already has the newest schema (a read: no write lock taken)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads()) == heads
    finally:
        engine.dispose()


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (default: settings) to ``revision``. Checking first
    keeps the common case — already at head — a read, so twenty CLI processes starting at
    once do not queue for SQLite's write lock."""
    from alembic import command

    url = url or get_settings().database_url
    if revision == "head" and at_head(url):
        return
    command.upgrade(alembic_config(url), revision)
