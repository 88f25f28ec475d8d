"""Configs of the policy jobs (SFT, evaluation, sampling, the tiny model): pydantic only, so
the job registry, the CLI and the dashboard form import them without torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["auto", "hf", "vllm"]
BACKEND_HELP = (
    "Generation backend: auto (vLLM when it is installed and the model is on a GPU, else "
    "transformers), hf (transformers) or vllm (pip install 'prm-studio[gpu]'; needs a GPU)."
)


class TinyModelConfig(BaseModel):
    """The from-scratch default: a GPT-2-style model of about two million parameters."""

    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(default=4, ge=1, le=48, description="Transformer blocks.")
    n_embd: int = Field(default=192, ge=16, le=4096, description="Width of the residual stream.")
    n_head: int = Field(default=4, ge=1, le=64, description="Attention heads (must divide n_embd).")
    n_positions: int = Field(
        default=512,
        ge=64,
        le=8192,
        description="Longest sequence (prompt + completion) in tokens the model can see.",
    )
    dropout: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Dropout in embeddings, attention and residuals. 0: the benchmark is "
        "procedurally generated, so there is little to overfit in a short budget.",
    )
    vocab_size: int = Field(
        default=512,
        ge=260,
        le=65536,
        description="Target size of the byte-level BPE trained on the task text (it stops "
        "earlier when the text has no more pairs worth merging).",
    )


class LoraSettings(BaseModel):
    """Low-rank adapters (needs the optional ``peft`` package)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, le=512, description="Rank of each adapter.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator: updates scale alpha/r.")
    dropout: float = Field(default=0.05, ge=0.0, le=0.5, description="Dropout on adapter input.")
    target_modules: str = Field(
        default="all-linear",
        description="Which layers get adapters: 'all-linear' or comma-separated module names "
        "(e.g. 'q_proj,v_proj').",
    )


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(
        default=1.0, ge=0.0, le=5.0, description="Softmax temperature; 0 means greedy decoding."
    )
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: keep the smallest set of tokens whose probability "
        "reaches top_p (1 keeps all).",
    )
    max_new_tokens: int = Field(
        default=256, ge=1, le=8192, description="Most tokens generated per completion."
    )
    seed: int = Field(default=0, description="Seed of the sampling generator (per call).")
    stop_at_dedent: bool = Field(
        default=True,
        description="Stop when a line starts at column 0 (the function body has ended).",
    )


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greedy: bool = Field(default=True, description="Also score one greedy completion per problem.")
    n_samples: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Sampled completions per problem (0: greedy only). pass@k needs n ≥ k.",
    )
    ks: list[int] = Field(
        default=[1],
        description="The k of each reported pass@k (those above n_samples are skipped).",
    )
    temperature: float = Field(
        default=1.0, gt=0.0, le=5.0, description="Sampling temperature of the sampled completions."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        default=256, ge=1, le=8192, description="Most tokens per completion."
    )
    batch_size: int = Field(
        default=64, ge=1, le=4096, description="Completions generated (and then run) per batch."
    )
    seed: int = Field(default=0, description="Seed of the sampled completions.")
    backend: Backend = Field(default="auto", description=BACKEND_HELP)


class SFTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seeds python, numpy and torch: weights, data order.")
    init_from: str | None = Field(
        default=None,
        description="A model folder (or hub id) to fine-tune. Empty: train the tiny model "
        "from scratch, with a tokenizer trained on the training problems.",
    )
    tiny: TinyModelConfig = Field(
        default_factory=TinyModelConfig, description="Shape of the tiny from-scratch model."
    )
    lora: LoraSettings | None = Field(
        default=None, description="Train low-rank adapters instead of all weights (needs peft)."
    )
    resume_from: str | None = Field(
        default=None,
        description="A checkpoint folder of an earlier SFT run: continue from its step with "
        "its optimizer and RNG state (exact resume).",
    )
    steps: int = Field(
        default=600,
        ge=1,
        le=1_000_000,
        description="Optimizer steps (the budget). 600 is calibrated: on the default embedded "
        "benchmark the tiny model reaches 26-44% held-out pass@1 (sampled, T=1; mean 34% "
        "over three seeds) in about 780k training tokens, a few minutes on two CPU cores.",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Examples per step.")
    lr: float = Field(default=2e-3, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    min_lr_ratio: float = Field(
        default=0.1, ge=0.0, le=1.0, description="The cosine decays to lr × this at the end."
    )
    warmup_steps: int = Field(
        default=30, ge=0, description="Linear warm-up from 0 to lr over these steps."
    )
    weight_decay: float = Field(
        default=0.1, ge=0.0, le=1.0, description="AdamW decay on matrices (not biases/norms)."
    )
    grad_clip: float = Field(
        default=1.0, ge=0.0, description="Clip the global gradient norm to this (0: off)."
    )
    max_seq_len: int = Field(
        default=512,
        ge=16,
        le=32768,
        description="Examples longer than this many tokens are cut (the reference's tail).",
    )
    log_every: int = Field(
        default=10, ge=1, description="Log losses/sft (the mean since the last log) every N steps."
    )
    eval_every: int = Field(
        default=100,
        ge=0,
        description="Score held-out pass@1 on eval_subset problems every N steps (0: only at "
        "the end).",
    )
    eval_subset: int = Field(
        default=64, ge=1, description="Held-out problems scored at each periodic evaluation."
    )
    final_eval: bool = Field(
        default=True, description="Score all held-out problems after the last step."
    )
    eval: EvalConfig = Field(
        default_factory=EvalConfig,
        description="How completions are sampled and scored (periodic and final).",
    )
    checkpoint_every: int = Field(
        default=0, ge=0, description="Save a resumable checkpoint every N steps (0: at the end)."
    )
    device: str = Field(default="auto", description="auto (CUDA if present), cpu or cuda[:i].")
