"""Batched sampling from a policy: completions of prompts (or of prompt + partial completion).

One small interface, ``Sampler.generate(prompts, params) -> [Generation]``, two backends, and
``make_sampler`` choosing between them for every caller (evaluation, PPO rollouts, labeling):

- ``HFSampler`` (transformers) is a manual decoding loop over the KV cache rather than
  ``model.generate``: it keeps full control of the stopping rule, of the random generator
  (seeded per call, so results are reproducible) and of the log-probs. It samples from the live
  model, except an fp32 model on a GPU, which it samples through a bf16 copy that
  ``sync_weights`` refreshes.
- ``VLLMSampler`` (the optional ``gpu`` extra) runs a vLLM engine in this process on the model's
  GPU. vLLM cannot backpropagate, so it holds its own copy of the weights: ``sync_weights`` loads
  the model's current ones into it, and PPO calls it after every update.

Log-probs are those of the policy at temperature 1 — ``log_softmax`` of the raw logits — for the
sampled tokens, whatever temperature or top-p chose them: PPO's ratio and KL terms are defined
on the policy itself, not on the sampling distribution.

A completion ends at the first of:
- ``eos``: the end-of-sequence token (kept in ``token_ids``, not in ``text``);
- ``dedent``: a line that starts at column 0 with a non-space character — the function body is
  over and the model began something else (a second function, test code). The token that
  brought that character is dropped, so ``text`` ends with the body's last line. A comment
  at column 0 inside a body also ends it; generated code rarely has one.
- ``length``: ``max_new_tokens`` reached.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from models.lines import decode
from models.policy_config import Backend, SamplingParams

FinishReason = Literal["eos", "dedent", "length"]


@dataclass(frozen=True)
class Generation:
    prompt_ids: list[int]
    token_ids: list[int]  # the completion's tokens (an ending EOS included)
    logprobs: list[float]  # log π(token) at temperature 1, one per token_ids entry
    text: str  # decode(token_ids): special tokens dropped
    finish_reason: FinishReason


class Sampler(Protocol):
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """One completion per prompt, in order."""

    def sync_weights(self) -> None:
        """Make the next ``generate`` use the model's current weights."""

    @property
    def exact_logprobs(self) -> bool:
        """Whether ``Generation.logprobs`` are the model's own (same weights, same precision),
        so that PPO may take them as the rollout's log-probs instead of a forward pass."""


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the nucleus to -inf. ``logits``: (B, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    # drop a token when the tokens before it already reach top_p (the top one always stays)
    drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def cache_keyword(model) -> str:
    """``cache`` in recent transformers 5.x, ``past_key_values`` before (and in outputs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _LineState:
    """Tracks whether a completion is at column 0, to spot a dedent to column 0."""

    def __init__(self, at_column_0: bool) -> None:
        self.at_column_0 = at_column_0

    def dedents(self, piece: str) -> bool:
        """Feed one token's text; True if it puts a non-space character at column 0."""
        for char in piece:
            if char == "\n":
                self.at_column_0 = True
            elif self.at_column_0 and not char.isspace():
                return True
            elif char not in "\r":
                self.at_column_0 = False
        return False


def token_pieces(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Each token's text on its own, for the dedent check (a partial multi-byte character reads
    as U+FFFD: not a space, which is right — it is text at that column)."""
    return tokenizer.batch_decode(
        [[i] for i in range(len(tokenizer))],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )


def dedent_tables(pieces: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dedent rule as two lookup tables over (at column 0 before the token, token), so the
    decoding loop applies it to a whole batch on the device: ``dedents[s, t]`` — token ``t``
    puts a non-space character at column 0; ``after[s, t]`` — at column 0 after it. (2, V)."""
    dedents = torch.zeros(2, len(pieces), dtype=torch.bool)
    after = torch.zeros(2, len(pieces), dtype=torch.long)
    for state in (0, 1):
        for token, piece in enumerate(pieces):
            line = _LineState(bool(state))
            dedents[state, token] = line.dedents(piece)
            after[state, token] = int(line.at_column_0)
    return dedents, after


def needs_bf16_copy(model) -> bool:
    """An fp32 model on a GPU that has bf16 (a policy being trained, see ``pick_dtype``)."""
    weight = next(model.parameters())
    return (
        weight.device.type == "cuda"
        and weight.dtype == torch.float32
        and torch.cuda.is_bf16_supported()
    )


def bf16_copy(model):
    """A frozen copy whose parameters are bf16 (buffers such as RoPE frequencies stay fp32)."""
    runner = copy.deepcopy(model).eval().requires_grad_(False)
    for param in runner.parameters():
        param.data = param.data.to(torch.bfloat16)
    return runner


class HFSampler:
    """The transformers backend: batches of prompts, left-padded, decoded with the KV cache.

    The loop keeps its state on the device (sampled tokens, log-probs, stop flags, the dedent
    state machine as lookup tables) and asks the host whether every row is done only every few
    steps on a GPU: a per-step ``.tolist()`` would make the CPU wait for each step's kernels
    instead of queueing the next step's while the GPU works.

    A model trained in fp32 on a GPU (see ``models.policy.pick_dtype``) is sampled from a bf16
    copy that ``sync_weights`` refreshes: decoding is bound by kernel launches, and running
    the fp32 model under autocast made it 2.6× slower than a bf16 model (H200, a Qwen2-0.5B
    shape, 128 rows) for the price of half the model's memory."""

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64) -> None:
        self.model = model
        self.runner = bf16_copy(model) if needs_bf16_copy(model) else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pieces = token_pieces(tokenizer)
        self.dedents, self.after = dedent_tables(self.pieces)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.cache_keyword = cache_keyword(model)

    @property
    def exact_logprobs(self) -> bool:
        """True when sampling the live model itself on a CPU, where PPO's forward pass runs the
        same weights in the same precision (no bf16 copy, no autocast): the log-probs agree to
        float rounding (about 1e-6)."""
        device = next(self.model.parameters()).device
        return self.runner is self.model and device.type == "cpu"

    def sync_weights(self) -> None:
        """Refresh the bf16 copy, if there is one (otherwise this samples the live model)."""
        if self.runner is not self.model:
            with torch.no_grad():
                for frozen, live in zip(
                    self.runner.parameters(), self.model.parameters(), strict=True
                ):
                    frozen.copy_(live)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        device = next(self.runner.parameters()).device
        generator = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.runner.training
        self.runner.eval()
        try:
            results: list[Generation] = []
            for first in range(0, len(prompts), self.batch_size):
                batch = list(prompts[first : first + self.batch_size])
                results.extend(self._generate_batch(batch, params, generator, device))
            return results
        finally:
            self.runner.train(was_training)

    @torch.no_grad()
    def _generate_batch(
        self,
        prompts: list[str],
        params: SamplingParams,
        generator: torch.Generator,
        device: torch.device,
    ) -> list[Generation]:
        tok = self.tokenizer
        # special tokens as the tokenizer adds them by default: a BOS where the model expects one
        encoded = tok(prompts, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(device)  # (B, P), left-padded
        mask = encoded["attention_mask"].to(device)  # (B, P)
        B, P = input_ids.shape
        max_new = params.max_new_tokens
        if self.max_positions is not None:
            room = self.max_positions - P
            if room <= 0:
                raise ValueError(
                    f"a prompt has {P} tokens; the model sees at most {self.max_positions}"
                )
            max_new = min(max_new, room)
        # positions count real tokens only, so left padding does not shift them
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        vocab = len(tok)
        eos = -1 if tok.eos_token_id is None else tok.eos_token_id
        dedents, after = self.dedents.to(device), self.after.to(device)
        check_every = 8 if device.type == "cuda" else 1  # host syncs are free on a CPU

        out = self.runner(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits are needed
        )
        logits = out.logits[:, -1, :].float()  # (B, V)
        cache = getattr(out, self.cache_keyword)
        last_position = positions[:, -1]  # (B,)

        tokens = torch.zeros(B, max_new, dtype=torch.long, device=device)
        logps = torch.zeros(B, max_new, device=device)
        kept = torch.zeros(B, dtype=torch.long, device=device)  # tokens each row keeps
        done = torch.zeros(B, dtype=torch.bool, device=device)
        reason = torch.zeros(B, dtype=torch.long, device=device)  # 0 length, 1 eos, 2 dedent
        column_0 = torch.tensor(
            [not prompt or prompt.endswith("\n") for prompt in prompts], device=device
        ).long()  # (B,) the dedent state machine's state
        for t in range(max_new):
            logprobs = F.log_softmax(logits, dim=-1)  # (B, V) the policy at temperature 1
            choice_logits = logits[:, :vocab]  # rows past the tokenizer are padding
            if params.temperature == 0:
                next_ids = choice_logits.argmax(dim=-1)  # (B,)
            else:
                scaled = filter_top_p(choice_logits / params.temperature, params.top_p)
                next_ids = torch.multinomial(scaled.softmax(-1), 1, generator=generator)[:, 0]
            tokens[:, t] = next_ids
            logps[:, t] = logprobs.gather(-1, next_ids[:, None])[:, 0]

            is_eos = next_ids == eos
            is_dedent = dedents[column_0, next_ids] & ~is_eos & params.stop_at_dedent
            # a live row keeps this token, except the one that dedents (dropped); EOS is kept
            kept = torch.where(done, kept, t + 1 - is_dedent.long())
            stops = ~done & (is_eos | is_dedent)
            reason = torch.where(stops, torch.where(is_eos, 1, 2), reason)
            done = done | stops
            column_0 = after[column_0, next_ids]
            if t + 1 == max_new or ((t + 1) % check_every == 0 and bool(done.all())):
                break

            # finished rows keep decoding (their tokens are ignored): one batched step for all
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, P + t)
            last_position = last_position + 1
            out = self.runner(
                input_ids=next_ids[:, None],
                attention_mask=mask,
                position_ids=last_position[:, None],
                use_cache=True,
                **{self.cache_keyword: cache},
            )
            logits = out.logits[:, -1, :].float()
            cache = getattr(out, self.cache_keyword)

        prompt_ids = [
            ids[row.bool()].tolist()
            for ids, row in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
        ]
        names: tuple[FinishReason, ...] = ("length", "eos", "dedent")
        results = []
        for b, (n, why) in enumerate(zip(kept.tolist(), reason.tolist(), strict=True)):
            token_ids = tokens[b, :n].tolist()
            results.append(
                Generation(
                    prompt_ids=prompt_ids[b],
                    token_ids=token_ids,
                    logprobs=logps[b, :n].tolist(),
                    text=decode(tok, token_ids),
                    finish_reason=names[why],
                )
            )
        return results


# ----------------------------------------------------------------------------- vLLM


def cut_completion(
    pieces: Sequence[str],
    eos_id: int | None,
    prompt: str,
    token_ids: Sequence[int],
    logprobs: Sequence[float],
    stop_at_dedent: bool,
) -> tuple[list[int], list[float], FinishReason]:
    """Apply ``HFSampler``'s stopping rule to a completion decoded without it: keep tokens up to
    an EOS (kept) or up to the token that dedents to column 0 (dropped)."""
    state = _LineState(not prompt or prompt.endswith("\n"))
    for i, token in enumerate(token_ids):
        if token == eos_id:
            return list(token_ids[: i + 1]), list(logprobs[: i + 1]), "eos"
        if stop_at_dedent and state.dedents(pieces[token]):
            return list(token_ids[:i]), list(logprobs[:i]), "dedent"
    return list(token_ids), list(logprobs), "length"


class VLLMSampler:
    """The vLLM backend, colocated: an engine in this process, on the model's GPU, built from
    the model's config and tokenizer with placeholder weights (``load_format="dummy"``) and then
    given the model's own weights, so a model that was never saved (SFT from scratch) works too.

    vLLM has no dedent stop, so completions are decoded to EOS or ``max_new_tokens`` and then
    cut by the same rule as ``HFSampler``: the tokens past a dedent are generated and dropped.
    Log-probs are vLLM's raw ones (before temperature and top-p), as the interface requires.
    Each prompt gets its own seed (``params.seed + i``), so results are reproducible, though not
    equal to ``HFSampler``'s.
    """

    def __init__(
        self, model, tokenizer: PreTrainedTokenizerBase, gpu_memory_utilization: float = 0.3
    ) -> None:
        # In-process engine core: load_weights is handed the model's tensors directly instead of
        # serialising them to an engine process.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model = model
        self.tokenizer = tokenizer
        self.pieces = token_pieces(tokenizer)
        self._folder = tempfile.TemporaryDirectory(prefix="prm-studio-vllm-")
        model.config.save_pretrained(self._folder.name)
        tokenizer.save_pretrained(self._folder.name)
        self.llm = LLM(
            model=self._folder.name,
            load_format="dummy",
            dtype=next(model.parameters()).dtype,
            max_model_len=getattr(model.config, "max_position_embeddings", None),
            # the rest of the GPU is the trainer's: policy, reference, critic, optimizer state
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=True,
        )
        self.sync_weights()

    exact_logprobs = False  # vLLM's kernels and precision are not the trainer's

    def sync_weights(self) -> None:
        """Load the model's current weights into the engine (vLLM maps the Hugging Face names)."""
        weights = list(self.model.state_dict().items())
        self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams

        # tokenised here, as HFSampler does, so both backends see the same prompt tokens
        prompt_ids = self.tokenizer(list(prompts))["input_ids"]
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids],
            [
                VLLMSamplingParams(
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_new_tokens,
                    seed=params.seed + i,
                    logprobs=0,  # the sampled token's own log-prob
                )
                for i in range(len(prompts))
            ],
            use_tqdm=False,
        )
        generations = []
        for prompt, ids, output in zip(prompts, prompt_ids, outputs, strict=True):
            completion = output.outputs[0]
            logprobs = [
                position[token].logprob
                for token, position in zip(completion.token_ids, completion.logprobs, strict=True)
            ]
            kept, kept_logprobs, reason = cut_completion(
                self.pieces,
                self.tokenizer.eos_token_id,
                prompt,
                completion.token_ids,
                logprobs,
                params.stop_at_dedent,
            )
            generations.append(
                Generation(ids, kept, kept_logprobs, decode(self.tokenizer, kept), reason)
            )
        return generations


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_sampler(
    model, tokenizer: PreTrainedTokenizerBase, *, backend: Backend = "auto", batch_size: int = 64
) -> Sampler:
    """The sampler every caller uses. ``auto``: vLLM when it is installed and the model is a
    plain (not LoRA-wrapped) model on a CUDA device; transformers otherwise."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    plain = not hasattr(model, "get_base_model")
    if backend == "vllm":
        if not vllm_installed():
            raise ValueError(
                "backend: 'vllm' needs the vllm package: pip install 'prm-studio[gpu]' "
                "(or set backend to 'auto' or 'hf')"
            )
        if not on_cuda:
            raise ValueError(
                "backend: 'vllm' needs the model on a CUDA device: set device to 'auto' or "
                "'cuda' on a GPU host (or backend to 'hf')"
            )
        if not plain:
            raise ValueError("backend: 'vllm' cannot sample from a LoRA model: use 'hf'")
        return VLLMSampler(model, tokenizer)
    if backend == "auto" and vllm_installed() and on_cuda and plain:
        return VLLMSampler(model, tokenizer)
    return HFSampler(model, tokenizer, batch_size=batch_size)
