"""The ``sft`` and ``eval`` jobs: load problems (and a policy), call one ``models/`` function with
the JobContext as reporter, store checkpoints, samples and the result.

Problems come from a stored problem set, or — when none is named — from the embedded benchmark
generated from the job's own ``benchmark`` config (stored as a problem set on first use, so every
sample links to its problem). Only pydantic and pure-Python modules are imported at the top: the
registry imports the config classes without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.benchmark import BenchmarkConfig
from models.policy_config import EvalConfig, SFTConfig
from models.problems import Problem


class ProblemSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem_set: str | None = Field(
        default=None,
        description="Name of a stored problem set. Empty: the embedded benchmark of 'benchmark'.",
    )
    benchmark: BenchmarkConfig = Field(
        default_factory=BenchmarkConfig,
        description="The embedded benchmark to generate when no problem set is named.",
    )


class SFTJobConfig(SFTConfig):
    data: ProblemSource = Field(
        default_factory=ProblemSource, description="Where the problems come from."
    )
    train_split: str = Field(default="train", description="Split trained on (needs references).")
    eval_split: str = Field(default="test", description="Held-out split scored for pass@1.")


class EvalJobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(default=None, description="A model folder (or hub id) to evaluate.")
    policy_run_id: int | None = Field(
        default=None, description="Or: an sft or rl run whose last checkpoint is evaluated."
    )
    data: ProblemSource = Field(
        default_factory=ProblemSource, description="Where the problems come from."
    )
    split: str = Field(default="test", description="The split to evaluate.")
    max_problems: int | None = Field(
        default=None, ge=1, description="Evaluate only the first N problems of the split."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Sampling and scoring.")
    device: str = Field(default="auto", description="auto (CUDA if present), cpu or cuda[:i].")

    @model_validator(mode="after")
    def _one_policy(self) -> EvalJobConfig:
        if (self.policy is None) == (self.policy_run_id is None):
            raise ValueError("give exactly one of policy (a folder) or policy_run_id (a run)")
        return self


# ----------------------------------------------------------------------------- database side


def load_source(source: ProblemSource, splits: list[str]) -> tuple[str, list[list[Problem]]]:
    """The problem set's name and the problems of each split (the embedded set is generated
    and stored on first use)."""
    from app.db import session_scope
    from workers.problemsets import ensure_embedded, load_problem_set

    with session_scope() as session:
        name = source.problem_set or ensure_embedded(session, source.benchmark).name
        return name, [load_problem_set(session, name, split) for split in splits]


# ----------------------------------------------------------------------------- jobs


def run_sft(ctx, cfg: SFTJobConfig) -> dict[str, Any]:
    from models.sft import train_sft
    from workers.artifacts import forget_after, latest_artifact
    from workers.problemsets import sandbox_run_batch
    from workers.samples import store_samples

    name, (train, held_out) = load_source(cfg.data, [cfg.train_split, cfg.eval_split])
    sft_cfg = SFTConfig.model_validate(
        cfg.model_dump(exclude={"data", "train_split", "eval_split"})
    )
    # A re-delivered run (worker lost mid-way) continues exactly from its own last checkpoint,
    # after deleting what the lost attempt logged beyond it. LoRA checkpoints are saved merged
    # and cannot resume, so such a run starts over.
    resume = latest_artifact(ctx.run_id, "checkpoint")
    if resume is not None and sft_cfg.lora is None:
        forget_after(ctx.run_id, resume[1] or 0)
        sft_cfg = sft_cfg.model_copy(update={"resume_from": resume[0]})
    else:  # starting from scratch: nothing a lost attempt logged may stay
        forget_after(ctx.run_id, -1)

    def register(folder: Path, step: int) -> None:
        if resume is None or (str(folder), step) != resume:  # resumed at the end: already there
            ctx.add_artifact("checkpoint", folder, step=step, meta={"format": "huggingface"})

    result = train_sft(
        sft_cfg,
        train,
        held_out,
        ctx,
        sandbox_run_batch,
        out_dir=ctx.artifacts_dir / "sft",
        on_checkpoint=register,
    )
    if result.eval is not None:
        store_samples(ctx.run_id, result.step, name, result.eval.records)
    return {"problem_set": name, **result.summary()}


def run_eval(ctx, cfg: EvalJobConfig) -> dict[str, Any]:
    from models.evaluation import difficulty_metrics, evaluate, pass_metrics
    from models.policy import load_policy
    from workers.artifacts import required_artifact
    from workers.problemsets import sandbox_run_batch
    from workers.samples import store_samples

    policy = cfg.policy or required_artifact(cfg.policy_run_id or 0, "checkpoint", "policy_run_id")
    name, (problems,) = load_source(cfg.data, [cfg.split])
    if not problems:
        raise ValueError(f"problem set {name!r} has no problems in split {cfg.split!r}")
    problems = problems[: cfg.max_problems]
    model, tokenizer = load_policy(policy, device=cfg.device)
    result = evaluate(model, tokenizer, problems, cfg.eval, sandbox_run_batch, ctx)
    ctx.metrics(0, {**pass_metrics(result), **difficulty_metrics(result)})
    store_samples(ctx.run_id, 0, name, result.records)
    return {"policy": policy, "problem_set": name, "split": cfg.split, **result.summary()}
