"""End to end, through the real sandbox: baseline PPO raises the pass rate of a policy that is
right half the time on a problem it can learn. This test can fail: if the advantages had the
wrong sign, the ratio were inverted, or rewards missed their tokens, the pass rate would not
climb."""

from __future__ import annotations

import os

from models.policy_config import SFTConfig, TinyModelConfig
from models.ppo import train_ppo
from models.ppo_config import PPOConfig
from models.problems import Problem
from models.reporting import MemoryReporter
from models.sft import train_sft
from tests.conftest import require

PROMPT = 'def f(xs):\n    """Add one to every element."""\n    ys = [x + 1 for x in xs]\n'
TESTS = ["assert f([1, 2]) == [2, 3]", "assert f([]) == []", "assert f([0]) == [1]"]


def problem(task_id: str, reference: str) -> Problem:
    return Problem(task_id=task_id, prompt=PROMPT, tests=TESTS, reference=reference)


def test_baseline_ppo_raises_the_pass_rate(tmp_path):
    require(os.path.exists("/usr/bin/bwrap"), "bubblewrap is not installed")
    from workers.sandbox import run_batch

    # SFT on a right and a wrong body in equal measure: the policy starts near 50% pass rate
    mixed = [problem("right", "    return ys\n"), problem("wrong", "    return xs\n")]
    sft = train_sft(
        SFTConfig(
            steps=80,
            batch_size=8,
            lr=3e-3,
            warmup_steps=5,
            eval_every=0,
            final_eval=False,
            checkpoint_every=0,
            tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=2, vocab_size=300),
        ),
        mixed,
        [],
        MemoryReporter(),
        run_batch,
        out_dir=tmp_path / "sft",
    )
    reporter = MemoryReporter()
    train_ppo(
        PPOConfig(
            variant="baseline",
            steps=16,
            problems_per_step=4,
            samples_per_problem=8,
            minibatch_size=16,
            max_new_tokens=12,
            policy_lr=1e-3,
            critic_lr=1e-3,
            kl_coef=0.0,
            eval_every=0,
            eval_problems=1,
            checkpoint_every=0,
        ),
        policy_dir=sft.checkpoint,
        prm_dir=None,
        train_problems=[mixed[0]],
        eval_problems=[mixed[0]],
        run_batch=run_batch,
        reporter=reporter,
        out_dir=tmp_path / "ppo",
    )
    pass_rate = [value for _, value in reporter.series("rollout/pass_rate")]
    first, last = sum(pass_rate[:3]) / 3, sum(pass_rate[-3:]) / 3
    assert 0.15 < first < 0.85, f"the SFT start should be mixed, got {pass_rate}"
    assert last >= first + 0.2, f"PPO did not raise the pass rate: {pass_rate}"
