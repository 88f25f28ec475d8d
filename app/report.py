"""The report of a run group: the paper's comparison, built from stored data alone.

``load_group`` reads a group's runs, the metrics the report needs and the label audit in one
read session; ``build_report`` is a pure function of those rows; ``to_markdown``, the plotly
``*_figure`` builders (the dashboard) and ``write_bundle`` (``report.md``, PNG charts,
``configs.json``) present it. The PNGs are drawn with matplotlib: plotly's static export
(kaleido) needs a Chrome at run time, which a dashboard host does not otherwise need.

Runs of the same stage repeated in a group (a failed stage submitted again by ``reproduce``)
count once: the latest ``rl`` run of each (variant, seed), and the latest run of every other
kind, as the pipeline's own rule has it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app import plots, queries
from app.compare import VARIANT_TITLES, mean_std
from app.db import read_session
from app.orm import LineScore, Metric, RunStatus, Sample
from app.views import DIFFICULTY, sample_heatmap

HELD_OUT_METRICS = ("eval/pass@1_sampled", "eval/pass@1_greedy")
MONITORS = {
    "rollout/response_tokens": "tokens per response",
    "rollout/response_lines": "lines per response",
    "rollout/comment_line_fraction": "comment-line fraction",
}
RERANK = re.compile(r"^prm/rerank@(\d+)/(\w+)$")
RERANK_COLUMNS = (
    "random",
    "policy_logprob",
    "prm_min",
    "prm_last",
    "prm_mean",
    "prm_end",
    "oracle",
)
PRM_HEADLINE = ("prm/auc", "prm/first_error_exact", "prm/first_error_within1", "prm/accuracy")
LABELS = (1, 0, -1)
# the metric names the report reads: held-out pass rates, rollout monitors, PRM and labeling
PREFIXES = ("eval/pass@1_", *MONITORS, "prm/", "labeling/")
# headless Chromium for the heatmap's PNG, with the flags the browser tests use
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


class GroupNotFound(LookupError):
    def __init__(self, group: str) -> None:
        super().__init__(f"no runs in group {group!r}")


# ============================================================================ stored rows


@dataclass(frozen=True)
class RunRow:
    id: int
    kind: str
    name: str
    status: str
    config: dict[str, Any]
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class GroupRows:
    """Everything the report reads: the group's runs, their metric points (run, name, step,
    value) and the prm-data run's label audit {(search label, ground truth): lines}."""

    group: str
    runs: list[RunRow]
    points: list[tuple[int, str, int, float]]
    label_audit: dict[tuple[int, int], int]
    superseded: int = 0
    heatmap: str = ""  # HTML of one failing rollout's per-line PRM scores ("" if none)


def stage_key(run: RunRow) -> tuple[str, ...]:
    """What makes two runs of a group the same stage: variant and seed for PPO, else the kind
    and the stage's name (the mbpp preset has an eval stage per PPO run)."""
    if run.kind == "rl":
        return (run.kind, str(run.config.get("variant")), str(run.config.get("seed")))
    return (run.kind, run.name)


def latest_per_stage(runs: Sequence[RunRow]) -> list[RunRow]:
    latest = {stage_key(run): run for run in sorted(runs, key=lambda r: r.id)}
    return sorted(latest.values(), key=lambda r: r.id)


def load_group(session: Session, *, group: str) -> GroupRows:
    stored = [
        RunRow(r.id, r.kind, r.name, r.status, r.config or {}, r.started_at, r.finished_at)
        for r in queries.group_runs(session, group_name=group)
    ]
    if not stored:
        raise GroupNotFound(group)
    runs = latest_per_stage(stored)
    query = (
        select(Metric.run_id, Metric.name, Metric.step, Metric.value)
        .where(
            Metric.run_id.in_([run.id for run in runs]),
            or_(*(Metric.name.startswith(p, autoescape=True) for p in PREFIXES)),
        )
        .order_by(Metric.run_id, Metric.name, Metric.step)
    )
    points = [(int(r), str(n), int(s), float(v)) for r, n, s, v in session.execute(query)]
    data = latest_of(runs, "prm-data")
    audit = queries.label_confusion(session, run_id=data.id) if data else {}
    example = heatmap_example(session, runs)
    return GroupRows(
        group,
        runs,
        points,
        audit,
        superseded=len(stored) - len(runs),
        heatmap=sample_heatmap(example, element_id="report-heatmap") if example else "",
    )


def heatmap_example(session: Session, runs: Sequence[RunRow]) -> int | None:
    """The sample the report shows as a heatmap: the latest failing rollout with a line the PRM
    scored below zero, from the PPO runs that paid dense rewards (DenseReward+ValueInit first)."""
    rl = [run for run in runs if run.kind == "rl" and "dense" in str(run.config.get("variant"))]
    for run in sorted(rl, key=lambda r: (-variant_order(str(r.config.get("variant")))[0], r.id)):
        found = session.scalar(
            select(Sample.id)
            .join(LineScore, LineScore.sample_id == Sample.id)
            .where(Sample.run_id == run.id, Sample.passed.is_(False), LineScore.score < 0)
            .order_by(Sample.step.desc(), Sample.id.desc())
            .limit(1)
        )
        if found is not None:
            return int(found)
    return None


# ============================================================================ the report


@dataclass(frozen=True)
class CurvePoint:
    step: int
    mean: float
    std: float
    n: int  # runs with a value at this step


@dataclass(frozen=True)
class VariantRow:
    variant: str
    run_ids: list[int]
    finals: list[float]  # per run: the metric at its last evaluation
    long_horizon: list[float]  # per run: the same on the longest difficulty
    curve: list[CurvePoint]  # mean over runs per evaluation step
    steps_to_baseline: int | None  # first step whose mean reaches Baseline's final mean
    transfer: list[float] = field(default_factory=list)  # per run: an eval run on another set

    @property
    def title(self) -> str:
        return VARIANT_TITLES.get(self.variant, self.variant)


@dataclass(frozen=True)
class Report:
    group: str
    metric: str
    long_metric: str | None
    variants: list[VariantRow]
    baseline_final: float | None
    by_difficulty: dict[str, dict[int, tuple[float, float]]]  # title -> difficulty -> mean, std
    monitors: dict[str, dict[str, list[CurvePoint]]]  # monitor -> variant title -> curve
    best_of_k: dict[int, dict[str, float]]  # K -> {random, prm_min, …, oracle}
    prm_quality: dict[str, float]
    labeling: dict[str, float]
    label_audit: dict[tuple[int, int], int]
    runs: list[RunRow]
    superseded: int
    heatmap: str = ""

    def run_of(self, kind: str) -> RunRow | None:
        return latest_of(self.runs, kind)


def latest_of(runs: Sequence[RunRow], kind: str) -> RunRow | None:
    return next((run for run in reversed(runs) if run.kind == kind), None)


Series = dict[str, list[tuple[int, float]]]  # metric name -> (step, value), by step


def series_by_run(points: Iterable[tuple[int, str, int, float]]) -> dict[int, Series]:
    out: dict[int, Series] = {}
    for run, name, step, value in sorted(points):
        out.setdefault(run, {}).setdefault(name, []).append((step, value))
    return out


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[CurvePoint]:
    """Mean and sample standard deviation over runs at every step any of them logged."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    return [CurvePoint(step, *mean_std(v), len(v)) for step, v in sorted(by_step.items())]


def steps_to_reach(curve: Sequence[CurvePoint], target: float, runs: int) -> int | None:
    """The first step at which the mean over all ``runs`` is at least ``target`` (steps that
    not every run has reached yet do not count)."""
    return next((p.step for p in curve if p.n == runs and p.mean >= target - 1e-12), None)


def pick_metric(names: Iterable[str], requested: str | None = None) -> str:
    available = set(names)
    if requested:
        return requested
    return next((m for m in HELD_OUT_METRICS if m in available), HELD_OUT_METRICS[0])


def longest_bucket(names: Iterable[str], metric: str) -> str | None:
    """``<metric>/difficulty_<d>`` with the largest d: the long-horizon bucket."""
    buckets = [n for n in names if n.startswith(f"{metric}/") and DIFFICULTY.match(n)]
    return max(buckets, key=difficulty_of, default=None)


def difficulty_of(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def variant_order(variant: str) -> tuple[int, str]:
    order = list(VARIANT_TITLES)
    return (order.index(variant) if variant in order else len(order), variant)


def last_values(series: Series, prefix: str) -> dict[str, float]:
    """{name: value at its last step} of the metrics starting with ``prefix``."""
    return {name: points[-1][1] for name, points in series.items() if name.startswith(prefix)}


def rerank_table(prm: Mapping[str, float]) -> dict[int, dict[str, float]]:
    table: dict[int, dict[str, float]] = {}
    for name, value in prm.items():
        if match := RERANK.match(name):
            table.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return dict(sorted(table.items()))


def build_report(rows: GroupRows, metric: str | None = None) -> Report:
    """The report of a group from its stored rows alone."""
    series = series_by_run(rows.points)
    rl = [run for run in rows.runs if run.kind == "rl"]
    names = {name for run in rl for name in series.get(run.id, {})}
    metric = pick_metric(names, metric)
    long_metric = longest_bucket(names, metric)
    members: dict[str, list[RunRow]] = {}
    for run in rl:
        if metric in series.get(run.id, {}):
            members.setdefault(str(run.config.get("variant") or "rl"), []).append(run)
    ordered = sorted(members, key=variant_order)

    def finals(runs: Sequence[RunRow], name: str | None) -> list[float]:
        return [series[r.id][name][-1][1] for r in runs if name and name in series[r.id]]

    # the mbpp preset scores every PPO run on HumanEval too: eval runs naming it as their policy
    scored_by = {r.config.get("policy_run_id"): r for r in rows.runs if r.kind == "eval"}
    baseline = finals(members.get("baseline", []), metric)
    baseline_final = mean_std(baseline)[0] if baseline else None
    variants = []
    for variant in ordered:
        runs = members[variant]
        curve = mean_curve([series[r.id][metric] for r in runs])
        reach = None if baseline_final is None else steps_to_reach(curve, baseline_final, len(runs))
        variants.append(
            VariantRow(
                variant,
                [r.id for r in runs],
                finals(runs, metric),
                finals(runs, long_metric),
                curve,
                reach,
                finals([scored_by[r.id] for r in runs if r.id in scored_by], metric),
            )
        )
    buckets = sorted({n for n in names if n.startswith(f"{metric}/difficulty_")}, key=difficulty_of)
    by_difficulty = {
        VARIANT_TITLES.get(v, v): {
            difficulty_of(name): mean_std(values)
            for name in buckets
            if (values := finals(members[v], name))
        }
        for v in ordered
    }
    monitors: dict[str, dict[str, list[CurvePoint]]] = {}
    for monitor in MONITORS:
        for v in ordered:
            logged = [series[r.id][monitor] for r in members[v] if monitor in series[r.id]]
            if logged:
                monitors.setdefault(monitor, {})[VARIANT_TITLES.get(v, v)] = mean_curve(logged)
    prm_run, data_run = latest_of(rows.runs, "prm-train"), latest_of(rows.runs, "prm-data")
    prm = last_values(series.get(prm_run.id, {}), "prm/") if prm_run else {}
    return Report(
        group=rows.group,
        metric=metric,
        long_metric=long_metric,
        variants=variants,
        baseline_final=baseline_final,
        by_difficulty={title: by for title, by in by_difficulty.items() if by},
        monitors=monitors,
        best_of_k=rerank_table(prm),
        prm_quality={n: v for n, v in prm.items() if not RERANK.match(n)},
        labeling=last_values(series.get(data_run.id, {}), "labeling/") if data_run else {},
        label_audit=rows.label_audit,
        runs=rows.runs,
        superseded=rows.superseded,
        heatmap=rows.heatmap,
    )


def split_configs(runs: Sequence[RunRow]) -> dict[str, tuple[dict[str, Any], dict[int, dict]]]:
    """Per kind: the config fields all its runs share, and each run's other fields."""
    out: dict[str, tuple[dict[str, Any], dict[int, dict]]] = {}
    for kind in dict.fromkeys(run.kind for run in runs):
        configs = {run.id: run.config for run in runs if run.kind == kind}
        first = next(iter(configs.values()))
        common = {
            key: value
            for key, value in first.items()
            if all(key in c and c[key] == value for c in configs.values())
        }
        rest = {rid: {k: v for k, v in c.items() if k not in common} for rid, c in configs.items()}
        out[kind] = (common, rest)
    return out


# ============================================================================ markdown


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def pm(values: Sequence[float]) -> str:
    """``mean ± std`` in percent over seeds (sample std; 0 for one seed)."""
    return pm_stats(mean_std(values) if values else None)


def number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def wall_seconds(runs: Sequence[RunRow]) -> float | None:
    """First start to last finish, when every run has finished."""
    starts = [r.started_at for r in runs if r.started_at]
    ends = [r.finished_at for r in runs if r.finished_at]
    if not starts or len(ends) < len(runs):
        return None
    return (max(ends) - min(starts)).total_seconds()


def paper_table(report: Report) -> list[str]:
    if not report.variants:
        return [f"No PPO run has logged `{report.metric}` yet.", ""]
    long_title = (
        f"longest difficulty ({difficulty_of(report.long_metric)})"
        if report.long_metric
        else "longest difficulty"
    )
    base = report.baseline_final
    rows = [
        [
            v.title,
            len(v.run_ids),
            pm(v.finals),
            "–" if base is None else f"{100 * (mean_std(v.finals)[0] - base):+.1f}",
            pm(v.long_horizon),
            "not reached" if v.steps_to_baseline is None else v.steps_to_baseline,
        ]
        for v in report.variants
    ]
    header = ["variant", "seeds", "pass@1 %", "Δ vs Baseline", f"{long_title} %"]
    header.append("steps to Baseline's final")
    if any(v.transfer for v in report.variants):
        evals = [r for r in report.runs if r.kind == "eval"]
        sets = sorted({str(r.config.get("data", {}).get("problem_set")) for r in evals})
        header.append(f"{', '.join(sets)} pass@1 %")
        rows = [[*row, pm(v.transfer)] for row, v in zip(rows, report.variants, strict=True)]
    return md_table(header, rows)


def best_of_k_line(report: Report) -> list[str]:
    """The paper's best-of-K figure: the largest K the prm-train run reranked."""
    if not report.best_of_k:
        return []
    k, row = next(reversed(report.best_of_k.items()))
    prm = max((row[c] for c in RERANK_COLUMNS if c.startswith("prm_") and c in row), default=None)
    policy = (
        f", {pct(row['policy_logprob'])} % by the policy's own mean log-probability"
        if "policy_logprob" in row
        else ""
    )
    return [
        f"Best-of-{k} with the PRM (its best aggregate): {pct(prm)} % against "
        f"{pct(row.get('random'))} % for a random pick of the same pool{policy} (oracle "
        f"{pct(row.get('oracle'))} %); details under PRM quality.",
        "",
    ]


def difficulty_table(report: Report) -> list[str]:
    if not report.by_difficulty:
        return ["No pass@1 by difficulty logged.", ""]
    difficulties = sorted({d for by in report.by_difficulty.values() for d in by})
    rows = [
        [d, *(pm_stats(by.get(d)) for by in report.by_difficulty.values())] for d in difficulties
    ]
    return md_table(["difficulty", *report.by_difficulty], rows)


def pm_stats(stats: tuple[float, float] | None) -> str:
    return "–" if stats is None else f"{100 * stats[0]:.1f} ± {100 * stats[1]:.1f}"


def curves_table(report: Report) -> list[str]:
    if not report.variants:
        return []
    steps = sorted({p.step for v in report.variants for p in v.curve})
    at = {(v.title, p.step): p for v in report.variants for p in v.curve}
    rows = [[step, *(pm_point(at.get((v.title, step))) for v in report.variants)] for step in steps]
    return md_table(["step", *(v.title for v in report.variants)], rows)


def pm_point(point: CurvePoint | None) -> str:
    return pm_stats(None if point is None else (point.mean, point.std))


def labeling_lines(report: Report) -> list[str]:
    run = report.run_of("prm-data")
    if run is None or not report.labeling:
        return ["No prm-data run with labeling metrics in this group.", ""]
    m = report.labeling
    lines = [f"prm-data run {run.id} (selection: {run.config.get('selection', '?')}).", ""]
    search = m.get("labeling/completions_per_failing_mean")
    linear = m.get("labeling/linear_scan_completions_per_failing_mean")
    if search is not None and linear is not None:
        lines += [
            f"Binary search sampled **{search:.1f}** completions per failing response; a linear "
            f"scan would have sampled {linear:.1f} "
            f"({m.get('labeling/linear_over_search_completions', 0):.2f}× as many).",
            "",
        ]
    lines += md_table(["metric", "value"], [[n, number(v)] for n, v in sorted(m.items())])
    if report.label_audit:
        lines += [
            "Label audit, line by line: the search's labels against the benchmark's ground "
            "truth (rows: search label, columns: truth).",
            "",
        ]
        rows = [
            [f"{a:+d}" if a else "0", *(report.label_audit.get((a, t), 0) for t in LABELS)]
            for a in LABELS
        ]
        lines += md_table(["search \\ truth", "+1", "0", "-1"], rows)
    return lines


def prm_lines(report: Report) -> list[str]:
    run = report.run_of("prm-train")
    if run is None or not report.prm_quality:
        return ["No prm-train run with evaluation metrics in this group.", ""]
    q = report.prm_quality
    headline = [
        f"{name.removeprefix('prm/')} **{q[name]:.3f}**" for name in PRM_HEADLINE if name in q
    ]
    lines = [f"prm-train run {run.id} on held-out labelled lines: " + ", ".join(headline) + ".", ""]
    lines += md_table(["metric", "value"], [[n, number(v)] for n, v in sorted(q.items())])
    if report.best_of_k:
        lines += [
            "Best-of-K reranking by the PRM, on responses sampled from the prm-train run's "
            "policy (the SFT model in `reproduce`); random: one response at random, "
            "policy_logprob: the response the policy itself finds likeliest (mean log-probability "
            "per token, the baseline a PRM has to beat), oracle: pass@K:",
            "",
        ]
        rows = [
            [k, *(pct(row.get(c)) for c in RERANK_COLUMNS)] for k, row in report.best_of_k.items()
        ]
        lines += md_table(["K", *(f"{c} %" for c in RERANK_COLUMNS)], rows)
    return lines


def monitor_lines(report: Report) -> list[str]:
    if not report.monitors:
        return ["No rollout monitors logged.", ""]
    rows = [
        [label, title, number(curve[0].mean), number(curve[-1].mean)]
        for name, label in MONITORS.items()
        for title, curve in report.monitors.get(name, {}).items()
    ]
    return md_table(["monitor", "variant", "first step", "last step"], rows)


def run_lines(report: Report) -> list[str]:
    rows = [[r.id, r.name, r.kind, r.status, minutes(r.seconds)] for r in report.runs]
    return md_table(["run", "name", "kind", "status", "minutes"], rows)


def config_lines(report: Report) -> list[str]:
    lines = [
        "Every run's full config is in `configs.json`; per kind, the fields all its runs share, "
        "then each run's own:",
        "",
    ]
    for kind, (common, rest) in split_configs(report.runs).items():
        lines += [f"**{kind}**", "", "```json", json.dumps(common, indent=1, sort_keys=True)]
        lines += ["```", ""]
        if any(rest.values()):
            rows = [[rid, json.dumps(own, sort_keys=True)] for rid, own in rest.items()]
            lines += md_table(["run", "own fields"], rows)
    return lines


def status_line(report: Report) -> str:
    unfinished = [r for r in report.runs if r.status != RunStatus.succeeded]
    wall = wall_seconds(report.runs)
    parts = [f"{len(report.runs)} runs"]
    if report.superseded:
        parts.append(f"superseded runs left out: {report.superseded}")
    if unfinished:
        parts.append(f"**{len(unfinished)} not succeeded: the figures are partial**")
    if wall is not None:
        parts.append(f"wall time {minutes(wall)} min (first start to last finish)")
    return "; ".join(parts) + "."


def to_markdown(report: Report, charts: Mapping[str, str] | None = None) -> str:
    """The report as markdown; ``charts`` {chart name: file} embeds the exported PNGs."""
    charts = charts or {}

    def chart(name: str, alt: str) -> list[str]:
        return [f"![{alt}]({charts[name]})", ""] if name in charts else []

    baseline = report.baseline_final
    lines = [
        f"# Report: {report.group}",
        "",
        status_line(report),
        "",
        "## Pass@1 by variant",
        "",
        f"Held-out `{report.metric}` at each run's last evaluation, mean ± std over seeds. "
        f"Steps to Baseline's final: the first evaluation step at which the variant's mean "
        f"reaches Baseline's final mean ({pct(baseline)} %).",
        "",
        *paper_table(report),
        "## Pass-rate curves",
        "",
        *chart("pass_rate", "pass rate by variant"),
        *curves_table(report),
        *best_of_k_line(report),
        "## Long-horizon bucket",
        "",
        *chart("difficulty", "final pass@1 by difficulty"),
        *difficulty_table(report),
        "## Labeling cost and label audit",
        "",
        *labeling_lines(report),
        "## PRM quality and best-of-K",
        "",
        *prm_lines(report),
        "## Reward-hacking monitors",
        "",
        "Mean over seeds at the first and the last PPO iteration: a policy gaming the PRM "
        "writes longer responses, more lines or more comments.",
        "",
        *chart("hacking", "reward-hacking monitors"),
        *monitor_lines(report),
        *heatmap_lines(report, charts),
        "## Runs",
        "",
        *run_lines(report),
        "## Configs",
        "",
        *config_lines(report),
    ]
    return "\n".join(lines).rstrip() + "\n"


def heatmap_lines(report: Report, charts: Mapping[str, str]) -> list[str]:
    if not report.heatmap:
        return []
    shown = (
        f"![PRM heatmap]({charts['heatmap']})"
        if "heatmap" in charts
        else "[heatmap.html](heatmap.html)"
    )
    return [
        "## What the PRM saw",
        "",
        "The latest failing rollout of a DenseReward run with a line the PRM scored below zero: "
        "each line coloured by its PRM score (red −1 … green +1), with the dense reward PPO paid.",
        "",
        shown,
        "",
    ]


def configs_json(report: Report) -> str:
    runs = [{"id": r.id, "name": r.name, "kind": r.kind, "config": r.config} for r in report.runs]
    return json.dumps({"group": report.group, "runs": runs}, indent=2, sort_keys=True) + "\n"


# ============================================================================ dashboard charts


def pass_rate_figure(report: Report) -> go.Figure:
    bands = {
        v.title: [(p.step, p.mean, p.mean - p.std, p.mean + p.std) for p in v.curve]
        for v in report.variants
    }
    return plots.bands_figure(
        bands,
        title=f"{report.metric}: mean ± std over seeds",
        y_title="pass@1",
        revision=f"report-{report.group}",
    )


def difficulty_figure(report: Report) -> go.Figure:
    return plots.bars_figure(
        {t: {str(d): m for d, (m, _) in by.items()} for t, by in report.by_difficulty.items()},
        errors={
            t: {str(d): s for d, (_, s) in by.items()} for t, by in report.by_difficulty.items()
        },
        title="final pass@1 by difficulty (mean ± std over seeds)",
        x_title="difficulty (steps)",
        y_title="pass@1",
    )


def hacking_figure(report: Report) -> go.Figure:
    panels = {
        MONITORS[name]: {title: [(p.step, p.mean) for p in curve] for title, curve in by.items()}
        for name, by in report.monitors.items()
    }
    return plots.panels_figure(panels, title="reward-hacking monitors", revision="report-hacking")


# ============================================================================ PNG charts


def pass_rate_png(report: Report, path: Path) -> None:
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    ax = figure.subplots()
    for index, v in enumerate(report.variants):
        steps = [p.step for p in v.curve]
        mean = [p.mean for p in v.curve]
        colour = plots.colour_of(v.title, index)
        ax.plot(steps, mean, marker="o", color=colour, label=v.title)
        low = [p.mean - p.std for p in v.curve]
        high = [p.mean + p.std for p in v.curve]
        ax.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
    if report.baseline_final is not None:
        ax.axhline(report.baseline_final, color="grey", linestyle=":", label="Baseline's final")
    ax.set(xlabel="PPO iteration", ylabel="pass@1", title=f"{report.metric} (mean ± std)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    figure.savefig(path, dpi=120)


def difficulty_png(report: Report, path: Path) -> None:
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    ax = figure.subplots()
    difficulties = sorted({d for by in report.by_difficulty.values() for d in by})
    width = 0.8 / max(len(report.by_difficulty), 1)
    for index, (title, by) in enumerate(report.by_difficulty.items()):
        xs = [
            difficulties.index(d) + (index - (len(report.by_difficulty) - 1) / 2) * width
            for d in by
        ]
        means, stds = [m for m, _ in by.values()], [s for _, s in by.values()]
        ax.bar(
            xs, means, width, yerr=stds, color=plots.colour_of(title, index), label=title, capsize=2
        )
    ax.set_xticks(range(len(difficulties)), [str(d) for d in difficulties])
    ax.set(xlabel="difficulty (steps)", ylabel="pass@1", title="final pass@1 by difficulty")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    figure.savefig(path, dpi=120)


def hacking_png(report: Report, path: Path) -> None:
    figure = Figure(figsize=(4 * len(report.monitors), 3.6), layout="constrained")
    axes = figure.subplots(1, len(report.monitors), squeeze=False)[0]
    for ax, (name, by) in zip(axes, report.monitors.items(), strict=True):
        for index, (title, curve) in enumerate(by.items()):
            ax.plot(
                [p.step for p in curve],
                [p.mean for p in curve],
                color=plots.colour_of(title, index),
            )
        ax.set(title=MONITORS[name], xlabel="PPO iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    figure.legend(list(next(iter(report.monitors.values()))), loc="outside lower center", ncols=4)
    figure.savefig(path, dpi=120)


def heatmap_page(report: Report) -> str:
    return (
        '<!doctype html><meta charset="utf-8"><title>PRM heatmap</title>'
        f'<body style="margin:12px;background:#fff">{report.heatmap}</body>'
    )


def screenshot(page: Path, png: Path, height: int) -> bool:
    """``page`` as a PNG through headless Chromium, where it is installed (``make test`` installs
    it; the markdown links the HTML instead when it is not)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--screenshot={png}",
            f"--window-size=980,{height}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return png.is_file() and png.stat().st_size > 0


def write_charts(report: Report, folder: Path) -> dict[str, str]:
    """The charts that have data, as PNGs in ``folder``: {chart name: file name}."""
    written = {}
    if report.heatmap:
        page = folder / "heatmap.html"
        page.write_text(heatmap_page(report), encoding="utf-8")
        if screenshot(page, folder / "heatmap.png", 140 + 26 * report.heatmap.count("<tr")):
            written["heatmap"] = "heatmap.png"
    drawers = {
        "pass_rate": (pass_rate_png, bool(report.variants)),
        "difficulty": (difficulty_png, bool(report.by_difficulty)),
        "hacking": (hacking_png, bool(report.monitors)),
    }
    for name, (draw, has_data) in drawers.items():
        if has_data:
            draw(report, folder / f"{name}.png")
            written[name] = f"{name}.png"
    return written


def write_bundle(report: Report, folder: Path) -> list[Path]:
    """``report.md``, its PNG charts and ``configs.json`` in ``folder``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, folder)
    (folder / "report.md").write_text(to_markdown(report, charts), encoding="utf-8")
    (folder / "configs.json").write_text(configs_json(report), encoding="utf-8")
    pages = [folder / "heatmap.html"] if report.heatmap else []
    return [
        folder / "report.md",
        *(folder / f for f in charts.values()),
        *pages,
        folder / "configs.json",
    ]


def load_report(group: str, metric: str | None = None) -> Report:
    """The report of a stored group (raises ``GroupNotFound``)."""
    with read_session() as session:
        rows = load_group(session, group=group)
    return build_report(rows, metric)


def bundle_zip(report: Report) -> Path:
    """The bundle as a zip in a fresh temporary folder (the dashboard's download)."""
    folder = Path(tempfile.mkdtemp(prefix="prm-report-"))
    name = re.sub(r"[^\w.-]+", "_", report.group) or "report"
    write_bundle(report, folder / name)
    archive = Path(shutil.make_archive(str(folder / name), "zip", folder, name))
    shutil.rmtree(folder / name)
    return archive
