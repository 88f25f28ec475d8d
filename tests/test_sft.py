"""SFT of the tiny model on the embedded benchmark: a short budget lowers the loss, reports
progress with an ETA and namespaced metrics, leaves a checkpoint plain transformers loads, and
resumes exactly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from models.benchmark import BenchmarkConfig, generate
from models.policy_config import EvalConfig, SFTConfig, TinyModelConfig
from models.reporting import MemoryReporter
from models.sft import STATE_JSON, STATE_PT, lr_at, train_sft

SMALL_MODEL = TinyModelConfig(n_layer=2, n_embd=64, n_head=2, vocab_size=320)


def never_passes(requests):
    """A stand-in sandbox: SFT's own logic does not depend on verdicts."""
    return [
        SimpleNamespace(status="failed", passed=0, total=1, error_line=None, detail="stub")
        for _ in requests
    ]


@pytest.fixture(scope="module")
def problems():
    problems = generate(BenchmarkConfig(n_train=300, n_test=12, min_steps=2, max_steps=4))
    return [p for p in problems if p.split == "train"], [p for p in problems if p.split == "test"]


def test_a_short_run_lowers_the_loss_and_saves_a_loadable_checkpoint(problems, tmp_path):
    train, test = problems
    cfg = SFTConfig(
        steps=40,
        batch_size=16,
        lr=3e-3,
        warmup_steps=5,
        tiny=SMALL_MODEL,
        log_every=5,
        eval_every=20,
        eval_subset=4,
        eval=EvalConfig(max_new_tokens=48, batch_size=16),
    )
    reporter = MemoryReporter()
    result = train_sft(cfg, train, test, reporter, never_passes, out_dir=tmp_path)

    losses = [value for _, value in reporter.series("losses/sft")]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0]
    assert [step for step, _ in reporter.series("eval/pass@1_sampled")] == [20, 40]
    assert reporter.series("eval/pass@1_greedy")[-1] == (40, 0.0)  # the stub fails everything
    assert any(
        name.startswith("eval/pass@1_sampled/difficulty_") for _, name, _ in reporter.history
    )
    assert "ETA" in reporter.messages[0] and reporter.fractions[-1] == 1.0

    assert result.step == 40 and result.checkpoint == tmp_path / "step_000040"
    assert (result.checkpoint / STATE_PT).is_file() and (result.checkpoint / STATE_JSON).is_file()
    assert result.eval is not None and len(result.eval.records) == 2 * len(test)
    summary = result.summary()
    assert summary["train_tokens_per_s"] > 0 and summary["eval"]["metrics"]["eval/n_problems"] == 12
    model = AutoModelForCausalLM.from_pretrained(result.checkpoint)
    assert model.config.n_layer == 2


def test_resuming_from_a_checkpoint_is_exact(problems, tmp_path):
    train, _ = problems
    cfg = SFTConfig(
        steps=6,
        batch_size=4,
        tiny=SMALL_MODEL,
        log_every=1,
        eval_every=0,
        final_eval=False,
        checkpoint_every=3,
    )
    straight = MemoryReporter()
    full = train_sft(cfg, train, [], straight, never_passes, out_dir=tmp_path / "a")
    resumed_reporter = MemoryReporter()
    middle = tmp_path / "a" / "step_000003"
    resumed = train_sft(
        cfg.model_copy(update={"resume_from": str(middle)}),
        train,
        [],
        resumed_reporter,
        never_passes,
        out_dir=tmp_path / "b",
    )
    assert resumed.step == 6
    assert resumed_reporter.series("losses/sft") == straight.series("losses/sft")[3:]
    a = AutoModelForCausalLM.from_pretrained(full.checkpoint).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed.checkpoint).state_dict()
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=0)


def test_the_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = SFTConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
