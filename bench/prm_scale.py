"""PRM size against best-of-K reranking: PRMs of several backbone sizes, trained on the same
binary-search labels of the tiny SFT policy's responses, rerank the same pool of its samples on
held-out problems; the baselines (random pick, the policy's own mean log-probability, the
oracle) are measured on that pool in the same run.

1. The policy: the default tiny SFT model (trained here at its default budget, or ``--policy
   FOLDER``).
2. The pool: ``--pool-samples`` responses to each of ``--pool-problems`` test problems, run in
   the sandbox once and scored by every PRM. ``--pool-split train`` takes the last train
   problems instead (none of them labelled): the training distribution, without the test
   split's held-out (op, number) pairs.
3. The labels: responses to train problems, labelled by binary search (paper Alg. 1, K
   completions per probe), block after block until ``--label-problems`` or the labelling share
   of the time budget is spent. ``--labels ground-truth`` labels them instead by the benchmark's
   exact check of each line (no completions: several times the labels per second), which
   separates what the PRM cannot learn from what the search mislabels. ``--synthetic N`` (the
   prm-data job's default) adds the reference and N one-line mistakes of each of the first
   ``--synthetic-problems`` train problems (default: the labelled ones), labelled exactly
   (``models.labeling.synthetic_mistakes``); with ``--label-problems 0`` they are all the data.
   ``--misplaced-arguments N`` adds up to N more mistakes per problem that move another
   step's argument to a line (prm-data's ``misplaced_arguments``).
4. Per size ``LxWxH`` (layers × width × heads): a backbone of that shape — the policy itself
   when it has that shape, else a fresh model SFT-trained on the train split like the policy —
   plus a scalar head, trained as ``prm-train`` trains one (line MSE + end outcome + ranking
   loss), then the pool's best-of-K table and within-problem AUC. ``--ensemble N`` trains
   ``prm-train``'s ensemble instead (seeds ``--prm-seed`` … + N−1: the head and the data order,
   one validation split): a row per member, which measures how much the PRM's training alone
   moves the result on one policy and one pool, then the ensemble's row, ``prm_seed`` "mean".
   ``--lm-weight W`` adds ``prm-train``'s language-modelling loss on the passing responses;
   ``--no-policy-likelihood`` leaves out its ``policy_likelihood`` input (the backbone's own
   likelihood, on by default as in ``prm-train``).

Sizes run smallest first and each row is appended to ``--out`` (JSONL) as it finishes, so a
run stopped by its time budget keeps what it measured. Without
CUDA it prints ``{"skipped": ...}`` unless ``--device cpu`` asks for a (small) CPU run.

    python -m bench.prm_scale --budget-s 420 --out rows.jsonl
    python -m bench.prm_scale --device cpu --sizes 2x64x2 --label-problems 16 ...  # smoke
    python -m bench.prm_scale --device cpu --sizes 4x192x4 --label-problems 0 \
        --synthetic-problems 4744 --prm-seed 1 --lm-weight 1 --prm-steps 3000 ...  # README's

The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.benchmark import BenchmarkConfig, generate
from models.evaluation import evaluate
from models.labeling import (
    LabelingConfig,
    dataset_record,
    ground_truth_record,
    label_responses,
    sample_responses,
    synthetic_mistakes,
)
from models.policy import count_parameters, load_policy
from models.policy_config import EvalConfig, SFTConfig, TinyModelConfig
from models.prm import (
    PooledResponse,
    PRMRecord,
    load_prm,
    prm_meta,
    rerank_metrics,
    score_pool,
    train_prm,
)
from models.prm_config import PRMTrainConfig
from models.problems import Problem
from models.reporting import PrintingReporter
from models.sampling import HFSampler, Sampler
from models.sft import train_sft
from workers.sandbox import run_batch

KS = (4, 8, 16, 30)
VALIDATION_METRICS = {  # row name -> prm/… metric on the validation labels
    "line_auc": "auc",
    "first_error_exact": "first_error_exact",
    "first_error_within1": "first_error_within1",
    "end_auc": "end_auc",
    "val_pairwise_end": "end_pairwise_auc",
}
POLICY_SHAPE = TinyModelConfig()


def parse_shape(text: str) -> TinyModelConfig:
    """``LxWxH`` → the tiny model's shape (layers, width, heads)."""
    try:
        n_layer, n_embd, n_head = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--sizes: {text!r} is not LAYERSxWIDTHxHEADS, e.g. 8x512x8") from None
    return TinyModelConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head)


def shape_name(shape: TinyModelConfig) -> str:
    return f"{shape.n_layer}x{shape.n_embd}x{shape.n_head}"


def is_shape_of(shape: TinyModelConfig, model: torch.nn.Module) -> bool:
    """Whether ``model`` (a GPT-2 policy) has this shape: then it is its own backbone."""
    config = model.config
    found = [getattr(config, name, None) for name in ("n_layer", "n_embd", "n_head")]
    return found == [shape.n_layer, shape.n_embd, shape.n_head]


def width_scaled(lr: float, shape: TinyModelConfig) -> float:
    """A learning rate tuned at the policy's width, scaled as 1/width (muP's rule for Adam on
    hidden matrices), so that every size gets a comparable step, not one tuned per size."""
    return lr * POLICY_SHAPE.n_embd / shape.n_embd


def pool_figures(pool: Sequence[PooledResponse]) -> dict[str, Any]:
    """A scored pool's within-problem AUC per aggregate and best-of-K table (in %)."""
    metrics, table = rerank_metrics(pool, KS)
    return {
        "pool_pairwise": {
            key.removeprefix("prm/pairwise_"): round(value, 3)
            for key, value in metrics.items()
            if key.startswith("prm/pairwise_")
        },
        "best_of": {k: {n: round(100 * v, 1) for n, v in r.items()} for k, r in table.items()},
    }


def label_until(
    problems: Sequence[Problem],
    sampler: Sampler,
    cfg: LabelingConfig,
    policy: str,
    deadline: float,
    block: int,
) -> tuple[list[PRMRecord], int]:
    """Labels of ``cfg.n_responses`` responses per problem, ``block`` problems at a time, until
    the problems or the time run out: by binary search, or with ``cfg.ground_truth`` the exact
    line labels sampling computed. Returns the records and problems done."""
    records: list[PRMRecord] = []
    done = 0
    for first in range(0, len(problems), block):
        if time.monotonic() > deadline and records:
            break
        chunk = problems[first : first + block]
        seed = cfg.seed + first
        responses = sample_responses(chunk, sampler, run_batch, cfg, checkpoint=policy, seed=seed)
        labelled = (
            [ground_truth_record(r) for r in responses]
            if cfg.ground_truth
            else label_responses(responses, sampler, run_batch, cfg, seed=seed)
        )
        records += [PRMRecord.model_validate(dataset_record(r)) for r in labelled]
        done += len(chunk)
        print(f"  labelled {done} problems, {len(records)} responses", flush=True)
    return records, done


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="a policy folder (default: train the tiny SFT here)")
    parser.add_argument(
        "--train-problems", type=int, default=BenchmarkConfig().n_train, help="the train split"
    )
    parser.add_argument("--sizes", default="4x192x4,8x512x8,12x768x12")
    parser.add_argument("--sft-steps", type=int, default=600, help="SFT steps of new backbones")
    parser.add_argument("--label-problems", type=int, default=2048)
    parser.add_argument("--responses", type=int, default=4, help="per labelled problem")
    parser.add_argument("--k", type=int, default=8, help="completions per probe")
    parser.add_argument(
        "--labels",
        choices=["binary", "ground-truth"],
        default="binary",
        help="binary: the paper's search; ground-truth: the benchmark's exact line labels",
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        default=LabelingConfig().synthetic_mistakes,
        help="one-line mistakes (plus the reference) per problem (0: none)",
    )
    parser.add_argument(
        "--synthetic-problems",
        type=int,
        help="the first N train problems get the reference and mistakes (default: "
        "--label-problems)",
    )
    parser.add_argument(
        "--misplaced-arguments",
        type=int,
        default=LabelingConfig().misplaced_arguments,
        help="more one-line mistakes per problem that give a step another step's argument "
        "(prm-data's misplaced_arguments)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the policy's SFT, the labels and the mistakes"
    )
    parser.add_argument("--prm-seed", type=int, help="the PRM's seed (default: --seed)")
    parser.add_argument(
        "--ensemble", type=int, default=1, help="PRMs per size, scored by their mean"
    )
    parser.add_argument(
        "--lm-weight", type=float, default=0.0, help="prm-train's lm_weight (the LM loss)"
    )
    parser.add_argument(
        "--policy-likelihood",
        action=argparse.BooleanOptionalAction,
        default=PRMTrainConfig().policy_likelihood,
        help="prm-train's policy_likelihood: the PRM reads the policy's likelihood",
    )
    parser.add_argument("--pool-problems", type=int, default=128)
    parser.add_argument(
        "--pool-split",
        choices=["test", "train"],
        default="test",
        help="test: held-out problems; train: the train split's last problems (not labelled, "
        "and not in the SFT of a policy trained here)",
    )
    parser.add_argument("--pool-samples", type=int, default=32)
    parser.add_argument("--prm-steps", type=int, default=2000)
    parser.add_argument("--prm-batch", type=int, default=64)
    parser.add_argument("--prm-lr", type=float, default=3e-4, help="at the policy's width")
    parser.add_argument("--batch-size", type=int, default=512, help="sampler rows per call")
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="sizes that would not fit are skipped"
    )
    parser.add_argument(
        "--label-share",
        type=float,
        default=0.3,
        help="labelling stops once this share of the budget has passed since the start "
        "(the policy and the pool count against it)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, help="append each PRM's row here (JSONL)")
    args = parser.parse_args(argv)
    if args.device == "auto" and not torch.cuda.is_available():
        figures = {"skipped": "no CUDA device (--device cpu runs it on the CPU)"}
        print(json.dumps(figures))
        return figures
    device = "cuda" if args.device == "auto" else args.device
    shapes = [parse_shape(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="prm-scale-"))
    reporter = PrintingReporter()

    problems = generate(BenchmarkConfig(n_train=args.train_problems))  # the same test split
    train = [p for p in problems if p.meta.get("split") == "train"]
    test = [p for p in problems if p.meta.get("split") == "test"]
    if args.pool_split == "train":  # the pool's problems leave the labelling's share
        if args.pool_problems >= len(train):
            raise SystemExit(
                f"--pool-problems {args.pool_problems} leaves none of the {len(train)} train "
                "problems to label: lower it or raise --train-problems"
            )
        train, pool_problems = (
            train[: -args.pool_problems],
            train[-args.pool_problems :],
        )
    else:
        pool_problems = test[: args.pool_problems]

    def sft(shape: TinyModelConfig, folder: str, steps: int) -> tuple[str, float]:
        t0 = time.monotonic()
        result = train_sft(
            SFTConfig(
                seed=args.seed,
                tiny=shape,
                steps=steps,
                lr=width_scaled(SFTConfig().lr, shape),
                device=device,
                eval_every=0,
                final_eval=False,
                checkpoint_every=0,
            ),
            train,
            test,
            reporter,
            run_batch,
            out_dir=root / folder,
        )
        return str(result.checkpoint), time.monotonic() - t0

    # ---- 1. the policy ----
    policy_dir = args.policy or sft(POLICY_SHAPE, "policy", SFTConfig().steps)[0]
    model, tokenizer = load_policy(policy_dir, device=device)
    sampler = HFSampler(model, tokenizer, batch_size=args.batch_size)

    # ---- 2. the pool: sampled once, run once, scored by every PRM ----
    t0 = time.monotonic()
    sampled = evaluate(
        model,
        tokenizer,
        pool_problems,
        EvalConfig(
            greedy=False,
            n_samples=args.pool_samples,
            ks=[1],
            batch_size=args.batch_size,
            seed=1,
        ),
        run_batch,
        reporter,
    ).records
    pool_s = time.monotonic() - t0
    print(f"pool: {len(sampled)} responses in {pool_s:.0f}s", flush=True)

    # ---- 3. labels ----
    t0 = time.monotonic()
    labelling = LabelingConfig(
        n_responses=args.responses,
        k=args.k,
        batch_size=args.batch_size,
        ground_truth=args.labels == "ground-truth",
        seed=args.seed,
    )
    deadline = started + args.label_share * args.budget_s
    records, labelled_problems = label_until(
        train[: args.label_problems], sampler, labelling, policy_dir, deadline, block=256
    )
    label_s = time.monotonic() - t0
    synthetic_problems = (
        args.label_problems if args.synthetic_problems is None else args.synthetic_problems
    )
    synthetic = synthetic_mistakes(
        train[:synthetic_problems],
        args.synthetic,
        seed=args.seed,
        misplaced_arguments=args.misplaced_arguments,
    )
    records += [PRMRecord.model_validate(dataset_record(r)) for r in synthetic]
    del sampler
    data = {
        "labels": args.labels,
        "pool_split": args.pool_split,
        "label_problems": labelled_problems,
        "seed": args.seed,
        "records": len(records),
        "synthetic": len(synthetic),
        "passing": sum(bool(r.passed) for r in records),
        "label_s": round(label_s, 1),
        "pool": len(sampled),
        "pool_s": round(pool_s, 1),
    }
    print(f"data: {data}", flush=True)

    # ---- 4. one PRM (or ensemble) per size: a row per PRM, then the ensemble's ----
    rows: list[dict[str, Any]] = []  # in the order trained

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps({**row, "data": data}) + "\n")

    def scored_row(size: str, folder: Path, seed: int | str) -> dict[str, Any]:
        """The PRM (or ensemble) in ``folder``: its validation metrics and the pool's figures."""
        prm, prm_tokenizer, loss = load_prm(folder, device)
        pool = score_pool(prm, prm_tokenizer, loss, pool_problems, sampled, batch_size=256)
        metrics = prm_meta(folder)["metrics"]
        return {
            "size": size,
            "prm_seed": seed,
            "lm_weight": args.lm_weight,
            "policy_likelihood": args.policy_likelihood,
            "params_m": round(count_parameters(prm) / 1e6, 1),
            **{
                key: round(metrics.get(f"prm/{metric}", float("nan")), 3)
                for key, metric in VALIDATION_METRICS.items()
            },
            **pool_figures(pool),
        }

    skipped: list[str] = []
    last_s = 0.0  # the last size's time: sizes grow, so the next one takes at least as long
    prm_seed = args.seed if args.prm_seed is None else args.prm_seed
    for shape in shapes:
        name = shape_name(shape)
        remaining = args.budget_s - (time.monotonic() - started)
        if remaining < 1.5 * last_s:  # it would not finish
            skipped.append(name)
            continue
        t0 = time.monotonic()
        backbone, sft_s = (
            (policy_dir, 0.0)
            if is_shape_of(shape, model)
            else sft(shape, f"sft-{name}", args.sft_steps)
        )
        cfg = PRMTrainConfig(
            seed=prm_seed,
            ensemble=args.ensemble,
            lm_weight=args.lm_weight,
            policy_likelihood=args.policy_likelihood,
            init_from=backbone,
            steps=args.prm_steps,
            batch_size=args.prm_batch,
            lr=width_scaled(args.prm_lr, shape),
            eval_every=50,
            patience=6,
            checkpoint_every=0,
            device=device,
        )
        result = train_prm(cfg, records, reporter, root / f"prm-{name}")
        timing = {"sft_s": round(sft_s, 1), "prm_s": round(result.train_seconds, 1)}
        if args.ensemble == 1:
            row = scored_row(name, result.checkpoint, prm_seed)
            report({**row, **timing, "best_step": result.best_step})
        else:
            for member in result.members:
                row = scored_row(name, Path(member["folder"]), member["seed"])
                report({**row, "best_step": member["best_step"]})
            report({**scored_row(name, result.checkpoint, "mean"), **timing})
        last_s = time.monotonic() - t0
    del model

    figures = {"bench": "prm_scale", "device": device, "data": data, "rows": rows}
    figures["skipped"] = skipped
    if torch.cuda.is_available() and device == "cuda":
        figures["gpu"] = torch.cuda.get_device_name()
    figures["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
