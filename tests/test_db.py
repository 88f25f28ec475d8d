"""Schema and migrations agree on SQLite and PostgreSQL; SQLite tolerates a reader beside a
writer (WAL + busy timeout + BEGIN IMMEDIATE)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from app import crud
from app.db import alembic_config, create_db_engine, migrate
from app.orm import Base, Metric

APP_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_upgrade_from_empty_matches_orm_and_downgrade_removes_everything(database_url: str):
    migrate(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) >= APP_TABLES
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"ORM and migrations disagree: {diff}"

        command.downgrade(alembic_config(database_url), "base")
        with engine.connect() as connection:
            assert not APP_TABLES & set(inspect(connection).get_table_names())

        migrate(database_url)  # and back up again: migrations are repeatable
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) >= APP_TABLES
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'wal.sqlite'}"
    migrate(url)
    engine = create_db_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    engine.dispose()


def test_sqlite_reader_and_second_writer_never_see_database_locked(tmp_path: Path):
    """A worker holds a write transaction while the dashboard reads and the CLI writes."""
    url = f"sqlite:///{tmp_path / 'locks.sqlite'}"
    migrate(url)
    worker_engine, ui_engine = create_db_engine(url), create_db_engine(url)
    with Session(worker_engine) as session:
        run_id = crud.create_run(session, kind="healthcheck", config={}).id
        session.commit()

    errors: list[BaseException] = []
    holding = threading.Event()

    def worker_writes() -> None:
        try:
            with Session(worker_engine) as session:
                # read first, then write in the same transaction: the pattern that fails
                # with a deferred BEGIN when another writer commits in between
                session.scalar(select(Metric.id).limit(1))
                crud.add_metrics(session, run_id=run_id, step=0, values={"loss": 1.0})
                session.flush()
                holding.set()
                time.sleep(1.0)
                session.commit()
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)
            holding.set()

    thread = threading.Thread(target=worker_writes)
    thread.start()
    holding.wait(10)
    read_only = ui_engine.execution_options(prm_readonly=True)
    with Session(read_only) as session:  # the dashboard reads while the writer holds its lock
        assert session.scalar(text("SELECT count(*) FROM runs")) == 1
    with Session(ui_engine) as session:  # a second writer waits for the lock instead of failing
        session.scalar(select(Metric.id).limit(1))
        crud.request_cancel(session, run_id=run_id)
        session.commit()
    thread.join()
    assert not errors, errors
    with Session(ui_engine) as session:
        assert session.scalar(text("SELECT count(*) FROM metrics")) == 1
    worker_engine.dispose()
    ui_engine.dispose()
