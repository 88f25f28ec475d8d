"""bench/rl.py end to end at a toy size: a random tiny policy and PRM, two timed steps of our PPO
and of TRL's GRPOTrainer, a one-step learning run of each trainer and the held-out evaluations.
Checks the wiring and the report, never a timing (DESIGN §6). The PRM is given: a random policy
writes almost only empty responses (its first token usually dedents), which label nothing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import BWRAP, require


def test_bench_rl_runs_both_trainers_and_reports(
    tiny_policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require(
        importlib.util.find_spec("trl") is not None, "TRL is missing: pip install -e '.[bench]'"
    )
    require(BWRAP.exists(), f"{BWRAP} is missing: the sandbox cannot run untrusted code")
    from bench.rl import main
    from models.policy import load_policy
    from models.value_model import ValueModel

    _, tokenizer = load_policy(tiny_policy, device="cpu")
    prm = ValueModel.from_policy(tiny_policy, seed=0).save(tmp_path / "prm", tokenizer)
    figures = main(
        [
            "--policy", tiny_policy,
            "--n-train", "40",
            "--n-test", "4",
            "--prm", str(prm),
            "--throughput-steps", "2",
            "--minutes", "0.001",  # one step each: the budget is checked after every step
            "--problems-per-step", "2",
            "--generations", "2",
            "--minibatch-size", "2",
            "--max-new-tokens", "16",
        ]
    )  # fmt: skip

    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == figures
    assert figures["ratio"] == pytest.approx(
        figures["ours_tokens_per_s"] / figures["trl_tokens_per_s"], rel=0.05
    )
    for key in ("pass1_ours", "pass1_baseline", "pass1_trl", "pass1_sft"):
        assert 0.0 <= figures[key] <= 1.0
    assert set(figures["learning"]) == {"trl", "baseline", "ours"}
    assert all(run["steps"] == 1 for run in figures["learning"].values())
    # real tokens only: at most the cap (16) for each of a step's 4 completions, padding excluded
    for side in ("ours", "trl"):
        assert 0 < figures[f"{side}_tokens_per_step"] <= 4 * 16
