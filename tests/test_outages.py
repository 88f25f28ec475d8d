"""Outages with real servers of our own (the machine's shared services are never restarted):
a private redis-server restarted during a job, a private PostgreSQL cluster restarted during a
job. Jobs finish, queued jobs are not lost, no metric goes missing."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import crud
from app.db import read_session
from app.orm import Metric, RunStatus
from tests.conftest import free_port, port_open, require, reset_app_state, wait_for
from tests.test_jobs import cli_submit

pytestmark = pytest.mark.slow


def finished(run_id: int) -> bool:
    with read_session() as session:
        return RunStatus(crud.get_run(session, run_id=run_id).status).finished


def status_of(run_id: int) -> tuple[str, str | None]:
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        return run.status, run.error


# ----------------------------------------------------------------------------- Redis


class PrivateRedis:
    """A redis-server on a free port that keeps its queue on disk across restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), 20, "redis-server to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_restart_during_a_job_loses_nothing(
    data_dir, private_redis, start_worker, monkeypatch, tmp_path
):
    monkeypatch.setenv("PRM_STUDIO_BROKER_URL", f"redis://127.0.0.1:{private_redis.port}/0")
    reset_app_state()
    start_worker()
    running = cli_submit("healthcheck", {"steps": 12, "step_seconds": 0.5}, tmp_path)
    wait_for(lambda: status_of(running)[0] == RunStatus.running, 60, "the job to start")
    queued = [
        cli_submit("healthcheck", {"steps": 1, "step_seconds": 0.0}, tmp_path) for _ in range(3)
    ]
    private_redis.stop()  # the broker goes away mid-job, with three jobs in its queue
    time.sleep(2)
    private_redis.start()
    for run_id in [running, *queued]:
        wait_for(lambda r=run_id: finished(r), 120, f"run {run_id} to finish", every=0.5)
        assert status_of(run_id) == (RunStatus.succeeded, None)


# ----------------------------------------------------------------------------- PostgreSQL


class PrivatePostgres:
    """A throwaway cluster (initdb) run by the unprivileged postgres user."""

    def __init__(self, folder: Path) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        require(bool(binaries), "PostgreSQL server binaries are not installed")
        self.bin, self.folder, self.port = Path(binaries[-1]), folder, free_port()
        self.data = folder / "pgdata"

    def _as_postgres(self, *argv: str) -> None:
        done = subprocess.run(
            ["su", "postgres", "-c", " ".join(argv)], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self.folder.chmod(0o777)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "pg.log"),
            "-o",
            f"'-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1'",
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    require(os.geteuid() == 0, "a private PostgreSQL is started through the postgres user (root)")
    # pytest's tmp folders are private to root: the postgres user needs a folder it can reach
    folder = Path(tempfile.mkdtemp(prefix="prm-pg-", dir="/tmp"))
    server = PrivatePostgres(folder)
    server.init()
    server.start()
    yield server
    with contextlib.suppress(RuntimeError):
        server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_postgres_restart_during_a_job_loses_no_metric(
    private_postgres, tmp_path, monkeypatch, start_worker
):
    from app.db import migrate

    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRM_STUDIO_DATABASE_URL", private_postgres.url)
    reset_app_state()
    migrate()
    start_worker()
    run_id = cli_submit("healthcheck", {"steps": 16, "step_seconds": 0.5}, tmp_path)
    wait_for(lambda: status_of(run_id)[0] == RunStatus.running, 60, "the job to start")
    time.sleep(1.5)
    private_postgres.stop()  # the database goes away mid-job …
    time.sleep(3)
    private_postgres.start()  # … and comes back
    reset_app_state()
    wait_for(lambda: finished(run_id), 180, "the job to finish", every=0.5)
    assert status_of(run_id) == (RunStatus.succeeded, None)
    with read_session() as session:
        steps = session.scalars(
            select(Metric.step).where(
                Metric.run_id == run_id, Metric.name == "healthcheck/step_seconds"
            )
        ).all()
        assert sorted(steps) == list(range(1, 17))
        assert session.scalar(select(func.count()).select_from(Metric)) == 32
