"""Helpers for real-browser tests: ``prm-studio up`` in a subprocess and Debian's Chromium
driven by Playwright (no browser download: ``executable_path=/usr/bin/chromium``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from app.report import CHROMIUM_FLAGS
from tests.conftest import REPO, free_port, require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = list(CHROMIUM_FLAGS)  # the flags the report's heatmap screenshot uses too


class Dashboard:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def tree(self) -> list[psutil.Process]:
        """The ``up`` process and every descendant (embedded worker, pool children)."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prm-studio up exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"dashboard did not answer at {url}:\n{log.read_text()[-3000:]}")


@contextmanager
def running_dashboard(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Dashboard]:
    port = free_port()
    log = data_dir.parent / "up.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "up", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "PRM_STUDIO_DATA_DIR": str(data_dir), **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, process, log)
        yield Dashboard(process, url, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def chromium_page() -> Iterator:
    require(Path(CHROMIUM).exists(), f"Debian chromium is not installed at {CHROMIUM}")
    require(shutil.which("chromium") is not None, "chromium is not on PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()
