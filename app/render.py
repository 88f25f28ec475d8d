"""Markdown and HTML for the dashboard's text panels, from the plain data ``app.views`` and
``app.actions`` return. Pure functions: no database, no Gradio. Run names, errors and paths are
user-controlled, so anything placed in HTML is escaped.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

STATUS_COLOURS = {
    "waiting": "#6b7280",
    "queued": "#6b7280",
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#d97706",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def run_header(summary: dict[str, Any]) -> str:
    """Status badge, progress bar with ETA, timeline with durations, and the error if any."""
    status = summary["status"]
    colour = STATUS_COLOURS.get(status, "#6b7280")
    percent = round(100 * summary["progress"])
    # jobs that estimate their own remaining time say so in the message; ours would repeat it
    own = "ETA" in (summary.get("message") or "")
    eta = f" · ETA {_e(summary['eta'])}" if summary.get("eta") and not own else ""
    timeline = summary["timeline"]
    steps = [
        ("created", timeline["created"]),
        ("started", timeline["started"] or "—"),
        ("finished", timeline["finished"] or "—"),
        ("queued for", timeline["queued_for"] or "—"),
        ("ran for", timeline["ran_for"] or "—"),
    ]
    cells = "".join(
        f'<div><div style="color:#6b7280;font-size:11px">{name}</div>{_e(value)}</div>'
        for name, value in steps
    )
    error = (
        '<pre id="run-error" style="background:#fef2f2;color:#991b1b;padding:8px;'
        f'white-space:pre-wrap;margin-top:8px">{_e(summary["error"])}</pre>'
        if summary.get("error")
        else ""
    )
    group = f" · group <b>{_e(summary['group'])}</b>" if summary.get("group") else ""
    return (
        f'<div id="run-header" data-run="{summary["id"]}" data-status="{_e(status)}">'
        f'<div style="font-size:18px"><b>run {summary["id"]}</b> · {_e(summary["kind"])} · '
        f"{_e(summary['name'])}{group} "
        f'<span class="run-status" style="background:{colour};color:white;border-radius:4px;'
        f'padding:1px 8px;font-size:13px">{_e(status)}</span></div>'
        '<div style="display:flex;align-items:center;gap:10px;margin:8px 0">'
        '<div style="flex:1;max-width:480px;height:14px;background:#e5e7eb;border-radius:7px">'
        f'<div id="run-progress" data-progress="{summary["progress"]}" style="width:{percent}%;'
        f'height:14px;background:{colour};border-radius:7px"></div></div>'
        f"<span>{percent}% {_e(summary.get('message'))}{eta}</span></div>"
        f'<div style="display:flex;gap:24px;font-size:13px">{cells}</div>{error}</div>'
    )


def _run_ref(item: dict[str, Any]) -> str:
    if "kind" not in item:
        return f"run {item['id']} (missing)"
    return f"run {item['id']} · {item['kind']} · {item['name']} · {item['status']}"


def lineage_markdown(data: dict[str, Any]) -> str:
    """Inputs (what this run consumed), outputs (artifacts), consumers (who used them)."""
    parts = ["**Inputs**"]
    parts += [f"- `{i['field']}` ← {_run_ref(i)}" for i in data["inputs"]] or ["- none"]
    parts.append("\n**Artifacts written**")
    parts += [
        f"- {a['kind']}"
        + (f" (step {a['step']})" if a["step"] is not None else "")
        + f": `{a['path']}`"
        for a in data["artifacts"]
    ] or ["- none"]
    parts.append("\n**Used by**")
    parts += [f"- {_run_ref(c)} via `{c['field']}`" for c in data["consumers"]] or ["- none"]
    return "\n".join(parts)


def paper_markdown(started: dict[str, Any]) -> str:
    """What "Reproduce the paper" submitted (or reused), stage by stage, or why it did not."""
    if started["errors"]:
        return "**Not started — fix these fields:**\n" + "\n".join(
            f"- `{e}`" for e in started["errors"]
        )
    lines = [
        f"Group **{started['group']}** (compare it in the Compare tab when the runs finish):",
        "",
        "| stage | run | |",
        "|---|---|---|",
    ]
    lines += [
        f"| {s['stage']} | {s['run_id']} | {'reused' if s['reused'] else 'submitted'} |"
        for s in started["stages"]
    ]
    return "\n".join(lines)


def dataset_errors(result: dict[str, Any]) -> tuple[str, pd.DataFrame]:
    """A summary line and the table of errors by line for a validation or import."""
    errors = pd.DataFrame(result["errors"], columns=["line", "field", "message"])
    if result.get("problem_set"):
        stored = result["problem_set"]
        return f"Imported **{stored['name']}** ({stored['problems']} problems).", errors
    if result["ok"]:
        return f"Valid: {result['problems']} problems, no errors.", errors
    return f"**{len(result['errors'])} errors** — nothing was imported.", errors


def sample_header(view: dict[str, Any]) -> str:
    """The inspected sample in one paragraph: run, problem, verdict and failing test."""
    run = view["run"]
    where = f"sample **{view['id']}** · run {run['id']} ({run['kind']}) · step {view['step']}"
    problem = f" · task `{view['task_id']}`" if view["task_id"] else ""
    difficulty = f" · difficulty {view['difficulty']}" if view["difficulty"] is not None else ""
    verdict = f"**{view['verdict']}** ({view['tests']} tests)"
    error = ""
    if view["program_error_line"] is not None:
        place = (
            f"completion line {view['error_line']}"
            if view["error_line"]
            else f"program line {view['program_error_line']} (outside the completion)"
        )
        error = f"\n\nError at {place}: `{view['detail']}`"
    elif view["detail"]:
        error = f"\n\n`{view['detail']}`"
    return f"{where}{problem}{difficulty} · {verdict}{error}"
