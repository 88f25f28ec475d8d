"""The one interface through which ML-core functions report progress and metrics.

A Celery job passes an object that writes to the database (``workers.runner.JobContext``); tests
and scripts pass a ``MemoryReporter``. Metric names are namespaced (``losses/…``, ``eval/…``).
"""

from __future__ import annotations

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


class AtFraction:
    """Passes an inner job's progress messages on at a fixed overall fraction (an evaluation
    inside training must not move the training's progress bar back to 0)."""

    def __init__(self, reporter: Reporter, fraction: float) -> None:
        self.reporter, self.fraction = reporter, fraction

    def progress(self, fraction: float, message: str = "") -> None:
        self.reporter.progress(self.fraction, message)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.reporter.metrics(step, values)
