"""Sampling: seeded determinism, the three ways a completion ends, continuation from a prefix,
log-probs that equal the policy's own at temperature 1 despite left padding, and the choice of
backend (transformers unless vLLM is installed and the model is on a GPU)."""

from __future__ import annotations

import pytest
import torch

from models import sampling
from models.lines import decode
from models.policy import TinyModelConfig, build_tiny_policy
from models.sampling import (
    HFSampler,
    SamplingParams,
    _LineState,
    bf16_copy,
    cut_completion,
    dedent_tables,
    filter_top_p,
    make_sampler,
    token_pieces,
)
from models.tokenizer import train_tokenizer

# A model that has memorised these: one completion runs on into a second function (it must be
# cut at the dedent), the other ends with EOS.
RUN_ON = "def f(x):\n    return x + 1\ndef g(y):\n    return y\n"
WITH_EOS = "def h(z):\n    z = z * 2\n    return z * 3\n"


@pytest.fixture(scope="module")
def memorised():
    tokenizer = train_tokenizer([RUN_ON, WITH_EOS] * 10, 280)
    torch.manual_seed(0)
    model = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=2, n_embd=64, n_head=2), seed=0)
    rows = [tokenizer.encode(RUN_ON), [*tokenizer.encode(WITH_EOS), tokenizer.eos_token_id]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = sum(
            model(input_ids=torch.tensor([row]), labels=torch.tensor([row])).loss for row in rows
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40)


def test_greedy_stops_at_the_dedent_and_at_eos(memorised):
    model, tokenizer = memorised
    run_on, with_eos = HFSampler(model, tokenizer).generate(["def f(x):\n", "def h(z):\n"], GREEDY)
    assert run_on.text == "    return x + 1\n" and run_on.finish_reason == "dedent"
    assert decode(tokenizer, run_on.token_ids) == run_on.text
    assert with_eos.text == "    z = z * 2\n    return z * 3\n" and with_eos.finish_reason == "eos"
    assert with_eos.token_ids[-1] == tokenizer.eos_token_id
    assert len(with_eos.logprobs) == len(with_eos.token_ids)


def test_without_the_dedent_rule_the_completion_runs_on(memorised):
    model, tokenizer = memorised
    params = GREEDY.model_copy(update={"stop_at_dedent": False})
    (generation,) = HFSampler(model, tokenizer).generate(["def f(x):\n"], params)
    assert generation.text.startswith("    return x + 1\ndef g(y):\n")


def test_continuation_from_a_prefix_and_the_length_limit(memorised):
    model, tokenizer = memorised
    sampler = HFSampler(model, tokenizer)
    (rest,) = sampler.generate(["def h(z):\n    z = z * 2\n"], GREEDY)
    assert rest.text == "    return z * 3\n"
    params = GREEDY.model_copy(update={"max_new_tokens": 2})
    (short,) = sampler.generate(["def h(z):\n"], params)
    assert short.finish_reason == "length" and len(short.token_ids) == 2


def test_a_seed_makes_sampling_reproducible(memorised):
    model, tokenizer = memorised
    sampler = HFSampler(model, tokenizer, batch_size=3)
    prompts = ["def f(x):\n", "def h(z):\n", "def "] * 3
    hot = SamplingParams(temperature=3.0, max_new_tokens=12, seed=7)
    first, again = sampler.generate(prompts, hot), sampler.generate(prompts, hot)
    assert first == again
    other = sampler.generate(prompts, hot.model_copy(update={"seed": 8}))
    assert [g.token_ids for g in other] != [g.token_ids for g in first]


def test_logprobs_are_the_policy_at_temperature_one_despite_padding(memorised):
    model, tokenizer = memorised
    prompts = ["def f(x):\n", "def h(z):\n    z = z * 2\n", "d"]  # different lengths: padding
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=10, seed=1)
    for generation in HFSampler(model, tokenizer).generate(prompts, params):
        ids = torch.tensor([generation.prompt_ids + generation.token_ids])  # (1, T) unpadded
        with torch.no_grad():
            logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)  # (T-1, V)
        n_prompt = len(generation.prompt_ids)
        expected = logprobs[n_prompt - 1 :].gather(-1, ids[0, n_prompt:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-4, rtol=0)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.01)).sum() == 1  # the top token always stays
    assert torch.equal(filter_top_p(logits, 1.0), logits)


@pytest.mark.parametrize(
    ("start", "pieces", "stops_at"),
    [
        (True, ["    x", " = 1\n", "def"], 2),
        (True, ["    x = 1\n\n", "\n", "#"], 2),  # a comment at column 0 ends the body too
        (False, ["x = 1", "\n    y", "\n"], None),  # a prompt ending mid-line is not column 0
        (True, ["\tx\n", "\t\ty\n"], None),
    ],
)
def test_the_dedent_rule(start, pieces, stops_at):
    state = _LineState(start)
    stops = [i for i, piece in enumerate(pieces) if state.dedents(piece)]
    assert (stops[0] if stops else None) == stops_at


@pytest.mark.parametrize(
    ("start", "pieces", "stops_at"),
    [
        (True, ["    x", " = 1\n", "def"], 2),
        (True, ["    x = 1\n\n", "\n", "#"], 2),
        (False, ["x = 1", "\n    y", "\n"], None),
        (True, ["\tx\n", "\t\ty\n"], None),
    ],
)
def test_the_lookup_tables_apply_the_same_dedent_rule(start, pieces, stops_at):
    """The decoding loop applies the rule on the device through (state, token) tables."""
    dedents, after = dedent_tables(pieces)
    state, stops = int(start), []
    for token in range(len(pieces)):
        if dedents[state, token]:
            stops.append(token)
        state = int(after[state, token])
    assert (stops[0] if stops else None) == stops_at


def test_a_bf16_copy_samples_the_weights_of_the_last_sync(memorised):
    model, tokenizer = memorised
    sampler = HFSampler(model, tokenizer)
    sampler.runner = bf16_copy(model)  # what a GPU with an fp32 model gets
    assert all(p.dtype == torch.bfloat16 for p in sampler.runner.parameters())
    with torch.no_grad():
        live = next(model.parameters())
        saved = live.clone()
        live.add_(1.0)
        try:
            assert not torch.equal(
                next(sampler.runner.parameters()).float(), live.bfloat16().float()
            )
            sampler.sync_weights()
            assert torch.equal(next(sampler.runner.parameters()), live.bfloat16())
        finally:
            live.copy_(saved)


def test_auto_falls_back_to_transformers_without_vllm_or_a_gpu(memorised, monkeypatch):
    model, tokenizer = memorised
    assert isinstance(make_sampler(model, tokenizer), HFSampler)
    assert isinstance(make_sampler(model, tokenizer, backend="hf", batch_size=3), HFSampler)
    monkeypatch.setattr(sampling, "vllm_installed", lambda: True)
    assert isinstance(make_sampler(model, tokenizer, backend="auto"), HFSampler)  # CPU model


def test_asking_for_vllm_where_it_cannot_run_names_the_field_and_the_fix(memorised, monkeypatch):
    model, tokenizer = memorised
    monkeypatch.setattr(sampling, "vllm_installed", lambda: False)
    with pytest.raises(ValueError, match=r"backend: 'vllm' needs the vllm package: pip install"):
        make_sampler(model, tokenizer, backend="vllm")
    monkeypatch.setattr(sampling, "vllm_installed", lambda: True)
    with pytest.raises(ValueError, match=r"backend: 'vllm' needs the model on a CUDA device"):
        make_sampler(model, tokenizer, backend="vllm")


def test_a_completion_decoded_without_stops_is_cut_like_the_transformers_loop(memorised):
    """vLLM decodes to EOS or the length limit; ``cut_completion`` then applies the dedent rule,
    giving what HFSampler returns when it stops itself."""
    model, tokenizer = memorised
    sampler, pieces = HFSampler(model, tokenizer), token_pieces(tokenizer)
    prompts = ["def f(x):\n", "def h(z):\n"]
    no_stop = GREEDY.model_copy(update={"stop_at_dedent": False})
    for prompt, full, stopped in zip(
        prompts, sampler.generate(prompts, no_stop), sampler.generate(prompts, GREEDY), strict=True
    ):
        kept, logprobs, reason = cut_completion(
            pieces, tokenizer.eos_token_id, prompt, full.token_ids, full.logprobs, True
        )
        assert (kept, logprobs, reason) == (
            stopped.token_ids,
            stopped.logprobs,
            stopped.finish_reason,
        )
        assert decode(tokenizer, kept) == stopped.text
