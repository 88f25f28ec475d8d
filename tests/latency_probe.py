"""A user's dashboard during a load test, in its own process (so the load's client threads in
the test process do not share its interpreter): every second, the page, a run's status through
the API, and the views the Runs and Workers tabs refresh, each timed, until ``STOP`` exists.

    python -m tests.latency_probe URL STOP   # prints {request: [seconds, ...]} as JSON
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gradio_client import Client
from sqlalchemy import select

from app import views
from app.db import read_session
from app.orm import Run


def first_run_id() -> int | None:
    with read_session() as session:
        return session.scalar(select(Run.id).order_by(Run.id).limit(1))


def dashboard_requests(url: str, run_id: int) -> dict[str, Callable[[], object]]:
    api = Client(url, verbose=False, httpx_kwargs={"timeout": 60})

    def page() -> None:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()

    return {
        "page": page,
        "run_status": lambda: api.predict(run_id, api_name="/run_status"),
        "runs_table": views.runs_table,
        "workers_table": views.workers_table,
    }


def probe(url: str, stop: Path) -> dict[str, list[float]]:
    while (run_id := first_run_id()) is None and not stop.exists():
        time.sleep(0.1)
    requests = dashboard_requests(url, run_id or 1)
    timings: dict[str, list[float]] = {name: [] for name in requests}
    while not stop.exists():
        for name, request in requests.items():
            started = time.perf_counter()
            request()
            timings[name].append(time.perf_counter() - started)
        time.sleep(1.0)
    return timings


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], Path(sys.argv[2]))))
