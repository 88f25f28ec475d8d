"""The ``rl`` job: PPO from an SFT policy, optionally with a PRM (dense rewards, ValueInit).

Thin: resolve the policy and PRM checkpoints, load problems, call ``models.ppo.train_ppo`` with
the JobContext as reporter (in ``processes`` processes: ``models.distributed.launch``), and
store what it hands back (samples, checkpoints). A re-run of the same run (after a crash or a
resume) continues from its own last checkpoint, and first deletes what the lost attempt logged
after that step, so metrics stay continuous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from models.ppo_config import PPOConfig
from workers.artifacts import forget_after, latest_artifact, location, required_artifact
from workers.jobs_policy import ProblemSource


class RLJobConfig(PPOConfig):
    policy: str | None = Field(default=None, description="The SFT policy folder to start from.")
    sft_run_id: int | None = Field(
        default=None, description="Or: an sft run whose last checkpoint is the start."
    )
    prm: str | None = Field(
        default=None, description="A PRM folder (needed by dense and value-init variants)."
    )
    prm_run_id: int | None = Field(
        default=None, description="Or: a prm-train run whose best checkpoint is the PRM."
    )
    data: ProblemSource = Field(
        default_factory=ProblemSource, description="Where the problems come from."
    )
    train_split: str = Field(default="train", description="Split the rollouts come from.")
    eval_split: str = Field(default="test", description="Held-out split of the pass-rate curve.")

    @model_validator(mode="after")
    def _sources(self) -> RLJobConfig:
        if (self.policy is None) == (self.sft_run_id is None):
            raise ValueError("give exactly one of policy (a folder) or sft_run_id (an sft run)")
        if self.prm is not None and self.prm_run_id is not None:
            raise ValueError("give at most one of prm (a folder) or prm_run_id")
        if (self.dense or self.value_init) and self.prm is None and self.prm_run_id is None:
            raise ValueError(
                f"variant {self.variant!r} needs a PRM: set prm (a folder) or prm_run_id"
            )
        return self


def run_rl(ctx, cfg: RLJobConfig) -> dict[str, Any]:
    from models.distributed import launch
    from models.ppo import train_ppo
    from workers.jobs_policy import load_source
    from workers.problemsets import sandbox_run_batch
    from workers.samples import store_samples

    policy = cfg.policy or required_artifact(cfg.sft_run_id or 0, "checkpoint", "sft_run_id")
    prm = cfg.prm or (
        required_artifact(cfg.prm_run_id, "prm-checkpoint", "prm_run_id")
        if cfg.prm_run_id
        else None
    )
    name, (train, held_out) = load_source(cfg.data, [cfg.train_split, cfg.eval_split])
    if not train or not held_out:
        raise ValueError(f"data: problem set {name!r} needs problems in both splits")
    resume = latest_artifact(ctx.run_id, "checkpoint")
    # what a lost attempt logged after its last checkpoint (all of it, if it saved none) goes
    forget_after(ctx.run_id, (resume[1] or 0) if resume else -1)
    ppo_cfg = PPOConfig.model_validate(
        cfg.model_dump(
            exclude={
                "policy",
                "sft_run_id",
                "prm",
                "prm_run_id",
                "data",
                "train_split",
                "eval_split",
            }
        )
    )
    # processes > 1: rank 0 runs here with the job's reporter and callbacks, the other ranks
    # in subprocesses that only train (models.distributed.launch)
    result = launch(
        cfg.processes,
        train_ppo,
        {
            "cfg": ppo_cfg,
            "policy_dir": policy,
            "prm_dir": prm,
            "train_problems": train,
            "eval_problems": held_out,
            "run_batch": sandbox_run_batch,
            "out_dir": ctx.artifacts_dir / "ppo",
            "resume_dir": Path(resume[0]) if resume else None,
        },
        reporter=ctx,
        device=cfg.device,
        main_kwargs={
            "on_samples": lambda step, records: store_samples(ctx.run_id, step, name, records),
            "on_checkpoint": lambda step, folder: ctx.add_artifact(
                "checkpoint",
                Path(folder),
                step=step,
                meta={"policy": location(Path(folder) / "policy")},
            ),
        },
    )
    return {"policy": policy, "prm": prm, "problem_set": name, **result.summary()}
