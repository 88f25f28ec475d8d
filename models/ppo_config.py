"""The PPO job's hyper-parameters (pydantic only, so the registry, CLI and dashboard import it
without torch). The algorithm that uses them is ``models/ppo.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.policy_config import BACKEND_HELP, Backend

Variant = Literal["baseline", "dense", "value-init", "dense+value-init"]
VARIANTS: tuple[Variant, ...] = ("baseline", "dense", "value-init", "dense+value-init")


class PPOConfig(BaseModel):
    """PPO hyper-parameters. Where the paper is silent (it publishes no K, β, learning rates or
    model sizes), the defaults are ours, chosen for the tiny model on the embedded benchmark;
    the help text says so."""

    model_config = ConfigDict(extra="forbid")

    variant: Variant = Field(
        default="dense+value-init",
        description="baseline: sparse test reward only; dense: + PRM line rewards; value-init: "
        "critic starts from the PRM; dense+value-init: both (the paper's best).",
    )
    seed: int = Field(default=0, description="Seeds python, numpy, torch and the problem order.")
    steps: int = Field(default=60, ge=1, le=1_000_000, description="PPO iterations.")
    problems_per_step: int = Field(
        default=16, ge=1, le=4096, description="Training problems sampled per iteration."
    )
    samples_per_problem: int = Field(
        default=4, ge=1, le=256, description="Completions per problem per iteration (n)."
    )
    max_new_tokens: int = Field(default=160, ge=1, le=8192, description="Response length cap.")
    temperature: float = Field(default=1.0, gt=0.0, le=5.0, description="Rollout temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Rollout nucleus threshold.")
    policy_lr: float = Field(
        default=5e-5,
        gt=0.0,
        le=1.0,
        description="Policy learning rate (ours; real 1–7B models want about 1e-6).",
    )
    critic_lr: float = Field(
        default=2e-4,
        gt=0.0,
        le=1.0,
        description="Critic learning rate (ours; about 5e-6 for real models).",
    )
    ppo_epochs: int = Field(default=2, ge=1, le=100, description="Passes over each batch.")
    minibatch_size: int = Field(default=16, ge=1, le=4096, description="Responses per update.")
    minibatch_by_length: bool = Field(
        default=True,
        description="Group rollouts of similar length into each minibatch (random order of "
        "minibatches, every rollout once per epoch), so little of the update is padding; off: "
        "a random partition.",
    )
    clip_range: float = Field(
        default=0.2, gt=0.0, le=1.0, description="Policy ratio clip ε (PPO's standard 0.2)."
    )
    value_clip_range: float = Field(
        default=0.2, ge=0.0, le=10.0, description="Value clip around the rollout's values (0: off)."
    )
    gamma: float = Field(default=1.0, ge=0.0, le=1.0, description="Discount (1: episodic).")
    gae_lambda: float = Field(default=0.95, ge=0.0, le=1.0, description="GAE λ.")
    whiten_advantages: bool = Field(
        default=True, description="Normalise advantages to mean 0, std 1 over each batch."
    )
    kl_coef: float = Field(
        default=0.05,
        ge=0.0,
        le=10.0,
        description="β of the per-token KL penalty (initial value when adaptive).",
    )
    kl_target: float | None = Field(
        default=None,
        gt=0.0,
        description="If set, adapt β so the per-response KL tracks this target (Ziegler et "
        "al. 2019's proportional controller); empty: fixed β.",
    )
    kl_horizon: int = Field(
        default=10_000, ge=1, description="Responses over which the adaptive β reacts."
    )
    entropy_coef: float = Field(default=0.0, ge=0.0, le=1.0, description="Entropy bonus weight.")
    max_grad_norm: float = Field(default=1.0, gt=0.0, description="Gradient-norm clip.")
    pass_reward: float = Field(default=1.0, description="Sparse reward of a passing response.")
    fail_reward: float = Field(
        default=-1.0,
        description="Sparse reward of a failing response (−1 matches the PRM's label scale).",
    )
    dense_lambda_fail: float = Field(
        default=0.25, ge=0.0, description="λ of the dense reward for failing responses (paper)."
    )
    dense_lambda_pass: float = Field(
        default=0.025, ge=0.0, description="λ of the dense reward for passing responses (paper)."
    )
    eval_every: int = Field(
        default=10, ge=0, description="Held-out evaluation every N iterations (0: only at the end)."
    )
    eval_problems: int = Field(
        default=500, ge=1, description="Held-out problems per evaluation (≥ 500: ±2 points)."
    )
    eval_samples: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Sampled completions per held-out problem (besides one greedy).",
    )
    checkpoint_every: int = Field(
        default=20, ge=0, description="Save policy + critic + optimizer state every N iterations."
    )
    log_rollout_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Fraction of rollouts stored as samples with their per-line scores.",
    )
    batch_size: int = Field(
        default=64, ge=1, le=4096, description="Sequences per forward pass when scoring."
    )
    device: str = Field(default="auto", description="auto (CUDA if present), cpu or cuda[:i].")
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Training processes (torch.distributed): on GPUs one GPU each (NCCL), on a "
        "CPU-only host gloo. Each samples, runs and learns from its share of every iteration's "
        "problems; problems_per_step and minibatch_size are split evenly among them.",
    )
    backend: Backend = Field(
        default="auto",
        description=BACKEND_HELP + " vLLM gets the policy's weights after every PPO update.",
    )

    @property
    def dense(self) -> bool:
        return self.variant in ("dense", "dense+value-init")

    @property
    def value_init(self) -> bool:
        return self.variant in ("value-init", "dense+value-init")

    @model_validator(mode="after")
    def _batches_fit(self) -> PPOConfig:
        rollouts = self.problems_per_step * self.samples_per_problem
        if self.minibatch_size > rollouts:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) exceeds the rollouts per iteration "
                f"(problems_per_step × samples_per_problem = {rollouts})"
            )
        for name in ("problems_per_step", "minibatch_size"):
            if getattr(self, name) % self.processes:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of processes "
                    f"({self.processes}): every process takes an equal share"
                )
        return self
