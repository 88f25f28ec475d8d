"""Configs of PRM training and evaluation (pydantic only, so the job registry, the CLI and the
dashboard form import them without torch). The algorithm that uses them is ``models/prm.py``.

The paper publishes no PRM hyper-parameters; the defaults are ours, chosen for the tiny model
on the embedded benchmark, and the help text says so where it matters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.policy_config import EvalConfig

Loss = Literal["mse", "bce"]
Aggregate = Literal["min", "last", "mean", "end"]
AGGREGATES: tuple[Aggregate, ...] = ("min", "last", "mean", "end")


class PRMTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seeds python, numpy, torch, the head and the split.")
    ensemble: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Train this many PRMs one after another — seeds seed, seed + 1, …: each its "
        "own head and data order, all one validation split — and score by their mean (ours; "
        "a BCE ensemble's mean logit). "
        "On the embedded benchmark, single PRMs trained on one-line mistakes reranked well in 3 "
        "trainings of 4 and in the fourth missed one-line errors at held-out steps, which "
        "validation cannot see; the mean of two passed on 2 policies of 3 (on the third both "
        "members failed, and the mean, better than either, was at random). Costs N times "
        "the training and scoring. The curves show member i's step s at i × steps + s; PPO's "
        "ValueInit starts the critic from the member with the lowest validation loss.",
    )
    init_from: str | None = Field(
        default=None,
        description="The policy folder whose transformer the PRM starts from (paper: the SFT "
        "model), plus a fresh scalar head. The prm-train job fills it from its policy fields.",
    )
    loss: Loss = Field(
        default="mse",
        description="mse: regress the line-end output onto the label (+1 / −1), as the paper "
        "does; the raw output is the score. bce: targets (label + 1) / 2, output through a "
        "sigmoid, scores mapped back to [−1, 1] as 2·sigmoid − 1 (the checkpoint records "
        "which, so every scorer maps it the same way).",
    )
    outcome_labels: bool = Field(
        default=True,
        description="Also train the score at an end-of-sequence token appended after each "
        "response on the response's own test outcome (+1 passed, −1 failed; records without "
        "'passed' add nothing). Line labels say whether a prefix can still be completed, so a "
        "correct but unfinished program scores high on every line; the end score says whether "
        "the program as written passes, and is best-of-K's 'end' aggregate. PPO's dense "
        "rewards use the line ends only.",
    )
    rank_weight: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="Weight of a within-problem ranking loss on the end score (ours): for "
        "every passing and failing response to the same problem in a batch, log(1 + "
        "exp(−(s_pass − s_fail))) (Bradley–Terry). Pointwise labels let a small PRM score a "
        "response by its problem and length rather than by what it says; the pairs ask it to "
        "tell apart answers to one prompt, which is what best-of-K reranking needs. Batches "
        "then hold whole problems; with processes > 1 the pairs are those within each "
        "process's share (the pointwise loss alone is exactly the 1-process one). Needs "
        "outcome_labels. 0: off, the paper's pointwise loss.",
    )
    lm_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Weight of a language-modelling loss (ours, after GRM, Yang et al. 2024): "
        "next-token cross-entropy on the passing responses' tokens, read from the PRM's "
        "hidden states through the policy's LM head (with tied embeddings trained with the "
        "backbone, else frozen). It keeps what the policy learnt from predicting code — "
        "which number of the prompt a line must copy — that a scalar loss on line ends lets "
        "fine-tuning erase. On the embedded benchmark, on a policy where four PRMs without "
        "it were below random at best-of-16, two PRMs with 1 picked a passing response on "
        "50.8 % and 38.3 % of test problems (random 34.8; their mean 52.3). The "
        "validation loss and early stopping leave it out (curve: losses/prm_lm). 0: off.",
    )
    policy_likelihood: bool = Field(
        default=True,
        description="Add the policy's own likelihood of the response as an input of the "
        "value (ours): a frozen copy of the policy (init_from) scores every response token, "
        "and the value at each token adds a learnt weight times the lowest log-probability "
        "so far. The policy checks each line against its prompt when it predicts the line's "
        "tokens — also for (op, number) pairs it never saw — which the head alone must "
        "relearn from line labels. On the embedded benchmark all six PRMs trained with it, "
        "on three policies, met issue #7's reranking goal: 5.7–8.0 points above a random "
        "pick at best-of-16 (without it 2 PRMs of 15 did), level with the policy's own "
        'likelihood, not above it (README, "The policy\'s likelihood as an input"). Costs '
        "one more forward pass of the policy per scoring call and a copy of it in the "
        "checkpoint; PPO's ValueInit critic reads it too. false: the head alone, as in the "
        "paper.",
    )
    skip_neutral: bool = Field(
        default=True,
        description="Leave blank and comment-only lines (label 0) out of the loss. Their 0 is "
        "a convention of the data (the paper neutralises them so the policy cannot game the "
        "PRM with comments), not a judgement to fit; PPO pays nothing on them either.",
    )
    steps: int = Field(
        default=600,
        ge=1,
        le=1_000_000,
        description="Optimizer-step budget; early stopping usually ends training sooner.",
    )
    batch_size: int = Field(default=16, ge=1, le=4096, description="Responses per step.")
    lr: float = Field(
        default=3e-4,
        gt=0.0,
        le=1.0,
        description="Peak learning rate (AdamW; ours for the tiny model — about 1e-5 for 1–7B).",
    )
    min_lr_ratio: float = Field(
        default=0.1, ge=0.0, le=1.0, description="The cosine decays to lr × this at the end."
    )
    warmup_steps: int = Field(
        default=20, ge=0, description="Linear warm-up from 0 to lr over these steps."
    )
    weight_decay: float = Field(
        default=0.01, ge=0.0, le=1.0, description="AdamW decay on matrices (not biases/norms)."
    )
    grad_clip: float = Field(
        default=1.0, ge=0.0, description="Clip the global gradient norm to this (0: off)."
    )
    val_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        description="Share of *problems* (task ids) held out for validation: every response "
        "to a problem is on one side, so validation never sees a prompt it trained on.",
    )
    eval_every: int = Field(
        default=25, ge=1, description="Compute the validation loss every N steps."
    )
    patience: int = Field(
        default=4,
        ge=1,
        description="Stop after this many validation losses in a row without a new best; the "
        "best checkpoint is the one kept.",
    )
    checkpoint_every: int = Field(
        default=100,
        ge=0,
        description="Save a resumable checkpoint (weights, optimizer, data order, RNG, "
        "early-stopping state) every N steps and when training ends: a crashed or resumed run "
        "continues from the last one (0: never).",
    )
    max_seq_len: int = Field(
        default=1024,
        ge=16,
        le=32768,
        description="Prompt + response tokens seen per record (and at most the model's "
        "context); lines ending beyond it are left out of the loss.",
    )
    log_every: int = Field(
        default=10, ge=1, description="Log losses/prm_train (mean since the last log) every N."
    )
    eval_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Responses per forward pass when scoring."
    )
    calibration_bins: int = Field(
        default=10, ge=2, le=100, description="Equal-width bins of the calibration curve."
    )
    device: str = Field(default="auto", description="auto (CUDA if present), cpu or cuda[:i].")
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Training processes (torch.distributed): on GPUs one GPU each (NCCL), on a "
        "CPU-only host gloo. Each takes a share of every step's batch_size responses; the "
        "steps are exactly those of one process.",
    )

    @model_validator(mode="after")
    def _batch_fits(self) -> PRMTrainConfig:
        if self.rank_weight > 0 and not self.outcome_labels:
            raise ValueError(
                "rank_weight ranks end scores, which only outcome_labels trains: set "
                "outcome_labels to true or rank_weight to 0"
            )
        if self.batch_size < self.processes:
            raise ValueError(
                f"batch_size ({self.batch_size}) is smaller than processes ({self.processes}): "
                "every process needs at least one response per step"
            )
        return self


def default_pool() -> EvalConfig:
    return EvalConfig(greedy=False, n_samples=32, ks=[4, 8, 16, 30], max_new_tokens=256)


class RerankConfig(BaseModel):
    """Best-of-K reranking: sample a pool of N responses per held-out problem, run them, and
    compare the PRM's pick among K with a random pick and the oracle (any of K passes)."""

    model_config = ConfigDict(extra="forbid")

    n_problems: int = Field(
        default=64,
        ge=0,
        description="Held-out problems in the reranking pool (0: skip reranking).",
    )
    split: str = Field(default="test", description="The split the pool's problems come from.")
    pool: EvalConfig = Field(
        default_factory=default_pool,
        description="How the pool is sampled: n_samples is N (≥ the largest K; the paper "
        "reranks K = 30), ks the K of each best-of-K row (those above N are skipped).",
    )
    store_samples: int = Field(
        default=256,
        ge=0,
        description="Pool responses stored as samples with per-line PRM scores (dashboard).",
    )
