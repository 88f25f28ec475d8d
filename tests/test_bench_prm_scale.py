"""bench/prm_scale.py end to end at a toy size: a tiny policy (a few SFT steps, so that it writes
lines to label) as the first backbone, a second size SFT-trained from scratch, one pool scored
by both; then exact labels plus synthetic mistakes and a pool from the train split. Checks the
wiring and the report, never a figure (DESIGN §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BWRAP, require


def test_bench_prm_scale_scores_one_pool_with_a_prm_per_size(
    tiny_policy: str, tmp_path: Path
) -> None:
    require(BWRAP.exists(), f"{BWRAP} is missing: the sandbox cannot run untrusted code")
    from bench.prm_scale import main
    from models.benchmark import BenchmarkConfig, generate
    from models.policy_config import SFTConfig
    from models.reporting import MemoryReporter
    from models.sft import train_sft
    from workers.sandbox import run_batch

    train = generate(BenchmarkConfig(n_train=64, n_test=0))
    policy = train_sft(
        SFTConfig(
            init_from=tiny_policy, steps=40, eval_every=0, final_eval=False, checkpoint_every=0
        ),
        train,
        [],
        MemoryReporter(),
        run_batch,
        out_dir=tmp_path / "sft",
    ).checkpoint
    rows_file = tmp_path / "rows.jsonl"
    figures = main(
        [
            "--device", "cpu",
            "--policy", str(policy),
            "--sizes", "1x32x2,1x48x2",  # the fixture's shape, then a new one
            "--train-problems", "12",
            "--label-problems", "4",
            "--responses", "2",
            "--k", "1",
            "--synthetic", "0",
            "--pool-problems", "2",
            "--pool-samples", "4",
            "--sft-steps", "2",
            "--prm-steps", "2",
            "--prm-batch", "4",
            "--batch-size", "8",
            "--out", str(rows_file),
        ]
    )  # fmt: skip
    assert figures["data"]["label_problems"] == 4 and figures["data"]["records"] == 8
    assert figures["data"]["pool"] == 8
    assert [row["size"] for row in figures["rows"]] == ["1x32x2", "1x48x2"]
    first, second = figures["rows"]
    assert first["sft_s"] == 0.0 and second["sft_s"] > 0  # the policy is the first's backbone
    assert list(first["best_of"]) == ["4"]  # only the K a pool of 4 per problem allows
    assert set(first["best_of"]["4"]) >= {"prm_end", "random", "oracle", "policy_logprob"}
    assert [json.loads(line)["size"] for line in rows_file.read_text().splitlines()] == [
        "1x32x2",
        "1x48x2",
    ]
    assert figures["skipped"] == [] and first["lm_weight"] == 0.0
    assert first["policy_likelihood"] is True  # prm-train's default

    # exact labels, and a pool of train problems that the labelling leaves out
    figures = main(
        [
            "--device", "cpu",
            "--policy", str(policy),
            "--sizes", "1x32x2",
            "--train-problems", "42",  # the toy policy writes many empty responses: enough lines
            "--labels", "ground-truth",
            "--synthetic", "2",
            "--synthetic-problems", "30",
            "--misplaced-arguments", "1",
            "--seed", "1",
            "--prm-seed", "3",
            "--ensemble", "2",
            "--lm-weight", "1",
            "--no-policy-likelihood",
            "--responses", "2",
            "--pool-split", "train",
            "--pool-problems", "2",
            "--pool-samples", "4",
            "--prm-steps", "2",
            "--prm-batch", "4",
            "--batch-size", "8",
        ]
    )  # fmt: skip
    assert figures["data"]["labels"] == "ground-truth" and figures["data"]["pool_split"] == "train"
    assert figures["data"]["label_problems"] == 40 and figures["data"]["seed"] == 1
    # 2 sampled responses per labelled problem, the reference, 2 one-line mistakes and at most
    # one misplaced argument of 30 (none where a problem has one number)
    synthetic = figures["data"]["synthetic"]
    assert 30 * 3 < synthetic <= 30 * 4 and figures["data"]["records"] == 40 * 2 + synthetic
    assert figures["data"]["pool"] == 8
    # an ensemble of two PRMs on the policy as backbone: a row per member, then the mean's
    assert [(row["size"], row["prm_seed"]) for row in figures["rows"]] == [
        ("1x32x2", 3),
        ("1x32x2", 4),
        ("1x32x2", "mean"),
    ]
    assert set(figures["rows"][2]["best_of"]["4"]) >= {"prm_end", "random", "oracle"}
    recipe = {(row["lm_weight"], row["policy_likelihood"]) for row in figures["rows"]}
    assert recipe == {(1.0, False)}


def test_a_size_that_is_not_layers_by_width_by_heads_names_the_format() -> None:
    from bench.prm_scale import parse_shape

    assert parse_shape("8x512x8").n_embd == 512
    with pytest.raises(SystemExit, match="LAYERSxWIDTHxHEADS"):
        parse_shape("8x512")
