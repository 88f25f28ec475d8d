"""Load: 200 submissions from 20 concurrent clients — half through the CLI, half through the
Gradio API — are each recorded exactly once, and meanwhile the dashboard answers in under a
second: its page, the ``run_status`` endpoint, and the runs and workers views it refreshes.

The CLI clients run at the lowest CPU priority: in a deployment they are other people's
machines, while here each ``prm-studio submit`` costs about a second of this box's CPU (Python
start-up and imports) — the server's share of the load (the API submissions, the database
writes, the embedded worker running the jobs) stays at normal priority."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client
from sqlalchemy import select

from app import views
from app.db import read_session
from app.orm import Run
from tests.browser import running_dashboard
from tests.conftest import REPO, reset_app_state

pytestmark = pytest.mark.slow
CLIENTS, PER_CLIENT = 20, 10
NICEST = ("nice", "-n", "19")
LATENCY_LIMIT_S = 1.0  # the requirement for the dashboard under this load


def via_cli(client: int, data_dir: Path, tmp: Path) -> None:
    env = {**os.environ, "PRM_STUDIO_DATA_DIR": str(data_dir)}
    for i in range(PER_CLIENT):
        config = tmp / f"c{client}-{i}.json"
        config.write_text(json.dumps({"steps": client * PER_CLIENT + i + 1}))
        subprocess.run(
            [*NICEST, sys.executable, "-m", "app.cli", "submit", "healthcheck", "--config", config],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )


def via_api(client: int, url: str) -> None:
    api = Client(url, verbose=False, httpx_kwargs={"timeout": 300})
    for i in range(PER_CLIENT):
        steps = client * PER_CLIENT + i + 1
        api.predict("healthcheck", json.dumps({"steps": steps}), api_name="/submit_job")


def first_run_id() -> int | None:
    with read_session() as session:
        return session.scalar(select(Run.id).order_by(Run.id).limit(1))


def dashboard_requests(url: str) -> dict[str, Callable[[], object]]:
    """What a user's dashboard asks for while the load runs: the page, a run's status through
    the API (as a script polls it), and the views its Runs and Workers tabs refresh."""
    api = Client(url, verbose=False, httpx_kwargs={"timeout": 60})
    run_id = first_run_id()

    def page() -> None:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()

    return {
        "page": page,
        "run_status": lambda: api.predict(run_id, api_name="/run_status"),
        "runs_table": views.runs_table,
        "workers_table": views.workers_table,
    }


def time_requests(url: str, load_done: threading.Event) -> dict[str, list[float]]:
    """Seconds each dashboard request took, every second until the load is over."""
    while first_run_id() is None and not load_done.is_set():
        time.sleep(0.1)
    requests = dashboard_requests(url)
    timings: dict[str, list[float]] = {name: [] for name in requests}
    while not load_done.wait(1.0):
        for name, request in requests.items():
            started = time.perf_counter()
            request()
            timings[name].append(time.perf_counter() - started)
    return timings


def test_200_concurrent_submissions_are_each_recorded_once_and_the_dashboard_stays_fast(
    tmp_path, monkeypatch
):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(data_dir))
    with running_dashboard(data_dir, env={}) as dashboard, ThreadPoolExecutor(CLIENTS + 1) as pool:
        reset_app_state()  # this process reads the dashboard's database too
        load_done = threading.Event()
        timer = pool.submit(time_requests, dashboard.url, load_done)
        started = time.perf_counter()
        jobs = [
            pool.submit(via_cli, c, data_dir, tmp_path)
            if c % 2
            else pool.submit(via_api, c, dashboard.url)
            for c in range(CLIENTS)
        ]
        for job in jobs:
            job.result()
        load_s = time.perf_counter() - started
        load_done.set()
        timings = timer.result()
    with read_session() as session:
        steps = Counter(run.config["steps"] for run in session.query(Run).all())
    assert sorted(steps) == list(range(1, CLIENTS * PER_CLIENT + 1))
    assert set(steps.values()) == {1}

    print(f"\n{CLIENTS * PER_CLIENT} submissions in {load_s:.1f}s; dashboard latency under load:")
    for name, seconds in timings.items():
        print(
            f"  {name:<14} n={len(seconds):<3} median {statistics.median(seconds) * 1000:6.0f} ms"
            f"  max {max(seconds) * 1000:6.0f} ms"
        )
    assert all(len(seconds) >= 5 for seconds in timings.values()), timings  # measured under load
    slowest = {name: max(seconds) for name, seconds in timings.items()}
    assert max(slowest.values()) < LATENCY_LIMIT_S, slowest
