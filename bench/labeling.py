"""Benchmark of PRM labelling: binary search (paper Alg. 1) against the linear scan that probes
every prefix, on the same failing responses of the tiny SFT policy, for K = 4, 8, 16.

For each K and search: completions sampled per response (all, and on responses of ≥ 8 lines),
agreement of m* with the linear scan and with the embedded benchmark's ground truth (the first
wrong line), monotonicity violations seen by the linear scan, and wall time split into sampling
and execution. The two searches sample independently, so part of their disagreement is the
noise of best-of-K; the binary search is therefore also *replayed* on the linear scan's own
probe outcomes, where it must agree wherever the scan was monotone (the algorithm alone).

    python -m bench.labeling                  # trains the tiny SFT policy first (default budget)
    python -m bench.labeling --policy FOLDER  # reuse a checkpoint
    python -m bench.labeling --policy FOLDER --n-failing 30 --ks 4   # a smoke run

The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.benchmark import BenchmarkConfig, generate
from models.labeling import (
    LabeledResponse,
    LabelingConfig,
    Response,
    Timing,
    binary_search_m_star,
    label_responses,
    m_star_in_lines,
    m_star_of_labels,
    sample_responses,
)
from models.lines import split_lines
from models.policy import load_policy
from models.policy_config import SFTConfig
from models.reporting import PrintingReporter
from models.sampling import HFSampler
from models.sft import train_sft
from workers.problemsets import sandbox_run_batch

LONG = 8  # lines: the responses the goal is stated for


def mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def replay(record: LabeledResponse) -> tuple[int, int]:
    """(m*, completions) of the binary search run on a linear scan's probe outcomes."""
    probes = record.probes  # [m in lines, ok, completions], in the order c = 0 .. C-1
    c_star, visited = binary_search_m_star(len(probes), lambda c: probes[c][1])
    return m_star_in_lines(split_lines(record.response), c_star), sum(probes[c][2] for c in visited)


def summarise(
    m_stars: list[int], costs: list[int], linear: list[LabeledResponse], long: list[bool]
) -> dict[str, float]:
    """Cost and agreement of one search's results, beside the linear scan's."""
    agree = [m == r.m_star for m, r in zip(m_stars, linear, strict=True)]
    offsets = [
        m - m_star_of_labels(r.ground_truth or []) for m, r in zip(m_stars, linear, strict=True)
    ]
    return {
        "completions": mean(costs),
        "completions_long": mean(c for c, is_long in zip(costs, long, strict=True) if is_long),
        "agree_linear": mean(agree),
        "agree_linear_monotone": mean(a for a, r in zip(agree, linear, strict=True) if r.monotone),
        "gt_exact": mean(offset == 0 for offset in offsets),
        "gt_mean_offset": mean(offsets),
    }


def failing_responses(sampler, problems, cfg: LabelingConfig, n: int, policy: str):
    """One response per problem, block after block, until ``n`` of them fail."""
    responses: list[Response] = []
    sampled = 0
    for first in range(0, len(problems), 256):
        block = problems[first : first + 256]
        batch = sample_responses(
            block, sampler, sandbox_run_batch, cfg, checkpoint=policy, seed=cfg.seed + first
        )
        sampled += len(batch)
        responses += [r for r in batch if r.result.status != "passed"]
        if len(responses) >= n:
            break
    return responses[:n], sampled


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="a policy folder (default: train the tiny SFT model)")
    parser.add_argument("--sft-steps", type=int, default=SFTConfig().steps)
    parser.add_argument("--n-failing", type=int, default=240, help="failing responses labelled")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--chunk-size", type=int, default=LabelingConfig().chunk_size)
    parser.add_argument("--batch-size", type=int, default=128, help="sampler rows per forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded CPU)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    problems = [p for p in generate(BenchmarkConfig()) if p.split == "train"]
    with tempfile.TemporaryDirectory() as folder:
        policy = args.policy
        if policy is None:
            cfg = SFTConfig(steps=args.sft_steps, seed=args.seed, device="cpu", final_eval=False)
            print(f"SFT of the tiny model: {cfg.steps} steps", file=sys.stderr)
            result = train_sft(
                cfg, problems, [], PrintingReporter(), sandbox_run_batch, out_dir=Path(folder)
            )
            policy = str(result.checkpoint)
        model, tokenizer = load_policy(policy, device="cpu")
    sampler = HFSampler(model, tokenizer, batch_size=args.batch_size)

    base = LabelingConfig(n_responses=1, seed=args.seed)
    responses, sampled = failing_responses(sampler, problems, base, args.n_failing, policy)
    lengths = [len(split_lines(r.text)) for r in responses]
    long = [n >= LONG for n in lengths]
    print(
        f"{len(responses)} failing responses of {sampled} sampled, {sum(long)} of ≥ {LONG} "
        f"lines, {mean(lengths):.1f} lines on average; policy {policy}",
        file=sys.stderr,
    )

    # ---- both searches on the same responses, for each K; then the replay ----
    table: dict[int, dict[str, dict[str, float]]] = {}
    for k in args.ks:
        cfg = base.model_copy(update={"k": k, "chunk_size": min(args.chunk_size, k)})
        runs = {}
        for mode in ("linear", "binary"):
            timing = Timing()
            started = time.perf_counter()
            records = label_responses(
                responses,
                sampler,
                sandbox_run_batch,
                cfg.model_copy(update={"search": mode}),
                seed=args.seed + k,
                timing=timing,
            )
            runs[mode] = (records, time.perf_counter() - started, timing)
            print(f"  K={k} {mode}: {runs[mode][1]:.0f}s", file=sys.stderr, flush=True)
        linear = runs["linear"][0]
        table[k] = {}
        for mode, (records, wall_s, timing) in runs.items():
            m_stars = [r.m_star for r in records]
            costs = [r.completions_sampled for r in records]
            table[k][mode] = summarise(m_stars, costs, linear, long) | {
                "wall_s": wall_s,
                "sampling_s": timing.sampling_s,
                "execution_s": timing.execution_s,
            }
        replays = [replay(r) for r in linear]
        table[k]["replay"] = summarise(
            [m for m, _ in replays], [cost for _, cost in replays], linear, long
        )
        table[k]["linear"]["monotone"] = mean(bool(r.monotone) for r in linear)

    # ---- report ----
    print(
        f"\n{'K':>3} {'search':<7} {'compl/resp':>10} {'≥8 lines':>9} {'lin/this':>8} "
        f"{'=linear':>8} {'=lin|mono':>9} {'=truth':>7} {'offset':>7} {'wall s':>7} "
        f"{'sample s':>8} {'exec s':>7}"
    )
    for k, rows in table.items():
        for mode, row in rows.items():
            ratio = rows["linear"]["completions_long"] / row["completions_long"]
            times = (
                f"{row['wall_s']:>7.1f} {row['sampling_s']:>8.1f} {row['execution_s']:>7.1f}"
                if "wall_s" in row
                else "  (binary search replayed on the linear scan's outcomes)"
            )
            print(
                f"{k:>3} {mode:<7} {row['completions']:>10.1f} {row['completions_long']:>9.1f} "
                f"{ratio:>8.2f} {row['agree_linear']:>8.1%} {row['agree_linear_monotone']:>9.1%} "
                f"{row['gt_exact']:>7.1%} {row['gt_mean_offset']:>+7.2f} {times}"
            )
        bound = k * mean(n for n in lengths if n >= LONG)
        print(
            f"{'':>3} the linear scan was monotone on {rows['linear']['monotone']:.1%} of "
            f"responses; the paper's K·T on ≥ {LONG} lines: {bound:.1f}"
        )
    main_k = 8 if 8 in table else args.ks[0]
    rows = table[main_k]
    figures = {
        "bench": "labeling",
        "k": main_k,
        "ratio_ge8_lines": round(
            rows["linear"]["completions_long"] / rows["binary"]["completions_long"], 3
        ),
        "ratio_all": round(rows["linear"]["completions"] / rows["binary"]["completions"], 3),
        "binary_agree_linear_where_monotone": round(rows["binary"]["agree_linear_monotone"], 4),
        "replay_agree_linear_where_monotone": round(rows["replay"]["agree_linear_monotone"], 4),
        "monotone_fraction": round(rows["linear"]["monotone"], 4),
        "n_failing": len(responses),
        "n_ge8_lines": sum(long),
        "by_k": {
            str(k): {mode: {n: round(v, 4) for n, v in row.items()} for mode, row in rows_k.items()}
            for k, rows_k in table.items()
        },
        "policy": policy,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
