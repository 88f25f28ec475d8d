"""The Gradio dashboard. Callbacks only translate between widgets and ``app.views`` /
``workers.runner``; nothing here computes what belongs in SQL or ``models/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import views
from app.crud import RunNotFound
from app.forms import FormField, form_fields, render_field, values_to_config
from app.orm import RunStatus
from workers import runner
from workers.registry import JOB_KINDS, ConfigError, JobKind, UnknownJobKind

REFRESH_S = 2.0


def launch_message(kind: JobKind, name: str, config: dict[str, Any]) -> str:
    """Submit and describe the outcome as Markdown (errors name the field)."""
    try:
        run_id = runner.submit(kind.name, config, name=name.strip())
    except ConfigError as error:
        return "**Not launched — fix these fields:**\n" + "\n".join(
            f"- `{e}`" for e in error.errors
        )
    return f"Submitted {kind.title} as **run {run_id}**."


def _launcher(kind: JobKind, fields: list[FormField]) -> Callable[..., str]:
    def launch(name: str, *values: Any) -> str:
        return launch_message(kind, name or "", values_to_config(fields, values))

    launch.__name__ = f"launch_{kind.name}"
    return launch


def submit_job(kind: str, config_json: str = "{}") -> int:
    """Queue a job of ``kind`` with a JSON config; returns the new run's id."""
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError as error:
        raise gr.Error(f"config_json is not valid JSON: {error}") from None
    try:
        return runner.submit(kind, config)
    except (ConfigError, UnknownJobKind) as error:
        raise gr.Error(str(error)) from None


def run_status(run_id: int) -> dict[str, Any]:
    """A run's status, progress, config and result."""
    try:
        return views.run_details(int(run_id))
    except RunNotFound as error:
        raise gr.Error(str(error)) from None


def cancel_run(run_id: int) -> str:
    """Cancel a queued or running run."""
    try:
        run = runner.cancel(int(run_id))
    except RunNotFound as error:
        raise gr.Error(str(error)) from None
    return f"run {run.id}: {run.status}" + (" (cancel requested)" if run.cancel_requested else "")


def _open_run(run_id: float | None):
    if not run_id:
        return gr.update(), gr.update()
    try:
        return views.run_details(int(run_id)), views.run_metrics_figure(int(run_id))
    except RunNotFound as error:
        gr.Warning(str(error))
        return {"error": str(error)}, None


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="PRM Studio") as demo:
        gr.Markdown("# PRM Studio\nProcess reward models for code RL.")
        with gr.Tabs() as tabs:
            with gr.Tab("Runs", id="runs"):
                with gr.Row():
                    kind_filter = gr.Dropdown(
                        ["", *JOB_KINDS], value="", label="kind", allow_custom_value=False
                    )
                    status_filter = gr.Dropdown(
                        ["", *(s.value for s in RunStatus)], value="", label="status"
                    )
                    text_filter = gr.Textbox(label="name contains")
                runs_df = gr.Dataframe(
                    value=views.runs_table,
                    headers=views.RUN_COLUMNS,
                    interactive=False,
                    elem_id="runs-table",
                    label="runs (refreshes every 2 s; click a row to open it)",
                )
                filters = [kind_filter, status_filter, text_filter]
                gr.Timer(REFRESH_S).tick(
                    views.runs_table,
                    inputs=filters,
                    outputs=runs_df,
                    api_visibility="private",
                    show_progress="hidden",
                )
                for widget in filters:
                    widget.change(
                        views.runs_table, inputs=filters, outputs=runs_df, api_visibility="private"
                    )

            with gr.Tab("Launch", id="launch"):
                for index, kind in enumerate(JOB_KINDS.values()):
                    with gr.Accordion(kind.title, open=index == 0):
                        gr.Markdown(kind.description)
                        fields = form_fields(kind.config)
                        name = gr.Textbox(label="run name (optional)")
                        widgets = [render_field(field) for field in fields]
                        button = gr.Button(f"Launch {kind.title}", elem_id=f"launch-{kind.name}")
                        outcome = gr.Markdown(elem_id=f"launch-{kind.name}-outcome")
                        button.click(
                            _launcher(kind, fields),
                            inputs=[name, *widgets],
                            outputs=outcome,
                            api_name=f"launch_{kind.name}",
                        )

            with gr.Tab("Run", id="run"):
                with gr.Row():
                    run_id = gr.Number(label="run id", precision=0, elem_id="run-id")
                    open_button = gr.Button("Open", elem_id="open-run")
                    cancel_button = gr.Button("Cancel run", variant="stop", elem_id="cancel-run")
                cancel_outcome = gr.Markdown()
                details = gr.JSON(label="run", elem_id="run-details")
                chart = gr.Plot(label="metrics", elem_id="run-metrics")
                open_button.click(
                    _open_run, inputs=run_id, outputs=[details, chart], api_visibility="private"
                )
                gr.Timer(REFRESH_S).tick(
                    _open_run,
                    inputs=run_id,
                    outputs=[details, chart],
                    api_visibility="private",
                    show_progress="hidden",
                )
                cancel_button.click(
                    cancel_run, inputs=run_id, outputs=cancel_outcome, api_name="cancel_run"
                )

        def _select_run(event: gr.SelectData, table):
            row = event.index[0] if isinstance(event.index, list | tuple) else event.index
            return int(table.iloc[row]["id"]), gr.Tabs(selected="run")

        runs_df.select(
            _select_run, inputs=runs_df, outputs=[run_id, tabs], api_visibility="private"
        )
        gr.api(submit_job, api_name="submit_job")
        gr.api(run_status, api_name="run_status")
    return demo
