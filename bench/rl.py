"""Benchmark of our PPO against TRL's GRPOTrainer on the same tiny SFT policy, the same embedded
benchmark problems, the same reward (our sandbox's verdict on the unit tests), the same batch
(problems × completions per step) and the same response-length cap, in the same run.

1. **Start.** The tiny SFT policy (trained here, or ``--policy``) and a PRM for our
   dense+value-init variant (sampled, labelled by binary search and trained here on the SFT
   policy's responses, or ``--prm``).
2. **Throughput.** ``--throughput-steps`` whole RL steps of each side from the SFT start:
   completion tokens per second, real tokens only (through the first EOS, none of the padding),
   over the steps after the first (which also loads models and warms up). What a step holds:
   - ours (``models.ppo.train_ppo``, dense+value-init): sample the batch, run it in the
     sandbox, score it with the policy, the frozen reference (per-token KL penalty), the critic
     and the PRM (dense rewards), GAE, then ``ppo_epochs`` passes of minibatches that update
     the policy and the critic; plus a checkpoint (that is how the bench stops a run);
   - TRL (``GRPOTrainer``, its defaults otherwise: β = 0 so no reference model, one iteration
     per batch, the ``dapo`` loss): sample the batch (``model.generate``), run it in the
     sandbox, group-normalised advantages, one optimizer step over the batch in minibatches
     of our minibatch size (gradient accumulation).
3. **Learning at equal wall-clock.** ``--minutes`` of RL from the SFT start for GRPO, our
   baseline (sparse test reward) and our dense+value-init; each run stops at the end of the
   step that crosses the budget; then greedy pass@1 on the held-out split
   (``models.evaluation.evaluate``, the same call for every policy).

Both sides sample at temperature 1 without top-p/top-k, learn at our policy learning rate with a
constant schedule, AdamW (ε 1e-5, weight decay 0.01, gradient norm clipped at 1), fp32, dropout
off, no gradient checkpointing, one torch thread (``--threads``), and share one warm sandbox
pool. Rewards: ours +1 / −1 (PPOConfig's defaults), GRPO 1 / 0 (its advantages are normalised
per group, so only the order matters). Our sampler also ends a completion at a dedent to column
0 (the function body is over), ``model.generate`` at EOS or the length cap only; the tiny SFT
policy ends every completion with EOS, so on it the two rules cut the same tokens.

    python -m bench.rl                           # everything inside: SFT (300 steps), PRM, then
                                                 # 3 minutes of RL per run (30-40 min on 2 cores)
    python -m bench.rl --policy SFT --prm PRM    # reuse a policy and a PRM trained from it
    python -m bench.rl --sft-steps 600 --prm-problems 256 --minutes 15   # the full setting

The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.benchmark import BenchmarkConfig, generate
from models.evaluation import RunBatch, evaluate
from models.labeling import (
    SELECTIONS,
    LabelingConfig,
    collect,
    dataset_record,
    policy_sampler,
    select_responses,
)
from models.policy import load_policy
from models.policy_config import EvalConfig, SFTConfig
from models.ppo import train_ppo
from models.ppo_config import PPOConfig, Variant
from models.prm import PRMRecord, train_prm
from models.prm_config import PRMTrainConfig
from models.problems import Problem, exec_request
from models.reporting import MemoryReporter
from models.sft import train_sft
from workers.sandbox import SandboxPool

try:
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer
except ModuleNotFoundError as error:  # TRL is the bench extra, not a dependency of the product
    raise SystemExit(f"bench/rl.py needs TRL ({error}): pip install -e '.[bench]'") from error

NO_LIMIT = 1_000_000  # steps: runs end by their Budget, never by their own step count


class Clock:
    """Prints each phase with the time since the bench started (stderr)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.0f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """What both sides share."""

    problems_per_step: int
    generations: int
    max_new_tokens: int
    minibatch_size: int
    seed: int

    @property
    def batch(self) -> int:
        return self.problems_per_step * self.generations


@dataclass(frozen=True)
class Budget:
    """A run ends after the step that reaches ``max_steps`` or crosses ``seconds``."""

    max_steps: int | None = None
    seconds: float | None = None


@dataclass
class RunStats:
    """One RL run: when each step ended and how many completion tokens it sampled."""

    label: str
    budget: Budget
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    step_ends: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    step_pass: list[float] = field(default_factory=list)
    step_phases: list[dict[str, float]] = field(default_factory=list)  # seconds per phase
    cpu_seconds: float = 0.0

    def end_step(self) -> bool:
        """Record the end of a step and print it; True when the budget is spent."""
        self.step_ends.append(time.perf_counter())
        self.cpu_seconds = time.process_time() - self.cpu_started
        n = len(self.step_ends)
        print(
            f"         {self.label} step {n}: train pass {self.step_pass[-1]:.2f}, "
            f"{self.step_tokens[-1]:,} tokens, {self.seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        budget = self.budget
        return (budget.max_steps is not None and n >= budget.max_steps) or (
            budget.seconds is not None and self.seconds >= budget.seconds
        )

    @property
    def steps(self) -> int:
        return len(self.step_ends)

    @property
    def seconds(self) -> float:
        return self.step_ends[-1] - self.started

    @property
    def tokens_per_s(self) -> float:
        """Over the steps after the first (it also loads models); the first alone if no other."""
        if self.steps == 1:
            return self.step_tokens[0] / self.seconds
        return sum(self.step_tokens[1:]) / (self.step_ends[-1] - self.step_ends[0])

    def phase_seconds(self) -> dict[str, float]:
        """Mean seconds per step of each timed phase and of the rest ("other"), over the steps
        ``tokens_per_s`` counts."""
        ends = [self.started, *self.step_ends]
        steps = range(1 if self.steps > 1 else 0, self.steps)
        means = {
            phase: sum(self.step_phases[i][phase] for i in steps) / len(steps)
            for phase in self.step_phases[0]
        }
        step_s = sum(ends[i + 1] - ends[i] for i in steps) / len(steps)
        return means | {"other": step_s - sum(means.values())}


# ============================================================================ start: SFT and PRM


def train_policy(
    train: list[Problem], steps: int, seed: int, run_batch: RunBatch, folder: Path
) -> Path:
    cfg = SFTConfig(steps=steps, seed=seed, device="cpu", eval_every=0, final_eval=False)
    return train_sft(cfg, train, [], MemoryReporter(), run_batch, out_dir=folder).checkpoint


def train_small_prm(
    policy: Path,
    problems: Sequence[Problem],
    args: argparse.Namespace,
    run_batch: RunBatch,
    folder: Path,
    clock: Clock,
) -> tuple[Path, dict[str, float]]:
    """The paper's recipe at a small size: responses of the SFT policy, labelled by binary
    search (best-of-K), revised-only selection, then ``train_prm``. Returns the checkpoint and
    its validation metrics."""
    cfg = LabelingConfig(
        n_responses=args.prm_responses,
        k=8,
        max_new_tokens=args.max_new_tokens,
        ground_truth=False,
        seed=args.seed,
    )
    records = []
    collect(
        [str(policy)],
        problems,
        cfg,
        run_batch,
        MemoryReporter(),
        load_sampler=policy_sampler("cpu", 64),
        on_labeled=records.append,
    )
    kept = select_responses(records, args.prm_selection)
    clock(
        f"PRM data: {len(records)} responses labelled, {sum(r.passed for r in records)} pass, "
        f"{len(kept)} kept ({args.prm_selection}); training the PRM"
    )
    prm_cfg = PRMTrainConfig(
        init_from=str(policy), steps=args.prm_steps, seed=args.seed, device="cpu"
    )
    data = [PRMRecord.model_validate(dataset_record(record)) for record in kept]
    result = train_prm(prm_cfg, data, MemoryReporter(), folder)
    return result.checkpoint, result.metrics


# ============================================================================ the two RL trainers


class StopRun(Exception):
    """Raised from ``train_ppo``'s checkpoint callback once the run's budget is spent."""


PPO_PHASES = {  # train_ppo's timers: what each holds
    "generation": "time/generation_s",
    "execution": "time/execution_s",  # the sandbox
    "scoring": "time/prm_scoring_s",  # policy, reference, critic and PRM forwards
    "update": "time/update_s",  # ppo_epochs × minibatches, policy and critic
}


class StepTokens(MemoryReporter):
    """Takes each PPO step's completion tokens, pass rate and phase times from its metrics."""

    def __init__(self, stats: RunStats, batch: int) -> None:
        super().__init__()
        self.stats, self.batch = stats, batch

    def metrics(self, step: int, values: Any) -> None:
        if "rollout/response_tokens" in values:  # the per-step rollout metrics
            self.stats.step_tokens.append(round(values["rollout/response_tokens"] * self.batch))
            self.stats.step_pass.append(values["rollout/pass_rate"])
            self.stats.step_phases.append(
                {phase: values[name] for phase, name in PPO_PHASES.items()}
            )


def run_ours(
    variant: Variant,
    policy: Path,
    prm: Path,
    train: list[Problem],
    settings: Settings,
    budget: Budget,
    run_batch: RunBatch,
    folder: Path,
) -> tuple[RunStats, Path]:
    """``train_ppo`` until ``budget``; returns the run and its last policy folder."""
    cfg = PPOConfig(
        variant=variant,
        seed=settings.seed,
        steps=NO_LIMIT,
        problems_per_step=settings.problems_per_step,
        samples_per_problem=settings.generations,
        max_new_tokens=settings.max_new_tokens,
        minibatch_size=settings.minibatch_size,
        eval_every=0,
        checkpoint_every=1,  # the callback on each checkpoint is where the run can stop
        log_rollout_fraction=0.0,
        device="cpu",
    )
    stats = RunStats(f"{variant:<16}", budget)
    newest: list[Path] = []

    def on_checkpoint(step: int, checkpoint: Path) -> None:
        if newest:
            shutil.rmtree(newest.pop())  # only the newest checkpoint is needed
        newest.append(checkpoint)
        if stats.end_step():
            raise StopRun

    with contextlib.suppress(StopRun):
        train_ppo(
            cfg,
            policy_dir=policy,
            prm_dir=None if variant == "baseline" else prm,
            train_problems=train,
            eval_problems=train,  # unused: no evaluation inside the run (eval_every=0)
            run_batch=run_batch,
            reporter=StepTokens(stats, settings.batch),
            out_dir=folder,
            on_checkpoint=on_checkpoint,
        )
    return stats, newest[0] / "policy"


class StepEnds(TrainerCallback):
    """Ends a GRPO run when its budget is spent (each optimizer step is one batch)."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats

    def on_step_end(self, args, state, control, **kwargs):
        if self.stats.end_step():
            control.should_training_stop = True
        return control


def run_grpo(
    policy: Path,
    train: list[Problem],
    settings: Settings,
    budget: Budget,
    run_batch: RunBatch,
    folder: Path,
    learning_rate: float,
) -> tuple[RunStats, Any, Any]:
    """``GRPOTrainer.train`` until ``budget``; returns the run, the trained model and tokenizer."""
    stats = RunStats(f"{'grpo (TRL)':<16}", budget)
    model, tokenizer = load_policy(policy, device="cpu")
    by_id = {problem.task_id: problem for problem in train}

    def unit_tests(
        prompts: list[str], completions: list[str], completion_ids: list[list[int]], **columns
    ) -> list[float]:
        """Our sandbox's verdict as GRPO's reward: 1 if the completion passes, else 0."""
        tasks = columns["task_id"]  # the dataset's extra column, one per completion
        requests = [
            exec_request(by_id[task], completion, f"grpo/{i}")
            for i, (task, completion) in enumerate(zip(tasks, completions, strict=True))
        ]
        started = time.perf_counter()
        passed = [result.status == "passed" for result in run_batch(requests)]
        stats.step_phases.append({"execution": time.perf_counter() - started})
        # completion_ids run through the first EOS: the real tokens, no padding
        stats.step_tokens.append(sum(len(ids) for ids in completion_ids))
        stats.step_pass.append(sum(passed) / len(passed))
        return [float(ok) for ok in passed]

    args = GRPOConfig(
        output_dir=str(folder),
        use_cpu=True,
        bf16=False,  # GRPOConfig's default is bf16; CPU matmuls are fastest (and ours run) in fp32
        gradient_checkpointing=False,
        disable_dropout=True,
        seed=settings.seed,
        max_steps=budget.max_steps or NO_LIMIT,
        # one generation batch of problems × completions per optimizer step, split into
        # gradient-accumulation minibatches of our minibatch size (TRL 1.16: the generation
        # batch is per_device_train_batch_size × steps_per_generation, which defaults to
        # gradient_accumulation_steps)
        per_device_train_batch_size=settings.minibatch_size,
        gradient_accumulation_steps=settings.batch // settings.minibatch_size,
        num_generations=settings.generations,
        max_completion_length=settings.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,  # torch AdamW's default, which our PPO uses
        adam_epsilon=1e-5,
        max_grad_norm=1.0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": p.prompt, "task_id": p.task_id} for p in train])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=unit_tests,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepEnds(stats)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints TRL's metrics on stdout; we print ours
    trainer.train()
    return stats, trainer.model, tokenizer


def greedy_pass1(
    model, tokenizer, problems: Sequence[Problem], max_new_tokens: int, run_batch: RunBatch
) -> float:
    cfg = EvalConfig(greedy=True, n_samples=0, max_new_tokens=max_new_tokens, batch_size=64)
    result = evaluate(model, tokenizer, problems, cfg, run_batch, MemoryReporter())
    return result.metrics["eval/pass@1_greedy"]


# ============================================================================ main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="an SFT policy folder (default: train the tiny model)")
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT steps when training one")
    parser.add_argument("--prm", help="a PRM folder trained from --policy (default: train one)")
    parser.add_argument(
        "--prm-problems", type=int, default=64, help="train problems labelled for the PRM"
    )
    parser.add_argument("--prm-responses", type=int, default=4, help="responses per problem")
    parser.add_argument("--prm-steps", type=int, default=200, help="PRM training steps (at most)")
    parser.add_argument(
        "--prm-selection",
        choices=SELECTIONS,
        default="revised-only",
        help="responses kept for the PRM (paper Table 2; full: also those no prefix rescues)",
    )
    parser.add_argument(
        "--throughput-steps", type=int, default=4, help="RL steps each side is timed over"
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="RL minutes per learning run")
    parser.add_argument("--problems-per-step", type=int, default=PPOConfig().problems_per_step)
    parser.add_argument(
        "--generations", type=int, default=PPOConfig().samples_per_problem, help="per problem"
    )
    parser.add_argument("--max-new-tokens", type=int, default=PPOConfig().max_new_tokens)
    parser.add_argument("--minibatch-size", type=int, default=PPOConfig().minibatch_size)
    parser.add_argument("--n-train", type=int, default=BenchmarkConfig().n_train)
    parser.add_argument("--n-test", type=int, default=500, help="held-out problems scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, both sides (1: best on busy CPUs)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()  # loading bars for every model load drown the progress
    settings = Settings(
        problems_per_step=args.problems_per_step,
        generations=args.generations,
        max_new_tokens=args.max_new_tokens,
        minibatch_size=args.minibatch_size,
        seed=args.seed,
    )
    if settings.batch % settings.minibatch_size:
        parser.error("problems-per-step × generations must be a multiple of minibatch-size")
    learning_rate = PPOConfig().policy_lr
    clock = Clock()

    problems = generate(BenchmarkConfig(n_train=args.n_train, n_test=args.n_test, seed=args.seed))
    train = [p for p in problems if p.split == "train"]
    test = [p for p in problems if p.split == "test"]
    figures: dict[str, Any] = {"bench": "rl"}
    with tempfile.TemporaryDirectory() as tmp, SandboxPool() as pool:
        folder, run_batch = Path(tmp), pool.run_batch

        # ---- the start: SFT policy, PRM -------------------------------------------------------
        policy = Path(args.policy) if args.policy else None
        if policy is None:
            clock(f"SFT of the tiny model: {args.sft_steps} steps")
            started = time.perf_counter()
            policy = train_policy(train, args.sft_steps, args.seed, run_batch, folder / "sft")
            figures["sft_seconds"] = round(time.perf_counter() - started, 1)
        prm = Path(args.prm) if args.prm else None
        if prm is None:
            clock(f"PRM data: {args.prm_responses} responses × {args.prm_problems} problems")
            started = time.perf_counter()
            prm, prm_metrics = train_small_prm(
                policy, train[: args.prm_problems], args, run_batch, folder / "prm", clock
            )
            figures["prm_seconds"] = round(time.perf_counter() - started, 1)
            auc = prm_metrics.get("prm/auc", math.nan)  # NaN when validation has one class
            figures["prm_auc"] = round(auc, 4) if math.isfinite(auc) else None
        clock(f"held-out greedy pass@1 of the SFT start on {len(test)} problems")
        model, tokenizer = load_policy(policy, device="cpu")
        figures["pass1_sft"] = greedy_pass1(model, tokenizer, test, args.max_new_tokens, run_batch)

        # ---- throughput: the same number of whole steps each -------------------------------
        steps = Budget(max_steps=args.throughput_steps)
        clock(f"throughput: {args.throughput_steps} steps of {settings.batch} completions each")
        ours_speed, _ = run_ours(
            "dense+value-init", policy, prm, train, settings, steps, run_batch, folder / "tp"
        )
        trl_speed, _, _ = run_grpo(
            policy, train, settings, steps, run_batch, folder / "tp-grpo", learning_rate
        )

        # ---- learning at equal wall-clock --------------------------------------------------
        minutes = Budget(seconds=args.minutes * 60)
        runs: dict[str, RunStats] = {}
        pass1: dict[str, float] = {}
        clock(f"learning: {args.minutes:g} minutes of GRPO (TRL)")
        runs["trl"], model, tokenizer = run_grpo(
            policy, train, settings, minutes, run_batch, folder / "grpo", learning_rate
        )
        clock("held-out greedy pass@1 after GRPO")
        pass1["trl"] = greedy_pass1(model, tokenizer, test, args.max_new_tokens, run_batch)
        for name, variant in (("baseline", "baseline"), ("ours", "dense+value-init")):
            clock(f"learning: {args.minutes:g} minutes of our PPO, {variant}")
            runs[name], trained = run_ours(
                variant, policy, prm, train, settings, minutes, run_batch, folder / name
            )
            clock(f"held-out greedy pass@1 after our {variant}")
            model, tokenizer = load_policy(trained, device="cpu")
            pass1[name] = greedy_pass1(model, tokenizer, test, args.max_new_tokens, run_batch)

    # ---- report --------------------------------------------------------------------------------
    ratio = ours_speed.tokens_per_s / trl_speed.tokens_per_s
    print(
        f"\nthroughput over {args.throughput_steps} steps of {settings.problems_per_step} problems "
        f"× {settings.generations} completions, ≤ {settings.max_new_tokens} tokens each"
    )
    print(f"{'':<26} {'tokens/s':>9} {'s/step':>7} {'tokens/step':>12}")
    for name, stats in (("ours (dense+value-init)", ours_speed), ("TRL GRPOTrainer", trl_speed)):
        print(
            f"{name:<26} {stats.tokens_per_s:>9,.0f} {stats.seconds / stats.steps:>7.1f} "
            f"{sum(stats.step_tokens) / stats.steps:>12,.0f}"
        )
    print(f"{'ratio (ours / TRL)':<26} {ratio:>9.2f}")
    for name, stats in (("ours", ours_speed), ("TRL", trl_speed)):
        phases = ", ".join(f"{phase} {s:.1f}" for phase, s in stats.phase_seconds().items())
        print(f"{name} seconds per step: {phases}")
    print(
        f"\nlearning: {args.minutes:g} minutes of RL from the same SFT start "
        f"(held-out greedy pass@1 of the start: {figures['pass1_sft']:.1%} on {len(test)})"
    )
    print(f"{'':<26} {'pass@1':>7} {'steps':>6} {'RL s':>6} {'CPU s':>6} {'tokens/s':>9}")
    names = {
        "trl": "TRL GRPOTrainer",
        "baseline": "ours, baseline",
        "ours": "ours, dense+value-init",
    }
    for key, name in names.items():
        stats = runs[key]
        print(
            f"{name:<26} {pass1[key]:>7.1%} {stats.steps:>6} {stats.seconds:>6.0f} "
            f"{stats.cpu_seconds:>6.0f} {stats.tokens_per_s:>9,.0f}"
        )
    figures |= {
        "ratio": round(ratio, 3),
        "ours_tokens_per_s": round(ours_speed.tokens_per_s, 1),
        "trl_tokens_per_s": round(trl_speed.tokens_per_s, 1),
        "ours_s_per_step": round(ours_speed.seconds / ours_speed.steps, 2),
        "trl_s_per_step": round(trl_speed.seconds / trl_speed.steps, 2),
        "ours_tokens_per_step": round(sum(ours_speed.step_tokens) / ours_speed.steps, 1),
        "trl_tokens_per_step": round(sum(trl_speed.step_tokens) / trl_speed.steps, 1),
        "ours_phase_s": {k: round(v, 2) for k, v in ours_speed.phase_seconds().items()},
        "trl_phase_s": {k: round(v, 2) for k, v in trl_speed.phase_seconds().items()},
        "pass1_ours": round(pass1["ours"], 4),
        "pass1_baseline": round(pass1["baseline"], 4),
        "pass1_trl": round(pass1["trl"], 4),
        "pass1_sft": round(figures["pass1_sft"], 4),
        "learning": {
            key: {
                "steps": stats.steps,
                "rl_seconds": round(stats.seconds, 1),
                "cpu_seconds": round(stats.cpu_seconds, 1),
                "tokens_per_s": round(stats.tokens_per_s, 1),
                "train_pass_last": round(stats.step_pass[-1], 4),
            }
            for key, stats in runs.items()
        },
        "minutes": args.minutes,
        "throughput_steps": args.throughput_steps,
        "problems_per_step": settings.problems_per_step,
        "generations": settings.generations,
        "max_new_tokens": settings.max_new_tokens,
        "minibatch_size": settings.minibatch_size,
        "learning_rate": learning_rate,
        "n_test": len(test),
        "policy": args.policy or f"trained here ({args.sft_steps} SFT steps)",
        "prm": args.prm or f"trained here ({args.prm_problems} problems)",
        "trl_version": trl.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
