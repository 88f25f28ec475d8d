"""Benchmark of the tiny policy on this machine's CPU: training tokens/s, sampling tokens/s, and
held-out pass@1 by difficulty after the default SFT budget on the default embedded benchmark.

Baseline, in the same run and on the same prompts: transformers' ``model.generate`` (sampling
at temperature 1 with the KV cache, stopping at EOS) against our ``HFSampler``, which also
watches for dedents and returns per-token log-probs. Training has no baseline: its figure is
tokens processed (prompt and reference) per second of optimizer steps.

    python -m bench.models                # the default budget (minutes on 2 cores)
    python -m bench.models --steps 50 --n-test 60 --sample-prompts 64    # a smoke run

The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.benchmark import BenchmarkConfig, generate
from models.policy import load_policy
from models.policy_config import SamplingParams, SFTConfig
from models.reporting import PrintingReporter
from models.sampling import HFSampler
from models.sft import train_sft
from workers.problemsets import sandbox_run_batch


def generate_baseline(model, tokenizer, prompts: list[str], batch_size: int, seed: int) -> int:
    """Tokens ``model.generate`` samples for ``prompts`` (up to and including EOS)."""
    torch.manual_seed(seed)
    tokens = 0
    for first in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[first : first + batch_size], return_tensors="pt", padding=True
        )  # left-padded
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                max_new_tokens=SamplingParams().max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]  # (B, N)
        # count each row's tokens through its first EOS (after it generate only pads)
        is_eos = new == tokenizer.eos_token_id
        ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, new.shape[1])
        tokens += int(ends.sum())
    return tokens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=SFTConfig().steps, help="SFT steps")
    parser.add_argument("--n-test", type=int, default=BenchmarkConfig().n_test)
    parser.add_argument("--sample-prompts", type=int, default=256, help="prompts timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). The tiny model's matrices are too small "
        "to split well, and on a shared machine spinning threads cost far more than they gain",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    bench_cfg = BenchmarkConfig(n_test=args.n_test)
    problems = generate(bench_cfg)
    train = [p for p in problems if p.split == "train"]
    test = [p for p in problems if p.split == "test"]
    cfg = SFTConfig(steps=args.steps, seed=args.seed, device="cpu")
    print(
        f"SFT of the tiny model: {cfg.steps} steps of {cfg.batch_size} on {len(train)} train "
        f"problems, then {len(test)} held-out problems ({torch.get_num_threads()} threads)",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = train_sft(
            cfg, train, test, PrintingReporter(), sandbox_run_batch, out_dir=Path(folder)
        )
        sft_seconds = time.perf_counter() - started
        model, tokenizer = load_policy(result.checkpoint, device="cpu")

    prompts = [p.prompt for p in test[: args.sample_prompts]]
    sampler = HFSampler(model, tokenizer, batch_size=64)
    started = time.perf_counter()
    generations = sampler.generate(prompts, SamplingParams(seed=args.seed))
    ours_s = time.perf_counter() - started
    ours_tokens = sum(len(g.token_ids) for g in generations)
    started = time.perf_counter()
    baseline_tokens = generate_baseline(model, tokenizer, prompts, 64, args.seed)
    baseline_s = time.perf_counter() - started

    assert result.eval is not None
    metrics, by_difficulty = result.eval.metrics, result.eval.by_difficulty
    summary = result.summary()
    print(f"\n{'difficulty':>10} {'problems':>8} {'greedy':>8} {'sampled':>8}")
    for difficulty, values in by_difficulty.items():
        print(
            f"{difficulty:>10} {values['n_problems']:>8.0f} {values['pass@1_greedy']:>8.1%} "
            f"{values['pass@1_sampled']:>8.1%}"
        )
    print(
        f"{'all':>10} {len(test):>8} {metrics['eval/pass@1_greedy']:>8.1%} "
        f"{metrics['eval/pass@1_sampled']:>8.1%}\n"
    )
    ours_rate, baseline_rate = ours_tokens / ours_s, baseline_tokens / baseline_s
    train_rate = summary["train_tokens_per_s"]
    print(f"training   {train_rate:>10,.0f} tokens/s  ({sft_seconds:.0f}s SFT + final eval)")
    print(f"sampling   {ours_rate:>10,.0f} tokens/s  {len(prompts) / ours_s:.1f} problems/s (ours)")
    print(f"baseline   {baseline_rate:>10,.0f} tokens/s  (transformers generate)")
    figures = {
        "bench": "models",
        "heldout_pass1": round(metrics["eval/pass@1_sampled"], 4),
        "heldout_pass1_greedy": round(metrics["eval/pass@1_greedy"], 4),
        "by_difficulty": {str(d): round(v["pass@1_sampled"], 4) for d, v in by_difficulty.items()},
        "n_test": len(test),
        "sft_steps": cfg.steps,
        "sft_seconds": round(sft_seconds, 1),
        "train_tokens_per_s": summary["train_tokens_per_s"],
        "sample_tokens_per_s": round(ours_rate, 1),
        "sample_problems_per_s": round(len(prompts) / ours_s, 2),
        "baseline_tokens_per_s": round(baseline_rate, 1),
        "ratio": round(ours_rate / baseline_rate, 3),
        "n_parameters": summary["n_parameters"],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
