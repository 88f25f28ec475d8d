"""Load: 200 submissions from 20 concurrent clients — half through the CLI, half through the
Gradio API — are each recorded exactly once. (The dashboard's latency under this load is
measured in bench/, not asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def via_cli(client: int, data_dir: Path, tmp: Path) -> None:
    env = {**os.environ, "PRM_STUDIO_DATA_DIR": str(data_dir)}
    for i in range(PER_CLIENT):
        config = tmp / f"c{client}-{i}.json"
        config.write_text(json.dumps({"steps": client * PER_CLIENT + i + 1}))
        subprocess.run(
            [sys.executable, "-m", "app.cli", "submit", "healthcheck", "--config", str(config)],
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


def test_200_concurrent_submissions_are_each_recorded_once(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    with running_dashboard(data_dir, env={}) as dashboard, ThreadPoolExecutor(CLIENTS) as pool:
        jobs = [
            pool.submit(via_cli, c, data_dir, tmp_path)
            if c % 2
            else pool.submit(via_api, c, dashboard.url)
            for c in range(CLIENTS)
        ]
        for job in jobs:
            job.result()
    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(data_dir))
    reset_app_state()
    with read_session() as session:
        steps = Counter(run.config["steps"] for run in session.query(Run).all())
    assert sorted(steps) == list(range(1, CLIENTS * PER_CLIENT + 1))
    assert set(steps.values()) == {1}
