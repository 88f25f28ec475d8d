"""The line-level process reward model (PRM): training, scoring and evaluation (DESIGN §1.4).

The PRM is a ``ValueModel`` — the policy's transformer plus a scalar head, the critic's
architecture, so PPO's ValueInit can start the critic from it; by default (``policy_likelihood``)
its value also reads a frozen copy of the policy's likelihood of the response
(``models.value_model.PolicyLikelihood``). Its output at the **last token of
line m** (``models.lines``: the token holding the line's newline) estimates the label of the
prefix ``y_{≤m}``: +1 if a completion of it can still pass, −1 if not.

Training, top to bottom (``train_prm``):

1. Split the labelled responses into train / validation **by problem** (task id): a problem's
   responses share a prompt and most of their lines, so a split by line or by response would
   validate on what was trained on.
2. Tokenise each ``prompt + response`` once with character offsets and find each line's last
   token (robust to tokens that merge a newline with the next line's indentation, or that span
   several newlines).
3. Regress the output at those tokens onto the labels (MSE; BCE as an option); every other
   position is masked out of the loss, and so are neutral lines (label 0) unless configured.
4. Every ``eval_every`` steps compute the validation loss (and log the end score's AUCs beside
   it, ``val/…``); stop after ``patience`` evaluations without a new best and keep the best
   weights.
5. Score the validation lines: accuracy and ROC-AUC (neutral lines excluded), first-error
   localisation on failing responses, the calibration curve.

With ``processes`` > 1 (``models.distributed``) each process takes a share of every step's
batch and DDP averages the gradients; the loss is divided by the step's supervised lines on all
processes, so N processes take exactly the 1-process step (of the pointwise loss: the ranking
loss pairs responses within each process's share). Rank 0 alone validates, logs and
saves, and its early-stopping state is broadcast so that every process stops at the same step.

With ``ensemble`` = N > 1 the loop (``train_member``) runs N times, one PRM after another —
seeds ``seed`` … ``seed`` + N − 1 for the head and the data order, one validation split — on one
step axis (member i's step s is the run's step i × steps + s). The checkpoint is a folder of the
N PRMs that ``load_prm`` reads as a ``PRMEnsemble``: the mean of their outputs. PRMs of different
seeds err on different responses, and validation cannot tell which one will (README, "PRM
seeds, and their mean"), so the mean is kept rather than a pick.

``rerank_eval`` adds the paper's best-of-K reranking on a pool of sampled responses with test
verdicts. ``score_responses`` is the one scoring function (PPO-compatible positions, batched);
``score_table`` serves the CLI and the dashboard.

A checkpoint is ``ValueModel.save``'s folder plus ``prm.json`` (loss, step, config, metrics):
the loss decides how raw outputs map to scores, so every scorer reads it (``load_prm``). An
ensemble's is a folder of such folders, its ``prm.json`` listing them (``save_ensemble``).
Training also writes resumable checkpoints under ``train/`` every ``checkpoint_every`` steps and
when it ends: the folder plus ``train_state.pt`` (optimizer, RNG, data order, early-stopping
state and the best weights so far), from which ``train_prm(resume_dir=…)`` continues exactly.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from models.distributed import all_reduce_sum, broadcast, ddp, is_main, rank_device, shard, world
from models.evaluation import RunBatch, SampleRecord, evaluate, pass_at_k
from models.lines import encode_with_offsets, is_neutral, segment, split_lines
from models.policy import autocast_for, pick_device, prepare_tokenizer
from models.prm_config import AGGREGATES, Aggregate, Loss, PRMTrainConfig, RerankConfig
from models.problems import Problem
from models.reporting import Reporter
from models.sft import (
    STATE_JSON,
    STATE_PT,
    lr_at,
    make_optimizer,
    restore_rng,
    rng_state,
    seed_everything,
)
from models.value_model import ValueModel

PRM_JSON = "prm.json"


# ============================================================================ data


class PRMRecord(BaseModel):
    """One labelled response, as the prm-data job writes it (DESIGN §3, plus ``task_id``)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    completions: list[str]  # the response's lines, without newlines
    labels: list[Literal[-1, 0, 1]]  # one per line
    m_star: int
    passed: bool | None = None  # the response's own test outcome (end-of-response label)
    completions_sampled: int = 0
    source_checkpoint: str = ""
    task_id: str

    @model_validator(mode="after")
    def _one_label_per_line(self) -> PRMRecord:
        if len(self.labels) != len(self.completions):
            raise ValueError(
                f"{len(self.labels)} labels for {len(self.completions)} lines: need one each"
            )
        if any("\n" in line for line in self.completions):
            raise ValueError("a line in completions holds a newline; split it into lines")
        return self

    @property
    def response(self) -> str:
        return "".join(line + "\n" for line in self.completions)


def read_records(path: str | Path) -> list[PRMRecord]:
    """The records of a JSONL file; a bad line is an error naming its number."""
    records = []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            records.append(PRMRecord.model_validate_json(text))
        except ValidationError as error:
            why = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"{path}:{number}: not a PRM record: {why}") from None
    if not records:
        raise ValueError(f"{path} holds no PRM records")
    return records


def split_by_problem(
    records: Sequence[PRMRecord], val_fraction: float, seed: int
) -> tuple[list[PRMRecord], list[PRMRecord]]:
    """(train, validation), every problem's responses on one side."""
    task_ids = sorted({record.task_id for record in records})
    if len(task_ids) < 2:
        raise ValueError("the dataset covers one problem: a split by problem needs two or more")
    random.Random(seed).shuffle(task_ids)
    n_val = min(max(1, round(len(task_ids) * val_fraction)), len(task_ids) - 1)
    held_out = set(task_ids[:n_val])
    train = [record for record in records if record.task_id not in held_out]
    return train, [record for record in records if record.task_id in held_out]


@dataclass(frozen=True)
class Example:
    """A tokenised response: ids of ``prompt + response + EOS`` and, per line that fits the
    window, the index of its last token and its label (0 when unlabelled); the EOS's index
    (None past the window) and the response's outcome label there (0 when not trained)."""

    ids: list[int]
    positions: list[int]
    labels: list[int]
    end: int | None = None
    outcome: int = 0
    response_start: int = 0  # the first token holding any of the response's characters
    lm: bool = False  # the language-modelling loss reads the response's tokens


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_len: int,
    labels: Sequence[int] | None = None,
    outcome: int = 0,
    lm: bool = False,
) -> Example:
    """Tokenise ``prompt + response`` once and append EOS, where the PRM scores the response
    as a whole; lines whose last token falls past ``max_len`` are dropped (the window keeps
    the prompt: the PRM cannot judge code without its task). ``lm``: mark the response for
    the language-modelling loss."""
    ids, offsets = encode_with_offsets(tokenizer, prompt + response)
    # spans in response coordinates: prompt tokens start before 0, which segment() allows
    shifted = [(start - len(prompt), end - len(prompt)) for start, end in offsets]
    positions = segment(response, shifted).last_tokens
    fit = bisect.bisect_left(positions, max_len)  # positions never decrease
    labels = list(labels) if labels is not None else [0] * len(positions)
    end = len(ids) if tokenizer.eos_token_id is not None and len(ids) < max_len else None
    if end is not None:
        ids = [*ids, tokenizer.eos_token_id]
    outcome = outcome if end is not None else 0
    # an empty response starts at the EOS
    start = next((i for i, (_, stop) in enumerate(shifted) if stop > 0), len(shifted))
    return Example(ids[:max_len], positions[:fit], labels[:fit], end, outcome, start, lm)


@dataclass
class Batch:
    """Right-padded sequences and the (row, position, label) of every supervised line end
    (and end-of-response token with an outcome label)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    rows: torch.Tensor  # (N,) which sequence
    cols: torch.Tensor  # (N,) which position: a line's last token
    labels: torch.Tensor  # (N,) float, +1 / 0 / −1
    lm_targets: torch.Tensor  # (B, T) the next token where the LM loss reads, else −100
    response_start: torch.Tensor  # (B,) each sequence's first response token

    def to(self, device: torch.device) -> Batch:
        return Batch(*(getattr(self, name).to(device) for name in Batch.__dataclass_fields__))


def collate(examples: Sequence[Example], pad_id: int, skip_neutral: bool) -> Batch:
    T = max(len(example.ids) for example in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    lm_targets = torch.full((len(examples), T), -100, dtype=torch.long)  # cross_entropy skips
    rows, cols, labels = [], [], []
    for b, example in enumerate(examples):
        input_ids[b, : len(example.ids)] = torch.tensor(example.ids)
        attention_mask[b, : len(example.ids)] = 1
        if example.lm and example.response_start < len(example.ids):
            # position t predicts token t + 1: from the prompt's last token to the EOS (a
            # first token with nothing before it has no position to be predicted from)
            start = max(example.response_start, 1)
            lm_targets[b, start - 1 : len(example.ids) - 1] = torch.tensor(example.ids[start:])
        for position, label in zip(example.positions, example.labels, strict=True):
            if skip_neutral and label == 0:
                continue
            rows.append(b)
            cols.append(position)
            labels.append(float(label))
        if example.end is not None and example.outcome:
            rows.append(b)
            cols.append(example.end)
            labels.append(float(example.outcome))
    return Batch(
        input_ids,
        attention_mask,
        torch.tensor(rows, dtype=torch.long),
        torch.tensor(cols, dtype=torch.long),
        torch.tensor(labels, dtype=torch.float32),
        lm_targets,
        torch.tensor([example.response_start for example in examples], dtype=torch.long),
    )


# ============================================================================ loss and scores


def pointwise_loss(
    outputs: torch.Tensor, labels: torch.Tensor, loss: Loss, reduction: str = "mean"
) -> torch.Tensor:
    """Mean (or sum) loss of raw outputs (N,) against labels (N,) in {−1, 0, +1}."""
    if loss == "mse":
        return F.mse_loss(outputs.float(), labels, reduction=reduction)
    return F.binary_cross_entropy_with_logits(
        outputs.float(), (labels + 1) / 2, reduction=reduction
    )


def line_loss(
    values: torch.Tensor, batch: Batch, loss: Loss, reduction: str = "mean"
) -> torch.Tensor:
    """The PRM loss. ``values``: (B, T). Only line-end positions enter it (a gather, so every
    other position gets exactly zero gradient)."""
    outputs = values[batch.rows, batch.cols]  # (N,)
    return pointwise_loss(outputs, batch.labels, loss, reduction)


def outcome_pairs(
    examples: Sequence[Example], problems: Sequence[str]
) -> tuple[list[int], list[int]]:
    """(passing, failing) indices of every two examples of one problem with opposite outcomes
    whose end fits the window: the pairs of the ranking loss."""
    good: dict[str, list[int]] = defaultdict(list)
    bad: dict[str, list[int]] = defaultdict(list)
    for i, (example, problem) in enumerate(zip(examples, problems, strict=True)):
        if example.end is not None and example.outcome:
            (good if example.outcome > 0 else bad)[problem].append(i)
    pairs = [(g, b) for problem in good for g in good[problem] for b in bad.get(problem, [])]
    return [g for g, _ in pairs], [b for _, b in pairs]


def rank_loss(ends: torch.Tensor, passing: Sequence[int], failing: Sequence[int]) -> torch.Tensor:
    """Bradley–Terry loss of raw end outputs (N,): mean log(1 + exp(−(s_pass − s_fail))) over
    the pairs. It only sees differences, so it moves no score's level, only their order
    within a problem; the pointwise loss keeps the level."""
    margin = ends[list(passing)].float() - ends[list(failing)].float()
    return F.softplus(-margin).mean()


def to_scores(raw: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Raw head outputs → scores on the label scale [−1, 1] (MSE outputs already are)."""
    return raw if loss == "mse" else 2 * torch.sigmoid(raw) - 1


def context_length(config: PretrainedConfig) -> int:
    """The most positions a backbone of ``config`` can see (no limit declared: effectively
    unbounded)."""
    return getattr(config, "max_position_embeddings", None) or 1_000_000


@torch.no_grad()
def line_outputs(
    prm: Scorer, examples: Sequence[Example], pad_id: int, batch_size: int
) -> tuple[list[list[float]], list[float | None]]:
    """Raw outputs at every line end of every example, and at its end-of-response token (None
    past the window), batched."""
    device = next(prm.parameters()).device
    was_training = prm.training
    prm.eval()
    lines: list[list[float]] = []
    ends: list[float | None] = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        batch = collate(chunk, pad_id, skip_neutral=False).to(device)
        with autocast_for(device):
            values = prm(batch.input_ids, batch.attention_mask, batch.response_start)
            values = values.float().cpu()  # (B, T)
        for b, example in enumerate(chunk):
            lines.append(values[b, example.positions].tolist())
            ends.append(None if example.end is None else float(values[b, example.end]))
    prm.train(was_training)
    return lines, ends


def score_responses(
    prm: Scorer,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 32,
    *,
    loss: Loss = "mse",
) -> list[list[float]]:
    """The PRM's score of every line of every response (``split_lines``), in [−1, 1] for a
    BCE PRM and on the label scale for an MSE one. Raises if a line ends past the context."""
    return score_lines_and_ends(prm, tokenizer, prompts, responses, batch_size, loss=loss)[0]


def score_lines_and_ends(
    prm: Scorer,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 32,
    *,
    loss: Loss = "mse",
) -> tuple[list[list[float]], list[float | None]]:
    """``score_responses`` plus each response's end score: the PRM at an EOS after it, which
    a PRM trained with ``outcome_labels`` reads as "this program, as written, passes"."""
    window = context_length(prm.config)
    examples = [encode(tokenizer, p, r, window) for p, r in zip(prompts, responses, strict=True)]
    for example, response in zip(examples, responses, strict=True):
        n_lines = len(split_lines(response))
        if len(example.positions) < n_lines:
            raise ValueError(
                f"a response of {n_lines} lines ends past the PRM's context of {window} tokens "
                f"(only {len(example.positions)} lines fit)"
            )
    raw, ends = line_outputs(prm, examples, tokenizer.pad_token_id, batch_size)
    return (
        [to_scores(torch.tensor(r), loss).tolist() for r in raw],
        [None if e is None else float(to_scores(torch.tensor(e), loss)) for e in ends],
    )


# ============================================================================ checkpoints


class PRMEnsemble(torch.nn.Module):
    """Several PRMs trained from one policy, scored as one: the mean of their raw outputs at
    every position (a BCE ensemble's mean logit). Members trained from different seeds err on
    different responses, so the mean ranks better than most of its members (README, "PRM
    seeds, and their mean"). Costs one forward pass per member."""

    def __init__(self, members: Sequence[ValueModel]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    @property
    def config(self) -> PretrainedConfig:
        return self.members[0].config  # one architecture: every member starts from the policy

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) → (B, T), the members' mean (``response_start``: ``ValueModel.forward``)."""
        return torch.stack(
            [m(input_ids, attention_mask, response_start) for m in self.members]
        ).mean(0)


Scorer = ValueModel | PRMEnsemble  # what ``load_prm`` gives and every scoring function takes


def save_prm(
    folder: Path,
    prm: ValueModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: PRMTrainConfig,
    loop: LoopState,
    metrics: dict[str, float],
) -> Path:
    """A PRM's folder: the weights of ``loop.best_step`` and ``prm.json`` (loss, step, how
    training ended, config, metrics)."""
    prm.save(folder, tokenizer)
    meta = {
        "loss": cfg.loss,
        "step": loop.best_step,
        "steps_done": loop.done,
        "stopped_early": loop.stopped_early,
        "config": cfg.model_dump(mode="json"),
    }
    (folder / PRM_JSON).write_text(json.dumps({**meta, "metrics": metrics}, indent=2))
    return folder


def save_ensemble(
    folder: Path,
    members: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    cfg: PRMTrainConfig,
    step: int,
    metrics: dict[str, float],
) -> Path:
    """An ensemble's folder: its members' PRM folders (``members``: their names inside it,
    the lowest validation loss first), the shared tokenizer, and ``prm.json`` listing them."""
    tokenizer.save_pretrained(folder)
    meta = {"loss": cfg.loss, "step": step, "members": list(members)}
    meta |= {"config": cfg.model_dump(mode="json"), "metrics": metrics}
    (folder / PRM_JSON).write_text(json.dumps(meta, indent=2))
    return folder


def prm_meta(folder: Path) -> dict[str, Any]:
    """``prm.json``, or {} for a folder without one (a PPO critic)."""
    meta = folder / PRM_JSON
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_prm(
    folder: str | Path, device: str = "auto"
) -> tuple[Scorer, PreTrainedTokenizerBase, Loss]:
    """A saved PRM or ensemble in eval mode, its tokenizer, and the loss it was trained with
    (a folder without ``prm.json`` — a PPO critic — reads as MSE: raw values are its scores)."""
    folder = Path(folder)
    meta = prm_meta(folder)
    prm: Scorer = (
        PRMEnsemble([ValueModel.load(folder / name) for name in meta["members"]])
        if "members" in meta
        else ValueModel.load(folder)
    )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
    return prm.to(pick_device(device)).eval(), tokenizer, meta.get("loss", "mse")


def critic_start(folder: str | Path) -> Path:
    """The folder PPO's ValueInit loads the critic from: the PRM's own, or an ensemble's
    member with the lowest validation loss (the critic is one network)."""
    folder = Path(folder)
    members = prm_meta(folder).get("members")
    return folder / members[0] if members else folder


def score_table(
    prm_dir: str | Path, prompt: str, code: str, device: str = "auto"
) -> list[tuple[int, float, str]]:
    """(1-based line number, score, text) for every line of ``code``, the completion of
    ``prompt``: what ``prm-studio score`` prints and the dashboard's heatmap shows."""
    prm, tokenizer, loss = load_prm(prm_dir, device)
    (scores,) = score_responses(prm, tokenizer, [prompt], [code], loss=loss)
    return [
        (line.index + 1, score, line.text)
        for line, score in zip(split_lines(code), scores, strict=True)
    ]


# ============================================================================ metrics (pure)


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of each distinct value's last copy
    return (last - (counts - 1) / 2)[inverse]


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(a random positive outscores a random negative), ties counting one half — the
    Mann–Whitney rank statistic. NaN when a class is missing."""
    s, y = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((midranks(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(
    scores: Sequence[float], positive: Sequence[bool], max_points: int = 201
) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) as the threshold falls through every distinct
    score, from (0, 0) to (1, 1): ties move both rates at once, so the trapezoid area is
    ``roc_auc``. Thinned to about ``max_points`` for storing with a run."""
    s, y = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each tie group
    tp = np.cumsum(y)[ends]
    fp = ends + 1 - tp
    keep = np.unique(np.linspace(0, len(ends) - 1, min(len(ends), max_points)).astype(int))
    points = zip(fp[keep] / max(fp[-1], 1), tp[keep] / max(tp[-1], 1), strict=True)
    return [(0.0, 0.0), *((float(f), float(t)) for f, t in points)]


def first_error(scores: Sequence[float], neutral: Sequence[bool]) -> int | None:
    """The 1-based line the PRM first scores below 0 (neutral lines skipped), or None."""
    for index, (score, is_blank) in enumerate(zip(scores, neutral, strict=True)):
        if not is_blank and score < 0:
            return index + 1
    return None


def response_score(
    scores: Sequence[float], neutral: Sequence[bool], how: Aggregate, end: float | None = None
) -> float:
    """One score per response: from its code lines' scores the minimum (the weakest step), the
    last line or the mean; or ``end``, the score at the EOS after it (the outcome the PRM
    predicts, when trained with outcome labels). A response without code, or whose end is past
    the window, scores −1."""
    if how == "end":
        return -1.0 if end is None else end
    code = [score for score, is_blank in zip(scores, neutral, strict=True) if not is_blank]
    if not code:
        return -1.0
    return {"min": min(code), "last": code[-1], "mean": float(np.mean(code))}[how]


def calibration_curve(
    scores: Sequence[float], positive: Sequence[bool], bins: int
) -> tuple[list[dict[str, float]], float]:
    """Predicted P(+1) = (score + 1) / 2 against the observed share of +1 lines, in equal-width
    bins (empty ones left out), and the expected calibration error."""
    p = np.clip((np.asarray(scores, dtype=float) + 1) / 2, 0.0, 1.0)
    y = np.asarray(positive, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        predicted, observed = float(p[inside].mean()), float(y[inside].mean())
        curve.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "predicted": predicted,
                "observed": observed,
                "count": int(inside.sum()),
            }
        )
        ece += inside.mean() * abs(predicted - observed)
    return curve, float(ece)


def label_metrics(
    scores: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
    neutral: Sequence[Sequence[bool]],
    bins: int,
) -> tuple[dict[str, float], list[dict[str, float]], list[tuple[float, float]]]:
    """``prm/…`` metrics of per-line scores against held-out labels, the calibration curve
    and the ROC curve.

    Accuracy and AUC use labelled lines only (label 0 — neutral — excluded); a line is called
    positive when its score is ≥ 0. First-error localisation is scored on failing responses
    (any −1 line): the first line scored below 0 against the first line labelled −1 (``m* + 1``
    unless that line is blank or a comment)."""
    flat = [
        (s, y)
        for ss, ys in zip(scores, labels, strict=True)
        for s, y in zip(ss, ys, strict=True)
        if y
    ]
    line_scores = [s for s, _ in flat]
    positive = [y > 0 for _, y in flat]
    curve, ece = calibration_curve(line_scores, positive, bins)
    roc = roc_curve(line_scores, positive)
    hits = []  # (exact, within one line) per failing response
    for ss, ys, ns in zip(scores, labels, neutral, strict=True):
        if -1 not in ys:
            continue
        truth = ys.index(-1) + 1
        guess = first_error(ss, ns[: len(ss)])  # lines past the window have no score
        hits.append((guess == truth, guess is not None and abs(guess - truth) <= 1))
    metrics = {
        "prm/accuracy": float(np.mean([(s >= 0) == (y > 0) for s, y in flat])),
        "prm/auc": roc_auc(line_scores, positive),
        "prm/ece": ece,
        "prm/n_lines": float(len(flat)),
        "prm/positive_share": float(np.mean(positive)),
        "prm/n_failing": float(len(hits)),
    }
    if hits:
        metrics["prm/first_error_exact"] = float(np.mean([exact for exact, _ in hits]))
        metrics["prm/first_error_within1"] = float(np.mean([near for _, near in hits]))
    return metrics, curve, roc


def best_of_k(scores: Sequence[float], passed: Sequence[bool], k: int) -> float:
    """Expected pass rate of the top-scored response of a uniformly random k-subset of the
    pool, exactly: the response ranked i-th (0-based, best first) tops C(n−1−i, k−1) of the
    C(n, k) subsets. Among tied scores the pick is random, so each tied response counts with
    its tie group's mean pass rate."""
    s, y = np.asarray(scores, dtype=float), np.asarray(passed, dtype=float)
    _, group = np.unique(s, return_inverse=True)
    y = (np.bincount(group, weights=y) / np.bincount(group))[group]
    order = np.argsort(-s, kind="stable")
    n, total = len(s), math.comb(len(s), k)
    weights = np.array([math.comb(n - 1 - i, k - 1) / total for i in range(n)])
    return float(weights @ y[order])


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (with a 0/1 ``y`` the point-biserial one); NaN if either is flat."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class PooledResponse:
    """A sampled response of the reranking pool, its verdict and the PRM's line scores."""

    problem_index: int
    passed: bool
    line_scores: list[float]
    neutral: list[bool]  # per line: blank or comment-only
    record: SampleRecord
    end_score: float | None = None


def policy_confidence(response: PooledResponse) -> float:
    """The sampling policy's mean log-probability per token of the response; an empty
    completion (no token kept) ranks below every other."""
    mean_logprob = response.record.mean_logprob
    return -math.inf if mean_logprob is None else mean_logprob


def rerank_metrics(
    pool: Sequence[PooledResponse], ks: Sequence[int]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Best-of-K by the PRM (each aggregate) vs a random pick vs the oracle, averaged over
    problems, for each K no larger than the smallest per-problem pool; and the correlation
    between the response score and passing. When the responses carry their sampling records
    with the policy's mean token log-probability, ``policy_logprob`` reranks by it: the
    baseline that needs no PRM (a PRM that does not beat it adds nothing the sampling policy
    did not already know)."""
    by_problem: dict[int, list[PooledResponse]] = defaultdict(list)
    for response in pool:
        by_problem[response.problem_index].append(response)

    def agg(r: PooledResponse, how: Aggregate) -> float:
        return response_score(r.line_scores, r.neutral, how, r.end_score)

    rankers: dict[str, Callable[[PooledResponse], float]] = {
        f"prm_{how}": partial(agg, how=how) for how in AGGREGATES
    }
    records = [r.record for r in pool]
    if all(records) and any(record.mean_logprob is not None for record in records):
        rankers["policy_logprob"] = policy_confidence

    n = min(len(group) for group in by_problem.values())
    table: dict[str, dict[str, float]] = {}
    for k in (k for k in ks if k <= n):
        row = {
            name: float(
                np.mean(
                    [
                        best_of_k([rank(r) for r in g], [r.passed for r in g], k)
                        for g in by_problem.values()
                    ]
                )
            )
            for name, rank in rankers.items()
        }
        row["random"] = float(
            np.mean([np.mean([r.passed for r in g]) for g in by_problem.values()])
        )
        row["oracle"] = float(
            np.mean([pass_at_k(len(g), sum(r.passed for r in g), k) for g in by_problem.values()])
        )
        table[str(k)] = row
    metrics = {
        f"prm/rerank@{k}/{name}": value for k, row in table.items() for name, value in row.items()
    }
    passed = [float(r.passed) for r in pool]
    for name, rank in rankers.items():
        how = name.removeprefix("prm_")
        scored = [(rank(r), float(r.passed)) for r in pool]
        scored = [(s, y) for s, y in scored if math.isfinite(s)]  # empty completions: −inf
        metrics[f"prm/corr_{how}"] = pearson([s for s, _ in scored], [y for _, y in scored])
        groups = [([rank(r) for r in g], [r.passed for r in g]) for g in by_problem.values()]
        metrics[f"prm/pairwise_{how}"] = within_problem_auc(groups)
    metrics["prm/pool_pass_rate"] = float(np.mean(passed))
    return metrics, table


def within_problem_auc(groups: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> float:
    """P(a passing response outscores a failing one of the same problem), ties counting half,
    over all such pairs: what reranking needs. The correlation over the whole pool can be high
    while this is 0.5, when scores tell easy problems from hard ones but not good responses
    from bad ones."""
    wins = pairs = 0.0
    for scores, passed in groups:
        good = [s for s, ok in zip(scores, passed, strict=True) if ok]
        bad = [s for s, ok in zip(scores, passed, strict=True) if not ok]
        wins += sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
        pairs += len(good) * len(bad)
    return wins / pairs if pairs else math.nan


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Drop NaNs (an undefined AUC or correlation): not every database stores them."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


# ============================================================================ training


@dataclass
class PRMResult:
    checkpoint: Path
    best_step: int  # an ensemble's: the run's last step (its metrics are logged there)
    steps_done: int  # optimizer steps, of all members
    stopped_early: bool
    best_val_loss: float
    train_seconds: float
    counts: dict[str, int]
    metrics: dict[str, float]  # prm/… on the validation labels
    calibration: list[dict[str, float]]
    roc: list[tuple[float, float]]  # (false-positive rate, true-positive rate), lines
    members: list[dict[str, Any]] = field(default_factory=list)  # an ensemble's, in seed order

    def summary(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "best_step": self.best_step,
            "steps_done": self.steps_done,
            "stopped_early": self.stopped_early,
            "best_val_loss": self.best_val_loss,
            "train_seconds": round(self.train_seconds, 2),
            **self.counts,
            "metrics": finite(self.metrics),
            "calibration": self.calibration,
            "roc": self.roc,
            **({"members": self.members} if self.members else {}),
        }


def epoch_order(problems: Sequence[str], by_problem: bool, rng: torch.Generator) -> list[int]:
    """One epoch's order of the training examples (``problems``: each one's task id): shuffled,
    or, ``by_problem``, problems shuffled with each one's examples together (in a shuffled
    order), so that a batch holds responses to one prompt for the ranking loss to compare."""
    order = torch.randperm(len(problems), generator=rng).tolist()
    if not by_problem:
        return order
    groups: dict[str, list[int]] = defaultdict(list)
    for i in order:
        groups[problems[i]].append(i)
    names = list(groups)
    return [i for g in torch.randperm(len(names), generator=rng).tolist() for i in groups[names[g]]]


def supervised_lines(examples: Sequence[Example], skip_neutral: bool) -> int:
    return sum(sum(1 for y in e.labels if y or not skip_neutral) for e in examples)


def outcome_label(record: PRMRecord) -> int:
    """+1 / −1 for a response that passed / failed its tests, 0 when the record does not say."""
    return 0 if record.passed is None else (1 if record.passed else -1)


@dataclass
class SplitExamples:
    """The encoded train and validation examples, which every member of an ensemble shares."""

    train: list[Example]
    train_problems: list[str]  # each train example's task id
    val: list[Example]
    val_problems: list[str]
    val_records: list[PRMRecord]
    counts: dict[str, int]


def split_examples(
    cfg: PRMTrainConfig,
    records: Sequence[PRMRecord],
    tokenizer: PreTrainedTokenizerBase,
    window: int,
) -> SplitExamples:
    train_records, val_records = split_by_problem(records, cfg.val_fraction, cfg.seed)

    def examples_of(rs: Sequence[PRMRecord]) -> list[Example]:
        return [
            encode(
                tokenizer,
                r.prompt,
                r.response,
                window,
                r.labels,
                outcome_label(r) if cfg.outcome_labels else 0,
                lm=cfg.lm_weight > 0 and bool(r.passed),
            )
            for r in rs
        ]

    # a record trains if a line or its end has a label: a failing response of comments only
    # still teaches the end score that comments do not make a program pass
    kept = [
        (e, r.task_id)
        for e, r in zip(examples_of(train_records), train_records, strict=True)
        if supervised_lines([e], cfg.skip_neutral) or e.outcome
    ]
    train, train_problems = [e for e, _ in kept], [task for _, task in kept]
    val, val_problems = examples_of(val_records), [r.task_id for r in val_records]
    if not train or not supervised_lines(val, cfg.skip_neutral):
        raise ValueError("no labelled line fits the window in the train or validation split")
    counts = {
        "n_train_records": len(train),
        "n_val_records": len(val),
        "n_train_problems": len({r.task_id for r in train_records}),
        "n_val_problems": len({r.task_id for r in val_records}),
        "n_train_lines": supervised_lines(train, cfg.skip_neutral),
        "n_val_lines": supervised_lines(val, cfg.skip_neutral),
    }
    return SplitExamples(train, train_problems, val, val_problems, val_records, counts)


def validation_loss(
    prm: Scorer,
    examples: Sequence[Example],
    problems: Sequence[str],
    pad_id: int,
    cfg: PRMTrainConfig,
) -> tuple[float, list[list[float]], list[float | None]]:
    """The loss as in training — the mean over validation line ends and labelled ends, plus
    the weighted ranking loss over every pair of one problem — and the raw outputs at line
    ends and at ends."""
    raw, ends = line_outputs(prm, examples, pad_id, cfg.eval_batch_size)
    kept = [
        (o, y)
        for os, e in zip(raw, examples, strict=True)
        for o, y in zip(os, e.labels, strict=True)
        if y or not cfg.skip_neutral
    ]
    kept += [(o, e.outcome) for o, e in zip(ends, examples, strict=True) if e.outcome]
    outputs = torch.tensor([o for o, _ in kept])
    labels = torch.tensor([float(y) for _, y in kept])
    loss = pointwise_loss(outputs, labels, cfg.loss).item()
    if cfg.rank_weight > 0:
        passing, failing = outcome_pairs(examples, problems)
        if passing:
            end_outputs = torch.tensor([0.0 if e is None else e for e in ends])
            loss += cfg.rank_weight * rank_loss(end_outputs, passing, failing).item()
    return loss, raw, ends


def end_metrics(
    ends: Sequence[float | None], examples: Sequence[Example], problems: Sequence[str]
) -> dict[str, float]:
    """How well the end score (already on the label scale) tells passing responses from
    failing ones on held-out records: AUC and accuracy at 0, and the AUC within problems
    (a passing response against a failing one to the same prompt: what reranking needs)."""
    pairs = [
        (s, e.outcome > 0, problem)
        for s, e, problem in zip(ends, examples, problems, strict=True)
        if e.outcome and s is not None
    ]
    if not pairs:
        return {}
    by_problem: dict[str, tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for s, passed, problem in pairs:
        by_problem[problem][0].append(s)
        by_problem[problem][1].append(passed)
    return {
        "prm/end_auc": roc_auc([s for s, _, _ in pairs], [y for _, y, _ in pairs]),
        "prm/end_accuracy": float(np.mean([(s >= 0) == y for s, y, _ in pairs])),
        "prm/end_pairwise_auc": within_problem_auc(list(by_problem.values())),
    }


def heldout_eval(
    prm: Scorer, data: SplitExamples, pad_id: int, cfg: PRMTrainConfig
) -> tuple[dict[str, float], list[dict[str, float]], list[tuple[float, float]]]:
    """The ``prm/…`` metrics of a trained PRM (or ensemble) on the validation split — line
    labels, first errors, end scores, the validation loss, and the weight it learnt for the
    policy's likelihood (an ensemble's mean) — its calibration and ROC curves."""
    val_loss, raw, ends = validation_loss(prm, data.val, data.val_problems, pad_id, cfg)
    scores = [to_scores(torch.tensor(r), cfg.loss).tolist() for r in raw]
    neutral = [[is_neutral(line) for line in r.completions] for r in data.val_records]
    labels = [e.labels for e in data.val]
    metrics, curve, roc = label_metrics(scores, labels, neutral, cfg.calibration_bins)
    end_scores = [None if e is None else float(to_scores(torch.tensor(e), cfg.loss)) for e in ends]
    metrics.update(end_metrics(end_scores, data.val, data.val_problems))
    metrics["prm/val_loss"] = val_loss
    members = prm.members if isinstance(prm, PRMEnsemble) else [prm]
    likelihoods = [m.likelihood for m in members if m.likelihood is not None]
    if likelihoods:
        metrics["prm/likelihood_weight"] = float(np.mean([lk.learnt() for lk in likelihoods]))
    return metrics, curve, roc


@dataclass
class LoopState:
    """What the training loop carries from step to step besides weights, optimizer and RNG:
    a checkpoint saves it and a resumed run restores it, so resuming is exact."""

    done: int = 0  # optimizer steps taken
    order: list[int] = field(default_factory=list)  # the rest of this epoch's shuffled order
    losses: list[float] = field(default_factory=list)  # train losses since the last log
    lm_losses: list[float] = field(default_factory=list)  # and LM losses (``lm_weight``)
    best_loss: float = math.inf
    best_step: int = 0
    evals_since_best: int = 0
    stopped_early: bool = False


def cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_train_state(
    folder: Path,
    prm: ValueModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    data_rng: torch.Generator,
    loop: LoopState,
    best_weights: dict[str, torch.Tensor] | None,
    cfg: PRMTrainConfig,
    member: int,
) -> Path:
    """A resumable checkpoint of ensemble member ``member`` (0 for a single PRM): the PRM's
    folder (loadable as a PRM) plus ``train_state.pt``. The best weights are stored only when
    they are not the folder's own."""
    prm.save(folder, tokenizer)
    state = {
        "member": member,
        "loop": asdict(loop),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(data_rng),
        "best_weights": None if loop.best_step == loop.done else best_weights,
    }
    torch.save(state, folder / STATE_PT)
    for_people = {
        "member": member,
        "step": loop.done,
        "best_step": loop.best_step,
        "best_val_loss": loop.best_loss,
        "stopped_early": loop.stopped_early,
        "config": cfg.model_dump(mode="json"),
    }
    (folder / STATE_JSON).write_text(json.dumps(for_people, indent=2))
    return folder


def train_prm(
    cfg: PRMTrainConfig,
    records: Sequence[PRMRecord],
    reporter: Reporter,
    out_dir: Path,
    *,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    on_member: Callable[[Path, int], None] | None = None,
    resume_dir: Path | None = None,
) -> PRMResult | None:
    """Train, checkpoint every ``cfg.checkpoint_every`` steps and when training ends (calling
    ``on_checkpoint(folder, step)`` as each is written, so a job can register it at once), then
    evaluate the best weights. ``resume_dir``, such a checkpoint, continues exactly where it
    was written: weights, optimizer, data order, RNG, early-stopping state, best weights.

    With ``cfg.ensemble`` = N > 1, members 0 … N−1 train one after another (``train_member``)
    on the same split, each saved in the ensemble's folder when it ends (then ``on_member(folder,
    step)``); the checkpoint is that folder, scored by the members' mean (``PRMEnsemble``). A
    run resumed in member m keeps members 0 … m−1, which must be in their folders.
    Distributed, rank 0 returns the result and the other ranks None."""
    if cfg.init_from is None:
        raise ValueError("init_from: name the policy folder the PRM starts from (the SFT model)")
    out_dir = Path(out_dir)  # every member seeds its own randomness (``train_member``)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(cfg.init_from))
    window = min(cfg.max_seq_len, context_length(AutoConfig.from_pretrained(cfg.init_from)))
    data = split_examples(cfg, records, tokenizer, window)
    if resume_dir is None:  # logged once per run, not again on resume
        reporter.metrics(0, {f"charts/{name}": value for name, value in data.counts.items()})
    # the member a checkpoint belongs to (one written before ensembles existed: member 0)
    resumed_member = (
        json.loads((Path(resume_dir) / STATE_JSON).read_text()).get("member", 0)
        if resume_dir
        else 0
    )
    pad_id = tokenizer.pad_token_id
    train = partial(train_member, cfg, data, tokenizer, reporter, out_dir, on_checkpoint)
    started = time.perf_counter()
    if cfg.ensemble == 1:
        trained = train(member=0, resume_dir=resume_dir)
        if trained is None:  # not rank 0
            return None
        prm, loop = trained
        metrics, curve, roc = heldout_eval(prm, data, pad_id, cfg)
        reporter.metrics(loop.best_step, finite(metrics))
        best = save_prm(
            out_dir / f"step_{loop.best_step:06d}", prm, tokenizer, cfg, loop, finite(metrics)
        )
        return PRMResult(
            checkpoint=best,
            best_step=loop.best_step,
            steps_done=loop.done,
            stopped_early=loop.stopped_early,
            best_val_loss=loop.best_loss,
            train_seconds=time.perf_counter() - started,
            counts=data.counts,
            metrics=metrics,
            calibration=curve,
            roc=roc,
        )

    # ---- an ensemble: members one after another, each saved in the ensemble's folder ----
    folder = out_dir / "ensemble"
    member_dirs = [folder / f"member_{i}" for i in range(cfg.ensemble)]
    for member, member_dir in enumerate(member_dirs[:resumed_member]):  # an earlier attempt's
        if not (member_dir / PRM_JSON).is_file():
            raise ValueError(
                f"resuming member {resumed_member} of the ensemble, member {member} is missing "
                f"from {member_dir}: resume from a checkpoint of member {member} or start over"
            )
    for member, member_dir in enumerate(member_dirs[resumed_member:], start=resumed_member):
        trained = train(member=member, resume_dir=resume_dir if member == resumed_member else None)
        if trained is None:  # not rank 0
            continue
        prm, loop = trained
        metrics, _, _ = heldout_eval(prm, data, pad_id, cfg)
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + member, "ensemble": 1})
        save_prm(member_dir, prm, tokenizer, member_cfg, loop, finite(metrics))
        if on_member is not None:
            on_member(member_dir, member * cfg.steps + loop.done)
        del trained, prm  # one member's weights in memory at a time while training
    if not is_main():
        return None
    members = [prm_meta(d) for d in member_dirs]
    # the run's step where the last member ended: the ensemble's metrics and artifact land there
    last_step = (cfg.ensemble - 1) * cfg.steps + members[-1]["steps_done"]
    # the lowest validation loss first: ValueInit starts the critic from it (``critic_start``)
    order = sorted(range(cfg.ensemble), key=lambda i: members[i]["metrics"]["prm/val_loss"])
    ensemble = PRMEnsemble([ValueModel.load(member_dirs[i]) for i in order]).to(
        rank_device(cfg.device)
    )
    metrics, curve, roc = heldout_eval(ensemble, data, pad_id, cfg)
    reporter.metrics(last_step, finite(metrics))
    save_ensemble(
        folder, [member_dirs[i].name for i in order], tokenizer, cfg, last_step, finite(metrics)
    )
    return PRMResult(
        checkpoint=folder,
        best_step=last_step,
        steps_done=sum(m["steps_done"] for m in members),
        stopped_early=all(m["stopped_early"] for m in members),
        best_val_loss=metrics["prm/val_loss"],
        train_seconds=time.perf_counter() - started,
        counts=data.counts,
        metrics=metrics,
        calibration=curve,
        roc=roc,
        members=[
            {
                "folder": str(d),
                "seed": m["config"]["seed"],
                "best_step": m["step"],  # the member's own step; the run's is i × steps + it
                "steps_done": m["steps_done"],
                **m["metrics"],
            }
            for d, m in zip(member_dirs, members, strict=True)
        ],
    )


def policy_lm_head(prm: ValueModel, policy_dir: str | None) -> torch.Tensor:
    """The (V, H) weight that maps the PRM backbone's last hidden states to next-token logits,
    as the policy's LM head does: with tied embeddings the backbone's own input embedding
    (trained with it), else the policy's output layer, frozen."""
    if prm.config.tie_word_embeddings:
        return prm.backbone.get_input_embeddings().weight
    return output_layer(Path(str(policy_dir))).to(prm.head.weight.device)


def output_layer(policy_dir: Path) -> torch.Tensor:
    """A policy's output-layer weight (V, H) in fp32, read alone from its safetensors: loading
    the whole policy for it would hold a 7B model's 28 GB of fp32 in host memory per process.
    Its name comes from the architecture built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(policy_dir))
    weight = skeleton.get_output_embeddings().weight
    name = next(name for name, param in skeleton.named_parameters() if param is weight)
    index = policy_dir / "model.safetensors.index.json"
    shards = json.loads(index.read_text())["weight_map"] if index.exists() else {}
    file = policy_dir / shards.get(name, "model.safetensors")
    if file.exists():
        with safe_open(file, framework="pt") as tensors:
            if name in tensors.keys():  # noqa: SIM118 (a safe_open handle has no ``in``)
                return tensors.get_tensor(name).float()
    raise ValueError(
        f"{policy_dir} holds no safetensors with {name!r}, the output layer that lm_weight "
        "reads: save the policy with save_pretrained, or set lm_weight to 0"
    )


def train_member(
    cfg: PRMTrainConfig,
    data: SplitExamples,
    tokenizer: PreTrainedTokenizerBase,
    reporter: Reporter,
    out_dir: Path,
    on_checkpoint: Callable[[Path, int], None] | None,
    *,
    member: int,
    resume_dir: Path | None,
) -> tuple[ValueModel, LoopState] | None:
    """The training loop of one PRM — ensemble member ``member``, seeded ``cfg.seed + member``
    — and its best weights with the loop's final state (None on ranks other than 0). Its step s
    is the run's step ``member × cfg.steps + s``: metrics, progress and checkpoints use that."""
    seed = cfg.seed + member
    offset = member * cfg.steps
    seed_everything(seed)
    device = rank_device(cfg.device)  # cuda:LOCAL_RANK when distributed on GPUs
    fp32 = torch.float32  # master weights; forward passes under bf16 autocast on GPUs
    prm = (
        ValueModel.load(resume_dir, dtype=fp32)
        if resume_dir
        else ValueModel.from_policy(
            cfg.init_from, seed=seed, dtype=fp32, likelihood=cfg.policy_likelihood
        )
    ).to(device)
    optimizer = make_optimizer(prm, cfg)
    lm_head = policy_lm_head(prm, cfg.init_from) if cfg.lm_weight > 0 else None
    data_rng = torch.Generator().manual_seed(seed)
    loop, best_weights = LoopState(), None
    if resume_dir:
        saved = torch.load(Path(resume_dir) / STATE_PT, weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        restore_rng(saved["rng"], data_rng)
        loop = LoopState(**saved["loop"])
        best_weights = cpu_copy(prm) if loop.best_step == loop.done else saved["best_weights"]
    pad_id = tokenizer.pad_token_id
    train, train_problems = data.train, data.train_problems
    label = f" member {member + 1}/{cfg.ensemble}" if cfg.ensemble > 1 else ""

    def checkpoint() -> None:
        folder = save_train_state(
            out_dir / "train" / f"step_{offset + loop.done:06d}",
            prm,
            tokenizer,
            optimizer,
            data_rng,
            loop,
            best_weights,
            cfg,
            member,
        )
        if on_checkpoint is not None:
            on_checkpoint(folder, offset + loop.done)

    # ---- the loop ----
    prm.train()
    prm_ddp = ddp(prm)  # trains through the wrapper (gradients averaged over processes)
    start_step = loop.done
    started = time.perf_counter()
    while loop.done < cfg.steps and not loop.stopped_early:
        step = loop.done
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        if len(loop.order) < cfg.batch_size:
            loop.order += epoch_order(train_problems, cfg.rank_weight > 0, data_rng)
        indices, loop.order = loop.order[: cfg.batch_size], loop.order[cfg.batch_size :]
        mine = shard(indices)  # every process its share of the batch
        examples = [train[i] for i in mine]
        batch = collate(examples, pad_id, cfg.skip_neutral).to(device)
        with autocast_for(device):
            values, hidden = prm_ddp(
                batch.input_ids, batch.attention_mask, batch.response_start, with_hidden=True
            )
        # The mean over the batch's supervised lines on all processes: DDP averages gradients
        # over processes, so each divides its sum by (all lines / processes).
        lines = all_reduce_sum(torch.tensor(float(len(batch.labels)), device=device))
        loss = line_loss(values, batch, cfg.loss, reduction="sum") * world() / lines
        if cfg.rank_weight > 0:  # pairs within this process's share of the batch
            passing, failing = outcome_pairs(examples, [train_problems[i] for i in mine])
            if passing:
                ends = values[torch.arange(len(examples)), [e.end or 0 for e in examples]]
                loss = loss + cfg.rank_weight * rank_loss(ends, passing, failing)
        objective = loss  # the PRM's loss, plus the LM loss that only keeps the backbone
        if lm_head is not None:
            # next-token loss of the passing responses through the policy's LM head, the mean
            # over their tokens on all processes (as the line loss). Logits only where a target
            # is, (N, V): a real model's (B, T, V) in fp32 would be gigabytes (V ≈ 150k).
            trained = batch.lm_targets >= 0  # (B, T)
            tokens = all_reduce_sum(trained.sum().float())
            if tokens > 0:
                logits = hidden[trained].float() @ lm_head.float().T  # fp32, as the line loss
                lm_sum = F.cross_entropy(logits, batch.lm_targets[trained], reduction="sum")
                lm_loss = lm_sum * world() / tokens
                objective = loss + cfg.lm_weight * lm_loss
                loop.lm_losses.append(all_reduce_sum(lm_loss.detach()).item() / world())
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(prm.parameters(), cfg.grad_clip)
        optimizer.step()
        step_loss = all_reduce_sum(loss.detach()).item() / world()  # the whole batch's mean
        loop.losses.append(step_loss)
        done = loop.done = step + 1

        if done % cfg.log_every == 0:
            logged = {"losses/prm_train": float(np.mean(loop.losses))}
            if loop.lm_losses:
                logged["losses/prm_lm"] = float(np.mean(loop.lm_losses))
            reporter.metrics(offset + done, logged)
            loop.losses.clear()
            loop.lm_losses.clear()
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if is_main():  # the other processes wait at the broadcast below
                val_loss, _, ends = validation_loss(prm, data.val, data.val_problems, pad_id, cfg)
                # the end score's AUCs and accuracy as curves beside the loss (raw outputs: the
                # BCE's sigmoid moves neither); the within-problem AUC is what reranking needs
                curves = end_metrics(ends, data.val, data.val_problems)
                reporter.metrics(
                    offset + done,
                    {"losses/prm_val": val_loss}
                    | {f"val/{name.removeprefix('prm/')}": v for name, v in finite(curves).items()},
                )
                if val_loss < loop.best_loss:
                    loop.best_loss, loop.best_step, loop.evals_since_best = val_loss, done, 0
                    best_weights = cpu_copy(prm)
                else:
                    loop.evals_since_best += 1
            # rank 0's verdict is everyone's, so that all processes stop at the same step
            loop.best_loss, loop.best_step, loop.evals_since_best = broadcast(
                (loop.best_loss, loop.best_step, loop.evals_since_best)
            )
        loop.stopped_early = loop.evals_since_best >= cfg.patience
        seconds_per_step = (time.perf_counter() - started) / (done - start_step)
        steps_left = cfg.steps - done + (cfg.ensemble - 1 - member) * cfg.steps
        reporter.progress(
            (offset + done) / (cfg.ensemble * cfg.steps),
            f"step {offset + done}/{cfg.ensemble * cfg.steps}{label} loss {step_loss:.3f} "
            f"best val {loop.best_loss:.3f} ETA {seconds_per_step * steps_left:.0f}s",
        )
        ended = done == cfg.steps or loop.stopped_early
        if cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or ended) and is_main():
            checkpoint()
    if not is_main():  # rank 0 alone holds the best weights, evaluates and saves them
        return None
    assert best_weights is not None  # the last step always evaluates
    prm.load_state_dict(best_weights)
    return prm, loop


# ============================================================================ reranking


@dataclass
class RerankResult:
    metrics: dict[str, float]  # prm/rerank@K/…, prm/corr_…
    table: dict[str, dict[str, float]]  # K -> {prm_<aggregate>…, random, oracle}
    pool: list[PooledResponse]

    def summary(self) -> dict[str, Any]:
        return {"metrics": finite(self.metrics), "table": self.table, "n_pool": len(self.pool)}


def rerank_eval(
    prm: Scorer,
    prm_tokenizer: PreTrainedTokenizerBase,
    loss: Loss,
    policy: Any,
    policy_tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    cfg: RerankConfig,
    run_batch: RunBatch,
    reporter: Reporter,
    batch_size: int = 32,
) -> RerankResult:
    """Sample ``cfg.pool.n_samples`` responses per problem from ``policy``, run them, score
    every line with the PRM, and rerank (paper: best-of-30 gains about 4 points)."""
    sampled = evaluate(
        policy,
        policy_tokenizer,
        problems,
        cfg.pool.model_copy(update={"greedy": False}),
        run_batch,
        reporter,
    ).records
    pool = score_pool(prm, prm_tokenizer, loss, problems, sampled, batch_size)
    metrics, table = rerank_metrics(pool, cfg.pool.ks)
    return RerankResult(metrics, table, pool)


def score_pool(
    prm: Scorer,
    prm_tokenizer: PreTrainedTokenizerBase,
    loss: Loss,
    problems: Sequence[Problem],
    sampled: Sequence[SampleRecord],
    batch_size: int = 32,
) -> list[PooledResponse]:
    """Sampled responses (their verdicts known) with the PRM's line and end scores: one pool
    can be scored by several PRMs (``bench.prm_scale``)."""
    line_scores, end_scores = score_lines_and_ends(
        prm,
        prm_tokenizer,
        [problems[r.problem_index].prompt for r in sampled],
        [r.completion for r in sampled],
        batch_size,
        loss=loss,
    )
    return [
        PooledResponse(
            r.problem_index,
            r.passed,
            scores,
            [x.neutral for x in split_lines(r.completion)],
            r,
            end,
        )
        for r, scores, end in zip(sampled, line_scores, end_scores, strict=True)
    ]
