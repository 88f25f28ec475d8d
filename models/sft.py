"""Supervised fine-tuning (SFT) on problems with reference solutions: the starting policy of
every RL run, and the policy whose pass@1 the embedded benchmark is calibrated against.

Each example is ``prompt + reference + EOS``; the loss is next-token cross-entropy on the
reference and EOS only (the prompt is context, not something the policy will have to write).
The budget is counted in optimizer steps, never seconds, so a run is reproducible on any machine.
By default the policy is the tiny GPT-2 trained from scratch, with a byte-level BPE trained on
the training problems' text; ``init_from`` fine-tunes any causal LM instead (LoRA optional).

A checkpoint is a Hugging Face folder (model + tokenizer) plus ``train_state.pt`` (optimizer,
step, RNG and data-order state: resume is exact) and ``train_state.json`` (config and step, for
people).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.evaluation import (
    EvalResult,
    RunBatch,
    difficulty_metrics,
    evaluate,
    pass_metrics,
)
from models.policy import (
    autocast_for,
    build_tiny_policy,
    count_parameters,
    load_policy,
    pick_device,
    save_policy,
)
from models.policy_config import SFTConfig
from models.problems import Problem
from models.reporting import AtFraction, Reporter
from models.sampling import make_sampler
from models.tokenizer import train_tokenizer

STATE_PT = "train_state.pt"
STATE_JSON = "train_state.json"


@dataclass
class SFTResult:
    checkpoint: Path
    checkpoints: list[Path]
    step: int
    final_loss: float
    train_seconds: float
    train_tokens: int
    n_parameters: int
    eval: EvalResult | None

    def summary(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "final_loss": self.final_loss,
            "train_seconds": round(self.train_seconds, 2),
            "train_tokens": self.train_tokens,
            "train_tokens_per_s": round(self.train_tokens / max(self.train_seconds, 1e-9), 1),
            "n_parameters": self.n_parameters,
            "eval": self.eval.summary() if self.eval else None,
        }


# ----------------------------------------------------------------------------- data


def tokenize_examples(
    tokenizer, problems: list[Problem], max_len: int
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per problem; labels are -100 on the prompt (no loss there)."""
    examples = []
    for problem in problems:
        if problem.reference is None:
            continue
        prompt = tokenizer(problem.prompt)["input_ids"]  # as the sampler encodes prompts (BOS)
        target = tokenizer(problem.reference, add_special_tokens=False)["input_ids"]
        target = [*target, tokenizer.eos_token_id]
        ids = (prompt + target)[:max_len]
        labels = ([-100] * len(prompt) + target)[:max_len]
        examples.append((ids, labels))
    if not examples:
        raise ValueError("no training problem has a reference solution to learn from")
    return examples


def make_batch(
    examples: list[tuple[list[int], list[int]]], indices: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels), each (B, T) with T the longest."""
    T = max(len(examples[i][0]) for i in indices)
    ids = torch.full((len(indices), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), T), dtype=torch.long)
    labels = torch.full((len(indices), T), -100, dtype=torch.long)
    for row, i in enumerate(indices):
        x, y = examples[i]
        ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
        labels[row, : len(y)] = torch.tensor(y)
    return ids, mask, labels


# ----------------------------------------------------------------------------- optimisation


class Schedule(Protocol):
    """The optimizer fields SFT and PRM training share (``SFTConfig``, ``PRMTrainConfig``)."""

    steps: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float


def lr_at(step: int, cfg: Schedule) -> float:
    """Linear warm-up, then cosine decay to lr × min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg: Schedule) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying biases and norm gains only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(data_rng: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a resumed run needs: python, numpy, torch (+ CUDA), and the data
    order's own generator when the loop has one."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if data_rng is not None:
        state["data"] = data_rng.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], data_rng: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if data_rng is not None:
        data_rng.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    data_rng: torch.Generator,
    cfg: SFTConfig,
    step: int,
    metrics: dict[str, float],
) -> Path:
    save_policy(model, tokenizer, folder)
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(data_rng)},
        folder / STATE_PT,
    )
    (folder / STATE_JSON).write_text(
        json.dumps(
            {"step": step, "config": cfg.model_dump(mode="json"), "metrics": metrics}, indent=2
        )
    )
    return folder


# ----------------------------------------------------------------------------- training


def train_sft(
    cfg: SFTConfig,
    train_problems: list[Problem],
    eval_problems: list[Problem],
    reporter: Reporter,
    run_batch: RunBatch,
    *,
    out_dir: Path,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> SFTResult:
    """Train, checkpoint (calling ``on_checkpoint(folder, step)`` as each is written, so a job
    can register it at once), and evaluate on ``eval_problems``."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    out_dir = Path(out_dir)

    # ---- model, tokenizer, optimizer (fresh, fine-tuned, or resumed) ----
    start_step, resume_state = 0, None
    if cfg.resume_from:
        if cfg.lora is not None:
            raise ValueError(
                "resume_from restores full fine-tuning only: a LoRA checkpoint is saved merged, "
                "so its adapters' optimizer state has nothing to attach to; use init_from"
            )
        model, tokenizer = load_policy(cfg.resume_from, device=cfg.device, dtype="float32")
        resume_state = torch.load(Path(cfg.resume_from) / STATE_PT, weights_only=False)
        start_step = resume_state["step"]
    elif cfg.init_from:
        # fp32 master weights (see pick_dtype); under LoRA the frozen base may stay bf16, since
        # peft keeps the trained adapters in fp32
        dtype = "auto" if cfg.lora else "float32"
        model, tokenizer = load_policy(cfg.init_from, device=cfg.device, dtype=dtype, lora=cfg.lora)
    else:
        texts = [p.prompt + (p.reference or "") for p in train_problems]
        tokenizer = train_tokenizer(texts, cfg.tiny.vocab_size)
        model = build_tiny_policy(tokenizer, cfg.tiny, cfg.seed).to(device)
    n_parameters = count_parameters(model)
    max_len = min(cfg.max_seq_len, model.config.max_position_embeddings)
    examples = tokenize_examples(tokenizer, train_problems, max_len)
    optimizer = make_optimizer(model, cfg)
    data_rng = torch.Generator().manual_seed(cfg.seed)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        restore_rng(resume_state["rng"], data_rng)
    subset_rng = random.Random(cfg.seed)
    eval_subset = subset_rng.sample(eval_problems, min(cfg.eval_subset, len(eval_problems)))
    if resume_state is None:  # logged once per run, not again on resume
        reporter.metrics(0, {"charts/n_parameters": n_parameters, "charts/n_train": len(examples)})

    # one sampler for every evaluation of the model in training (evaluate syncs its weights)
    sampler = make_sampler(
        model, tokenizer, backend=cfg.eval.backend, batch_size=cfg.eval.batch_size
    )

    # ---- the loop ----
    model.train()
    checkpoints: list[Path] = []
    losses: list[float] = []
    last_loss = float("nan")

    def checkpoint(step: int) -> None:
        folder = save_checkpoint(
            out_dir / f"step_{step:06d}",
            model,
            tokenizer,
            optimizer,
            data_rng,
            cfg,
            step,
            {"losses/sft": last_loss},
        )
        checkpoints.append(folder)
        if on_checkpoint is not None:
            on_checkpoint(folder, step)

    tokens = 0
    started = time.perf_counter()
    for step in range(start_step, cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = torch.randint(len(examples), (cfg.batch_size,), generator=data_rng).tolist()
        ids, mask, labels = make_batch(examples, indices, tokenizer.pad_token_id)  # (B, T) each
        with autocast_for(device):
            loss = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            ).loss  # mean cross-entropy over reference + EOS tokens
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step_loss = loss.item()
        losses.append(step_loss)
        tokens += int(mask.sum())
        done = step + 1

        elapsed = time.perf_counter() - started
        per_step = elapsed / (done - start_step)
        if done % cfg.log_every == 0 or done == cfg.steps:
            last_loss = float(np.mean(losses))
            losses.clear()
            reporter.metrics(
                done,
                {
                    "losses/sft": last_loss,
                    "charts/learning_rate": lr,
                    "charts/train_tokens_per_s": tokens / max(elapsed, 1e-9),
                },
            )
        reporter.progress(
            done / cfg.steps,
            f"step {done}/{cfg.steps} loss {step_loss:.3f} "
            f"ETA {per_step * (cfg.steps - done):.0f}s",
        )
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps and eval_subset:
            result = evaluate(
                model,
                tokenizer,
                eval_subset,
                cfg.eval,
                run_batch,
                AtFraction(reporter, done / cfg.steps),
                step=done,
                sampler=sampler,
            )
            reporter.metrics(done, pass_metrics(result))
            model.train()
            started += result.elapsed_s  # ETA and tokens/s count training time only
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            checkpoint(done)
    train_seconds = time.perf_counter() - started

    # ---- final checkpoint and evaluation ----
    final_step = max(cfg.steps, start_step)
    checkpoint(final_step)
    final = None
    if cfg.final_eval and eval_problems:
        final = evaluate(
            model,
            tokenizer,
            eval_problems,
            cfg.eval,
            run_batch,
            AtFraction(reporter, 1.0),
            step=final_step,
            sampler=sampler,
        )
        reporter.metrics(final_step, {**pass_metrics(final), **difficulty_metrics(final)})
    return SFTResult(
        checkpoint=checkpoints[-1],
        checkpoints=checkpoints,
        step=final_step,
        final_loss=last_loss,
        train_seconds=train_seconds,
        train_tokens=tokens,
        n_parameters=n_parameters,
        eval=final,
    )
