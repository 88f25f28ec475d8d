"""PRM training and evaluation: the loss reads line ends only, scores land on the right lines
with a GPT-2-style tokenizer, checkpoints round-trip, the metrics match hand-computed values,
and a tiny PRM trained on references vs corrupted references beats a constant predictor."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from models.benchmark import INDENT, BenchmarkConfig, generate, problem_steps, render_line
from models.evaluation import pass_at_k
from models.lines import encode_with_offsets, split_lines
from models.policy import build_tiny_policy, save_policy
from models.policy_config import TinyModelConfig
from models.prm import (
    PRM_JSON,
    Example,
    LoopState,
    PooledResponse,
    PRMEnsemble,
    PRMRecord,
    best_of_k,
    calibration_curve,
    collate,
    critic_start,
    encode,
    epoch_order,
    first_error,
    label_metrics,
    line_loss,
    load_prm,
    outcome_label,
    outcome_pairs,
    output_layer,
    policy_lm_head,
    rank_loss,
    read_records,
    rerank_metrics,
    response_score,
    roc_auc,
    roc_curve,
    save_ensemble,
    save_prm,
    score_lines_and_ends,
    score_responses,
    split_by_problem,
    train_prm,
)
from models.prm_config import PRMTrainConfig
from models.problems import Problem
from models.reporting import MemoryReporter
from models.tokenizer import train_tokenizer
from models.value_model import LIKELIHOOD_DIR, LIKELIHOOD_SCALE, ValueModel
from tests.test_evaluation import record as sample_record

TINY = TinyModelConfig(n_layer=2, n_embd=64, n_head=2, vocab_size=320)


def labelled_records(problem: Problem, rng: random.Random) -> list[PRMRecord]:
    """The reference (every line +1) and a corrupted copy: step k's line reads the variable
    it is about to bind instead of the previous one (``v2 = sorted(v2)``), so lines 1..k−1
    are +1 and k..T are −1. (A wrong op is as wrong, but a tiny random-init model needs far
    more than a test's budget to learn which phrase asks for which expression.)"""
    lines = (problem.reference or "").split("\n")[:-1]
    steps = problem_steps(problem)
    good = PRMRecord(
        prompt=problem.prompt,
        completions=lines,
        labels=[1] * len(lines),
        m_star=len(lines),
        passed=True,
        task_id=problem.task_id,
    )
    k = rng.randint(1, len(steps))
    target, expr = render_line(steps[k - 1], k).split(" = ", 1)
    wrong = [*lines]
    wrong[k - 1] = f"{INDENT}{target} = " + re.sub(rf"\bv{k - 1}\b", target, expr)
    bad = PRMRecord(
        prompt=problem.prompt,
        completions=wrong,
        labels=[1] * (k - 1) + [-1] * (len(lines) - k + 1),
        m_star=k - 1,
        passed=False,
        task_id=problem.task_id,
    )
    return [good, bad]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train several times faster on one thread than on two busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def benchmark_records() -> list[PRMRecord]:
    problems = generate(BenchmarkConfig(n_train=400, n_test=0, min_steps=2, max_steps=4))
    rng = random.Random(0)
    return [record for p in problems for record in labelled_records(p, rng)]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory, benchmark_records) -> str:
    texts = [r.prompt + r.response for r in benchmark_records]
    tokenizer = train_tokenizer(texts, TINY.vocab_size)
    model = build_tiny_policy(tokenizer, TINY, seed=0)
    return str(save_policy(model, tokenizer, tmp_path_factory.mktemp("policy")))


# ----------------------------------------------------------------------------- data


def test_records_validate_and_split_by_problem(tmp_path, benchmark_records):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in benchmark_records[:40]))
    records = read_records(path)
    assert records == benchmark_records[:40]
    assert records[0].response == "".join(line + "\n" for line in records[0].completions)

    train, val = split_by_problem(records, val_fraction=0.25, seed=0)
    assert len(train) + len(val) == 40 and len(val) == 10  # 5 of 20 problems, 2 records each
    assert not {r.task_id for r in train} & {r.task_id for r in val}

    bad = json.loads(benchmark_records[0].model_dump_json()) | {"labels": [1]}
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"data.jsonl:1: .*labels for"):
        read_records(path)


# ----------------------------------------------------------------------------- loss


def test_the_loss_touches_line_ends_only_and_skips_neutral_lines():
    examples = [
        Example(ids=[5, 6, 7, 8, 9], positions=[1, 3, 4], labels=[1, 0, -1]),
        Example(ids=[5, 6, 7], positions=[2], labels=[1]),
    ]
    for skip_neutral, loss_kind in itertools.product([True, False], ["mse", "bce"]):
        batch = collate(examples, pad_id=0, skip_neutral=skip_neutral)
        values = torch.randn(2, 5, requires_grad=True)
        line_loss(values, batch, loss_kind).backward()
        touched = {(b, t) for b in range(2) for t in range(5) if values.grad[b, t] != 0}
        expected = {(0, 1), (0, 4), (1, 2)} | (set() if skip_neutral else {(0, 3)})
        assert touched == expected, (skip_neutral, loss_kind)
    # MSE against the labels, by hand: positions (0,1)→+1, (0,4)→−1, (1,2)→+1
    values = torch.zeros(2, 5)
    values[0, 1], values[0, 4], values[1, 2] = 0.5, 0.0, 1.0
    batch = collate(examples, pad_id=0, skip_neutral=True)
    assert line_loss(values, batch, "mse").item() == pytest.approx((0.25 + 1 + 0) / 3)


def test_the_end_of_response_token_is_trained_on_the_outcome_when_there_is_one():
    examples = [
        Example(ids=[5, 6, 7, 2], positions=[1, 2], labels=[1, -1], end=3, outcome=-1),
        Example(ids=[5, 6, 2], positions=[1], labels=[1], end=2, outcome=0),  # outcome unknown
    ]
    batch = collate(examples, pad_id=0, skip_neutral=True)
    supervised = zip(batch.rows.tolist(), batch.cols.tolist(), batch.labels.tolist(), strict=True)
    assert list(supervised) == [
        (0, 1, 1.0),
        (0, 2, -1.0),
        (0, 3, -1.0),  # the end: the response failed
        (1, 1, 1.0),
    ]
    assert [outcome_label(r) for r in labelled_records_of_each_kind()] == [1, -1, 0]


def test_the_ranking_loss_pairs_opposite_outcomes_of_one_problem_only():
    def ex(outcome: int, end: int | None = 3) -> Example:
        return Example(ids=[5, 6, 7, 2], positions=[1], labels=[1], end=end, outcome=outcome)

    examples = [ex(1), ex(-1), ex(-1), ex(1), ex(-1), ex(0), ex(-1, end=None)]
    problems = ["a", "a", "a", "b", "c", "a", "a"]  # b and c have one side only
    passing, failing = outcome_pairs(examples, problems)
    assert sorted(zip(passing, failing, strict=True)) == [(0, 1), (0, 2)]
    ends = torch.tensor([0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    # log(1 + e^-1) and log(1 + e^0), by hand
    expected = (np.log1p(np.exp(-1.0)) + np.log(2.0)) / 2
    assert rank_loss(ends, passing, failing).item() == pytest.approx(expected)
    # differences only: shifting every score leaves the loss as it was
    assert rank_loss(ends + 3, passing, failing).item() == pytest.approx(expected)


def test_an_epoch_by_problem_keeps_each_problems_examples_together():
    problems = ["a", "b", "a", "c", "b", "a", "c"]
    order = epoch_order(problems, by_problem=True, rng=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(7))
    runs = [problems[i] for i in order]
    changes = sum(x != y for x, y in itertools.pairwise(runs))
    assert changes == 2  # three problems, each one contiguous run
    flat = epoch_order(problems, by_problem=False, rng=torch.Generator().manual_seed(0))
    assert sorted(flat) == list(range(7))


def test_rank_weight_needs_outcome_labels():
    with pytest.raises(ValueError, match="outcome_labels"):
        PRMTrainConfig(outcome_labels=False, rank_weight=1.0)
    assert PRMTrainConfig(outcome_labels=False, rank_weight=0.0).rank_weight == 0.0


def labelled_records_of_each_kind() -> list[PRMRecord]:
    base = {"prompt": "p", "completions": ["x"], "labels": [1], "m_star": 1, "task_id": "t"}
    return [PRMRecord(**base, passed=True), PRMRecord(**base, passed=False), PRMRecord(**base)]


# ----------------------------------------------------------------------------- line mapping


def test_scores_map_to_lines_when_bpe_tokens_span_newlines(tmp_path):
    prompt = "def f(xs):\n"
    response = "    ys = [x + 1 for x in xs]\n\n    # done\n    return ys\n"
    tokenizer = train_tokenizer([prompt + response] * 50, 300, split_after_newline=False)
    ids, offsets = encode_with_offsets(tokenizer, prompt + response)
    # the tokenizer really merges newlines with what follows: "\n\n   " ends two lines at once
    assert any(tokenizer.decode([i]).startswith("\n\n") for i in ids)

    example = encode(tokenizer, prompt, response, max_len=512, labels=[1, 0, 0, -1], outcome=-1)
    assert example.ids == [*ids, tokenizer.eos_token_id] and example.end == len(ids)
    assert example.outcome == -1
    lines = split_lines(response)
    assert len(example.positions) == 4 and example.positions == sorted(example.positions)
    assert example.positions[0] == example.positions[1]  # the blank line shares the token
    for line, position in zip(lines, example.positions, strict=True):
        start, end = offsets[position]
        assert start <= len(prompt) + line.end_char < end  # the token holding the newline

    # a PRM whose "score" at each position is that position's token id: each line must get
    # the id of its own last token
    backbone = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), 0)
    prm = ValueModel.from_backbone(backbone.transformer)
    prm.forward = lambda input_ids, attention_mask, response_start: input_ids.float()
    (scores,) = score_responses(prm, tokenizer, [prompt], [response])
    assert scores == [float(ids[p]) for p in example.positions]
    # the end score is read at the EOS appended after the response
    assert score_lines_and_ends(prm, tokenizer, [prompt], [response])[1] == [
        float(tokenizer.eos_token_id)
    ]
    # past the window there is no end (and no outcome to train on)
    short = encode(tokenizer, prompt, response, max_len=len(ids), outcome=1)
    assert short.end is None and short.outcome == 0

    # the response starts at its first token (here "\n    ", which the prompt and the
    # response share); the LM loss reads it from there to the EOS, each token predicted from
    # the position before it
    lm = encode(tokenizer, prompt, response, max_len=512, lm=True)
    first = next(i for i, (_, stop) in enumerate(offsets) if stop > len(prompt))
    assert offsets[first][0] < len(prompt)
    assert lm.response_start == example.response_start == first and lm.lm and not example.lm
    batch = collate([lm, example], tokenizer.pad_token_id, skip_neutral=True)
    assert batch.response_start.tolist() == [first, first]
    targets = batch.lm_targets
    assert targets[0, first - 1 : len(lm.ids) - 1].tolist() == lm.ids[first:]
    assert (targets[0, : first - 1] == -100).all() and (targets[0, len(lm.ids) - 1 :] == -100).all()
    assert (targets[1] == -100).all()  # a response not marked for it: no LM loss
    # with no prompt the first token has nothing to be predicted from: the rest still count
    bare = encode(tokenizer, "", response, max_len=512, lm=True)
    bare_targets = collate([bare], tokenizer.pad_token_id, skip_neutral=True).lm_targets[0]
    assert bare.response_start == 0 and bare_targets[: len(bare.ids) - 1].tolist() == bare.ids[1:]


def test_save_and_load_give_identical_scores(tmp_path, tiny_policy):
    from transformers import AutoTokenizer

    prm = ValueModel.from_policy(tiny_policy, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    prompts = ["def f(v0: list[int]) -> list[int]:\n", "def f(v0):\n"]
    responses = ["    v1 = sorted(v0)\n    return v1\n", "    return v0\n"]
    cfg = PRMTrainConfig(init_from=tiny_policy, loss="bce")
    loop = LoopState(done=9, best_step=7)
    folder = save_prm(tmp_path / "prm", prm, tokenizer, cfg, loop, metrics={"prm/auc": 0.5})
    loaded, loaded_tokenizer, loss = load_prm(folder, device="cpu")
    meta = json.loads((folder / PRM_JSON).read_text())
    assert loss == "bce" and (meta["step"], meta["steps_done"]) == (7, 9)
    before = score_responses(prm, tokenizer, prompts, responses, batch_size=1, loss="bce")
    after = score_responses(loaded, loaded_tokenizer, prompts, responses, batch_size=2, loss=loss)
    assert [len(s) for s in after] == [2, 1]
    np.testing.assert_allclose(np.concatenate(after), np.concatenate(before), rtol=0, atol=1e-6)
    assert all(-1 <= s <= 1 for s in np.concatenate(after))  # BCE scores are mapped to [−1, 1]


def test_an_ensemble_scores_by_its_members_mean_and_value_init_takes_its_first(
    tmp_path, tiny_policy
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    prompts = ["def f(v0: list[int]) -> list[int]:\n", "def f(v0):\n"]
    responses = ["    v1 = sorted(v0)\n    return v1\n", "    return v0\n"]
    cfg = PRMTrainConfig(init_from=tiny_policy, ensemble=2)
    members = [ValueModel.from_policy(tiny_policy, seed=seed) for seed in (1, 2)]
    for name, member in zip(("member_0", "member_1"), members, strict=True):
        save_prm(tmp_path / name, member, tokenizer, cfg, LoopState(), metrics={})
    folder = save_ensemble(tmp_path, ["member_1", "member_0"], tokenizer, cfg, 12, {})

    ensemble, loaded_tokenizer, loss = load_prm(folder, device="cpu")
    assert isinstance(ensemble, PRMEnsemble) and loss == "mse"
    scored = [score_lines_and_ends(m, tokenizer, prompts, responses) for m in members]
    lines, ends = score_lines_and_ends(ensemble, loaded_tokenizer, prompts, responses)
    for i, response_lines in enumerate(lines):
        expected = np.mean([s[0][i] for s in scored], axis=0)
        np.testing.assert_allclose(response_lines, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ends, np.mean([s[1] for s in scored], axis=0), atol=1e-6)
    assert not np.allclose(scored[0][1], scored[1][1])  # two heads: the mean is not a member
    # ValueInit starts the critic from the member listed first (the lowest validation loss)
    assert critic_start(folder) == tmp_path / "member_1"
    assert critic_start(tmp_path / "member_0") == tmp_path / "member_0"


# ----------------------------------------------------------------------------- metrics


def brute_force_auc(scores, positive):
    pairs = [
        1.0 if s > t else 0.5 if s == t else 0.0
        for s, p in zip(scores, positive, strict=True)
        for t, q in zip(scores, positive, strict=True)
        if p and not q
    ]
    return float(np.mean(pairs))


def test_auc_matches_hand_computed_values_with_ties():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    # pairs (pos, neg): (.5,.5) tie ½, (.5,.2) 1, (.9,.5) 1, (.9,.2) 1 → 3.5 / 4
    assert roc_auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == 0.875
    assert roc_auc([0.3, 0.3, 0.3], [True, False, True]) == 0.5  # a constant predictor
    assert np.isnan(roc_auc([0.1, 0.2], [True, True]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 4, size=12).tolist()  # many ties
        positive = (rng.random(12) < 0.5).tolist()
        if 0 < sum(positive) < 12:
            assert roc_auc(scores, positive) == pytest.approx(brute_force_auc(scores, positive))


def brute_force_best_of_k(scores, passed, k):
    """Average over every k-subset of the pass rate of its top-scored members (ties: mean)."""
    values = []
    for subset in itertools.combinations(range(len(scores)), k):
        top = max(scores[i] for i in subset)
        values.append(np.mean([passed[i] for i in subset if scores[i] == top]))
    return float(np.mean(values))


def test_best_of_k_is_the_exact_expectation_over_subsets():
    # {3,2}→fail, {3,1}→fail, {2,1}→pass
    assert best_of_k([3, 2, 1], [False, True, True], 2) == pytest.approx(1 / 3)
    # tie between a (pass) and b (fail): {a,b}→½, {a,c}→1, {b,c}→0
    assert best_of_k([1, 1, 0], [True, False, True], 2) == pytest.approx(0.5)
    assert best_of_k([1, 2, 3], [True, False, False], 3) == 0.0  # K = N: the top one
    rng = np.random.default_rng(1)
    for _ in range(10):
        scores = rng.integers(0, 5, size=7).tolist()
        passed = (rng.random(7) < 0.4).tolist()
        for k in (1, 3, 7):
            expected = brute_force_best_of_k(scores, passed, k)
            assert best_of_k(scores, passed, k) == pytest.approx(expected)


def test_rerank_table_and_response_scores():
    def response(problem, passed, scores, neutral=None):
        neutral = neutral or [False] * len(scores)
        return PooledResponse(problem, passed, scores, neutral, record=None)

    pool = [
        response(0, True, [0.9, 0.8]),
        response(0, False, [0.9, -0.5]),
        response(0, False, [-0.2, 0.7, 0.99], neutral=[False, False, True]),
        response(1, False, [0.1]),
        response(1, False, [0.3]),
        response(1, True, [0.2]),
    ]
    assert response_score([-0.2, 0.7, 0.99], [False, False, True], "last") == 0.7
    assert response_score([0.5], [True], "min") == -1.0  # no code line
    assert response_score([0.5], [False], "end", end=-0.25) == -0.25
    assert response_score([0.5], [False], "end", end=None) == -1.0  # end past the window
    metrics, table = rerank_metrics(pool, ks=[2, 3, 4])
    assert set(table) == {"2", "3"}  # K = 4 exceeds the pool of 3
    # K = 3 (the whole pool): min picks the passing response of problem 0 and ranks problem
    # 1's passing response (0.2) second of three → 1 and 0
    assert table["3"]["prm_min"] == pytest.approx(0.5)
    assert table["3"]["random"] == pytest.approx(1 / 3)
    assert table["3"]["oracle"] == 1.0
    assert table["2"]["oracle"] == pytest.approx(pass_at_k(3, 1, 2))
    assert metrics["prm/rerank@3/prm_min"] == table["3"]["prm_min"]
    # without end scores "end" ranks every response alike (−1): a random pick
    assert table["3"]["prm_end"] == pytest.approx(table["3"]["random"])
    # within problems, by min: problem 0 — the passing 0.8 beats −0.5 and −0.2 (2 of 2);
    # problem 1 — the passing 0.2 beats 0.1, not 0.3 (1 of 2): 3 of 4 pairs
    assert metrics["prm/pairwise_min"] == pytest.approx(3 / 4)
    assert metrics["prm/pairwise_end"] == pytest.approx(1 / 2)  # all tied
    assert -1 <= metrics["prm/corr_min"] <= 1 and metrics["prm/pool_pass_rate"] == 1 / 3


def test_rerank_by_the_policys_own_likelihood_is_the_baseline_row():
    def response(problem, passed, prm_score, mean_logprob):
        sampled = replace(
            sample_record(problem, 0, "sampled", 0, passed), mean_logprob=mean_logprob
        )
        return PooledResponse(problem, passed, [prm_score], [False], sampled)

    # the PRM prefers the failing responses, the policy the passing ones
    pool = [
        response(0, True, 0.1, -0.2),
        response(0, False, 0.9, -1.5),
        response(1, False, 0.8, -0.1),
        response(1, True, 0.2, -0.9),
    ]
    metrics, table = rerank_metrics(pool, ks=[2])
    assert table["2"]["prm_min"] == 0.0
    # problem 0: the policy picks the passing response (1); problem 1: the failing one (0)
    assert table["2"]["policy_logprob"] == pytest.approx(0.5)
    assert metrics["prm/rerank@2/policy_logprob"] == pytest.approx(0.5)
    assert metrics["prm/pairwise_policy_logprob"] == pytest.approx(0.5)
    assert metrics["prm/pairwise_min"] == 0.0
    # an empty completion (no log-probability) is the policy's last choice, and left out of
    # the correlation rather than turning it into NaN
    metrics, table = rerank_metrics([*pool[:3], response(1, True, 0.2, None)], ks=[2])
    assert table["2"]["policy_logprob"] == pytest.approx(0.5)
    assert -1 <= metrics["prm/corr_policy_logprob"] <= 1
    # a pool of records without the policy's log-probabilities has no such row
    bare = [PooledResponse(r.problem_index, r.passed, r.line_scores, r.neutral, None) for r in pool]
    assert "policy_logprob" not in rerank_metrics(bare, ks=[2])[1]["2"]


def test_first_error_calibration_and_label_metrics():
    assert first_error([0.5, -0.1, -0.9], [False, False, False]) == 2
    assert first_error([0.5, -0.1, -0.9], [False, True, False]) == 3  # neutral lines skipped
    assert first_error([0.5, 0.1], [False, False]) is None

    curve, ece = calibration_curve([-1.0, -0.9, 0.9, 1.0], [False, True, True, True], bins=2)
    assert [(c["lo"], c["count"], c["observed"]) for c in curve] == [(0.0, 2, 0.5), (0.5, 2, 1.0)]
    assert ece == pytest.approx(0.5 * abs(0.025 - 0.5) + 0.5 * abs(0.975 - 1.0))

    metrics, _, roc = label_metrics(
        scores=[[0.8, 0.0, -0.4, -0.6], [0.7, 0.9]],
        labels=[[1, 0, 1, -1], [1, 1]],
        neutral=[[False, True, False, False], [False, False]],
        bins=4,
    )
    assert metrics["prm/n_lines"] == 5  # the neutral line is left out
    assert metrics["prm/accuracy"] == pytest.approx(4 / 5)  # −0.4 on a +1 line is wrong
    assert metrics["prm/auc"] == 1.0
    assert metrics["prm/n_failing"] == 1
    assert metrics["prm/first_error_exact"] == 0.0  # guessed line 3, truth line 4
    assert metrics["prm/first_error_within1"] == 1.0
    assert roc[0] == (0.0, 0.0) and roc[-1] == (1.0, 1.0)


def test_the_roc_curve_has_the_auc_as_its_area():
    rng = np.random.default_rng(2)
    for size in (12, 500):
        scores = rng.integers(0, 6, size=size).tolist()  # ties: diagonal steps
        positive = (rng.random(size) < 0.6).tolist()
        points = roc_curve(scores, positive)
        area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))
        assert area == pytest.approx(roc_auc(scores, positive))
    assert roc_curve([0.1, 0.9, 0.5], [False, True, True]) == [(0, 0), (0, 0.5), (0, 1), (1, 1)]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("rank_weight", [0.0, 1.0])  # the paper's loss, and with ranking
def test_a_tiny_prm_beats_a_constant_predictor(
    benchmark_records, tiny_policy, tmp_path, rank_weight
):
    cfg = PRMTrainConfig(
        init_from=tiny_policy,
        rank_weight=rank_weight,
        steps=200,
        batch_size=16,
        lr=2e-3,
        warmup_steps=10,
        eval_every=25,
        patience=3,
        val_fraction=0.2,
        device="cpu",
    )
    reporter = MemoryReporter()
    result = train_prm(cfg, benchmark_records, reporter, tmp_path)

    train_losses = [v for _, v in reporter.series("losses/prm_train")]
    assert train_losses[-1] < train_losses[0]
    assert reporter.series("losses/prm_val")[0][0] == 25
    assert "ETA" in reporter.messages[-1]
    assert result.metrics["prm/auc"] > 0.7, result.metrics  # a constant predictor has 0.5
    # passing vs failing programs: here the paper's loss barely separates them (0.55) and the
    # ranking loss does (0.81; line AUC 0.71 → 0.88)
    min_end_auc = {0.0: 0.5, 1.0: 0.7}[rank_weight]
    assert result.metrics["prm/end_auc"] > min_end_auc, result.metrics
    assert result.best_val_loss == min(v for _, v in reporter.series("losses/prm_val"))
    # the end score's within-problem AUC is a curve beside the validation loss, and at the
    # best step it is the final evaluation's (the same weights)
    curve = dict(reporter.series("val/end_pairwise_auc"))
    assert list(curve) == [step for step, _ in reporter.series("losses/prm_val")]
    assert curve[result.best_step] == pytest.approx(result.metrics["prm/end_pairwise_auc"])
    assert result.checkpoint.name == f"step_{result.best_step:06d}"
    assert (result.checkpoint / PRM_JSON).is_file()
    summary = result.summary()
    assert summary["n_val_problems"] == 80 and summary["calibration"] and summary["roc"]
    assert reporter.series("prm/auc") == [(result.best_step, result.metrics["prm/auc"])]


def test_a_failing_response_of_comments_only_trains_the_end_score(
    benchmark_records, tiny_policy, tmp_path
):
    cfg = PRMTrainConfig(init_from=tiny_policy, steps=1, eval_every=1, device="cpu")
    train, _ = split_by_problem(benchmark_records, cfg.val_fraction, cfg.seed)
    comments = PRMRecord(
        prompt=train[0].prompt,
        completions=["    # sorted, as asked", "    # done"],
        labels=[0, 0],  # neutral: no line to judge
        m_star=0,
        passed=False,
        task_id=train[0].task_id,
    )
    kept = train_prm(cfg, benchmark_records, MemoryReporter(), tmp_path / "a").counts
    with_comments = [*benchmark_records, comments]
    counts = train_prm(cfg, with_comments, MemoryReporter(), tmp_path / "b").counts
    assert counts["n_train_records"] == kept["n_train_records"] + 1
    no_outcome = cfg.model_copy(update={"outcome_labels": False, "rank_weight": 0.0})
    counts = train_prm(no_outcome, with_comments, MemoryReporter(), tmp_path / "c").counts
    assert counts["n_train_records"] == kept["n_train_records"]  # nothing left to learn from


def lm_loss_of_passing_responses(prm: ValueModel, records: list[PRMRecord], policy: str) -> float:
    """The next-token loss of the passing responses through the policy's LM head."""
    tokenizer = AutoTokenizer.from_pretrained(policy)
    passing = [r for r in records if r.passed]
    examples = [encode(tokenizer, r.prompt, r.response, 512, lm=True) for r in passing]
    batch = collate(examples, tokenizer.pad_token_id, skip_neutral=True)
    with torch.no_grad():
        _, hidden = prm(
            batch.input_ids, batch.attention_mask, batch.response_start, with_hidden=True
        )
        logits = hidden @ policy_lm_head(prm, policy).T
    return F.cross_entropy(logits.flatten(0, 1), batch.lm_targets.flatten()).item()


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory, benchmark_records, tiny_policy) -> str:
    """The tiny policy after a short SFT on the passing responses (through its own LM head)."""
    policy = GPT2LMHeadModel.from_pretrained(tiny_policy)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    passing = [r for r in benchmark_records if r.passed]
    examples = [encode(tokenizer, r.prompt, r.response, 512, lm=True) for r in passing[:64]]
    batch = collate(examples, tokenizer.pad_token_id, skip_neutral=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(40):
        logits = policy(batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch.lm_targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return str(save_policy(policy, tokenizer, tmp_path_factory.mktemp("sft")))


def test_the_lm_loss_keeps_the_policys_next_token_predictions(
    benchmark_records, sft_policy, tmp_path
):
    policy_dir = sft_policy
    passing = [r for r in benchmark_records if r.passed]
    start = lm_loss_of_passing_responses(ValueModel.from_policy(policy_dir), passing, policy_dir)

    # then PRMs train from it at a high learning rate, without and with the LM loss
    after = {}
    for lm_weight in (0.0, 1.0):
        cfg = PRMTrainConfig(
            init_from=policy_dir,
            lm_weight=lm_weight,
            steps=40,
            batch_size=16,
            lr=3e-3,
            warmup_steps=0,
            eval_every=40,
            device="cpu",
        )
        reporter = MemoryReporter()
        result = train_prm(cfg, benchmark_records, reporter, tmp_path / f"lm{lm_weight}")
        prm = ValueModel.load(result.checkpoint)
        after[lm_weight] = lm_loss_of_passing_responses(prm, passing, policy_dir)
        # its own curve, beside the PRM's loss (which leaves it out)
        assert len(reporter.series("losses/prm_lm")) == (4 if lm_weight else 0)
    # the scalar loss alone erases much of what the policy predicted; the LM loss keeps it
    assert after[0.0] > 1.5 * start and after[1.0] < 0.5 * after[0.0], (start, after)


def test_the_likelihood_input_is_the_least_likely_response_token_so_far(sft_policy):
    plain = ValueModel.from_policy(sft_policy, seed=3)
    prm = ValueModel.from_policy(sft_policy, seed=3, likelihood=True)
    policy = GPT2LMHeadModel.from_pretrained(sft_policy)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    start = torch.tensor([2, 4])  # each response's first token; the second row is padded
    with torch.no_grad():
        # the weight starts at 0: the values are the head's alone
        torch.testing.assert_close(prm(ids, mask, start), plain(ids, mask), rtol=0, atol=0)
        prm.likelihood.weight.fill_(0.5 / LIKELIHOOD_SCALE)
        added = prm(ids, mask, start) - plain(ids, mask)
        logp = torch.log_softmax(policy(ids, attention_mask=mask).logits, -1)
    for b in range(2):
        least = 0.0  # nothing before the response counts: the prompt is not the response's
        for t in range(ids.shape[1]):
            if t >= start[b] and mask[b, t]:
                least = min(least, float(logp[b, t - 1, ids[b, t]]))
            assert float(added[b, t]) == pytest.approx(0.5 * least, abs=1e-5), (b, t)
    assert float(added.min()) < 0
    with pytest.raises(ValueError, match="response_start"):
        prm(ids, mask)


def test_a_prm_learns_to_read_the_policys_likelihood_and_leaves_the_policy_frozen(
    benchmark_records, sft_policy, tmp_path
):
    cfg = PRMTrainConfig(
        init_from=sft_policy,
        policy_likelihood=True,
        steps=30,
        batch_size=16,
        lr=3e-3,
        warmup_steps=0,
        eval_every=30,
        device="cpu",
    )
    result = train_prm(cfg, benchmark_records, MemoryReporter(), tmp_path)
    prm, tokenizer, _ = load_prm(result.checkpoint, device="cpu")
    assert isinstance(prm, ValueModel) and prm.likelihood is not None
    # a corrupted line reads a variable the SFT policy finds unlikely there: a positive weight
    assert prm.likelihood.learnt() > 0
    assert result.metrics["prm/likelihood_weight"] == pytest.approx(prm.likelihood.learnt())
    assert not prm.likelihood.training  # load_prm's eval mode reaches the frozen policy
    frozen = GPT2LMHeadModel.from_pretrained(sft_policy).state_dict()
    saved = prm.likelihood.policy.state_dict()
    assert all(torch.equal(saved[name], tensor) for name, tensor in frozen.items())
    assert (result.checkpoint / LIKELIHOOD_DIR / "model.safetensors").is_file()
    # the scoring API reads it as training did: the validation metrics come back exactly
    _, val = split_by_problem(benchmark_records, cfg.val_fraction, cfg.seed)
    scores = score_responses(prm, tokenizer, [r.prompt for r in val], [r.response for r in val])
    flat = [
        (score, label)
        for record, line_scores in zip(val, scores, strict=True)
        for score, label in zip(line_scores, record.labels, strict=True)
        if label
    ]
    auc = roc_auc([score for score, _ in flat], [label > 0 for _, label in flat])
    assert auc == pytest.approx(result.metrics["prm/auc"])


def test_an_untied_policys_lm_head_is_its_own_frozen_output_layer(tmp_path):
    tokenizer = train_tokenizer(["def f(v0):\n    return v0\n"] * 20, 300)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2)
    config.tie_word_embeddings = False
    policy = GPT2LMHeadModel(config)
    folder = save_policy(policy, tokenizer, tmp_path / "untied")
    prm = ValueModel.from_policy(folder)
    head = policy_lm_head(prm, str(folder))
    assert torch.equal(head, policy.lm_head.weight) and not head.requires_grad
    assert not torch.equal(head, prm.backbone.get_input_embeddings().weight)
    tied = ValueModel.from_policy(tiny_policy_folder(tmp_path, tokenizer))
    assert policy_lm_head(tied, None) is tied.backbone.get_input_embeddings().weight

    # read alone from a sharded policy too, and a folder without it names the field to change
    sharded = tmp_path / "sharded"
    policy.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert torch.equal(output_layer(sharded), policy.lm_head.weight)
    weights = folder / "model.safetensors"
    save_file({"transformer.wte.weight": policy.transformer.wte.weight}, weights)  # no lm_head
    with pytest.raises(ValueError, match="lm_weight"):
        output_layer(folder)
    weights.unlink()  # or no safetensors at all
    with pytest.raises(ValueError, match="lm_weight"):
        output_layer(folder)


def tiny_policy_folder(tmp_path, tokenizer) -> str:
    model = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=16, n_head=2), 0)
    return str(save_policy(model, tokenizer, tmp_path / "tied"))


def test_train_prm_needs_an_initial_policy(benchmark_records, tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        train_prm(PRMTrainConfig(), benchmark_records, MemoryReporter(), tmp_path)


def test_a_record_of_one_problem_cannot_be_split():
    record = PRMRecord(prompt="p", completions=["a"], labels=[1], m_star=1, task_id="t")
    with pytest.raises(ValueError, match="two or more"):
        split_by_problem([record, record], 0.5, 0)
