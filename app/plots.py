"""Plotly figure builders for the dashboard: pure functions of already-queried data (no
database access here), so each is unit-testable and every view shares one look.

Figures carry a ``uirevision``: Gradio redraws with ``Plotly.react``, which keeps the user's
zoom and hidden traces across the live refreshes as long as the revision stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

Points = Sequence[tuple[int, float]]
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
# The paper's four PPO variants (as the Compare view titles them) keep their colours everywhere.
VARIANT_COLOURS = {
    "Baseline": "#7f7f7f",
    "DenseReward": "#1f77b4",
    "ValueInit": "#ff7f0e",
    "DenseReward+ValueInit": "#2ca02c",
}
GRID_COLUMNS = 3
SUBPLOT_HEIGHT = 230


def colour_of(name: str, index: int) -> str:
    return VARIANT_COLOURS.get(name, PALETTE[index % len(PALETTE)])


def _xy(points: Points) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values as arrays: plotly validates a list element by element, an array at
    once (for a PPO run's forty curves that is most of the figure's cost)."""
    steps = np.fromiter((s for s, _ in points), dtype=np.int64, count=len(points))
    values = np.fromiter((v for _, v in points), dtype=np.float64, count=len(points))
    return steps, values


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points
    are not pulled towards 0. ``weight`` 0 returns the values unchanged."""
    if weight <= 0:
        return list(values)
    smoothed, last, debias = [], 0.0, 1.0
    for value in values:
        last = weight * last + (1 - weight) * float(value)
        debias *= weight
        smoothed.append(last / (1 - debias))
    return smoothed


def _layout(figure: go.Figure, *, title: str, height: int, revision: str) -> go.Figure:
    figure.update_layout(
        title=title or None,
        height=height,
        margin={"l": 50, "r": 20, "t": 60 if title else 30, "b": 40},
        legend={"orientation": "v", "x": 1.02, "y": 1, "xanchor": "left"},
        template="plotly_white",
        uirevision=revision,
        hovermode="x unified",
    )
    return figure


def empty_figure(message: str) -> go.Figure:
    """A blank figure that says why there is nothing to plot."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return _layout(figure, title="", height=200, revision=message)


def _curve(
    x: Sequence[int], y: Sequence[float], *, name: str, colour: str, smoothing: float
) -> list[go.Scatter]:
    """A metric's trace; with smoothing, the raw points stay visible as a faint line."""
    mode = "lines+markers" if len(x) < 50 else "lines"
    if smoothing <= 0:
        return [go.Scatter(x=x, y=y, mode=mode, name=name, line={"color": colour})]
    return [
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=f"{name} (raw)",
            opacity=0.25,
            line={"color": colour, "width": 1},
            hoverinfo="skip",
            showlegend=False,
        ),
        go.Scatter(
            x=x, y=np.asarray(ema(y, smoothing)), mode="lines", name=name, line={"color": colour}
        ),
    ]


def _grid(names: Sequence[str], columns: int) -> tuple[dict, list[tuple[str, str]]]:
    """Axes for a grid of small charts, one per name, each titled: the layout and each
    chart's (x axis, y axis) references. Built directly, not with ``make_subplots``, which
    costs about ten times as much for the forty charts of a PPO run."""
    rows = math.ceil(len(names) / columns)
    gap_x, gap_y = 0.05, min(0.35 / rows, 0.09)
    layout: dict = {"annotations": []}
    refs = []
    for index, name in enumerate(names):
        row, col = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x0, x1 = col / columns + gap_x / 2, (col + 1) / columns - gap_x / 2
        y1 = 1 - row / rows - gap_y / 2
        y0 = 1 - (row + 1) / rows + gap_y / 2
        layout[f"xaxis{suffix}"] = {"domain": [x0, x1], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"domain": [y0, y1], "anchor": f"x{suffix}"}
        layout["annotations"].append(
            {
                "text": name,
                "x": (x0 + x1) / 2,
                "y": y1,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 12},
            }
        )
        refs.append((f"x{suffix}", f"y{suffix}"))
    return layout, refs


def metrics_grid(
    series: Mapping[str, Points], *, smoothing: float = 0.0, title: str = "", revision: str = ""
) -> go.Figure:
    """One small zoomable chart per metric, ordered (and so grouped) by namespace — the
    ``losses/`` curves together, then ``rollout/``, and so on. x is the step."""
    if not series:
        return empty_figure("no metrics logged yet")
    names = sorted(series)
    layout, refs = _grid(names, GRID_COLUMNS)
    traces = []
    for index, (name, (xref, yref)) in enumerate(zip(names, refs, strict=True)):
        x, y = _xy(series[name])
        for trace in _curve(
            x, y, name=name, colour=PALETTE[index % len(PALETTE)], smoothing=smoothing
        ):
            trace.update(xaxis=xref, yaxis=yref, showlegend=False)
            traces.append(trace)
    figure = go.Figure(data=traces, layout=layout)
    rows = math.ceil(len(names) / GRID_COLUMNS)
    return _layout(figure, title=title, height=SUBPLOT_HEIGHT * rows + 60, revision=revision)


def curves_figure(
    curves: Mapping[str, Points],
    *,
    highlight: str | None = None,
    smoothing: float = 0.0,
    title: str = "",
    y_title: str = "",
    revision: str = "",
) -> go.Figure:
    """Several runs' curves of one metric on one chart; ``highlight`` drawn bold, the others
    (siblings in the run's group) thinner."""
    if not curves:
        return empty_figure("no curve to show")
    figure = go.Figure()
    for index, (name, points) in enumerate(curves.items()):
        x, y = _xy(points)
        for trace in _curve(
            x, y, name=name, colour=PALETTE[index % len(PALETTE)], smoothing=smoothing
        ):
            if highlight is not None and name != highlight:
                trace.line.width = 1
                trace.opacity = min(trace.opacity or 1.0, 0.6)
            elif highlight is not None:
                trace.line.width = 3
            figure.add_trace(trace)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=y_title)
    return _layout(figure, title=title, height=380, revision=revision)


def bands_figure(
    bands: Mapping[str, Sequence[tuple[int, float, float, float]]],
    *,
    title: str = "",
    y_title: str = "",
    revision: str = "",
) -> go.Figure:
    """Per group (variant): the mean over its runs as a line and the spread (min to max over
    seeds) as a shaded band. Each point is (step, mean, low, high)."""
    if not bands:
        return empty_figure("no runs with this metric")
    figure = go.Figure()
    for index, (name, points) in enumerate(bands.items()):
        colour = colour_of(name, index)
        steps = [p[0] for p in points]
        figure.add_trace(
            go.Scatter(
                x=[*steps, *reversed(steps)],
                y=[p[3] for p in points] + [p[2] for p in reversed(points)],
                fill="toself",
                fillcolor=colour,
                opacity=0.18,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                name=f"{name} spread",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=[p[1] for p in points],
                mode="lines+markers" if len(steps) < 50 else "lines",
                name=name,
                line={"color": colour, "width": 2},
            )
        )
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=y_title)
    return _layout(figure, title=title, height=420, revision=revision)


def bars_figure(
    groups: Mapping[str, Mapping[str, float]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> go.Figure:
    """Grouped bars: one series per key of ``groups``, bars at the category keys inside
    (e.g. series = greedy/sampled or variants, categories = difficulty)."""
    if not groups:
        return empty_figure("nothing to compare yet")
    figure = go.Figure()
    for index, (series, values) in enumerate(groups.items()):
        categories = list(values)
        spread = (errors or {}).get(series)
        figure.add_trace(
            go.Bar(
                x=categories,
                y=[values[c] for c in categories],
                name=series,
                marker_color=colour_of(series, index),
                error_y={"type": "data", "array": [spread.get(c, 0.0) for c in categories]}
                if spread
                else None,
            )
        )
    figure.update_layout(barmode="group")
    figure.update_xaxes(title_text=x_title, type="category")
    figure.update_yaxes(title_text=y_title)
    return _layout(figure, title=title, height=360, revision=title)


def panels_figure(
    panels: Mapping[str, Mapping[str, Points]], *, title: str = "", revision: str = ""
) -> go.Figure:
    """Metrics side by side (one panel each), every panel overlaying the same groups: e.g.
    lines per response and comment fraction per variant — the reward-hacking monitors."""
    if not panels:
        return empty_figure("no rollout monitors logged")
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels))
    seen: set[str] = set()
    for col, curves in enumerate(panels.values(), start=1):
        for index, (name, points) in enumerate(curves.items()):
            figure.add_trace(
                go.Scatter(
                    x=[s for s, _ in points],
                    y=[v for _, v in points],
                    mode="lines",
                    name=name,
                    line={"color": colour_of(name, index)},
                    legendgroup=name,
                    showlegend=name not in seen,
                ),
                row=1,
                col=col,
            )
            seen.add(name)
    return _layout(figure, title=title, height=360, revision=revision)


def labeling_cost_figure(rows: Sequence[tuple[int, int, float]], k: int) -> go.Figure:
    """Completions sampled per failing response against its number of code lines T: the
    binary search as measured, its K·⌈log₂(T+1)⌉ bound, and the K·T a linear scan needs."""
    if not rows:
        return empty_figure("no failing responses labelled yet")
    lengths = [t for t, _, _ in rows]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=lengths,
            y=[mean for _, _, mean in rows],
            mode="lines+markers",
            name="binary search (measured mean)",
            text=[f"{n} responses" for _, n, _ in rows],
            line={"color": PALETTE[2], "width": 3},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=lengths,
            y=[k * math.ceil(math.log2(t + 1)) for t in lengths],
            mode="lines",
            name="K·⌈log₂(T+1)⌉ bound",
            line={"color": PALETTE[0], "dash": "dot"},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=lengths,
            y=[k * t for t in lengths],
            mode="lines",
            name="linear scan K·T",
            line={"color": PALETTE[1], "dash": "dash"},
        )
    )
    figure.update_xaxes(title_text="code lines T of the response")
    figure.update_yaxes(title_text="completions sampled")
    return _layout(figure, title="labeling cost per failing response", height=380, revision="cost")


def calibration_figure(curve: Sequence[Mapping[str, float]]) -> go.Figure:
    """Reliability diagram: predicted P(+1) against the observed share of +1 lines per bin
    (marker size: lines in the bin), with the diagonal of perfect calibration."""
    if not curve:
        return empty_figure("no calibration data")
    counts = [float(b.get("count", 1)) for b in curve]
    biggest = max(counts) or 1.0
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"color": "#aaa", "dash": "dot"}
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[b["predicted"] for b in curve],
            y=[b["observed"] for b in curve],
            mode="lines+markers",
            name="PRM",
            marker={"size": [8 + 16 * c / biggest for c in counts], "color": PALETTE[0]},
            text=[f"{int(c)} lines" for c in counts],
        )
    )
    figure.update_xaxes(title_text="predicted P(+1) = (score + 1) / 2", range=[0, 1])
    figure.update_yaxes(title_text="observed share of +1", range=[0, 1])
    return _layout(figure, title="calibration", height=380, revision="calibration")


def roc_figure(
    points: Sequence[tuple[float, float]], *, auc: float | None, title: str
) -> go.Figure:
    """A ROC curve (false-positive rate, true-positive rate) with the chance diagonal."""
    if len(points) < 2:
        return empty_figure("no ROC data")
    label = title + (f" (AUC {auc:.3f})" if auc is not None and math.isfinite(auc) else "")
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": "#aaa", "dash": "dot"}
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="lines",
            name="PRM",
            line={"color": PALETTE[3], "width": 3},
        )
    )
    figure.update_xaxes(title_text="false-positive rate", range=[0, 1])
    figure.update_yaxes(title_text="true-positive rate", range=[0, 1])
    return _layout(figure, title=label, height=380, revision="roc")


def rerank_figure(table: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Best-of-K pass rate against K: the PRM's pick (per aggregate), a random pick, the
    policy's likeliest response, and the oracle (any of the K passes)."""
    if not table:
        return empty_figure("no reranking data")
    ks = sorted(table, key=int)
    names = sorted({name for row in table.values() for name in row})
    figure = go.Figure()
    for index, name in enumerate(names):
        figure.add_trace(
            go.Scatter(
                x=[int(k) for k in ks],
                y=[table[k].get(name) for k in ks],
                mode="lines+markers",
                name=name,
                line={
                    "color": PALETTE[index % len(PALETTE)],
                    "dash": "dot" if name in ("random", "oracle", "policy_logprob") else "solid",
                },
            )
        )
    figure.update_xaxes(title_text="K (responses reranked)", type="log")
    figure.update_yaxes(title_text="pass rate of the pick")
    return _layout(figure, title="best-of-K reranking", height=380, revision="rerank")
