"""PPO's math against hand-computed values, reward placement on line-end tokens, ValueInit,
and a one-step run of the whole loop on a tiny random policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from models.lines import segment
from models.policy import build_tiny_policy, save_policy
from models.policy_config import TinyModelConfig
from models.ppo import (
    critic_values,
    dense_line_rewards,
    gae,
    make_critic,
    masked_whiten,
    minibatches,
    pack,
    place_rewards,
    policy_logprobs,
    rows,
    train_ppo,
)
from models.ppo_config import PPOConfig
from models.prm import save_ensemble
from models.prm_config import PRMTrainConfig
from models.problems import Problem
from models.reporting import MemoryReporter
from models.sampling import Generation
from models.tokenizer import train_tokenizer
from models.value_model import ValueModel

TEXT = ["def f(xs):\n    ys = [x + 1 for x in xs]\n    return ys\n"] * 20


def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 9.0]])  # 9.0 is padding: never used
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: δ2 = 1 − .7 = .3; δ1 = .7 − .6 = .1 → .1 + .5·.3 = .25; δ0 = .1 → .1 + .5·.25
    # row 1: δ1 = 1 − .4 = .6 (the episode ends: nothing bootstrapped); δ0 = .4 − .2 → .2 + .3
    expected = torch.tensor([[0.225, 0.25, 0.3], [0.5, 0.6, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_gae_with_gamma_discounts_the_terminal_reward():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.zeros(1, 3)
    advantages, _ = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.81, 0.9, 1.0]]))


def test_whitening_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(x, mask)
    assert white[0, 3] == 0
    torch.testing.assert_close(white[0, :3].mean(), torch.tensor(0.0))
    torch.testing.assert_close(white[0, :3].pow(2).mean(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_dense_rewards_pick_lambda_by_outcome_normalise_by_lines_and_skip_neutral():
    cfg = PPOConfig()
    scores, neutral = [1.0, -1.0, 0.5, 1.0], [False, True, False, False]
    assert dense_line_rewards(scores, neutral, False, cfg) == [0.0625, 0.0, 0.03125, 0.0625]
    assert dense_line_rewards(scores, neutral, True, cfg) == pytest.approx(
        [0.00625, 0.0, 0.003125, 0.00625]
    )
    # 1/T: the same line scores spread over twice the lines pay half per line
    assert dense_line_rewards([1.0] * 8, [False] * 8, False, cfg)[0] == 0.25 / 8


def test_rewards_land_on_the_last_token_of_each_line_when_tokens_span_newlines():
    # tokens: "a = 1" | "\n    " | "b = 2" | "\n" | "    return b"  (GPT-2-style merges)
    pieces = ["a = 1", "\n    ", "b = 2", "\n", "    return b"]
    text = "".join(pieces)
    offsets, start = [], 0
    for piece in pieces:
        offsets.append((start, start + len(piece)))
        start += len(piece)
    segmented = segment(text, offsets)
    assert segmented.last_tokens == [1, 3, 4]
    rewards = place_rewards(5, 1.0, segmented.last_tokens, [0.1, 0.2, 0.3])
    torch.testing.assert_close(rewards, torch.tensor([0.0, 0.1, 0.0, 0.2, 1.3]))


def test_a_token_ending_two_lines_collects_both_rewards():
    rewards = place_rewards(3, -1.0, [0, 0, 2], [0.1, 0.2, 0.3])
    torch.testing.assert_close(rewards, torch.tensor([0.3, 0.0, -0.7]))


def test_variants_that_need_a_prm_say_so():
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(problems_per_step=2, samples_per_problem=2, minibatch_size=8)


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    tokenizer = train_tokenizer(TEXT, 300)
    policy = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), 0)
    root = tmp_path_factory.mktemp("tiny")
    save_policy(policy, tokenizer, root / "policy")
    prm = ValueModel.from_policy(root / "policy", seed=7)
    with torch.no_grad():
        prm.head.bias.fill_(0.3)  # not what a fresh head would be
    prm.save(root / "prm", tokenizer)
    # an ensemble of that PRM (listed first: ValueInit's member) and another seed's
    prm.save(root / "ensemble" / "member_1", tokenizer)
    ValueModel.from_policy(root / "policy", seed=8).save(root / "ensemble" / "member_0", tokenizer)
    cfg = PRMTrainConfig(init_from=str(root / "policy"))
    save_ensemble(root / "ensemble", ["member_1", "member_0"], tokenizer, cfg, 0, {})
    # a PRM that reads the policy's likelihood, with a weight that moves its values
    likelihood = ValueModel.from_policy(root / "policy", seed=9, likelihood=True)
    with torch.no_grad():
        likelihood.likelihood.weight.fill_(0.05)
    likelihood.save(root / "likelihood", tokenizer)
    return SimpleNamespace(policy=root / "policy", prm=root / "prm", tokenizer=tokenizer)


def probe_batch(tokenizer):
    ids = tokenizer("def f(xs):\n    ys = xs\n", add_special_tokens=False)["input_ids"]
    # the prompt is the def line; the body (3 tokens) is the response
    generation = Generation(ids[:1], ids[1:], [0.0] * (len(ids) - 1), "", "eos")
    return pack([generation, generation], tokenizer.pad_token_id)


@pytest.mark.parametrize("prm_name", ["prm", "ensemble", "likelihood"])
def test_value_init_loads_exactly_the_prm(tiny_dirs, prm_name):
    cfg = PPOConfig(variant="value-init")
    # an ensemble's critic starts from its first member, here the single PRM
    critic = make_critic(cfg, tiny_dirs.policy, tiny_dirs.policy.parent / prm_name)
    prm = ValueModel.load(tiny_dirs.policy.parent / ("prm" if prm_name == "ensemble" else prm_name))
    batch = probe_batch(tiny_dirs.tokenizer)
    with torch.no_grad():
        values = critic(batch.input_ids, batch.attention_mask, batch.response_start)
        expected = prm(batch.input_ids, batch.attention_mask, batch.response_start)
        torch.testing.assert_close(values, expected, rtol=0, atol=0)
        assert critic_values(critic, batch).shape == batch.response_ids.shape  # (B, R), R = 3
    assert (critic.likelihood is not None) == (prm_name == "likelihood")
    baseline = make_critic(PPOConfig(variant="baseline"), tiny_dirs.policy, None)
    assert float(baseline.head.bias.detach()) == 0.0  # a fresh head, not the PRM's


def test_value_model_save_load_round_trip(tiny_dirs, tmp_path):
    prm = ValueModel.load(tiny_dirs.prm)
    prm.save(tmp_path / "again")
    again = ValueModel.load(tmp_path / "again")
    batch = probe_batch(tiny_dirs.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(
            prm(batch.input_ids, batch.attention_mask),
            again(batch.input_ids, batch.attention_mask),
            rtol=0,
            atol=0,
        )


def test_policy_logprobs_match_the_samplers(tiny_dirs):
    from models.policy import load_policy
    from models.policy_config import SamplingParams
    from models.sampling import HFSampler

    policy, tokenizer = load_policy(tiny_dirs.policy)
    generations = HFSampler(policy, tokenizer).generate(
        ["def f(xs):\n", "def f(xs):\n    ys"], SamplingParams(max_new_tokens=12, seed=3)
    )
    generations = [g for g in generations if g.token_ids]
    batch = pack(generations, tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = policy_logprobs(policy, batch)
    for b, g in enumerate(generations):
        torch.testing.assert_close(
            logp[b, : len(g.token_ids)], torch.tensor(g.logprobs), atol=1e-4, rtol=0
        )


def fake_sandbox(requests):
    """Passes programs whose body returns ``ys``: a stand-in verdict for the loop's plumbing."""
    return [
        SimpleNamespace(
            status="passed" if "return ys" in r["program"] else "failed",
            passed=1,
            total=1,
            error_line=None,
            detail="",
        )
        for r in requests
    ]


@pytest.mark.parametrize(
    ("variant", "prm_name"),
    [
        ("baseline", None),
        ("dense+value-init", "prm"),
        ("dense+value-init", "ensemble"),
        ("dense+value-init", "likelihood"),
    ],
)
def test_one_ppo_step_runs_and_kl_starts_at_zero(tiny_dirs, tmp_path, variant, prm_name):
    problems = [
        Problem(task_id=f"t{i}", prompt="def f(xs):\n", tests=["assert f([1]) == [2]"])
        for i in range(4)
    ]
    cfg = PPOConfig(
        variant=variant,
        steps=2,
        problems_per_step=2,
        samples_per_problem=2,
        minibatch_size=2,
        max_new_tokens=16,
        eval_every=0,
        eval_problems=2,
        checkpoint_every=1,
        log_rollout_fraction=1.0,
    )
    reporter = MemoryReporter()
    logged = []
    result = train_ppo(
        cfg,
        policy_dir=tiny_dirs.policy,
        prm_dir=prm_name and tiny_dirs.policy.parent / prm_name,
        train_problems=problems,
        eval_problems=problems,
        run_batch=fake_sandbox,
        reporter=reporter,
        out_dir=tmp_path,
        on_samples=lambda step, records: logged.extend(r for r in records if r.mode == "rollout"),
    )
    assert reporter.series("rewards/kl")[0] == (1, 0.0)  # the policy is the reference at first
    assert reporter.series("charts/kl_per_response")[0] == (1, 0.0)
    assert [step for step, _ in reporter.series("losses/policy")] == [1, 2]
    assert len(logged) == 8  # log_rollout_fraction=1: every rollout of the 2 steps
    for record in logged:  # the lines are exactly the completion's
        completion = record.program.removeprefix("def f(xs):\n")
        assert "\n".join(line["text"] for line in record.lines) == completion.removesuffix("\n")
    if variant == "baseline":
        assert all(line["dense_reward"] == 0 for r in logged for line in r.lines)
    else:
        assert any(line["score"] is not None for r in logged for line in r.lines)
    assert [p.name for p in result.checkpoints] == ["step_000001", "step_000002"]
    assert (result.checkpoints[-1] / "critic" / "value_head.safetensors").is_file()
    assert "eval/pass@1_greedy" in result.final_eval


def test_minibatches_cover_every_rollout_once_and_group_by_length():
    torch.manual_seed(0)
    lengths = torch.tensor([5, 40, 6, 41, 7, 42, 8, 43])
    for by_length in (False, True):
        batches = minibatches(lengths, 2, by_length)
        assert sorted(torch.cat(batches).tolist()) == list(range(8))
        assert [len(b) for b in batches] == [2, 2, 2, 2]
    grouped = minibatches(lengths, 4, by_length=True)
    assert sorted(sorted(lengths[b].tolist()) for b in grouped) == [[5, 6, 7, 8], [40, 41, 42, 43]]


def test_a_minibatch_is_cut_to_its_own_lengths():
    generations = [
        Generation([1, 2], [3], [0.0], "a", "eos"),
        Generation([1, 2, 3, 4], [5, 6, 7, 8, 9], [0.0] * 5, "b", "eos"),
        Generation([1], [2, 3], [0.0] * 2, "c", "eos"),
    ]
    packed = pack(generations, pad_id=0)
    assert packed.input_ids.shape == (3, 9)
    mb = rows(packed, torch.tensor([0, 2]), torch.device("cpu"))
    assert mb.input_ids.shape == (2, 3) and mb.response_ids.shape == (2, 2)
    assert mb.input_ids.tolist() == [[1, 2, 3], [1, 2, 3]]
    assert mb.response_mask.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    # each row's response starts after its own prompt (what a likelihood-reading PRM needs)
    assert packed.response_start.tolist() == [2, 4, 1] and mb.response_start.tolist() == [2, 1]
