"""The Compare view: runs grouped by their config ``variant`` (runs without one group by kind),
seeds aggregated — the shape of the paper's comparison of Baseline, DenseReward, ValueInit and
both. Curves are aggregated per step in SQL (``queries.metric_bands``); final values come from
one query; what is left here is arranging a few dozen numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from app import plots, queries
from app.db import read_session
from app.views import DIFFICULTY, PASS_RATE_METRICS

HACKING_METRICS = ("rollout/response_lines", "rollout/comment_line_fraction")
VARIANT_TITLES = {
    "baseline": "Baseline",
    "dense": "DenseReward",
    "value-init": "ValueInit",
    "dense+value-init": "DenseReward+ValueInit",
}


def compare_run_ids(group: str | None, run_ids: str | None) -> list[int]:
    """The runs to compare: a group's, plus any ids typed as ``3, 5 7``."""
    ids = [int(x) for x in re.findall(r"\d+", run_ids or "")]
    if group:
        with read_session() as session:
            ids += [run.id for run in queries.group_runs(session, group_name=group)]
    return sorted(set(ids))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def plus_minus(values: Sequence[float]) -> str:
    """``mean ± std (n)`` in percent, as the paper's tables print pass@1."""
    if not values:
        return ""
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f} (n={len(values)})"


def _variant_order(name: str) -> tuple[int, str]:
    order = list(VARIANT_TITLES)
    return (order.index(name) if name in order else len(order), name)


def _difficulty(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


@dataclass
class Comparison:
    """What the database says about the runs compared, fetched in one read session."""

    metric: str
    members: dict[str, list[int]]  # variant -> run ids, in the paper's order
    bands: list[queries.BandPoint]
    by_difficulty: list[str]  # eval/pass@1_<mode>/difficulty_<d> names matching the metric
    finals: dict[tuple[int, str], float]
    hacking: dict[str, list[queries.BandPoint]]

    def finals_of(self, variant: str, name: str | None) -> list[float]:
        runs = self.members[variant]
        return [self.finals[(r, name)] for r in runs if name and (r, name) in self.finals]


def load_comparison(run_ids: Sequence[int], metric: str = "") -> Comparison:
    with read_session() as session:
        runs = queries.runs_by_ids(session, run_ids=run_ids)
        names = set(queries.metric_names_of(session, run_ids=run_ids))
        if metric not in names:
            metric = next((m for m in PASS_RATE_METRICS if m in names), "")
        mode = metric.rsplit("_", 1)[-1]
        by_difficulty = sorted(
            (n for n in names if (m := DIFFICULTY.match(n)) and m.group(1) == mode),
            key=_difficulty,
        )
        bands = queries.metric_bands(session, run_ids=run_ids, name=metric) if metric else []
        finals = queries.final_values(session, run_ids=run_ids, names=[metric, *by_difficulty])
        hacking = {
            name: queries.metric_bands(session, run_ids=run_ids, name=name)
            for name in HACKING_METRICS
            if name in names
        }
    members: dict[str, list[int]] = {}
    for run in runs:  # a group's runs without the metric (prm-data, prm-train) are left out
        if (run.id, metric) in finals:
            variant = str((run.config or {}).get("variant") or run.kind)
            members.setdefault(variant, []).append(run.id)
    ordered = {v: members[v] for v in sorted(members, key=_variant_order)}
    return Comparison(metric, ordered, bands, by_difficulty, finals, hacking)


def paper_table(data: Comparison) -> pd.DataFrame:
    """One row per variant: seeds, final pass@1 (mean ± std), and the same on the longest
    difficulty bucket, where the paper finds the PRM's gains concentrate."""
    longest = data.by_difficulty[-1] if data.by_difficulty else None
    hard = f"longest difficulty ({_difficulty(longest)})" if longest else "longest difficulty"
    rows = [
        [
            VARIANT_TITLES.get(variant, variant),
            len(runs),
            plus_minus(data.finals_of(variant, data.metric)),
            plus_minus(data.finals_of(variant, longest)),
        ]
        for variant, runs in data.members.items()
    ]
    return pd.DataFrame(rows, columns=["variant", "runs", f"final {data.metric or 'pass@1'}", hard])


def curves_figure(data: Comparison) -> go.Figure:
    bands: dict[str, list[tuple[int, float, float, float]]] = {}
    for p in sorted(data.bands, key=lambda p: _variant_order(p.group)):
        bands.setdefault(VARIANT_TITLES.get(p.group, p.group), []).append(
            (p.step, p.mean, p.low, p.high)
        )
    return plots.bands_figure(
        bands,
        title=f"{data.metric}: mean and spread (min–max) over seeds",
        y_title="pass rate",
        revision="compare",
    )


def difficulty_figure(data: Comparison) -> go.Figure | None:
    """Final pass@1 per difficulty, one bar series per variant (error bars: std over seeds)."""
    means: dict[str, dict[str, float]] = {}
    stds: dict[str, dict[str, float]] = {}
    for variant in data.members:
        title = VARIANT_TITLES.get(variant, variant)
        for name in data.by_difficulty:
            values = data.finals_of(variant, name)
            if values:
                mean, std = mean_std(values)
                means.setdefault(title, {})[str(_difficulty(name))] = mean
                stds.setdefault(title, {})[str(_difficulty(name))] = std
    if not means:
        return None
    return plots.bars_figure(
        means,
        errors=stds,
        title="final pass@1 by difficulty (mean ± std over seeds)",
        x_title="difficulty (steps)",
        y_title="pass@1",
    )


def hacking_figure(data: Comparison) -> go.Figure | None:
    """Lines per response and comment-line fraction per variant, side by side: a policy gaming
    the PRM writes more, or more comment, lines (the paper's reason for neutral labels)."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, points in data.hacking.items():
        for p in sorted(points, key=lambda p: _variant_order(p.group)):
            curve = panels.setdefault(name, {}).setdefault(VARIANT_TITLES.get(p.group, p.group), [])
            curve.append((p.step, p.mean))
    if not panels:
        return None
    return plots.panels_figure(panels, title="reward-hacking monitors", revision="hacking")


def metric_choices(run_ids: Sequence[int]) -> list[str]:
    """Pass-rate-like metrics the runs logged, for the metric picker."""
    with read_session() as session:
        names = queries.metric_names_of(session, run_ids=run_ids)
    return [n for n in names if n in PASS_RATE_METRICS or n.startswith("eval/pass@")]
