"""The ``prm-train`` job, and the scoring behind ``prm-studio score``.

The job is thin: resolve the dataset (a prm-data run's ``prm-dataset`` artifact, or a JSONL
file) and the initial policy (a folder, or an sft run's last checkpoint), call
``models.prm.train_prm`` with the JobContext as reporter (in ``processes`` processes:
``models.distributed.launch``), then rerank a pool of sampled responses to held-out problems
with the trained PRM (``models.prm.rerank_eval``). It stores the
best checkpoint (artifact ``prm-checkpoint``; with ``ensemble`` > 1 the folder of the members,
scored by their mean), the ``prm/…`` metrics, and part of the pool as
samples with per-line PRM scores for the dashboard's heatmap. Training checkpoints are
registered as they are written (artifact ``prm-train-state``): a re-run of the same run (after
a crash or a resume) continues from the last one, after deleting what lost attempts logged
beyond it, so every step's metrics are logged exactly once. Only pydantic and pure-Python
modules are imported at the top: the registry imports the config without torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from models.prm_config import PRMTrainConfig, RerankConfig
from workers.artifacts import (
    artifact_locations,
    forget_after,
    latest_artifact,
    local_path,
    required_artifact,
)
from workers.jobs_policy import ProblemSource, load_source

TRAIN_STATE = "prm-train-state"  # the artifact kind of resumable training checkpoints
MEMBER = "prm-member"  # an ensemble's finished member, kept by a run resumed in a later one

if TYPE_CHECKING:  # torch stays out of this module's imports: the registry imports it
    from models.ppo import RolloutRecord
    from models.prm import PooledResponse


class PRMJobConfig(PRMTrainConfig):
    dataset_run_id: int | None = Field(
        default=None, description="A prm-data run whose prm-dataset artifact is trained on."
    )
    dataset_path: str | None = Field(
        default=None, description="Or: a JSONL file of labelled responses (prm-dataset format)."
    )
    policy_run_id: int | None = Field(
        default=None,
        description="Or, instead of init_from: an sft run whose last checkpoint the PRM "
        "starts from.",
    )
    data: ProblemSource = Field(
        default_factory=ProblemSource,
        description="Where the reranking pool's problems come from.",
    )
    rerank: RerankConfig = Field(
        default_factory=RerankConfig, description="Best-of-K reranking on held-out problems."
    )

    @model_validator(mode="after")
    def _sources(self) -> PRMJobConfig:
        if (self.dataset_run_id is None) == (self.dataset_path is None):
            raise ValueError("give exactly one of dataset_run_id (a prm-data run) or dataset_path")
        if (self.init_from is None) == (self.policy_run_id is None):
            raise ValueError(
                "give exactly one of init_from (a folder) or policy_run_id (an sft run)"
            )
        return self


def forget_lost_attempts(run_id: int, resume_step: int | None) -> None:
    """Delete what lost attempts wrote that this one writes again: the metrics after the step
    it resumes from (all of them when it starts over), and the final evaluation — ``prm/…``
    metrics, pool samples, the best checkpoint's artifact — which lands at the best step,
    possibly before that one — and the ensemble members it trains again (those that ended at
    that step or later)."""
    from sqlalchemy import delete

    from app.db import session_scope
    from app.orm import Artifact, Metric, Sample

    forget_after(run_id, -1 if resume_step is None else resume_step)
    with session_scope() as session:
        session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.name.like("prm/%")))
        session.execute(delete(Sample).where(Sample.run_id == run_id))
        session.execute(
            delete(Artifact).where(Artifact.run_id == run_id, Artifact.kind == "prm-checkpoint")
        )
        retrained = Artifact.step >= (resume_step if resume_step is not None else -1)
        session.execute(
            delete(Artifact).where(Artifact.run_id == run_id, Artifact.kind == MEMBER, retrained)
        )


def pool_samples(step: int, pool: list[PooledResponse]) -> list[RolloutRecord]:
    """Reranking-pool responses as stored samples, each line with its PRM score."""
    from models.ppo import eval_record

    samples = []
    for response in pool:
        record = eval_record(step, response.record)
        lines = [
            {**line, "score": score}
            for line, score in zip(record.lines, response.line_scores, strict=True)
        ]
        samples.append(replace(record, lines=lines))
    return samples


def run_prm_train(ctx, cfg: PRMJobConfig) -> dict[str, Any]:
    from models.distributed import launch
    from models.policy import load_policy
    from models.prm import finite, load_prm, read_records, rerank_eval, train_prm
    from models.reporting import AtFraction
    from workers.problemsets import sandbox_run_batch
    from workers.samples import store_samples

    dataset = cfg.dataset_path or required_artifact(
        cfg.dataset_run_id or 0, "prm-dataset", "dataset_run_id"
    )
    policy = cfg.init_from or required_artifact(
        cfg.policy_run_id or 0, "checkpoint", "policy_run_id"
    )
    train_cfg = PRMTrainConfig.model_validate(
        {**cfg.model_dump(include=set(PRMTrainConfig.model_fields)), "init_from": policy}
    )
    # A re-run (worker lost, or the user's resume) continues from its own last checkpoint.
    resume = latest_artifact(ctx.run_id, TRAIN_STATE)
    forget_lost_attempts(ctx.run_id, resume[1] if resume else None)
    for member, _ in artifact_locations(ctx.run_id, MEMBER):  # in place, from another host's
        local_path(member)
    # processes > 1: rank 0 trains here with the job's reporter and checkpoint registration,
    # the other ranks in subprocesses (models.distributed.launch); rank 0's result comes back
    result = launch(
        cfg.processes,
        train_prm,
        {
            "cfg": train_cfg,
            "records": read_records(dataset),
            "out_dir": ctx.artifacts_dir / "prm",
            "resume_dir": Path(resume[0]) if resume else None,
        },
        reporter=ctx,
        device=cfg.device,
        main_kwargs={
            "on_checkpoint": lambda folder, step: ctx.add_artifact(
                TRAIN_STATE, folder, step=step, meta={"format": "huggingface+value-head"}
            ),
            "on_member": lambda folder, step: ctx.add_artifact(
                MEMBER, folder, step=step, meta={"format": "huggingface+value-head"}
            ),
        },
    )
    assert result is not None  # rank 0's
    ctx.add_artifact(
        "prm-checkpoint",
        result.checkpoint,
        step=result.best_step,
        meta={
            "format": "huggingface+value-head" if cfg.ensemble == 1 else "prm-ensemble",
            "loss": cfg.loss,
            "ensemble": cfg.ensemble,
        },
    )
    summary: dict[str, Any] = {"dataset": str(dataset), "policy": policy, **result.summary()}
    if cfg.rerank.n_problems:
        name, (problems,) = load_source(cfg.data, [cfg.rerank.split])
        if not problems:
            raise ValueError(f"problem set {name!r} has no problems in split {cfg.rerank.split!r}")
        prm, prm_tokenizer, loss = load_prm(result.checkpoint, cfg.device)
        model, tokenizer = load_policy(policy, device=cfg.device)
        rerank = rerank_eval(
            prm,
            prm_tokenizer,
            loss,
            model,
            tokenizer,
            problems[: cfg.rerank.n_problems],
            cfg.rerank,
            sandbox_run_batch,
            AtFraction(ctx, 1.0),
            cfg.eval_batch_size,
        )
        ctx.metrics(result.best_step, finite(rerank.metrics))
        stored = pool_samples(result.best_step, rerank.pool[: cfg.rerank.store_samples])
        store_samples(ctx.run_id, result.best_step, name, stored)
        summary["rerank"] = {"problem_set": name, **rerank.summary()}
    return summary


# ----------------------------------------------------------------------------- prm-studio score


def resolve_prm(prm: str) -> str:
    """A prm-train run id (digits) → its checkpoint folder; anything else is a folder."""
    return required_artifact(int(prm), "prm-checkpoint", "--prm") if prm.isdigit() else prm


def format_score_table(rows: list[tuple[int, float, str]]) -> str:
    """The table ``prm-studio score`` prints, and where the PRM places the first error."""
    from models.lines import is_neutral
    from models.prm import first_error

    lines = ["line   score  code"]
    lines += [f"{number:>4}  {score:+.3f}  {text}" for number, score, text in rows]
    first = first_error([s for _, s, _ in rows], [is_neutral(text) for _, _, text in rows])
    lines.append(
        f"first code line scored below 0: {first}" if first else "no code line scored below 0"
    )
    return "\n".join(lines)


def score_command(prm: str, problem_set: str, task_id: str, code_path: str) -> str:
    """``prm-studio score --prm RUN_OR_PATH --problem-set NAME --task-id ID --code FILE``:
    the PRM's score of every line of FILE as a completion of the problem's prompt (a file
    holding the whole program, prompt included, works too)."""
    from app.db import read_session
    from models.prm import score_table
    from workers.problemsets import load_problem_set

    folder = resolve_prm(prm)
    with read_session() as session:
        problem = next(
            (p for p in load_problem_set(session, problem_set) if p.task_id == task_id), None
        )
    if problem is None:
        raise ValueError(f"problem set {problem_set!r} has no problem with task id {task_id!r}")
    code = Path(code_path).read_text(encoding="utf-8").removeprefix(problem.prompt)
    return format_score_table(score_table(folder, problem.prompt, code))
