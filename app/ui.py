"""The Gradio dashboard: Runs, Launch, Run, Inspect, Compare, Report and Workers tabs.

Callbacks only translate between widgets and ``app.views`` / ``app.compare`` / ``app.report``
(reads) or ``app.actions`` (writes); nothing here computes what belongs in SQL or ``models/``.
Every launch action is a named API endpoint (``api_name``), so a script can do what the browser
does; the rest of the UI's events are private.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app import actions, compare, render, report, views
from app.crud import RunNotFound
from app.forms import FormField, FormValueError, field_messages, form_fields, render_form
from app.forms import values_to_config as form_values
from app.orm import RunStatus
from workers.pipeline import ReproduceConfig
from workers.registry import JOB_KINDS, ConfigError, JobKind, UnknownJobKind

RUNS_REFRESH_S = 2.0
RUN_REFRESH_S = 3.0
WORKERS_REFRESH_S = 10.0
ALL = "all"
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


def _id(value: Any) -> int | None:
    """A run or sample id from a Number widget (None when empty; Gradio shows empty as 0, and
    ids start at 1)."""
    return int(value) if value else None


# ============================================================================ API endpoints


def submit_job(kind: str, config_json: str = "{}") -> int:
    """Queue a job of ``kind`` with a JSON config; returns the new run's id."""
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError as error:
        raise gr.Error(f"config_json is not valid JSON: {error}") from None
    outcome = actions.launch(kind, config) if kind in JOB_KINDS else None
    if outcome is None:
        raise gr.Error(str(UnknownJobKind(kind)))
    if outcome.run_id is None:
        raise gr.Error(f"invalid {kind} config: " + "; ".join(outcome.errors))
    return outcome.run_id


def run_status(run_id: int) -> dict[str, Any]:
    """A run's status, progress, config and result."""
    try:
        return views.run_details(int(run_id))
    except RunNotFound as error:
        raise gr.Error(str(error)) from None


def cancel_run(run_id: float | None) -> str:
    """Cancel a queued or running run."""
    if _id(run_id) is None:
        return "Open a run first."
    try:
        return actions.cancel(int(run_id))
    except RunNotFound as error:
        raise gr.Error(str(error)) from None


def run_again(run_id: int) -> int:
    """Submit a copy of a run (same kind, config and group) whose parent is the original;
    returns the new run's id."""
    try:
        return actions.run_again(int(run_id))
    except (RunNotFound, ConfigError) as error:
        raise gr.Error(str(error)) from None


def _run_again_message(run_id: float | None) -> str:
    if _id(run_id) is None:
        return "Open a run first."
    return f"Submitted **run {run_again(int(run_id))}** with run {int(run_id)}'s config."


def reproduce_paper(config_json: str = "{}") -> dict[str, Any]:
    """Run the paper's whole pipeline as one group (finished stages of the group are reused).
    ``config_json``: preset, budget, seeds, policy, group — e.g. ``{"budget": "micro"}``.
    Returns ``{"group", "stages": [{"stage", "run_id", "reused"}], "errors"}``."""
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError as error:
        raise gr.Error(f"config_json is not valid JSON: {error}") from None
    started = actions.reproduce_paper(config)
    if started["errors"]:
        raise gr.Error("; ".join(started["errors"]))
    return started


def validate_dataset(file: str | None) -> tuple[str, Any]:
    """Validate an uploaded problem file (JSONL); errors come by line."""
    if not file:
        return "Choose a JSONL file first.", None
    return render.dataset_errors(actions.validate_dataset(file))


def import_dataset(file: str | None, name: str) -> tuple[str, Any]:
    """Validate and import an uploaded problem file as a named problem set."""
    if not file:
        return "Choose a JSONL file first.", None
    return render.dataset_errors(actions.import_dataset(file, name or ""))


# ============================================================================ Runs tab


@dataclass
class RunsTab:
    table: gr.Dataframe


def runs_tab() -> RunsTab:
    with gr.Row():
        kind = gr.Dropdown(["", *JOB_KINDS], value="", label="kind")
        status = gr.Dropdown(["", *(s.value for s in RunStatus)], value="", label="status")
        group = gr.Dropdown(
            [""], value="", label="group", allow_custom_value=True, elem_id="runs-group"
        )
        text = gr.Textbox(label="name, kind or group contains")
        page = gr.Number(value=1, precision=0, minimum=1, label="page")
    summary = gr.Markdown(elem_id="runs-summary")
    table = gr.Dataframe(
        headers=views.RUN_COLUMNS,
        interactive=False,
        elem_id="runs-table",
        label="runs (live; click a row to open it)",
    )
    filters = [kind, status, text, group, page]
    refresh = {"fn": views.runs_table, "inputs": filters, "outputs": [table, summary], **PRIVATE}
    gr.Timer(RUNS_REFRESH_S).tick(**refresh, show_progress="hidden")
    for widget in filters:
        widget.change(**refresh)
    group.focus(lambda: gr.Dropdown(choices=["", *views.group_choices()]), outputs=group, **PRIVATE)
    return RunsTab(table)


# ============================================================================ Launch tab


def launch_message(kind: JobKind, name: str, config: dict[str, Any] | FormValueError) -> str:
    """Submit and describe the outcome as Markdown (errors name the dotted field)."""
    return actions.launch(kind.name, config, name or "").markdown(kind.title)


def _launcher(kind: JobKind, fields: list[FormField]) -> Callable[..., str]:
    def launch(name: str, *values: Any) -> str:
        try:
            config: dict[str, Any] | FormValueError = form_values(fields, values)
        except FormValueError as error:
            config = error
        return launch_message(kind, name, config)

    launch.__name__ = f"launch_{kind.name}"
    launch.__doc__ = f"Launch a {kind.title} run: the run name, then the form's fields."
    # named parameters with the form's defaults (data.benchmark.seed → data__benchmark__seed)
    # document the endpoint and let a client pass only what it changes, by keyword
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    launch.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("name", keyword, default="", annotation=str)]
        + [inspect.Parameter(f.name.replace(".", "__"), keyword, default=f.default) for f in fields]
    )
    return launch


def _validator(kind: JobKind, fields: list[FormField]) -> Callable[..., list[dict]]:
    """Inline errors: each widget whose field fails validation shows its message."""

    def check(_name: str, *values: Any) -> list[dict]:
        messages = field_messages(kind.config, fields, values)
        return [gr.validate(True, ""), *(gr.validate(not m, m) for m in messages)]

    return check


def _kind_form(kind: JobKind, pickers: list[tuple[str, gr.Dropdown]]) -> None:
    gr.Markdown(kind.description)
    fields = form_fields(kind.config)
    name = gr.Textbox(value="", label="run name (optional)", elem_id=f"{kind.name}-run-name")
    widgets = render_form(fields, kind.name)
    pickers += [(f.picker, w) for f, w in zip(fields, widgets, strict=True) if f.picker]
    button = gr.Button(f"Launch {kind.title}", variant="primary", elem_id=f"launch-{kind.name}")
    outcome = gr.Markdown(elem_id=f"launch-{kind.name}-outcome")
    button.click(
        _launcher(kind, fields),
        inputs=[name, *widgets],
        outputs=outcome,
        api_name=f"launch_{kind.name}",
        validator=_validator(kind, fields),
    )


def _dataset_upload() -> gr.Dataframe:
    gr.Markdown(
        "Upload problems as JSONL (one object a line: `task_id`, `prompt`, `tests` or `test`, "
        "optional `entry_point`, `setup`, `reference`, `meta`). Every line is checked, and "
        "references run against their own tests in the sandbox; nothing is imported unless the "
        "whole file is valid."
    )
    with gr.Row():
        file = gr.File(label="problem file (.jsonl)", file_types=[".jsonl"], elem_id="dataset-file")
        with gr.Column():
            name = gr.Textbox(label="problem set name", elem_id="dataset-name")
            validate = gr.Button("Validate", elem_id="dataset-validate")
            store = gr.Button("Import", variant="primary", elem_id="dataset-import")
    outcome = gr.Markdown(elem_id="dataset-outcome")
    errors = gr.Dataframe(
        headers=["line", "field", "message"],
        interactive=False,
        elem_id="dataset-errors",
        label="errors by line",
    )
    sets = gr.Dataframe(interactive=False, label="problem sets", elem_id="problem-sets")
    validate.click(
        validate_dataset, inputs=file, outputs=[outcome, errors], api_name="validate_dataset"
    )
    store.click(
        import_dataset, inputs=[file, name], outputs=[outcome, errors], api_name="import_dataset"
    ).then(views.problem_sets_table, outputs=sets, **PRIVATE)
    return sets


def _picker_updates(pickers: list[tuple[str, gr.Dropdown]]) -> Callable[[], list[Any]]:
    def refresh() -> list[Any]:
        cache: dict[str, list[tuple[str, Any]]] = {}
        for picker, _ in pickers:
            if picker not in cache:
                cache[picker] = views.picker_choices(picker)
        return [gr.Dropdown(choices=cache[picker]) for picker, _ in pickers]

    return refresh


def _paper_form(pickers: list[tuple[str, gr.Dropdown]]) -> None:
    """The paper's whole pipeline in one click (``workers.pipeline``), with its few knobs."""
    gr.Markdown(
        "SFT → RL baseline → PRM data (binary search on 4 of its checkpoints) → PRM → PPO "
        "Baseline / DenseReward / ValueInit / DenseReward+ValueInit × seeds, as one group; "
        "each stage waits for the runs it uses. Stages of the group that finished or are "
        "running are reused, so clicking again resumes a broken pipeline."
    )
    fields = form_fields(ReproduceConfig)
    widgets = render_form(fields, "reproduce")
    pickers += [(f.picker, w) for f, w in zip(fields, widgets, strict=True) if f.picker]
    button = gr.Button("Reproduce the paper", variant="primary", elem_id="reproduce-paper")
    outcome = gr.Markdown(elem_id="reproduce-paper-outcome")

    def start(*values: Any) -> str:
        try:
            config: dict[str, Any] | FormValueError = form_values(fields, values)
        except FormValueError as error:
            config = error
        return render.paper_markdown(actions.reproduce_paper(config))

    def check(*values: Any) -> list[dict]:
        return [gr.validate(not m, m) for m in field_messages(ReproduceConfig, fields, values)]

    button.click(start, inputs=widgets, outputs=outcome, validator=check, **PRIVATE)


def launch_tab(tab: gr.Tab) -> None:
    refresh = gr.Button("Refresh run and checkpoint choices", size="sm", elem_id="refresh-pickers")
    pickers: list[tuple[str, gr.Dropdown]] = []
    with gr.Accordion("Reproduce the paper", open=True):
        _paper_form(pickers)
    for index, kind in enumerate(JOB_KINDS.values()):
        with gr.Accordion(kind.title, open=index == 0):
            _kind_form(kind, pickers)
    with gr.Accordion("Upload a problem set", open=False):
        sets = _dataset_upload()
    update = _picker_updates(pickers)
    outputs = [widget for _, widget in pickers]
    tab.select(update, outputs=outputs, **PRIVATE)
    tab.select(views.problem_sets_table, outputs=sets, **PRIVATE)
    refresh.click(update, outputs=outputs, **PRIVATE)


# ============================================================================ Run tab


@dataclass
class RunTab:
    run_id: gr.Number
    smoothing: gr.Slider
    namespace: gr.Dropdown
    outputs: list[Any]
    inspect: gr.Button


def _hidden(count: int) -> list[Any]:
    return [gr.update(visible=False)] + [gr.skip()] * (count - 1)


def _panel(panel: dict[str, Any] | None, keys: list[str]) -> list[Any]:
    """A kind panel's visibility and contents (hidden when the run has no such data)."""
    if panel is None:
        return _hidden(len(keys) + 1)
    return [gr.update(visible=True), *(panel[key] for key in keys)]


def _optional_plot(figure: Any) -> Any:
    return gr.update(visible=False) if figure is None else gr.update(value=figure, visible=True)


def _optional_table(table: Any) -> Any:
    return gr.update(visible=False) if table is None else gr.update(value=table, visible=True)


LABELING_KEYS = ["figure", "audit"]
PRM_KEYS = ["calibration", "roc", "rerank_figure", "rerank_table"]
# header, details, lineage, namespace, curves, scalars, pass rate, difficulty, status; panels
RUN_OUTPUTS = 9 + 1 + len(LABELING_KEYS) + 1 + len(PRM_KEYS)


def render_run(run_id: Any, smoothing: float, namespace: str) -> list[Any]:
    """Everything the Run tab shows for one run, in ``RunTab.outputs`` order."""
    rid = _id(run_id)
    if rid is None:
        return [gr.skip()] * RUN_OUTPUTS
    try:
        summary = views.run_summary(rid)
    except RunNotFound as error:
        return [f"<p>{error}</p>", {"error": str(error)}, *[gr.skip()] * (RUN_OUTPUTS - 2)]
    namespaces = views.metric_namespaces(rid)
    chosen = namespace if namespace in namespaces else ALL
    return [
        render.run_header(summary),
        views.run_details(rid),
        render.lineage_markdown(views.lineage(rid)),
        gr.Dropdown(choices=[ALL, *namespaces], value=chosen),
        _optional_plot(views.run_metrics_figure(rid, smoothing, "" if chosen == ALL else chosen)),
        _optional_table(views.run_scalars(rid)),
        _optional_plot(views.pass_rate_figure(rid, smoothing)),
        _optional_plot(views.difficulty_figure(rid)),
        summary["status"],
        *_panel(views.labeling_panel(rid), LABELING_KEYS),
        *_panel(views.prm_panel(rid), PRM_KEYS),
    ]


def refresh_run(run_id: Any, smoothing: float, namespace: str, shown: str | None) -> list[Any]:
    """The live refresh: re-render while the run can still change, then once more when it
    finishes; a finished run already on screen costs one cheap status read."""
    rid = _id(run_id)
    if rid is None:
        return [gr.skip()] * RUN_OUTPUTS
    try:
        status = views.run_details(rid)["status"]
    except RunNotFound:
        return [gr.skip()] * RUN_OUTPUTS
    if status == shown and RunStatus(status).finished:
        return [gr.skip()] * RUN_OUTPUTS
    return render_run(rid, smoothing, namespace)


def _labeling_panel() -> tuple[gr.Column, list[Any]]:
    with gr.Column(visible=False, elem_id="labeling-panel") as column:
        gr.Markdown("### Labeling cost and audit")
        with gr.Row():
            cost = gr.Plot(label="completions per failing response", elem_id="labeling-cost")
            audit = gr.Dataframe(
                interactive=False,
                label="label audit: lines by search label (rows) and ground truth (columns)",
                elem_id="label-audit",
            )
    return column, [cost, audit]


def _prm_panel() -> tuple[gr.Column, list[Any]]:
    with gr.Column(visible=False, elem_id="prm-panel") as column:
        gr.Markdown("### PRM evaluation")
        with gr.Row():
            calibration = gr.Plot(label="calibration", elem_id="prm-calibration")
            roc = gr.Plot(label="ROC", elem_id="prm-roc")
        with gr.Row():
            rerank = gr.Plot(label="best-of-K", elem_id="prm-rerank")
            table = gr.Dataframe(
                interactive=False, label="best-of-K pass rate of the pick", elem_id="prm-bok"
            )
    return column, [calibration, roc, rerank, table]


def run_tab() -> RunTab:
    with gr.Row():
        run_id = gr.Number(label="run id", precision=0, elem_id="run-id")
        open_button = gr.Button("Open", elem_id="open-run")
        cancel = gr.Button("Cancel run", variant="stop", elem_id="cancel-run")
        again = gr.Button("Run again with this config", elem_id="run-again")
        inspect = gr.Button("Inspect its samples", elem_id="inspect-run-samples")
    action = gr.Markdown(elem_id="run-action-outcome")
    header = gr.HTML(elem_id="run-summary")
    with gr.Accordion("lineage", open=True):
        lineage = gr.Markdown(elem_id="run-lineage")
    with gr.Accordion("status, config and result", open=False):
        details = gr.JSON(label="run", elem_id="run-details")
    with gr.Row():
        smoothing = gr.Slider(0.0, 0.99, value=0.0, step=0.01, label="EMA smoothing", elem_id="ema")
        namespace = gr.Dropdown([ALL], value=ALL, label="namespace", elem_id="metric-namespace")
    chart = gr.Plot(label="metrics", elem_id="run-metrics")
    scalars = gr.Dataframe(
        interactive=False, visible=False, label="metrics logged once", elem_id="run-scalars"
    )
    with gr.Row():
        pass_rate = gr.Plot(label="pass rate (group siblings overlaid)", elem_id="run-pass-rate")
        difficulty = gr.Plot(label="long horizon: pass@1 by difficulty", elem_id="run-difficulty")
    status = gr.State(None)
    labeling, labeling_outputs = _labeling_panel()
    prm, prm_outputs = _prm_panel()
    outputs = [
        header,
        details,
        lineage,
        namespace,
        chart,
        scalars,
        pass_rate,
        difficulty,
        status,
        labeling,
        *labeling_outputs,
        prm,
        *prm_outputs,
    ]
    inputs = [run_id, smoothing, namespace]
    open_button.click(render_run, inputs=inputs, outputs=outputs, **PRIVATE)
    run_id.submit(render_run, inputs=inputs, outputs=outputs, **PRIVATE)
    gr.Timer(RUN_REFRESH_S).tick(
        refresh_run, inputs=[*inputs, status], outputs=outputs, show_progress="hidden", **PRIVATE
    )
    for widget in (smoothing, namespace):
        widget.input(render_run, inputs=inputs, outputs=outputs, show_progress="hidden", **PRIVATE)
    cancel.click(cancel_run, inputs=run_id, outputs=action, api_name="cancel_run")
    again.click(_run_again_message, inputs=run_id, outputs=action, **PRIVATE)
    return RunTab(run_id, smoothing, namespace, outputs, inspect)


# ============================================================================ Inspect tab


@dataclass
class InspectTab:
    run_filter: gr.Number
    search: Callable[..., Any]
    filters: list[Any]
    table_outputs: list[Any]


def render_sample(sample_id: Any) -> list[Any]:
    """Header, prompt, heatmap, metadata and same-problem list of one sample."""
    sid = _id(sample_id)
    if sid is None:
        return [gr.skip()] * 5
    view = views.sample_view(sid)
    if view is None:
        return [f"sample {sid} does not exist", "", "", None, None]
    return [
        render.sample_header(view),
        view["prompt"],
        views.sample_heatmap(sid),
        view["meta"],
        views.same_problem_table(sid),
    ]


def side_by_side(a: Any, b: Any) -> tuple[str, str]:
    """Two samples' heatmaps (e.g. one problem at two checkpoints)."""

    def one(value: Any, slot: str) -> str:
        sid = _id(value)
        if sid is None:
            return "<p>pick a sample id</p>"
        view = views.sample_view(sid)
        if view is None:
            return f"<p>sample {sid} does not exist</p>"
        return (
            f"<p><b>sample {sid}</b> · run {view['run']['id']} ({view['run']['kind']}) · step "
            f"{view['step']} · {view['verdict']}</p>" + views.sample_heatmap(sid, f"side-{slot}")
        )

    return one(a, "a"), one(b, "b")


def adhoc_score(prm: str | None, problem_set: str | None, task_id: str, code: str) -> str:
    """Score pasted code with a PRM checkpoint (loads the PRM: seconds on a CPU)."""
    if not (prm and problem_set and task_id and code):
        return "<p>Pick a PRM checkpoint and a problem set, give a task id and paste code.</p>"
    try:
        return views.adhoc_heatmap(prm, problem_set, task_id, code)
    except (LookupError, OSError, ValueError) as error:
        raise gr.Error(str(error)) from None


def _adhoc(tab: gr.Tab) -> None:
    with gr.Accordion("Ad-hoc: score pasted code with a PRM", open=False):
        with gr.Row():
            prm = gr.Dropdown(
                [], label="PRM checkpoint", allow_custom_value=True, elem_id="adhoc-prm"
            )
            problem_set = gr.Dropdown(
                [], label="problem set", allow_custom_value=True, elem_id="adhoc-set"
            )
            task_id = gr.Textbox(label="task id", elem_id="adhoc-task")
        code = gr.Code(
            language="python",
            label="completion (or the whole program)",
            interactive=True,
            elem_id="adhoc-code",
        )
        button = gr.Button("Score", elem_id="adhoc-score")
        heatmap = gr.HTML(elem_id="adhoc-heatmap")
    tab.select(
        lambda: (
            gr.Dropdown(choices=views.picker_choices("prm-checkpoints")),
            gr.Dropdown(choices=views.picker_choices("problem-sets")),
        ),
        outputs=[prm, problem_set],
        **PRIVATE,
    )
    button.click(adhoc_score, inputs=[prm, problem_set, task_id, code], outputs=heatmap, **PRIVATE)


def inspect_tab(tab: gr.Tab) -> InspectTab:
    with gr.Row():
        # text boxes, not numbers: an empty filter means "any", and Gradio shows 0 for None
        run_filter = gr.Textbox(label="run", placeholder="any", elem_id="samples-run")
        step = gr.Textbox(label="step", placeholder="any", elem_id="samples-step")
        task = gr.Textbox(label="task id", placeholder="any", elem_id="samples-task")
        outcome = gr.Dropdown(["", "passed", "failed"], value="", label="passed / failed")
        difficulty = gr.Textbox(label="difficulty", placeholder="any", elem_id="samples-difficulty")
        page = gr.Number(value=1, precision=0, minimum=1, label="page")
        search = gr.Button("Search", elem_id="samples-search")
    summary = gr.Markdown(elem_id="samples-summary")
    table = gr.Dataframe(
        headers=views.SAMPLE_COLUMNS,
        interactive=False,
        elem_id="samples-table",
        label="samples (click a row to inspect it)",
    )
    with gr.Row():
        sample_id = gr.Number(label="sample id", precision=0, elem_id="sample-id")
        open_sample = gr.Button("Open sample", elem_id="open-sample")
    header = gr.Markdown(elem_id="sample-header")
    prompt = gr.Code(language="python", label="problem prompt", elem_id="sample-prompt")
    heatmap = gr.HTML(elem_id="sample-heatmap")
    meta = gr.JSON(label="sample metadata")
    same = gr.Dataframe(
        headers=views.SAME_PROBLEM_COLUMNS,
        interactive=False,
        elem_id="same-problem",
        label="same problem in other runs (click: show side by side)",
    )
    with gr.Accordion("Side by side", open=False) as side:
        with gr.Row():
            side_a = gr.Number(label="sample A", precision=0, elem_id="side-a-id")
            side_b = gr.Number(label="sample B", precision=0, elem_id="side-b-id")
            show = gr.Button("Show side by side", elem_id="show-side-by-side")
        with gr.Row():
            html_a = gr.HTML(elem_id="side-a")
            html_b = gr.HTML(elem_id="side-b")
    _adhoc(tab)

    filters = [run_filter, step, task, outcome, difficulty, page]
    sample_outputs = [header, prompt, heatmap, meta, same]
    search.click(views.samples_table, inputs=filters, outputs=[table, summary], **PRIVATE)
    tab.select(views.samples_table, inputs=filters, outputs=[table, summary], **PRIVATE)
    page.submit(views.samples_table, inputs=filters, outputs=[table, summary], **PRIVATE)
    open_sample.click(render_sample, inputs=sample_id, outputs=sample_outputs, **PRIVATE)
    sample_id.submit(render_sample, inputs=sample_id, outputs=sample_outputs, **PRIVATE)

    def pick_sample(event: gr.SelectData) -> int:
        return int(event.row_value[0])

    table.select(pick_sample, outputs=sample_id, **PRIVATE).then(
        render_sample, inputs=sample_id, outputs=sample_outputs, **PRIVATE
    )

    def pick_other(event: gr.SelectData, current: Any) -> tuple[Any, int, Any]:
        return current, int(event.row_value[0]), gr.Accordion(open=True)

    same.select(pick_other, inputs=sample_id, outputs=[side_a, side_b, side], **PRIVATE).then(
        side_by_side, inputs=[side_a, side_b], outputs=[html_a, html_b], **PRIVATE
    )
    show.click(side_by_side, inputs=[side_a, side_b], outputs=[html_a, html_b], **PRIVATE)
    return InspectTab(run_filter, views.samples_table, filters, [table, summary])


# ============================================================================ Compare tab


def compare_outputs(group: str | None, run_ids: str | None, metric: str | None) -> list[Any]:
    ids = compare.compare_run_ids(group, run_ids)
    if not ids:
        return [
            gr.skip(),
            gr.skip(),
            "Pick a group or type run ids.",
            gr.skip(),
            gr.skip(),
            gr.skip(),
        ]
    data = compare.load_comparison(ids, metric or "")
    choices = compare.metric_choices(ids)
    return [
        gr.Dropdown(choices=choices, value=data.metric or None),
        compare.curves_figure(data),
        f"{len(ids)} runs: " + ", ".join(map(str, ids)),
        compare.paper_table(data),
        _optional_plot(compare.difficulty_figure(data)),
        _optional_plot(compare.hacking_figure(data)),
    ]


def compare_tab(tab: gr.Tab) -> None:
    with gr.Row():
        group = gr.Dropdown([], label="group", allow_custom_value=True, elem_id="compare-group")
        run_ids = gr.Textbox(label="and/or run ids (e.g. 3, 5, 7)", elem_id="compare-ids")
        metric = gr.Dropdown(
            [], label="pass-rate metric", allow_custom_value=True, elem_id="compare-metric"
        )
        button = gr.Button("Compare", variant="primary", elem_id="compare-button")
    curves = gr.Plot(label="pass rate by variant", elem_id="compare-curves")
    which = gr.Markdown(elem_id="compare-runs")
    table = gr.Dataframe(
        interactive=False,
        elem_id="compare-table",
        label="final pass@1 by variant (mean ± std over seeds, %)",
    )
    with gr.Row():
        difficulty = gr.Plot(label="long horizon", elem_id="compare-difficulty")
        hacking = gr.Plot(label="reward-hacking monitors", elem_id="compare-hacking")
    outputs = [metric, curves, which, table, difficulty, hacking]
    button.click(compare_outputs, inputs=[group, run_ids, metric], outputs=outputs, **PRIVATE)
    tab.select(lambda: gr.Dropdown(choices=views.group_choices()), outputs=group, **PRIVATE)


# ============================================================================ Report tab


def report_outputs(group: str | None) -> list[Any]:
    """The Report tab for one group: markdown, the three charts and the bundle's zip."""
    if not group:
        return ["Pick a group.", gr.skip(), gr.skip(), gr.skip(), None]
    try:
        data = report.load_report(group)
    except report.GroupNotFound as error:
        return [str(error), gr.skip(), gr.skip(), gr.skip(), None]
    return [
        report.to_markdown(data),
        report.pass_rate_figure(data),
        report.difficulty_figure(data),
        report.hacking_figure(data),
        str(report.bundle_zip(data)),
    ]


def report_tab(tab: gr.Tab) -> None:
    with gr.Row():
        group = gr.Dropdown([], label="group", allow_custom_value=True, elem_id="report-group")
        button = gr.Button("Build report", variant="primary", elem_id="report-button")
        download = gr.File(label="report.md + PNG charts + configs.json", elem_id="report-zip")
    curves = gr.Plot(label="pass rate by variant", elem_id="report-curves")
    with gr.Row():
        difficulty = gr.Plot(label="long horizon", elem_id="report-difficulty")
        hacking = gr.Plot(label="reward-hacking monitors", elem_id="report-hacking")
    text = gr.Markdown(elem_id="report-text")
    outputs = [text, curves, difficulty, hacking, download]
    button.click(report_outputs, inputs=group, outputs=outputs, **PRIVATE)
    tab.select(lambda: gr.Dropdown(choices=views.group_choices()), outputs=group, **PRIVATE)


# ============================================================================ Workers tab


def workers_tab(tab: gr.Tab) -> None:
    gr.Markdown(
        "Workers announce themselves and beat every few seconds: **alive** when seen in the "
        "last minute, **stale** otherwise (stopped, or cut off from the database)."
    )
    table = gr.Dataframe(
        headers=views.WORKER_COLUMNS, interactive=False, elem_id="workers-table", label="workers"
    )
    tab.select(views.workers_table, outputs=table, **PRIVATE)
    gr.Timer(WORKERS_REFRESH_S).tick(
        views.workers_table, outputs=table, show_progress="hidden", **PRIVATE
    )


# ============================================================================ the app


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="PRM Studio") as demo:
        gr.Markdown("# PRM Studio\nLine-level process reward models for code RL.")
        with gr.Tabs() as tabs:
            with gr.Tab("Runs", id="runs"):
                runs = runs_tab()
            with gr.Tab("Launch", id="launch") as tab:
                launch_tab(tab)
            with gr.Tab("Run", id="run"):
                run = run_tab()
            with gr.Tab("Inspect", id="inspect") as tab:
                inspect = inspect_tab(tab)
            with gr.Tab("Compare", id="compare") as tab:
                compare_tab(tab)
            with gr.Tab("Report", id="report") as tab:
                report_tab(tab)
            with gr.Tab("Workers", id="workers") as tab:
                workers_tab(tab)

        def open_run(event: gr.SelectData) -> tuple[int, Any]:
            return int(event.row_value[0]), gr.Tabs(selected="run")

        runs.table.select(open_run, outputs=[run.run_id, tabs], **PRIVATE).then(
            render_run,
            inputs=[run.run_id, run.smoothing, run.namespace],
            outputs=run.outputs,
            **PRIVATE,
        )
        run.inspect.click(
            lambda rid: (str(int(rid)) if rid else "", gr.Tabs(selected="inspect")),
            inputs=run.run_id,
            outputs=[inspect.run_filter, tabs],
            **PRIVATE,
        ).then(inspect.search, inputs=inspect.filters, outputs=inspect.table_outputs, **PRIVATE)
        gr.api(submit_job, api_name="submit_job")
        gr.api(run_status, api_name="run_status")
        gr.api(run_again, api_name="run_again")
        gr.api(reproduce_paper, api_name="reproduce_paper")
    return demo
