"""The paper's whole pipeline as one group of ordinary runs:

    sft ─► rl-baseline (checkpoints) ─► prm-data (4 of its checkpoints, binary search,
     │                                   revised-only)
     │                                        └─► prm-train ─┐
     └────────────────────────────────────────────────────────┴─► rl: 4 variants × seeds

Every stage is a normal run (visible, cancellable, resumable) whose config names its inputs
by run id; it waits until those runs succeed (``depends_on``). ``reproduce`` is idempotent:
run it again and every stage whose latest run in the group succeeded or is still under way
(with the same config) is reused; failed or cancelled stages are submitted anew, and so is
everything downstream of them.

The RL baseline with seed 0 serves twice, as in the paper's protocol: its checkpoints feed the
PRM data, and it is the Baseline row of the comparison (every PPO variant starts from the same
SFT policy, so the seed-0 baseline would be trained identically a second time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.ppo_config import VARIANTS

Budget = Literal["micro", "small", "full"]
Preset = Literal["embedded", "mbpp"]


class ReproduceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Preset = Field(
        default="embedded",
        description="embedded: the tiny from-scratch model on the embedded benchmark (a laptop "
        "CPU). mbpp: a local Hugging Face checkpoint (policy) on MBPP train → MBPP test, with "
        "GPU-sized defaults; needs the problem set 'mbpp' imported.",
    )
    budget: Budget = Field(
        default="small",
        description="micro: a wiring check in minutes (tiny sizes). small: the laptop-sized "
        "reproduction (3 seeds: 40 min on 2 CPU cores running two jobs at a time). full: longer "
        "runs, more problems, tighter error bars.",
    )
    seeds: int = Field(default=3, ge=1, le=20, description="Seeds per PPO variant.")
    policy: str | None = Field(
        default=None, description="mbpp preset: the local model folder to start from."
    )
    group: str | None = Field(
        default=None, description="Group name (default: reproduce-<preset>-<budget>)."
    )

    @model_validator(mode="after")
    def _policy_for_mbpp(self) -> ReproduceConfig:
        if self.preset == "mbpp" and not self.policy:
            raise ValueError("policy: the mbpp preset needs a local model folder to start from")
        return self

    @property
    def group_name(self) -> str:
        return self.group or f"reproduce-{self.preset}-{self.budget}"


@dataclass(frozen=True)
class Stage:
    """One run of the pipeline: ``refs`` maps a config field to the stage whose run id it
    takes (that stage is also a dependency)."""

    key: str
    kind: str
    config: dict[str, Any]
    refs: dict[str, str] = field(default_factory=dict)


# Per budget: the embedded benchmark's size and each stage's knobs (ours; the paper publishes
# none of them for its models, and the tiny model needs its own anyway).
EMBEDDED: dict[str, dict[str, Any]] = {
    "micro": {
        "benchmark": {"n_train": 40, "n_test": 16, "min_steps": 2, "max_steps": 3},
        "sft": {
            "steps": 80,
            "batch_size": 16,
            "lr": 3e-3,
            "warmup_steps": 5,
            "eval_every": 0,
            "final_eval": False,
            "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 300},
        },
        "rl": {
            "steps": 4,
            "problems_per_step": 2,
            "samples_per_problem": 2,
            "minibatch_size": 2,
            "max_new_tokens": 48,
            "eval_every": 2,
            "eval_problems": 8,
            "checkpoint_every": 1,
        },
        # a micro policy rescues no prefix, so revised-only would keep nothing: take all
        "prm_data": {
            "n_responses": 2,
            "k": 2,
            "max_problems": 6,
            "max_new_tokens": 48,
            "selection": "full",
        },
        "prm": {"steps": 10, "eval_every": 5, "rerank": {"n_problems": 4}},
    },
    # sized so that the whole group fits 60 minutes on 2 CPU cores with two jobs at a time:
    # one RL run is about 4 minutes, 60 iterations of 64 rollouts (bench/rl.py: about as many
    # as dense+value-init needed to pull ahead of the SFT start at our learning rate), the
    # pass-rate curve at 0/20/40/60 on all 500 held-out problems (greedy + one sample)
    "small": {
        "benchmark": {},
        "sft": {},
        "rl": {
            "steps": 60,
            "problems_per_step": 16,
            "samples_per_problem": 4,
            "minibatch_size": 16,
            "eval_every": 20,
            "eval_problems": 500,
            "checkpoint_every": 15,
        },
        "prm_data": {"n_responses": 4, "k": 8, "max_problems": 200},
        "prm": {"rerank": {"n_problems": 64}},
    },
    "full": {
        "benchmark": {},
        "sft": {},
        "rl": {
            "steps": 150,
            "problems_per_step": 32,
            "samples_per_problem": 4,
            "eval_every": 10,
            "eval_problems": 500,
            "checkpoint_every": 25,
        },
        "prm_data": {"n_responses": 8, "k": 16, "max_problems": 2000},
        "prm": {"rerank": {"n_problems": 200}},
    },
}

# A local 0.5B–7B coder on MBPP: LoRA-free full fine-tuning on a GPU, paper-like settings.
MBPP_RL = {
    "max_new_tokens": 384,
    "policy_lr": 1e-6,
    "critic_lr": 5e-6,
    "problems_per_step": 32,
    "samples_per_problem": 4,
    "minibatch_size": 16,
    "batch_size": 16,
}
MBPP: dict[str, dict[str, Any]] = {
    budget: {
        "data": {"problem_set": "mbpp"},
        "sft": {"steps": steps // 2, "batch_size": 8, "lr": 1e-5, "warmup_steps": 10},
        "rl": {
            **MBPP_RL,
            "steps": steps,
            "eval_every": 10,
            "eval_problems": 500,
            "checkpoint_every": max(steps // 4, 1),
        },
        "prm_data": {"n_responses": 4, "k": 8, "max_problems": 374, "max_new_tokens": 384},
        "prm": {"lr": 5e-6, "rerank": {"n_problems": 100}},
    }
    for budget, steps in (("micro", 4), ("small", 60), ("full", 200))
}


def plan(cfg: ReproduceConfig) -> list[Stage]:
    """The stages, in an order where every stage comes after the ones it refers to."""
    if cfg.preset == "embedded":
        knobs = EMBEDDED[cfg.budget]
        data: dict[str, Any] = {"benchmark": knobs["benchmark"]}
        sft: dict[str, Any] = {"data": data, **knobs["sft"]}
    else:
        knobs = MBPP[cfg.budget]
        data = knobs["data"]
        sft = {"data": data, "init_from": cfg.policy, **knobs["sft"]}
    rl = {"data": data, **knobs["rl"]}
    stages = [
        Stage("sft", "sft", sft),
        Stage(
            "rl-baseline-seed0",
            "rl",
            {**rl, "variant": "baseline", "seed": 0},
            refs={"sft_run_id": "sft"},
        ),
        Stage(
            "prm-data",
            "prm-data",
            {"data": data, "rl_checkpoints": 4, "selection": "revised-only", **knobs["prm_data"]},
            refs={"rl_run_id": "rl-baseline-seed0"},
        ),
        Stage(
            "prm-train",
            "prm-train",
            {"data": data, **knobs["prm"]},
            refs={"dataset_run_id": "prm-data", "policy_run_id": "sft"},
        ),
    ]
    for variant in VARIANTS:
        for seed in range(cfg.seeds):
            if (variant, seed) == ("baseline", 0):
                continue  # the rl-baseline-seed0 stage above
            refs = {"sft_run_id": "sft"}
            if variant != "baseline":
                refs["prm_run_id"] = "prm-train"
            stages.append(
                Stage(
                    f"rl-{variant}-seed{seed}", "rl", {**rl, "variant": variant, "seed": seed}, refs
                )
            )
    if cfg.preset == "mbpp":  # trained on MBPP train, also scored on HumanEval's 164 problems
        stages += [
            Stage(
                f"humaneval-{stage.key.removeprefix('rl-')}",
                "eval",
                {"data": {"problem_set": "humaneval"}, "split": "test"},
                refs={"policy_run_id": stage.key},
            )
            for stage in list(stages)
            if stage.kind == "rl"
        ]
    return stages


@dataclass(frozen=True)
class StageRun:
    key: str
    run_id: int
    reused: bool


def reproduce(cfg: ReproduceConfig) -> list[StageRun]:
    """Submit (or reuse) every stage of ``plan(cfg)`` in the group; returns the stage runs."""
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Run, RunStatus
    from workers.registry import get_kind, validate_config
    from workers.runner import checked_config, submit

    stages = plan(cfg)
    for stage in stages:  # every config validates before any run is stored
        placeholders = {name: 1 for name in stage.refs}
        validate_config(get_kind(stage.kind), {**stage.config, **placeholders})
    with read_session() as session:
        previous = {
            run.name: run
            for run in session.scalars(
                select(Run).where(Run.group_name == cfg.group_name).order_by(Run.id)
            )
        }  # the latest run of each stage wins
    alive = (RunStatus.succeeded, RunStatus.running, RunStatus.queued, RunStatus.waiting)
    ids: dict[str, int] = {}
    out: list[StageRun] = []
    for stage in stages:
        config = {**stage.config, **{name: ids[ref] for name, ref in stage.refs.items()}}
        canonical = checked_config(get_kind(stage.kind), config).model_dump(mode="json")
        old = previous.get(stage.key)
        if old is not None and old.status in alive and old.config == canonical:
            ids[stage.key] = old.id
            out.append(StageRun(stage.key, old.id, reused=True))
            continue
        ids[stage.key] = submit(
            stage.kind,
            config,
            name=stage.key,
            group_name=cfg.group_name,
            depends_on=sorted({ids[ref] for ref in stage.refs.values()}),
        )
        out.append(StageRun(stage.key, ids[stage.key], reused=False))
    return out
