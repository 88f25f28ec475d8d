"""Load: 200 submissions from 20 concurrent clients — half through the CLI, half through the
Gradio API — are each recorded exactly once, and meanwhile the dashboard answers in under a
second: its page, the ``run_status`` endpoint, and the runs and workers views it refreshes.

The CLI clients run at the lowest CPU priority: in a deployment they are other people's
machines, while here each ``prm-studio submit`` costs about a second of this box's CPU (Python
start-up and imports) — the server's share of the load (the API submissions, the database
writes, the embedded worker running the jobs) stays at normal priority. The latency is
measured from a process of its own, as a user's browser or script would see it, not from a
thread sharing an interpreter with the load's ten API clients."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client

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


def start_probe(url: str, data_dir: Path, stop: Path) -> subprocess.Popen:
    """The dashboard's latency, measured from a process of its own (tests/latency_probe.py)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.latency_probe", url, str(stop)],
        cwd=REPO,
        env={**os.environ, "PRM_STUDIO_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        text=True,
    )


def test_200_concurrent_submissions_are_each_recorded_once_and_the_dashboard_stays_fast(
    tmp_path, monkeypatch
):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(data_dir))
    stop = tmp_path / "load-done"
    with running_dashboard(data_dir, env={}) as dashboard, ThreadPoolExecutor(CLIENTS) as pool:
        reset_app_state()  # this process reads the dashboard's database too
        probe = start_probe(dashboard.url, data_dir, stop)
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
        stop.touch()
        out, _ = probe.communicate(timeout=300)
        timings: dict[str, list[float]] = json.loads(out)
    with read_session() as session:
        steps = Counter(run.config["steps"] for run in session.query(Run).all())
    assert sorted(steps) == list(range(1, CLIENTS * PER_CLIENT + 1))
    assert set(steps.values()) == {1}

    print(f"\n{CLIENTS * PER_CLIENT} submissions in {load_s:.1f}s; dashboard latency under load:")
    for name, seconds in timings.items():
        print(
            f"  {name:<14} n={len(seconds):<3} median {statistics.median(seconds) * 1000:6.0f} ms"
            f"  p95 {p95(seconds) * 1000:6.0f} ms  max {max(seconds) * 1000:6.0f} ms"
        )
    assert all(len(seconds) >= 5 for seconds in timings.values()), timings  # measured under load
    # The 95th percentile, not the maximum: the clients, the server and its worker share two
    # cores here, so a request now and then waits for the scheduler (the maximum is printed).
    slowest = {name: p95(seconds) for name, seconds in timings.items()}
    assert max(slowest.values()) < LATENCY_LIMIT_S, slowest


def p95(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=20)[-1] if len(seconds) > 1 else seconds[0]
