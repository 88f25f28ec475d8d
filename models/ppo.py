"""PPO for code generation with unit-test rewards, PRM dense rewards and PRM value initialisation
(Dai et al., 2024, "Process Supervision-Guided Policy Optimization for Code Generation").

One step, top to bottom:

1. **Rollouts.** ``problems_per_step`` training problems, ``samples_per_problem`` completions
   each, sampled from the current policy, with the log-prob of every sampled token.
2. **Execution.** Every completion runs against its problem's unit tests in the sandbox (in the
   background, while the frozen models score the batch: the sandbox has processes of its own).
3. **Rewards per token** of each response ``y`` (tokens ``a_0 … a_{n-1}``, lines ``1 … T``):
   - sparse: ``pass_reward`` or ``fail_reward`` on the last token;
   - dense (variants ``dense``, ``dense+value-init``): ``λ · R_φ(x, y_{≤m}) / T`` on the last
     token of line ``m`` — ``λ = 0.25`` if the response fails its tests, ``0.025`` if it passes;
     the 1/T keeps the policy from inflating the line count; blank and comment-only lines pay
     nothing (the paper saw the policy game the PRM with comments otherwise);
   - KL: ``−β · (log π(a_t) − log π_ref(a_t))`` on every token, against the frozen SFT policy.
4. **Advantages** by GAE over the response tokens, whitened over the batch.
5. **Update.** ``ppo_epochs`` passes over shuffled minibatches (of similar lengths, so that
   little of the arithmetic is padding): clipped policy loss, clipped value loss, entropy bonus,
   gradient clipping; the critic has its own optimizer.

With ``processes`` > 1 (``models.distributed``) every process runs this loop on its share of
each step's problems, and five things keep it the 1-process algorithm: advantages are whitened
with the statistics of all processes; losses are divided by the minibatch's tokens on all
processes; DDP averages the gradients, so every process takes the same optimizer step; metrics
(hence the adaptive β) are averaged over processes; only rank 0 evaluates, logs and saves.

The critic is a ``ValueModel`` (backbone + scalar head): the policy's backbone with a fresh
head (Baseline), or the PRM's weights (**ValueInit**). The default sparse rewards are +1 / −1 so
that returns live on the PRM's label scale (+1: on a path to passing, −1: not): that is what
makes the PRM a sensible initial value function.

Token alignment, for a response starting at position ``P`` of the packed sequence: the policy's
log-prob of ``a_j`` and the critic's ``V(s_j)`` come from position ``P + j − 1`` (the state
before ``a_j``); the PRM's score of a line comes from the position of its last token ``P + j``
(the prefix through that token), exactly where PRM training reads it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.distributed import (
    all_reduce_sum,
    barrier,
    ddp,
    is_main,
    mean_over_ranks,
    rank,
    rank_device,
    shard,
    world,
)
from models.evaluation import (
    RunBatch,
    SampleRecord,
    difficulty_metrics,
    evaluate,
    pass_metrics,
)
from models.lines import segment_ids, split_lines
from models.policy import autocast_for, load_policy, save_policy
from models.policy_config import EvalConfig, SamplingParams
from models.ppo_config import PPOConfig
from models.prm import Scorer, critic_start, load_prm, to_scores
from models.problems import Problem, exec_request, verdict_fields
from models.reporting import AtFraction, Reporter
from models.sampling import Generation, make_sampler
from models.sft import restore_rng, rng_state, seed_everything
from models.value_model import ValueModel

STATE_PT = "ppo_state.pt"


# ============================================================================ reward assembly


def dense_line_rewards(
    scores: Sequence[float], neutral: Sequence[bool], passed: bool, cfg: PPOConfig
) -> list[float]:
    """``λ · R_φ(x, y_{≤m}) / T`` per line; neutral lines pay 0. ``T`` counts every line, so
    adding comment lines dilutes rather than earns reward."""
    lam = cfg.dense_lambda_pass if passed else cfg.dense_lambda_fail
    n_lines = len(scores)
    return [
        0.0 if is_neutral else lam * s / n_lines
        for s, is_neutral in zip(scores, neutral, strict=True)
    ]


def place_rewards(
    n_tokens: int, sparse: float, line_last_tokens: Sequence[int], line_rewards: Sequence[float]
) -> torch.Tensor:
    """Per-token environment reward (n,): each line's reward on its last token (a token that
    ends several lines collects all of theirs) and the sparse reward on the final token."""
    rewards = torch.zeros(n_tokens)
    for token, reward in zip(line_last_tokens, line_rewards, strict=True):
        rewards[token] += reward
    rewards[n_tokens - 1] += sparse
    return rewards


# ============================================================================ GAE and whitening


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens, CleanRL's reversed loop.

    ``rewards``, ``values``, ``mask``: (B, R), responses right-padded (mask 1 on real tokens).
    Past a response's last token the episode is over: V = 0 and nothing is bootstrapped.
    Returns (advantages, returns), both (B, R) and zero on padding.
    """
    B, R = rewards.shape
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(R)):
        next_mask = mask[:, t + 1] if t + 1 < R else torch.zeros(B, dtype=rewards.dtype)
        next_value = values[:, t + 1] * next_mask if t + 1 < R else torch.zeros(B)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # TD error δ_t
        lastgaelam = delta + gamma * lam * next_mask * lastgaelam
        advantages[:, t] = lastgaelam * mask[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the real tokens: advantage scale then does not depend on
    the reward scale, which keeps one learning rate right for every variant. Distributed, the
    statistics are those of every process's tokens together, as one process would see them."""
    count = all_reduce_sum(mask.sum())
    mean = all_reduce_sum((x * mask).sum()) / count
    var = all_reduce_sum((((x - mean) ** 2) * mask).sum()) / count
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


# ============================================================================ packing and scoring


@dataclass
class Packed:
    """Prompts + responses right-padded into one batch."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    state_index: torch.Tensor  # (B, R): position of the state before response token j
    response_ids: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R) float, 1 on real response tokens
    response_start: torch.Tensor  # (B,) position of response token 0: the prompt's length


def pack(generations: Sequence[Generation], pad_id: int) -> Packed:
    sequences = [g.prompt_ids + g.token_ids for g in generations]
    L = max(len(s) for s in sequences)
    R = max(len(g.token_ids) for g in generations)
    B = len(generations)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    state_index = torch.zeros((B, R), dtype=torch.long)
    response_ids = torch.full((B, R), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, R))
    response_start = torch.tensor([len(g.prompt_ids) for g in generations], dtype=torch.long)
    for b, (g, sequence) in enumerate(zip(generations, sequences, strict=True)):
        P, n = len(g.prompt_ids), len(g.token_ids)
        input_ids[b, : len(sequence)] = torch.tensor(sequence)
        attention_mask[b, : len(sequence)] = 1
        # state before token j sits at P + j - 1; padding points at the last real position
        state_index[b] = torch.clamp(torch.arange(R) + P - 1, max=P + n - 1)
        response_ids[b, :n] = torch.tensor(g.token_ids)
        response_mask[b, :n] = 1.0
    return Packed(
        input_ids, attention_mask, state_index, response_ids, response_mask, response_start
    )


def rows(packed: Packed, index: torch.Tensor, device: torch.device) -> Packed:
    """Rows ``index`` of ``packed`` on ``device``, cut to their own longest sequence and longest
    response: the whole batch's padding beyond those is arithmetic on nothing (a minibatch of
    short responses otherwise pays for the batch's longest)."""
    L = int(packed.attention_mask[index].sum(1).max())
    R = int(packed.response_mask[index].sum(1).max())
    return Packed(
        packed.input_ids[index, :L].to(device),
        packed.attention_mask[index, :L].to(device),
        packed.state_index[index, :R].to(device),
        packed.response_ids[index, :R].to(device),
        packed.response_mask[index, :R].to(device),
        packed.response_start[index].to(device),
    )


def policy_logprobs(model, batch: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """Log π(a_j | s_j) and the policy's entropy at s_j, both (B, R)."""
    with autocast_for(batch.input_ids.device):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    V = logits.shape[-1]
    logits = logits.gather(1, batch.state_index[..., None].expand(-1, -1, V)).float()  # (B,R,V)
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.response_ids[..., None]).squeeze(-1)  # (B, R)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, R)
    return logp, entropy


def critic_values(critic: ValueModel, batch: Packed) -> torch.Tensor:
    """V(s_j), (B, R)."""
    with autocast_for(batch.input_ids.device):
        values = critic(batch.input_ids, batch.attention_mask, batch.response_start)
    values = values.float()  # (B, L)
    return values.gather(1, batch.state_index)


def prm_token_scores(prm: Scorer, batch: Packed, loss: str = "mse") -> torch.Tensor:
    """The PRM's score of the prefix through response token j, (B, R): position P + j, on the
    label scale [−1, 1] (a BCE-trained PRM's logits go through ``to_scores``)."""
    with autocast_for(batch.input_ids.device):
        raw = prm(batch.input_ids, batch.attention_mask, batch.response_start).float()  # (B, L)
    scores = to_scores(raw, loss)
    after = (batch.state_index + 1).clamp(max=scores.shape[1] - 1)
    return scores.gather(1, after)


def minibatches(lengths: torch.Tensor, size: int, by_length: bool) -> list[torch.Tensor]:
    """One epoch's minibatches of row indices, every row once: a random partition; or, with
    ``by_length``, rows of similar length together (random among equal lengths), the
    minibatches in random order. Each minibatch then pads to barely more than its own rows:
    with a random partition most rows wait on one long neighbour (on the tiny model about a
    third of the update's arithmetic was padding). Every row still counts once per epoch, so
    the epoch's gradient is unchanged in expectation; only which rows share a step differs."""
    order = torch.randperm(len(lengths))
    if not by_length:
        return list(order.split(size))
    order = order[torch.argsort(lengths[order], stable=True)]
    batches = order.split(size)
    return [batches[i] for i in torch.randperm(len(batches)).tolist()]


@torch.no_grad()
def in_chunks(
    fn: Callable[[Packed], torch.Tensor], packed: Packed, size: int, device
) -> torch.Tensor:
    """``fn``'s (b, r) output over chunks of ``size`` rows, as one (B, R) tensor on the CPU
    (each chunk is cut to its own lengths by ``rows``; zeros fill the rest)."""
    B, R = packed.response_ids.shape
    out = torch.zeros(B, R)
    for first in range(0, B, size):
        chunk = fn(rows(packed, torch.arange(first, min(first + size, B)), device)).cpu()
        out[first : first + chunk.shape[0], : chunk.shape[1]] = chunk
    return out


# ============================================================================ the training loop


@dataclass
class RolloutRecord:
    """A stored sample — a rollout or an evaluation completion: code, verdict and, per line,
    the PRM score and the dense reward paid (None where not applicable)."""

    step: int
    mode: str  # "rollout", or the evaluation's "greedy" / "sampled"
    sample_index: int
    task_id: str
    program: str
    verdict: str
    passed: bool
    tests_passed: int
    tests_total: int
    error_line: int | None
    detail: str
    lines: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PPOResult:
    step: int
    checkpoints: list[Path]
    final_eval: dict[str, float]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "checkpoints": [str(p) for p in self.checkpoints],
            "final_eval": self.final_eval,
            "seconds": round(self.seconds, 1),
        }


def eval_record(step: int, record: SampleRecord) -> RolloutRecord:
    """An evaluation completion as a stored sample (its lines, unscored)."""
    return RolloutRecord(
        step=step,
        mode=record.mode,
        sample_index=record.sample_index,
        task_id=record.task_id,
        program=record.program,
        verdict=record.verdict,
        passed=record.passed,
        tests_passed=record.tests_passed,
        tests_total=record.tests_total,
        error_line=record.error_line,
        detail=record.detail,
        lines=[
            {"line_no": line.index + 1, "text": line.text, "score": None, "dense_reward": None}
            for line in split_lines(record.completion)
        ],
    )


def adapt_kl_coef(kl_coef: float, observed_kl: float, cfg: PPOConfig, n_responses: int) -> float:
    """Ziegler et al.'s proportional controller: β grows when KL overshoots the target."""
    if cfg.kl_target is None:
        return kl_coef
    error = float(np.clip(observed_kl / cfg.kl_target - 1.0, -0.2, 0.2))
    return kl_coef * (1.0 + error * n_responses / cfg.kl_horizon)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[returns − values] / Var[returns]: 1 is a perfect critic, ≤ 0 a useless one."""
    v, r = values[mask.bool()], returns[mask.bool()]
    var_r = r.var(unbiased=False)
    return float("nan") if var_r == 0 else float(1.0 - (r - v).var(unbiased=False) / var_r)


def save_ppo_checkpoint(
    folder: Path, policy, critic, tokenizer, state: dict[str, Any], cfg: PPOConfig
) -> Path:
    save_policy(policy, tokenizer, folder / "policy")
    critic.save(folder / "critic")
    torch.save(state, folder / STATE_PT)
    (folder / "ppo_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return folder


def make_critic(
    cfg: PPOConfig,
    policy_dir: str | Path,
    prm_dir: str | Path | None,
    resume_dir: str | Path | None = None,
) -> ValueModel:
    """The critic: resumed, the PRM's weights (ValueInit), or the policy + a fresh head."""
    fp32 = torch.float32  # trained: fp32 master weights, bf16 autocast on GPUs
    if resume_dir:
        return ValueModel.load(Path(resume_dir) / "critic", dtype=fp32)
    if cfg.value_init:
        assert prm_dir is not None  # PPOConfig users pass one; train_ppo checks it
        # ValueInit: the PRM's weights, nothing more (an ensemble's best member)
        return ValueModel.load(critic_start(prm_dir), dtype=fp32)
    return ValueModel.from_policy(policy_dir, seed=cfg.seed, dtype=fp32)


def train_ppo(
    cfg: PPOConfig,
    *,
    policy_dir: str | Path,
    prm_dir: str | Path | None,
    train_problems: Sequence[Problem],
    eval_problems: Sequence[Problem],
    run_batch: RunBatch,
    reporter: Reporter,
    out_dir: Path,
    on_samples: Callable[[int, list[RolloutRecord]], None] = lambda step, records: None,
    on_checkpoint: Callable[[int, Path], None] = lambda step, folder: None,
    resume_dir: Path | None = None,
) -> PPOResult:
    """Train ``policy_dir`` (the SFT policy) with PPO; see the module docstring.

    ``on_samples`` receives every evaluation completion and the logged fraction of rollouts;
    ``on_checkpoint`` each saved checkpoint folder (``policy/``, ``critic/``, optimizer state),
    as soon as it is written; ``resume_dir`` continues exactly from such a folder."""
    if (cfg.dense or cfg.value_init) and prm_dir is None:
        raise ValueError(
            f"variant {cfg.variant!r} needs a PRM: set prm (a prm-train run or folder)"
        )
    seed_everything(cfg.seed)
    device = rank_device(cfg.device)  # cuda:LOCAL_RANK when distributed on GPUs
    started = time.perf_counter()

    # ---- models: policy (trained), reference (frozen SFT), critic, PRM (frozen) ----
    start_dir = Path(resume_dir) / "policy" if resume_dir else policy_dir
    # The policy trains: fp32 master weights under bf16 autocast on GPUs (see pick_dtype). The
    # reference runs the very same arithmetic, so the KL term is exactly zero at step 0.
    policy, tokenizer = load_policy(start_dir, device=str(device), dtype="float32")
    reference, _ = load_policy(policy_dir, device=str(device), dtype="float32")
    reference.eval().requires_grad_(False)
    prm, prm_loss = None, "mse"
    if prm_dir is not None:
        prm, _, prm_loss = load_prm(prm_dir, device=str(device))
        prm.requires_grad_(False)
        if prm.config.vocab_size != policy.config.vocab_size:
            raise ValueError(
                f"the PRM at {prm_dir} has a vocabulary of {prm.config.vocab_size}, the "
                f"policy {policy.config.vocab_size}: train the PRM from this policy's SFT model"
            )
    critic = make_critic(cfg, policy_dir, prm_dir, resume_dir)
    # Dropout off throughout (eval mode still trains): the ratio π/π_old must compare one
    # deterministic function, and the rollout's log-probs must be the ones being optimised.
    critic.to(device).eval()
    policy.eval()
    # The update runs through DDP wrappers (gradients averaged over processes); sampling,
    # scoring and saving use the models themselves.
    policy_ddp, critic_ddp = ddp(policy), ddp(critic)
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=cfg.policy_lr, eps=1e-5)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, eps=1e-5)
    sampler = make_sampler(policy, tokenizer, backend=cfg.backend, batch_size=cfg.batch_size)
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppo-sandbox")
    problem_rng = random.Random(cfg.seed)
    log_rng = random.Random(cfg.seed + 1)
    kl_coef, start_step = cfg.kl_coef, 0
    if resume_dir:
        state = torch.load(Path(resume_dir) / STATE_PT, weights_only=False)
        policy_opt.load_state_dict(state["policy_opt"])
        critic_opt.load_state_dict(state["critic_opt"])
        problem_rng.setstate(state["problem_rng"])
        log_rng.setstate(state["log_rng"])
        restore_rng(state["rng"])
        kl_coef, start_step = state["kl_coef"], state["step"]
    eval_subset = list(eval_problems[: cfg.eval_problems])
    eval_cfg = EvalConfig(
        greedy=True,
        n_samples=cfg.eval_samples,
        temperature=1.0,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        backend=cfg.backend,
    )
    pad_id = tokenizer.pad_token_id
    checkpoints: list[Path] = []
    final_eval: dict[str, float] = {}

    def run_eval(step: int) -> dict[str, float]:
        """Rank 0 evaluates; the others, whose policy is the same, wait for it."""
        if not is_main():
            barrier()
            return {}
        result = evaluate(
            policy,
            tokenizer,
            eval_subset,
            eval_cfg,
            run_batch,
            AtFraction(reporter, step / cfg.steps),
            step=step,
            sampler=sampler,
        )
        metrics = {**pass_metrics(result), **difficulty_metrics(result)}
        reporter.metrics(step, metrics)
        on_samples(step, [eval_record(step, record) for record in result.records])
        barrier()
        return metrics

    if start_step == 0 and cfg.eval_every:
        run_eval(0)

    for step in range(start_step, cfg.steps):
        timings: dict[str, float] = {}

        # ---- 1. rollouts ------------------------------------------------------------------
        t0 = time.perf_counter()
        problems = [problem_rng.choice(train_problems) for _ in range(cfg.problems_per_step)]
        problems = shard(problems)  # every process draws the same list and keeps its share
        problems = [p for p in problems for _ in range(cfg.samples_per_problem)]
        params = SamplingParams(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=(cfg.seed * 1_000_003 + step) * world() + rank(),  # one stream per process
        )
        generations = sampler.generate([p.prompt for p in problems], params)
        # an empty response has no token to pay its reward on: give it one (EOS)
        empty = [not g.token_ids for g in generations]
        generations = [
            Generation(g.prompt_ids, [tokenizer.eos_token_id], [0.0], "", g.finish_reason)
            if is_empty
            else g
            for g, is_empty in zip(generations, empty, strict=True)
        ]
        timings["generation"] = time.perf_counter() - t0

        # ---- 2. execution in the sandbox, in the background -------------------------------
        # The sandbox runs in processes of its own: its work overlaps the scoring below, and
        # "execution" times only the wait left after it.
        requests = [
            exec_request(p, g.text, f"{step}/{i}")
            for i, (p, g) in enumerate(zip(problems, generations, strict=True))
        ]
        verdicts = background.submit(run_batch, requests)

        # ---- 3. log-probs, values, PRM scores (no grad) -----------------------------------
        t0 = time.perf_counter()
        packed = pack(generations, pad_id)
        mask = packed.response_mask  # (B, R)
        if sampler.exact_logprobs and not any(empty):
            # the sampler ran these very weights in this precision: its log-probs are the
            # rollout's (a forward pass would reproduce them to float rounding)
            old_logp = torch.zeros_like(mask)
            for b, g in enumerate(generations):
                old_logp[b, : len(g.logprobs)] = torch.tensor(g.logprobs)
        else:
            old_logp = in_chunks(
                lambda b: policy_logprobs(policy, b)[0], packed, cfg.batch_size, device
            )
        ref_logp = in_chunks(
            lambda b: policy_logprobs(reference, b)[0], packed, cfg.batch_size, device
        )
        old_values = in_chunks(lambda b: critic_values(critic, b), packed, cfg.batch_size, device)
        segmented = [segment_ids(tokenizer, g.token_ids) for g in generations]
        line_scores: list[list[float]] = [[] for _ in generations]
        if prm is not None:
            token_scores = in_chunks(
                lambda b: prm_token_scores(prm, b, prm_loss), packed, cfg.batch_size, device
            )
            line_scores = [token_scores[b, s.last_tokens].tolist() for b, s in enumerate(segmented)]
        timings["prm_scoring"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = verdicts.result()
        passed = [r.status == "passed" for r in results]
        timings["execution"] = time.perf_counter() - t0

        # ---- 4. rewards per token and advantages ------------------------------------------
        kl = (old_logp - ref_logp) * mask  # (B, R): log π − log π_ref per token
        rewards = -kl_coef * kl
        sparse_total = dense_total = 0.0
        dense_paid: list[list[float]] = []
        for b, (g, s, ok) in enumerate(zip(generations, segmented, passed, strict=True)):
            sparse = cfg.pass_reward if ok else cfg.fail_reward
            per_line = (
                dense_line_rewards(line_scores[b], [line.neutral for line in s.lines], ok, cfg)
                if cfg.dense and s.lines
                else [0.0] * len(s.lines)
            )
            dense_paid.append(per_line)
            n = len(g.token_ids)
            rewards[b, :n] += place_rewards(n, sparse, s.last_tokens, per_line)
            sparse_total += sparse
            dense_total += sum(per_line)
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        # ---- 5. PPO update ----------------------------------------------------------------
        t0 = time.perf_counter()
        B = len(generations)  # this process's rollouts
        minibatch = cfg.minibatch_size // world()  # this process's share of each minibatch
        stats: dict[str, list[float]] = {
            k: [] for k in ("pg", "vf", "ent", "approx_kl", "clipfrac", "vclipfrac")
        }
        lengths = packed.attention_mask.sum(1)  # (B,) prompt + response tokens
        for _epoch in range(cfg.ppo_epochs):
            for index in minibatches(lengths, minibatch, cfg.minibatch_by_length):
                mb = rows(packed, index, device)  # cut to its own lengths: (b, l), (b, r)
                r = mb.response_ids.shape[1]
                mb_mask = mb.response_mask
                mb_adv = advantages[index, :r].to(device)
                mb_ret = returns[index, :r].to(device)
                mb_old_logp = old_logp[index, :r].to(device)
                mb_old_v = old_values[index, :r].to(device)
                # Per-token means over the minibatch of all processes: DDP averages gradients
                # over processes, so each divides its token sum by (all tokens / processes).
                mb_tokens = all_reduce_sum(mb_mask.sum()) / world()

                new_logp, entropy = policy_logprobs(policy_ddp, mb)
                log_ratio = new_logp - mb_old_logp
                ratio = log_ratio.exp()
                pg_loss1 = -mb_adv * ratio
                pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
                pg_loss = (torch.max(pg_loss1, pg_loss2) * mb_mask).sum() / mb_tokens
                entropy_loss = (entropy * mb_mask).sum() / mb_tokens
                policy_loss = pg_loss - cfg.entropy_coef * entropy_loss
                policy_opt.zero_grad(set_to_none=True)
                policy_loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                policy_opt.step()

                new_v = critic_values(critic_ddp, mb)
                v_loss_unclipped = (new_v - mb_ret) ** 2
                if cfg.value_clip_range > 0:
                    v_clipped = mb_old_v + torch.clamp(
                        new_v - mb_old_v, -cfg.value_clip_range, cfg.value_clip_range
                    )
                    v_loss_max = torch.max(v_loss_unclipped, (v_clipped - mb_ret) ** 2)
                    v_loss = 0.5 * (v_loss_max * mb_mask).sum() / mb_tokens
                else:
                    v_loss = 0.5 * (v_loss_unclipped * mb_mask).sum() / mb_tokens
                critic_opt.zero_grad(set_to_none=True)
                v_loss.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
                critic_opt.step()

                with torch.no_grad():
                    # CleanRL's low-variance KL estimator and the fraction of clipped ratios
                    stats["approx_kl"].append(float(masked_mean((ratio - 1) - log_ratio, mb_mask)))
                    stats["clipfrac"].append(
                        float(masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), mb_mask))
                    )
                    stats["vclipfrac"].append(
                        float(
                            masked_mean(
                                ((new_v - mb_old_v).abs() > cfg.value_clip_range).float(), mb_mask
                            )
                        )
                        if cfg.value_clip_range > 0
                        else 0.0
                    )
                stats["pg"].append(pg_loss.item())
                stats["vf"].append(v_loss.item())
                stats["ent"].append(entropy_loss.item())
        sampler.sync_weights()  # the next rollouts (and evaluations) sample the updated policy
        timings["update"] = time.perf_counter() - t0

        # ---- 6. metrics, logged samples, adaptive β, evaluation, checkpoint ----------------
        done = step + 1
        n_tokens = float(mask.sum())
        n_lines = [len(s.lines) for s in segmented]
        n_comment = sum(
            sum(line.neutral and bool(line.text.strip()) for line in s.lines) for s in segmented
        )
        all_scores = [x for scores in line_scores for x in scores]
        step_seconds = sum(timings.values())
        # averaged over processes (equal shares: the means of the whole step's rollouts)
        metrics = mean_over_ranks(
            {
                "rollout/pass_rate": float(np.mean(passed)),
                "rewards/sparse": sparse_total / B,
                "rewards/dense": dense_total / B,
                "rewards/kl": float(-kl_coef * kl.sum(1).mean()),
                "rewards/prm_score": float(np.mean(all_scores)) if all_scores else 0.0,
                "losses/policy": float(np.mean(stats["pg"])),
                "losses/value": float(np.mean(stats["vf"])),
                "losses/entropy": float(np.mean(stats["ent"])),
                "charts/approx_kl": float(np.mean(stats["approx_kl"])),
                "charts/clipfrac": float(np.mean(stats["clipfrac"])),
                "charts/value_clipfrac": float(np.mean(stats["vclipfrac"])),
                "charts/explained_variance": explained_variance(old_values, returns, mask),
                "charts/kl_coef": kl_coef,
                "charts/kl_per_response": float(kl.sum(1).mean()),
                "rollout/response_tokens": n_tokens / B,
                "rollout/response_lines": float(np.mean(n_lines)),
                "rollout/comment_line_fraction": n_comment / max(sum(n_lines), 1),
                **{f"time/{phase}_s": seconds for phase, seconds in timings.items()},
                "time/tokens_per_s": n_tokens / max(step_seconds, 1e-9),
            }
        )
        metrics["time/tokens_per_s"] *= world()  # every process's tokens in that time
        reporter.metrics(done, metrics)
        logged = [  # rank 0's rollouts: only rank 0 reports
            RolloutRecord(
                step=done,
                mode="rollout",
                sample_index=b,
                task_id=problems[b].task_id,
                program=requests[b]["program"],
                **verdict_fields(results[b]),
                lines=[
                    {
                        "line_no": line.index + 1,
                        "text": line.text,
                        "score": line_scores[b][line.index] if line_scores[b] else None,
                        "dense_reward": dense_paid[b][line.index],
                    }
                    for line in segmented[b].lines
                ],
            )
            for b in range(B)
            if log_rng.random() < cfg.log_rollout_fraction
        ]
        if logged:
            on_samples(done, logged)
        kl_coef = adapt_kl_coef(kl_coef, metrics["charts/kl_per_response"], cfg, B * world())
        elapsed = time.perf_counter() - started
        reporter.progress(
            done / cfg.steps,
            f"step {done}/{cfg.steps} pass {metrics['rollout/pass_rate']:.2f} "
            f"ETA {elapsed / (done - start_step) * (cfg.steps - done):.0f}s",
        )
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            run_eval(done)
        checkpoint_now = (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or (
            done == cfg.steps
        )
        if checkpoint_now and is_main():
            state = {
                "step": done,
                "policy_opt": policy_opt.state_dict(),
                "critic_opt": critic_opt.state_dict(),
                "problem_rng": problem_rng.getstate(),
                "log_rng": log_rng.getstate(),
                "rng": rng_state(),
                "kl_coef": kl_coef,
            }
            folder = save_ppo_checkpoint(
                out_dir / f"step_{done:06d}", policy, critic, tokenizer, state, cfg
            )
            checkpoints.append(folder)
            on_checkpoint(done, folder)

    background.shutdown()
    final_eval = run_eval(cfg.steps)
    return PPOResult(cfg.steps, checkpoints, final_eval, time.perf_counter() - started)
