"""Shared fixtures: throwaway databases (SQLite, PostgreSQL), brokers (SQLite, Redis), a real
Celery worker subprocess, and the rule that turns a missing service into a failure in CI.

Tests that need PostgreSQL, Redis, bubblewrap or Chromium skip with the reason when the service
is missing — unless ``PRM_STUDIO_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where the same
condition fails the test, so CI always exercises them for real.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.cli import stop_process_group

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
PG_ADMIN_URL = os.environ.get("PRM_STUDIO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
BWRAP = Path("/usr/bin/bwrap")
REDIS_TEST_DB = 13  # a database index reserved for tests; flushed before and after use


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (CI) when a service or tool the test needs is missing."""
    if condition:
        return
    if os.environ.get("PRM_STUDIO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Test workers run one job at a time, whatever the host's cores (the product's default is one
# per core): tests that watch a queue drain assume that order.
os.environ.setdefault("PRM_STUDIO_WORKER_CONCURRENCY", "1")


def reset_app_state() -> None:
    """Forget cached settings and engine after the environment changed."""
    from app.db import reset_engine
    from app.settings import get_settings

    reset_engine()
    get_settings.cache_clear()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh DATA_DIR with the default SQLite database and broker, migrated."""
    from app.db import migrate

    folder = tmp_path / "data"
    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(folder))
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "ARTIFACTS_DIR"):
        monkeypatch.delenv(f"PRM_STUDIO_{name}", raising=False)
    reset_app_state()
    migrate()
    yield folder
    reset_app_state()


SMALL_BENCHMARK = {"n_train": 8, "n_test": 4, "min_steps": 2, "max_steps": 3}


@pytest.fixture
def tiny_policy(tmp_path: Path) -> str:
    """A random tiny policy inside DATA_DIR (path fields must stay in the allowed folders)."""
    from models.benchmark import BenchmarkConfig, generate
    from models.policy import build_tiny_policy, save_policy
    from models.policy_config import TinyModelConfig
    from models.tokenizer import train_tokenizer

    problems = generate(BenchmarkConfig(**SMALL_BENCHMARK))
    tokenizer = train_tokenizer([p.prompt + (p.reference or "") for p in problems], 300)
    model = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), 0)
    return str(save_policy(model, tokenizer, tmp_path / "data" / "models" / "policy"))


@pytest.fixture(scope="session")
def sandbox_run_batch():
    """One warm sandbox pool for the session; skipped (or failed, in CI) without bubblewrap."""
    require(BWRAP.exists(), f"{BWRAP} is missing: the sandbox cannot run untrusted code")
    from workers.sandbox import SandboxPool

    with SandboxPool() as pool:
        yield pool.run_batch


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards."""
    require(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    import psycopg

    name = f"prm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    require(port_open(REDIS_HOST, REDIS_PORT), "Redis is not listening on 127.0.0.1:6379")
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    client.flushdb()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, so fixtures can tell that their test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def start_worker(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real ``prm-studio worker`` subprocesses with the current environment.

    When the test fails, the end of each worker's log is printed (pytest shows it under the
    failure), since the worker is where a job that never finished left its trace."""
    started: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        logs.append(tmp_path / f"worker-{len(started)}.log")
        log = open(logs[-1], "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--loglevel=INFO", *extra],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process_group(process)
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for log in logs:
            print(f"----- {log.name} (last 80 lines) -----")
            print("\n".join(log.read_text(errors="replace").splitlines()[-80:]))


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
