"""Every job kind, registered in this one place: its config model, entry point and queue.

The config model is the single source of a job's parameters: its defaults and field
descriptions render the dashboard form, and the same model validates CLI and API input.
Entry points are named as ``module:function`` so that listing kinds (CLI, UI) does not import
torch; only the worker that runs a job imports its code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from workers.healthcheck import HealthcheckConfig
from workers.jobs_policy import EvalJobConfig, SFTJobConfig
from workers.jobs_prm import PRMJobConfig
from workers.jobs_prm_data import PrmDataJobConfig
from workers.jobs_rl import RLJobConfig


@dataclass(frozen=True)
class JobKind:
    name: str
    title: str
    description: str
    config: type[BaseModel]
    entry: str
    queue: str = "cpu"

    def load(self) -> Callable[..., dict[str, Any] | None]:
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(module), function)


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(
            name="healthcheck",
            title="Healthcheck",
            description="Checks that a worker picks up jobs, reports progress and metrics, "
            "and records its host, CPUs, torch version and GPUs.",
            config=HealthcheckConfig,
            entry="workers.healthcheck:run_healthcheck",
        ),
        JobKind(
            name="sft",
            title="Supervised fine-tuning",
            description="Trains a policy on reference solutions (by default the tiny model from "
            "scratch on the embedded benchmark), logging the loss and held-out pass@1, and "
            "saves a Hugging Face checkpoint.",
            config=SFTJobConfig,
            entry="workers.jobs_policy:run_sft",
            queue="gpu",
        ),
        JobKind(
            name="eval",
            title="Evaluate a policy",
            description="Samples completions of held-out problems, runs them in the sandbox, "
            "stores every sample, and reports pass@1 (greedy and sampled) by difficulty.",
            config=EvalJobConfig,
            entry="workers.jobs_policy:run_eval",
            queue="gpu",
        ),
        JobKind(
            name="rl",
            title="PPO (RL)",
            description="PPO from an SFT policy with unit-test rewards; variants add the PRM's "
            "line scores as dense rewards and/or start the critic from the PRM (ValueInit). "
            "Logs the held-out pass-rate curve, checkpoints and samples; resumes after a crash.",
            config=RLJobConfig,
            entry="workers.jobs_rl:run_rl",
            queue="gpu",
        ),
        JobKind(
            name="prm-data",
            title="PRM data (binary search)",
            description="Samples responses from policy checkpoints and labels every line by "
            "binary search over line prefixes (paper Alg. 1): +1 up to the longest prefix the "
            "policy can still complete into a passing program, -1 after, 0 for comments. "
            "Stores each labelled response, reports the sampling cost, exports JSONL.",
            config=PrmDataJobConfig,
            entry="workers.jobs_prm_data:run_prm_data",
            queue="gpu",
        ),
        JobKind(
            name="prm-train",
            title="PRM training",
            description="Trains a line-level PRM (the policy's transformer + a scalar head) on "
            "a prm-data run's labels: regression at each line's last token, split by problem, "
            "early stopping. Reports held-out accuracy, AUC, first-error localisation and "
            "calibration, and best-of-K reranking of sampled responses against a random pick.",
            config=PRMJobConfig,
            entry="workers.jobs_prm:run_prm_train",
            queue="gpu",
        ),
    )
}


class UnknownJobKind(ValueError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(JOB_KINDS))
        super().__init__(f"unknown job kind {name!r}; known kinds: {known}")


class ConfigError(ValueError):
    """A config that does not validate; one line per field, each naming the field."""

    def __init__(self, kind: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"invalid {kind} config: " + "; ".join(errors))


def get_kind(name: str) -> JobKind:
    try:
        return JOB_KINDS[name]
    except KeyError:
        raise UnknownJobKind(name) from None


def format_validation_error(error: ValidationError) -> list[str]:
    """pydantic's errors as ``field: message`` lines a user can act on."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(config)"
        lines.append(f"{field}: {item['msg']}")
    return lines


def walk_fields(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, field name, value) of every leaf field, nested config models included;
    list items get ``[i]`` paths."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from walk_fields(value, f"{dotted}.")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield f"{dotted}[{index}]", name, item
        else:
            yield dotted, name, value


def validate_config(kind: JobKind, raw: dict[str, Any]) -> BaseModel:
    if not isinstance(raw, dict):
        raise ConfigError(
            kind.name, [f"(config): expected a JSON object, got {type(raw).__name__}"]
        )
    try:
        return kind.config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(kind.name, format_validation_error(error)) from None
