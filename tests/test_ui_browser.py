"""``prm-studio up`` serves the dashboard; a real browser launches a healthcheck and sees it
succeed; SIGTERM leaves no process behind."""

from __future__ import annotations

import re
import signal

import psutil
import pytest

from tests.browser import chromium_page, running_dashboard
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def test_launch_healthcheck_from_the_browser_then_sigterm_leaves_nothing(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_dashboard(tmp_path / "data") as dashboard, chromium_page() as page:
        page.goto(dashboard.url)
        page.get_by_role("tab", name="Launch").click()
        page.get_by_label("steps").first.fill("3")
        page.get_by_label("step seconds").first.fill("0.3")
        page.locator("#launch-healthcheck").click()
        outcome = page.locator("#launch-healthcheck-outcome")
        outcome.get_by_text(re.compile(r"run \d+")).wait_for()
        run_id = re.search(r"run (\d+)", outcome.inner_text()).group(1)
        page.screenshot(path=ARTIFACTS / "launch.png", full_page=True)

        page.get_by_role("tab", name="Runs").click()
        rows = page.locator("#runs-table [role=row]")
        rows.filter(has_text=re.compile(rf"^\s*{run_id}\s*healthcheck.*succeeded")).wait_for(
            timeout=90_000
        )
        page.screenshot(path=ARTIFACTS / "runs.png", full_page=True)

        rows.filter(has_text=re.compile(rf"^\s*{run_id}\s")).first.click()  # opens the run view
        page.locator("#run-details").get_by_text("succeeded").first.wait_for()
        page.locator("#run-metrics .js-plotly-plot").wait_for()
        assert page.locator("#run-metrics .js-plotly-plot .scatterlayer .trace").count() == 2
        page.screenshot(path=ARTIFACTS / "run.png", full_page=True)

        tree = dashboard.tree()
        assert len(tree) >= 3, "expected the up process, the worker and its pool child"
        dashboard.process.send_signal(signal.SIGTERM)
        assert dashboard.process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"processes left after SIGTERM: {alive}"


def test_sigint_stops_the_dashboard_and_its_worker(tmp_path):
    with running_dashboard(tmp_path / "data") as dashboard:
        tree = dashboard.tree()
        dashboard.process.send_signal(signal.SIGINT)
        assert dashboard.process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"processes left after SIGINT: {alive}"
