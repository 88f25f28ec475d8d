"""Plotly figure builders for the dashboard (pure functions of already-queried data)."""

from __future__ import annotations

import plotly.graph_objects as go


def metrics_figure(series: dict[str, list[tuple[int, float]]], title: str = "") -> go.Figure:
    """One line per metric, x = step; zoomable, legend toggles curves."""
    figure = go.Figure()
    for name, points in sorted(series.items()):
        figure.add_trace(
            go.Scatter(
                x=[step for step, _ in points],
                y=[value for _, value in points],
                mode="lines+markers" if len(points) < 50 else "lines",
                name=name,
            )
        )
    figure.update_layout(
        title=title or None,
        xaxis_title="step",
        height=420,
        margin={"l": 40, "r": 20, "t": 40 if title else 20, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return figure
