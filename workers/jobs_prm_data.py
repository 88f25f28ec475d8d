"""The ``prm-data`` job: PRM training data by binary search over line prefixes (paper Alg. 1).

Thin: resolve the source checkpoints, load the problems, call ``models.labeling.collect`` with
the JobContext as reporter, and store every labelled response the moment it is done — one
``samples`` row (meta: m*, labels, costs, probes, source checkpoint, response index) and one
``line_scores`` row per line (label, and on the embedded benchmark the ground truth), in its own
transaction. That is the resume point: a re-run of the same run skips what is stored, and the
sampling seeds make the resumed dataset identical (``models.labeling`` explains how). Then, on the
embedded benchmark, the references and their one-line mistakes (``synthetic_mistakes``) of the
first ``synthetic_problems`` problems are stored the same way (step: one past the last
checkpoint). At the end the data selection is applied to the sampled responses, the dataset
exported as JSONL (artifact ``prm-dataset``, plus TRL's stepwise format as
``prm-dataset-trl``) and the cost, balance and audit metrics logged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from models.labeling import (
    LabeledResponse,
    LabelingConfig,
    Selection,
    audit_metrics,
    collect,
    cost_metrics,
    dataset_record,
    label_balance,
    policy_sampler,
    sampled_responses,
    select_responses,
    synthetic_mistakes,
    trl_record,
    write_jsonl,
)
from workers.jobs_policy import ProblemSource

# Sample columns; everything else of a LabeledResponse goes to Sample.meta
COLUMNS = ("verdict", "passed", "tests_passed", "tests_total", "error_line", "detail")
DATASET_FILE = "prm_dataset.jsonl"
TRL_FILE = "prm_dataset.trl.jsonl"


class PrmDataJobConfig(LabelingConfig):
    checkpoints: list[str] = Field(
        default_factory=list,
        description="Policy folders to sample from (Hugging Face format), in order.",
    )
    sft_run_ids: list[int] = Field(
        default_factory=list, description="Or: sft runs, each contributing its last checkpoint."
    )
    rl_run_id: int | None = Field(
        default=None,
        description="Or (the paper's choice): an RL-baseline run; rl_checkpoints evenly spaced "
        "checkpoints of it are used (those with a policy/ folder).",
    )
    rl_checkpoints: int = Field(
        default=4,
        ge=1,
        le=64,
        description="How many RL checkpoints (paper: 4): the N saved are cut into this many "
        "equal spans and the last checkpoint of each is taken, so the final one is always in.",
    )
    data: ProblemSource = Field(
        default_factory=ProblemSource, description="Where the problems come from."
    )
    split: str = Field(default="train", description="The split labelled (the PRM trains on it).")
    max_problems: int | None = Field(
        default=500,
        ge=1,
        description="Label only the first N problems of the split (empty: all). The paper "
        "labels its whole training set; 500 keeps the embedded benchmark laptop-sized.",
    )
    synthetic_problems: int | None = Field(
        default=None,
        ge=1,
        description="The first N problems of the split that get their reference and "
        "synthetic_mistakes one-line mistakes (empty: the same ones as max_problems). They need "
        "no sampling, so they can cover far more problems than are sampled: the README's 2M "
        "PRMs that passed issue #7's reranking goal learnt from 4,744 train problems' mistakes "
        "and no sampled response.",
    )
    selection: Selection = Field(
        default="revised-only",
        description="Which labelled responses are exported (paper Table 2). full: all. "
        "remove-hard: drop problems that no sampled response (any checkpoint) solved. "
        "medium-only: keep problems whose pass rate over all their sampled responses lies "
        "strictly between medium_min_pass_rate and medium_max_pass_rate. revised-only (the "
        "paper's best, 29.8 vs 26.9 for full on LiveCodeBench): passing responses plus the "
        "failing ones whose search found a rescuable prefix (m* ≥ 1).",
    )
    medium_min_pass_rate: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="medium-only: pass rate must exceed this."
    )
    medium_max_pass_rate: float = Field(
        default=1.0, gt=0.0, le=1.0, description="medium-only: pass rate must stay below this."
    )
    device: str = Field(default="auto", description="auto (CUDA if present), cpu or cuda[:i].")

    @model_validator(mode="after")
    def _one_source(self) -> PrmDataJobConfig:
        given = [bool(self.checkpoints), bool(self.sft_run_ids), self.rl_run_id is not None]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one source: checkpoints (folders), sft_run_ids or rl_run_id"
            )
        if self.medium_min_pass_rate >= self.medium_max_pass_rate:
            raise ValueError("medium_min_pass_rate must be below medium_max_pass_rate")
        return self

    def labeling(self) -> LabelingConfig:
        return LabelingConfig.model_validate(
            self.model_dump(include=set(LabelingConfig.model_fields))
        )


# ----------------------------------------------------------------------------- sources


def evenly_spaced(items: list[str], n: int) -> list[str]:
    """The last item of each of ``n`` equal spans of ``items`` (all of them if ``n`` ≥ len)."""
    if len(items) <= n:
        return list(items)
    return [items[math.ceil((i + 1) * len(items) / n) - 1] for i in range(n)]


def rl_checkpoints(run_id: int, n: int) -> list[str]:
    from workers.artifacts import artifact_locations, exists, local_path

    found = artifact_locations(run_id, "checkpoint")
    policies = [f"{path}/policy" for path, _ in found if exists(f"{path}/policy")]
    if not policies:
        raise ValueError(f"rl_run_id: run {run_id} has no checkpoint with a policy/ folder")
    return [local_path(policy) for policy in evenly_spaced(policies, n)]


def resolve_checkpoints(cfg: PrmDataJobConfig) -> list[str]:
    from workers.artifacts import required_artifact

    if cfg.checkpoints:
        folders = list(cfg.checkpoints)
    elif cfg.sft_run_ids:
        folders = [required_artifact(run, "checkpoint", "sft_run_ids") for run in cfg.sft_run_ids]
    else:
        folders = rl_checkpoints(cfg.rl_run_id or 0, cfg.rl_checkpoints)
    if len(set(folders)) != len(folders):
        raise ValueError(f"the source checkpoints repeat a folder: {folders}")
    return folders


# ----------------------------------------------------------------------------- storage


def stored_keys(run_id: int) -> set[tuple[str, str, int]]:
    """(checkpoint, task_id, response_index) of every response the run has stored."""
    return {(r.source_checkpoint, r.task_id, r.response_index) for r in load_labeled(run_id)}


def store_labeled(
    run_id: int, step: int, problem_ids: dict[str, int], record: LabeledResponse
) -> None:
    """One response: its sample row (``step``: the checkpoint's position among the sources) and
    its line rows, committed together."""
    from app.db import session_scope
    from app.orm import LineScore, Sample

    data = record.to_json()
    meta = {k: v for k, v in data.items() if k not in (*COLUMNS, "prompt", "response")}
    with session_scope() as session:
        sample = Sample(
            run_id=run_id,
            step=step,
            problem_id=problem_ids.get(record.task_id),
            code=record.prompt + record.response,
            meta={**meta, "prompt_chars": len(record.prompt)},
            **{name: data[name] for name in COLUMNS},
        )
        session.add(sample)
        session.flush()  # the sample's id, for its lines
        truth = record.ground_truth or [None] * len(record.labels)
        session.add_all(
            LineScore(sample_id=sample.id, line_no=i + 1, text=text, label=label, ground_truth=gt)
            for i, (text, label, gt) in enumerate(
                zip(record.lines, record.labels, truth, strict=True)
            )
        )


def load_labeled(run_id: int) -> list[LabeledResponse]:
    """Every stored response of the run, in a fixed order (checkpoint, task, index)."""
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Sample

    with read_session() as session:
        rows = session.scalars(select(Sample).where(Sample.run_id == run_id)).all()
        records = [
            LabeledResponse.from_json(
                {
                    **row.meta,
                    **{name: getattr(row, name) for name in COLUMNS},
                    "prompt": row.code[: row.meta["prompt_chars"]],
                    "response": row.code[row.meta["prompt_chars"] :],
                }
            )
            for row in rows
        ]
    return sorted(records, key=lambda r: (r.source_checkpoint, r.task_id, r.response_index))


def problem_ids(set_name: str) -> dict[str, int]:
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Problem as ProblemRow
    from app.orm import ProblemSet

    with read_session() as session:
        return dict(
            session.execute(
                select(ProblemRow.task_id, ProblemRow.id)
                .join(ProblemSet, ProblemRow.problem_set_id == ProblemSet.id)
                .where(ProblemSet.name == set_name)
            ).all()
        )


# ----------------------------------------------------------------------------- export


def export_prm_dataset(run_id: int, path: str | Path) -> dict[str, Any]:
    """Write the run's selected responses as DESIGN §3 JSONL at ``path`` (TRL's stepwise
    format beside it, ``.trl.jsonl``); returns counts and the metrics of what was written."""
    from app.crud import get_run
    from app.db import read_session

    with read_session() as session:
        cfg = PrmDataJobConfig.model_validate(get_run(session, run_id=run_id).config)
    records = load_labeled(run_id)
    sampled = sampled_responses(records)
    selected = select_responses(
        records, cfg.selection, (cfg.medium_min_pass_rate, cfg.medium_max_pass_rate)
    )
    path = Path(path)
    trl_path = path.with_name(path.name.removesuffix(".jsonl") + ".trl.jsonl")
    write_jsonl((dataset_record(r) for r in selected), path)
    write_jsonl((trl_record(r) for r in selected), trl_path)
    return {
        "path": str(path),
        "trl_path": str(trl_path),
        "selection": cfg.selection,
        "responses": len(records),
        "selected": len(selected),
        "metrics": {
            **cost_metrics(sampled, cfg.k),
            **label_balance(sampled, "labeling"),
            **label_balance(selected, "labeling/selected"),
            **audit_metrics(sampled),
            "labeling/synthetic_responses": float(len(records) - len(sampled)),
        },
    }


# ----------------------------------------------------------------------------- the job


def run_prm_data(ctx, cfg: PrmDataJobConfig) -> dict[str, Any]:
    from workers.jobs_policy import load_source
    from workers.problemsets import sandbox_run_batch

    checkpoints = resolve_checkpoints(cfg)
    name, (split,) = load_source(cfg.data, [cfg.split])
    problems = split[: cfg.max_problems]
    if not problems:
        raise ValueError(f"problem set {name!r} has no problems in split {cfg.split!r}")
    ids = problem_ids(name)
    done = stored_keys(ctx.run_id)
    timing = collect(
        checkpoints,
        problems,
        cfg.labeling(),
        sandbox_run_batch,
        ctx,
        load_sampler=policy_sampler(cfg.device, cfg.batch_size),
        on_labeled=lambda record: store_labeled(
            ctx.run_id, checkpoints.index(record.source_checkpoint), ids, record
        ),
        done=done,
    )
    synthetic = synthetic_mistakes(
        split[: cfg.synthetic_problems or cfg.max_problems],
        cfg.synthetic_mistakes,
        seed=cfg.seed,
        misplaced_arguments=cfg.misplaced_arguments,
    )
    for index, record in enumerate(synthetic):
        if index % 1000 == 0:
            ctx.progress(1.0, f"storing references and one-line mistakes: {index}/{len(synthetic)}")
        if (record.source_checkpoint, record.task_id, record.response_index) not in done:
            store_labeled(ctx.run_id, len(checkpoints), ids, record)
    export = export_prm_dataset(ctx.run_id, ctx.artifacts_dir / DATASET_FILE)
    times = {
        "labeling/sampling_s": timing.sampling_s,
        "labeling/execution_s": timing.execution_s,
        "labeling/rounds": float(timing.rounds),
    }
    ctx.metrics(0, {**export["metrics"], **times})
    artifact_meta = {"selection": cfg.selection, "responses": export["selected"]}
    ctx.add_artifact("prm-dataset", Path(export["path"]), meta=artifact_meta)
    ctx.add_artifact("prm-dataset-trl", Path(export["trl_path"]), meta=artifact_meta)
    return {
        "problem_set": name,
        "checkpoints": checkpoints,
        "resumed_with": len(done),
        **times,
        **export,
    }
