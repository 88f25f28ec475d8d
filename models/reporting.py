"""The one interface through which ML-core functions report progress and metrics.

A Celery job passes an object that writes to the database (``workers.runner.JobContext``); tests
and scripts pass a ``MemoryReporter``. Metric names are namespaced (``losses/…``, ``eval/…``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Protocol


class Reporter(Protocol):
    def progress(self, fraction: float, message: str = "") -> None:
        """Report completion in [0, 1]; may raise to stop the work (cancellation)."""

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Record scalar ``values`` at ``step``."""


class MemoryReporter:
    """Keeps everything in memory: for tests, notebooks and the CLI."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.messages: list[str] = []
        self.history: list[tuple[int, str, float]] = []

    def progress(self, fraction: float, message: str = "") -> None:
        self.fractions.append(fraction)
        self.messages.append(message)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.history.extend((step, name, float(value)) for name, value in values.items())

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(step, value) for step, n, value in self.history if n == name]


class PrintingReporter(MemoryReporter):
    """Keeps everything, and prints a progress line every ``every_s`` seconds."""

    def __init__(self, every_s: float = 15.0) -> None:
        super().__init__()
        self.every_s, self.last = every_s, 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            print(f"  {fraction:6.1%}  {message}", file=sys.stderr, flush=True)


class AtFraction:
    """Passes an inner job's progress messages on at a fixed overall fraction (an evaluation
    inside training must not move the training's progress bar back to 0)."""

    def __init__(self, reporter: Reporter, fraction: float) -> None:
        self.reporter, self.fraction = reporter, fraction

    def progress(self, fraction: float, message: str = "") -> None:
        self.reporter.progress(self.fraction, message)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.reporter.metrics(step, values)
