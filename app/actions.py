"""What the dashboard *does* (views only read): submit a job from a form, run a run again,
cancel, start the paper's pipeline, validate and import a problem file. Each returns plain
data; ``app.ui`` turns it into widgets and every one is also a named API endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import crud
from app.db import read_session, session_scope
from app.forms import FormValueError
from models.problems import InvalidProblemFile, ValidationReport
from workers import problemsets, runner
from workers.pipeline import ReproduceConfig, reproduce
from workers.registry import ConfigError, format_validation_error


@dataclass
class LaunchOutcome:
    """A submitted run's id, or the errors (``field: message``) that stopped it."""

    run_id: int | None = None
    errors: list[str] = field(default_factory=list)

    def markdown(self, title: str) -> str:
        if self.run_id is not None:
            return f"Submitted {title} as **run {self.run_id}**."
        return "**Not launched — fix these fields:**\n" + "\n".join(f"- `{e}`" for e in self.errors)


def launch(kind: str, config: dict[str, Any] | FormValueError, name: str = "") -> LaunchOutcome:
    """Validate and submit; invalid input writes nothing and names every bad field."""
    if isinstance(config, FormValueError):
        return LaunchOutcome(errors=config.errors)
    try:
        return LaunchOutcome(run_id=runner.submit(kind, config, name=name.strip()))
    except ConfigError as error:
        return LaunchOutcome(errors=error.errors)


def run_again(run_id: int) -> int:
    """Submit a copy of a run — same kind, config and group — as a new run whose parent is
    the original (the lineage view shows it)."""
    with read_session() as session:
        run = crud.get_run(session, run_id=run_id)
        kind, config, name, group = run.kind, dict(run.config), run.name, run.group_name
    return runner.submit(
        kind, config, name=f"{name} (again)".strip(), group_name=group, parent_id=run_id
    )


def cancel(run_id: int) -> str:
    run = runner.cancel(run_id)
    return f"run {run.id}: {run.status}" + (" (cancel requested)" if run.cancel_requested else "")


# ----------------------------------------------------------------------------- the paper


def reproduce_paper(config: dict[str, Any] | FormValueError) -> dict[str, Any]:
    """Run the paper's whole pipeline as one group (``workers.pipeline``: SFT → RL baseline →
    PRM data → PRM → the four PPO variants × seeds, each stage waiting for its inputs);
    finished or running stages of the same group are reused. Returns the group and its
    stages, or the errors naming the fields."""
    if isinstance(config, FormValueError):
        return {"errors": config.errors}
    try:
        cfg = ReproduceConfig.model_validate(config)
        stages = reproduce(cfg)
    except ValidationError as error:
        return {"errors": format_validation_error(error)}
    except ConfigError as error:
        return {"errors": error.errors}
    return {
        "group": cfg.group_name,
        "stages": [{"stage": s.key, "run_id": s.run_id, "reused": s.reused} for s in stages],
        "errors": [],
    }


# ----------------------------------------------------------------------------- datasets


def _errors(report: ValidationReport) -> list[dict[str, Any]]:
    return [{"line": e.line, "field": e.field or "", "message": e.message} for e in report.errors]


def validate_dataset(path: str | Path) -> dict[str, Any]:
    """Check a problem file fully (structure, then references in the sandbox); the errors
    come one per line with the line number and the field."""
    report = problemsets.validate_file(path)
    return {"ok": report.ok, "problems": len(report.problems), "errors": _errors(report)}


def import_dataset(path: str | Path, name: str) -> dict[str, Any]:
    """Validate and store a problem file as set ``name`` (nothing is stored if any line is
    bad); returns the stored set, or the errors."""
    if not name.strip():
        return {"ok": False, "errors": [{"line": 0, "field": "name", "message": "give a name"}]}
    try:
        with session_scope() as session:
            stored = problemsets.import_file(session, path, name=name.strip())
            summary = {"id": stored.id, "name": stored.name, "problems": stored.n_problems}
    except InvalidProblemFile as error:
        return {"ok": False, "errors": _errors(error.report)}
    except ValueError as error:  # a name taken by other content, an empty file
        return {"ok": False, "errors": [{"line": 0, "field": "name", "message": str(error)}]}
    return {"ok": True, "problem_set": summary, "errors": []}
