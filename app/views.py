"""What each dashboard view shows, as plain data read from the database: dicts, DataFrames,
plotly figures and heatmap HTML. UI callbacks call these and only render; querying lives in
``app.queries`` / ``app.crud``, figure building in ``app.plots``, the heatmap in
``app.heatmap``. Every view reads through ``read_session()`` (never takes SQLite's write
lock) and pages or aggregates in SQL, so each answers in well under a second at volume.

Panels that belong to a job kind (labeling cost for prm-data, PRM evaluation for prm-train)
and the pass@1-by-difficulty bars read metric names and result keys defensively and return None
when their data does not exist, so the UI shows a panel only for runs that have it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from app import crud, plots, queries
from app.db import read_session
from app.heatmap import HeatLine, heatmap_html
from app.orm import Run, RunStatus
from app.settings import get_settings
from models.lines import split_lines

RUN_COLUMNS = ["id", "kind", "name", "group", "status", "progress", "eta", "created", "worker"]
SAMPLE_COLUMNS = [
    "id",
    "run",
    "step",
    "task",
    "difficulty",
    "mode",
    "verdict",
    "tests",
    "lines",
    "min PRM",
]
SAME_PROBLEM_COLUMNS = ["id", "run", "kind", "name", "step", "mode", "verdict"]
PAGE_SIZE = 50
COUNT_CAP = 10_000
PASS_RATE_METRICS = ("eval/pass@1_sampled", "eval/pass@1_greedy", "rollout/pass_rate")
DIFFICULTY = re.compile(r"^eval/pass@1_(greedy|sampled)/difficulty_(\d+)$")
ALIVE_S = 60.0


# ============================================================================ helpers


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    aware = _aware(moment)
    return aware.strftime("%Y-%m-%d %H:%M:%S") if aware else ""


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_text(status: str, progress: float, started_at: datetime | None) -> str:
    """Remaining time extrapolated from progress so far (empty when unknown)."""
    started = _aware(started_at)
    if status != RunStatus.running or started is None or progress <= 0.0:
        return ""
    elapsed = (datetime.now(UTC) - started).total_seconds()
    return duration_text(max(elapsed * (1.0 - progress) / progress, 0.0))


def status_text(status: str, heartbeat_at: datetime | None, lease_s: float) -> str:
    """The status as shown: a running run whose heartbeat is older than the lease is *lost*
    (its worker died) until a live worker requeues it or the user resumes it."""
    beat = _aware(heartbeat_at)
    if status != RunStatus.running or beat is None:
        return status
    silent = (datetime.now(UTC) - beat).total_seconds()
    if silent <= lease_s:
        return status
    return f"lost (no heartbeat for {duration_text(silent)})"


def progress_bar(progress: float, width: int = 10) -> str:
    """A text progress bar that renders in any table cell: ``▰▰▰▱▱▱▱▱▱▱ 30%``."""
    filled = round(min(max(progress, 0.0), 1.0) * width)
    return "▰" * filled + "▱" * (width - filled) + f" {progress:.0%}"


def _int_or_none(value: Any) -> int | None:
    """A filter's number; empty (or blank text) means no filter."""
    if value is None or str(value).strip() == "":
        return None
    return int(float(value))


def _page_offset(page: Any) -> int:
    return (max(_int_or_none(page) or 1, 1) - 1) * PAGE_SIZE


def _pages(total: int) -> int:
    return max(math.ceil(total / PAGE_SIZE), 1)


# ============================================================================ runs


def runs_table(
    kind: str | None = None,
    status: str | None = None,
    text: str | None = None,
    group: str | None = None,
    page: Any = 1,
) -> tuple[pd.DataFrame, str]:
    """One page of the runs list, newest first, filtered; and a line saying what is shown."""
    lease_s = get_settings().lease_s
    with read_session() as session:
        runs, total = queries.runs_page(
            session,
            kind=kind or None,
            status=status or None,
            group_name=group or None,
            text=text or None,
            limit=PAGE_SIZE,
            offset=_page_offset(page),
        )
        rows = [
            [
                run.id,
                run.kind,
                run.name,
                run.group_name or "",
                status_text(run.status, run.heartbeat_at, lease_s),
                f"{progress_bar(run.progress)} {run.progress_message}".strip(),
                eta_text(run.status, run.progress, run.started_at),
                _when(run.created_at),
                run.worker_host or "",
            ]
            for run in runs
        ]
    page_no = _page_offset(page) // PAGE_SIZE + 1
    return pd.DataFrame(rows, columns=RUN_COLUMNS), (
        f"{total} runs · page {page_no} of {_pages(total)}"
    )


def group_choices() -> list[str]:
    with read_session() as session:
        return queries.group_names(session)


def run_details(run_id: int) -> dict[str, Any]:
    """A run's status, progress, config and result (the ``run_status`` API endpoint)."""
    with read_session() as session:
        return crud.run_summary(crud.get_run(session, run_id=run_id))


def run_summary(run_id: int) -> dict[str, Any]:
    """The run view's header: identity, status, progress with ETA, timeline and durations."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        created, started, finished = (
            _aware(run.created_at),
            _aware(run.started_at),
            _aware(run.finished_at),
        )
        now = datetime.now(UTC)
        waited_until = started or finished or now
        ran_until = finished or now
        return {
            **crud.run_summary(run),
            "status": status_text(run.status, run.heartbeat_at, get_settings().lease_s),
            "eta": eta_text(run.status, run.progress, run.started_at),
            "finished": RunStatus(run.status).finished,
            "timeline": {
                "created": _when(created),
                "started": _when(started),
                "finished": _when(finished),
                "queued_for": duration_text((waited_until - created).total_seconds())
                if created
                else "",
                "ran_for": duration_text((ran_until - started).total_seconds()) if started else "",
            },
        }


def referenced_runs(config: Any, path: str = "") -> list[tuple[str, int]]:
    """(dotted field, run id) for every ``*_run_id`` / ``*_run_ids`` field of a config, at
    any depth: how a run names the runs whose checkpoints or datasets it consumes."""
    found: list[tuple[str, int]] = []
    if not isinstance(config, dict):
        return found
    for key, value in config.items():
        dotted = f"{path}{key}"
        if key.endswith("_run_id") and isinstance(value, int) and not isinstance(value, bool):
            found.append((dotted, value))
        elif key.endswith("_run_ids") and isinstance(value, list):
            found += [(dotted, v) for v in value if isinstance(v, int)]
        elif isinstance(value, dict):
            found += referenced_runs(value, f"{dotted}.")
    return found


def _brief(run: Run) -> dict[str, Any]:
    return {"id": run.id, "kind": run.kind, "name": run.name, "status": run.status}


def lineage(run_id: int) -> dict[str, Any]:
    """Where a run's inputs came from and where its outputs went: runs its config references
    (``sft_run_id``, ``prm_run_id``, …), its parent and dependencies, the artifacts it wrote,
    and the runs that reference it."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        refs = referenced_runs(run.config)
        upstream_ids = {rid for _, rid in refs} | set(run.depends_on or [])
        if run.parent_id:
            upstream_ids.add(run.parent_id)
        known = {r.id: r for r in queries.runs_by_ids(session, run_ids=sorted(upstream_ids))}

        def ref(field: str, rid: int) -> dict[str, Any]:
            return {"field": field, **(_brief(known[rid]) if rid in known else {"id": rid})}

        inputs = [ref(field, rid) for field, rid in refs]
        if run.parent_id:
            inputs.append(ref("parent", run.parent_id))
        named = {rid for _, rid in refs}
        inputs += [ref("depends on", dep) for dep in sorted(set(run.depends_on or []) - named)]
        consumers = []
        for other in queries.runs_mentioning(session, run_id=run_id):
            fields = [field for field, rid in referenced_runs(other.config) if rid == run_id]
            if other.parent_id == run_id:
                fields.append("parent")
            if run_id in (other.depends_on or []) and not fields:
                fields.append("depends on")  # a dependency not named by a config field
            consumers += [{"field": field, **_brief(other)} for field in fields]
        artifacts = [
            {"kind": a.kind, "step": a.step, "path": a.path}
            for a in queries.run_artifacts(session, run_id=run_id)
        ]
    return {"inputs": inputs, "artifacts": artifacts, "consumers": consumers}


# ============================================================================ run metrics


def namespace_of(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else "other"


def metric_namespaces(run_id: int) -> list[str]:
    with read_session() as session:
        names = crud.metric_names(session, run_id=run_id)
    return sorted({namespace_of(name) for name in names})


def run_metrics_figure(
    run_id: int, smoothing: float = 0.0, namespace: str = ""
) -> go.Figure | None:
    """Every metric of the run logged more than once (or those of one namespace) as its own
    zoomable curve, grouped by namespace; curves come downsampled from SQL. Metrics logged
    once are numbers, not curves: ``run_scalars`` lists them."""
    with read_session() as session:
        counts = queries.metric_counts(session, run_id=run_id)
        names = [name for name, n in counts.items() if n > 1]
        if namespace:
            names = [name for name in names if namespace_of(name) == namespace]
        series = {name: crud.metric_series(session, run_id=run_id, name=name) for name in names}
    if counts and not any(n > 1 for n in counts.values()):
        return None  # every metric is a single number: the scalars table shows them all
    if not series:
        return plots.empty_figure(f"no curves in namespace {namespace!r}")
    return plots.metrics_grid(
        series, smoothing=smoothing, title=f"run {run_id} metrics", revision=f"run-{run_id}"
    )


def run_scalars(run_id: int) -> pd.DataFrame | None:
    """The metrics a run logged once (a labeling job's costs, a PRM's AUC, …) as a table;
    None when there are none."""
    with read_session() as session:
        once = [
            n for n, count in queries.metric_counts(session, run_id=run_id).items() if count == 1
        ]
        values = queries.final_values(session, run_ids=[run_id], names=once)
    if not values:
        return None
    rows = [[name, round(value, 4)] for (_, name), value in sorted(values.items())]
    return pd.DataFrame(rows, columns=["metric", "value"])


def _label(run: Run) -> str:
    return f"{run.id} {run.name}".strip()


def pass_rate_figure(run_id: int, smoothing: float = 0.0) -> go.Figure | None:
    """The run's pass-rate curve with its group's sibling runs overlaid (None when the run
    logs no pass rate)."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        names = set(crud.metric_names(session, run_id=run_id))
        metric = next((m for m in PASS_RATE_METRICS if m in names), None)
        if metric is None:
            return None
        runs = [run]
        if run.group_name:
            runs = list(queries.group_runs(session, group_name=run.group_name))
        curves = {
            _label(r): crud.metric_series(session, run_id=r.id, name=metric, max_points=500)
            for r in runs
        }
    curves = {label: points for label, points in curves.items() if points}
    title = f"{metric}" + (f" — group {run.group_name}" if run.group_name else "")
    return plots.curves_figure(
        curves,
        highlight=_label(run) if len(curves) > 1 else None,
        smoothing=smoothing,
        title=title,
        y_title="pass rate",
        revision=f"pass-{run_id}",
    )


def _by_difficulty(values: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"greedy"/"sampled": {difficulty: value}} from ``eval/pass@1_<mode>/difficulty_<d>``."""
    out: dict[str, dict[str, float]] = {}
    for name, value in values.items():
        match = DIFFICULTY.match(name)
        if match:
            out.setdefault(match.group(1), {})[match.group(2)] = value
    return {
        mode: dict(sorted(by.items(), key=lambda item: int(item[0])))
        for mode, by in sorted(out.items())
    }


def difficulty_figure(run_id: int) -> go.Figure | None:
    """Long-horizon bars: pass@1 by difficulty (lines a solution needs) at the first and the
    last evaluation. None when the run logs no per-difficulty pass@1."""
    with read_session() as session:
        names = [n for n in crud.metric_names(session, run_id=run_id) if DIFFICULTY.match(n)]
        if not names:
            return None
        last = {
            n: v
            for (_, n), v in queries.final_values(session, run_ids=[run_id], names=names).items()
        }
        first = queries.first_values(session, run_id=run_id, names=names)
    groups: dict[str, dict[str, float]] = {}
    for mode, values in _by_difficulty(last).items():
        if first != last:
            groups[f"{mode} (first eval)"] = _by_difficulty(first).get(mode, {})
        groups[f"{mode} (last eval)"] = values
    return plots.bars_figure(
        groups, title="pass@1 by difficulty", x_title="difficulty (steps)", y_title="pass@1"
    )


# ============================================================================ kind panels


def labeling_panel(run_id: int) -> dict[str, Any] | None:
    """A prm-data run's labeling cost (completions per failing response against a linear
    scan, by response length) and label audit (search labels against ground truth, line by
    line); None without labelled responses. Its ``labeling/…`` numbers are in
    ``run_scalars``."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        if run.kind != "prm-data":
            return None
        by_length = queries.labeling_cost_by_length(session, run_id=run_id)
        confusion = queries.label_confusion(session, run_id=run_id)
    if not by_length and not confusion:
        return None
    k = int(run.config.get("k", 1) or 1)
    audit = pd.DataFrame(
        [
            [
                f"{label:+d}" if label else "0",
                *[confusion.get((label, truth), 0) for truth in (1, 0, -1)],
            ]
            for label in (1, 0, -1)
        ],
        columns=["search label \\ truth", "+1", "0", "-1"],
    )
    return {"figure": plots.labeling_cost_figure(by_length, k), "audit": audit}


def roc_points(scored: Sequence[tuple[float, bool]]) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) at every threshold of the scores."""
    positives = sum(1 for _, ok in scored if ok)
    negatives = len(scored) - positives
    if not positives or not negatives:
        return []
    points, tp, fp = [(0.0, 0.0)], 0, 0
    ordered = sorted(scored, key=lambda item: -item[0])
    for index, (score, ok) in enumerate(ordered):
        tp, fp = tp + ok, fp + (not ok)
        if index + 1 == len(ordered) or ordered[index + 1][0] != score:
            points.append((fp / negatives, tp / positives))
    return points


def _auc(points: Sequence[tuple[float, float]]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))


def prm_panel(run_id: int) -> dict[str, Any] | None:
    """A prm-train run's evaluation: calibration, ROC and best-of-K reranking (its ``prm/…``
    numbers are in ``run_scalars``). The ROC is the result's own (``result["roc"]``: lines,
    held-out labels) when present, else the response-level one of the stored samples (lowest
    code-line score against passing). None when the run has none of these."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        if run.kind != "prm-train":
            return None
        result = run.result or {}
        scored = [] if result.get("roc") else queries.response_scores(session, run_id=run_id)
    calibration = result.get("calibration") or []
    table = (result.get("rerank") or {}).get("table") or {}
    if result.get("roc"):
        points = [(float(p[0]), float(p[1])) for p in result["roc"]]
        roc_title = "ROC (lines, held-out labels)"
    else:
        points = roc_points(scored)
        roc_title = "ROC (responses: lowest line score vs passing)"
    auc = None
    if points and points[-1] == (1.0, 1.0):
        auc = _auc(points)  # the area under either curve is its AUC
    elif points:  # the labels held one class only (the curve never reaches (1, 1))
        roc_title += ": one class only, no AUC"
    if not (calibration or table or points):
        return None
    rerank_rows = [
        [int(k), *[round(row.get(name, float("nan")), 4) for name in sorted(row)]]
        for k, row in sorted(table.items(), key=lambda item: int(item[0]))
    ]
    rerank_columns = ["K", *sorted(next(iter(table.values()), {}))]
    return {
        "calibration": plots.calibration_figure(calibration),
        "roc": plots.roc_figure(points, auc=auc, title=roc_title),
        "rerank_figure": plots.rerank_figure(table),
        "rerank_table": pd.DataFrame(rerank_rows, columns=rerank_columns),
    }


# ============================================================================ launch pickers


def _run_label(choice: queries.RunChoice) -> str:
    group = f" · {choice.group_name}" if choice.group_name else ""
    return f"{choice.id} · {choice.kind} · {choice.name} · {choice.status}{group}"


RUN_PICKERS: dict[str, dict[str, Any]] = {
    "sft-runs": {"kinds": ["sft"], "with_artifact": "checkpoint"},
    "policy-runs": {"kinds": ["sft", "rl"], "with_artifact": "checkpoint"},
    "rl-runs": {"kinds": ["rl"], "with_artifact": "checkpoint"},
    "prm-runs": {"kinds": ["prm-train"], "with_artifact": "prm-checkpoint"},
    "dataset-runs": {"kinds": ["prm-data"], "with_artifact": "prm-dataset"},
}
ARTIFACT_PICKERS = {
    "policy-checkpoints": "checkpoint",
    "prm-checkpoints": "prm-checkpoint",
    "prm-datasets": "prm-dataset",
}


def picker_choices(picker: str) -> list[tuple[str, Any]]:
    """(label, value) choices of a form picker, newest first: runs that hold the needed
    artifact, checkpoint folders, datasets or problem-set names."""
    with read_session() as session:
        if picker in RUN_PICKERS:
            return [
                (_run_label(c), c.id) for c in queries.run_choices(session, **RUN_PICKERS[picker])
            ]
        if picker in ARTIFACT_PICKERS:
            found = queries.artifacts_of_kind(session, kind=ARTIFACT_PICKERS[picker])
            choices = []
            for a in found:
                # an RL checkpoint folder holds policy/ and critic/: the policy is what loads
                path = (a.meta or {}).get("policy") or a.path
                step = f" step {a.step}" if a.step is not None else ""
                choices.append((f"run {a.run_id}{step} · {path}", path))
            return choices
        if picker == "problem-sets":
            return [(name, name) for name in queries.problem_set_names(session)]
    raise ValueError(f"unknown picker {picker!r}")


def problem_sets_table() -> pd.DataFrame:
    with read_session() as session:
        rows = [
            [
                ps.id,
                ps.name,
                ps.source,
                ps.n_problems,
                ", ".join(f"{k} {v}" for k, v in ((ps.meta or {}).get("splits") or {}).items()),
                _when(ps.created_at),
            ]
            for ps in queries.problem_sets(session)
        ]
    return pd.DataFrame(rows, columns=["id", "name", "source", "problems", "splits", "created"])


# ============================================================================ inspect


def samples_table(
    run_id: Any = None,
    step: Any = None,
    task_id: str | None = None,
    outcome: str | None = None,
    difficulty: Any = None,
    page: Any = 1,
) -> tuple[pd.DataFrame, str]:
    """One page of samples, newest first; ``outcome`` is "passed", "failed" or empty."""
    where = queries.SampleFilter(
        run_id=_int_or_none(run_id),
        step=_int_or_none(step),
        task_id=(task_id or "").strip() or None,
        passed={"passed": True, "failed": False}.get(outcome or ""),
        difficulty=_int_or_none(difficulty),
    )
    with read_session() as session:
        rows, total = queries.samples_page(
            session, where=where, limit=PAGE_SIZE, offset=_page_offset(page), count_cap=COUNT_CAP
        )
        summaries = queries.line_summaries(session, sample_ids=[r["id"] for r in rows])
    table = []
    for row in rows:
        lines = summaries.get(row["id"], {})
        low = lines.get("min_score")
        table.append(
            [
                row["id"],
                row["run_id"],
                row["step"],
                row["task_id"] or "",
                "" if row["difficulty"] is None else row["difficulty"],
                row["mode"] or "",
                row["verdict"],
                f"{row['tests_passed']}/{row['tests_total']}",
                lines.get("lines", ""),
                "" if low is None else round(low, 3),
            ]
        )
    page_no = _page_offset(page) // PAGE_SIZE + 1
    if total > COUNT_CAP:
        return pd.DataFrame(table, columns=SAMPLE_COLUMNS), (
            f"over {COUNT_CAP:,} samples · page {page_no} (narrow the filters to count them)"
        )
    return pd.DataFrame(table, columns=SAMPLE_COLUMNS), (
        f"{total} samples · page {page_no} of {_pages(total)}"
    )


def _prompt_chars(code: str, meta: dict[str, Any], prompt: str | None) -> int:
    """Where the completion starts in the stored program (prm-data records it; otherwise the
    problem's prompt is its prefix)."""
    if isinstance(meta.get("prompt_chars"), int):
        return meta["prompt_chars"]
    if prompt and code.startswith(prompt):
        return len(prompt)
    return 0


def sample_view(sample_id: int) -> dict[str, Any] | None:
    """A sample as the inspector shows it: the problem, the completion's lines with scores and
    labels, and the sandbox's error line translated from the program to the completion."""
    with read_session() as session:
        found = queries.get_sample(session, sample_id=sample_id)
        if found is None:
            return None
        sample, problem = found
        stored = queries.sample_lines(session, sample_id=sample_id)
        run = crud.get_run(session, run_id=sample.run_id)
    meta = dict(sample.meta or {})
    start = _prompt_chars(sample.code, meta, problem.prompt if problem else None)
    prompt, completion = sample.code[:start], sample.code[start:]
    if stored:
        lines = [
            HeatLine(r.line_no, r.text, r.score, r.label, r.ground_truth, r.dense_reward)
            for r in stored
        ]
    else:
        lines = [HeatLine(line.index + 1, line.text) for line in split_lines(completion)]
    error_line = None
    if sample.error_line is not None:
        shifted = sample.error_line - prompt.count("\n")
        error_line = shifted if shifted >= 1 else None
    return {
        "id": sample.id,
        "run": {"id": run.id, "kind": run.kind, "name": run.name},
        "step": sample.step,
        "task_id": problem.task_id if problem else None,
        "difficulty": problem.difficulty if problem else None,
        "prompt": prompt or (problem.prompt if problem else ""),
        "verdict": sample.verdict,
        "passed": sample.passed,
        "tests": f"{sample.tests_passed}/{sample.tests_total}",
        "program_error_line": sample.error_line,
        "error_line": error_line,
        "detail": sample.detail,
        "meta": {k: v for k, v in meta.items() if k not in ("labels", "probes")},
        "lines": lines,
        "problem_id": sample.problem_id,
    }


def sample_heatmap(sample_id: int, element_id: str = "heatmap") -> str:
    view = sample_view(sample_id)
    if view is None:
        return f"<p>sample {int(sample_id)} does not exist</p>"
    return heatmap_html(
        view["lines"],
        error_line=view["error_line"],
        detail=view["detail"],
        element_id=f"{element_id}-{view['id']}",
    )


def same_problem_table(sample_id: int) -> pd.DataFrame:
    """Other samples of the sample's problem (across runs and checkpoints), to pick one for
    the side-by-side view."""
    columns = SAME_PROBLEM_COLUMNS
    with read_session() as session:
        found = queries.get_sample(session, sample_id=sample_id)
        if found is None or found[0].problem_id is None:
            return pd.DataFrame([], columns=columns)
        rows = queries.samples_of_problem(
            session, problem_id=found[0].problem_id, exclude_id=sample_id
        )
    return pd.DataFrame(
        [
            [r["id"], r["run_id"], r["kind"], r["name"], r["step"], r["mode"] or "", r["verdict"]]
            for r in rows
        ],
        columns=columns,
    )


def adhoc_heatmap(prm: str, set_name: str, task_id: str, code: str) -> str:
    """Score pasted code as the completion of a stored problem with a PRM checkpoint folder
    (``models.prm.score_table``: loads the PRM, scores every line)."""
    from models.prm import score_table

    with read_session() as session:
        problem = queries.find_problem(session, set_name=set_name, task_id=task_id.strip())
    if problem is None:
        raise LookupError(f"problem set {set_name!r} has no task {task_id!r}")
    completion = code.removeprefix(problem.prompt)
    rows = score_table(prm, problem.prompt, completion)
    lines = [HeatLine(number, text, score) for number, score, text in rows]
    return heatmap_html(lines, element_id="heatmap-adhoc")


# ============================================================================ workers


WORKER_COLUMNS = [
    "name",
    "host",
    "queues",
    "state",
    "last seen",
    "current run",
    "gpus",
    "cpus",
    "torch",
]


def workers_table() -> pd.DataFrame:
    """The workers table: alive when seen in the last minute, stale otherwise."""
    now = datetime.now(UTC)
    with read_session() as session:
        found = queries.workers(session)
        rows = []
        for worker in found:
            facts = worker.facts or {}
            age = (now - (_aware(worker.last_seen) or now)).total_seconds()
            rows.append(
                [
                    worker.name,
                    worker.host,
                    worker.queues,
                    "alive" if age <= ALIVE_S else "stale",
                    f"{_when(worker.last_seen)} ({duration_text(age)} ago)",
                    worker.current_run_id or "",
                    ", ".join(facts.get("gpus") or []) or "none",
                    facts.get("cpu_count", ""),
                    facts.get("torch", ""),
                ]
            )
    return pd.DataFrame(rows, columns=WORKER_COLUMNS)
