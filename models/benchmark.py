"""The embedded benchmark: list programs whose solution needs one line per step.

It is what the whole pipeline (SFT, RL, PRM data, PRM, PPO) runs on a laptop, so it is small,
regular and deterministic from a seed, and its difficulty — the number of steps — moves pass@1
steeply (DESIGN §4). Everything here is pure Python.

Grammar
-------
A problem with ``n`` steps (``min_steps <= n <= max_steps``)::

    def f(v0: list[int]) -> list[int]:
        \"\"\"PHRASE_1, PHRASE_2, ..., PHRASE_n.\"\"\"
        v1 = EXPR_1
        ...
        vn = EXPR_n
        return vn

The prompt is the header and the docstring line (it ends right where the body begins); the
reference is the body: one statement per line at 4 spaces, no blank lines or comments. Step
``i`` reads ``v{i-1}`` (``src`` below) and binds ``v{i}``. The ops (``OPS``)::

    phrase            expression                              argument
    add a             [x + a for x in src]                    a in [param_min, param_max]
    sub a             [x - a for x in src]                    (same for every op below
    mul a             [x * a for x in src]                     with an integer argument)
    div a             [x // a for x in src]
    mod a             [x % a for x in src]
    min a             [min(x, a) for x in src]
    max a             [max(x, a) for x in src]
    keep > a          [x for x in src if x > a]
    keep < a          [x for x in src if x < a]
    keep mult a       [x for x in src if x % a == 0]
    drop mult a       [x for x in src if x % a != 0]
    take a            src[:a]
    skip a            src[a:]
    reverse           src[::-1]
    sort              sorted(src)
    zip-add vj        [x + y for x, y in zip(src, vj)]       j in [0, i - 2]: an earlier
    append vj         src + vj                                variable, not src itself

The tests must catch wrong lines, so a drawn program is kept only if every step changes the
list on at least half of the test inputs, leaves it non-empty on at least half, keeps it short
(``MAX_LIST_LEN``) with small values (``MAX_ABS_VALUE``), and if every plausible one-line
mistake — a step left out, or its argument off by one — fails at least one test. Without the
last rule a later step can erase an earlier one (``max 7`` after ``div 6`` makes every value 7)
and a program with a wrong line would pass.

Split: a generalisation test
----------------------------
Each step maps to one line, so a split by held-out step *combinations* tests nothing (a model
that learnt every line learnt every combination). Instead some (op, argument) **pairs** are held
out (``held_out_pairs``): for every op with an argument, ``holdout_per_op`` of its arguments,
spread so that each held-out number still appears in train with other ops. Train problems never
contain a held-out pair; every test problem contains exactly one, at a random position. So the
test split asks for a line never seen in training — "add 7" when train had "add 3" and "mul 7"
— and, for ``zip-add``/``append``, one that must name the right earlier variable: its text
depends on earlier lines, not on the step alone.

Ground-truth line labels
------------------------
Every step has a reference line, so the first wrong line of a completion can be found exactly.
The **state** after code line ``m`` of a completion is compared with the reference's after step
``min(m, n)``: the values of all variables the reference has bound by then (``v0`` … ``vm``),
matched by name, on every test input; extra variables are ignored. A prefix is also right if
the function already returned the correct final output (steps merged into fewer lines). The
last line is judged by the whole program's own tests, and a program that passes them is right
on every line. Generated code runs only in the sandbox: ``ground_truth_requests`` builds one
request per prefix (the prefix, then a line that raises a snapshot of ``locals()``, then
asserts against the reference's states); ``labels_from_results`` maps the verdicts to labels.
The labels assume the grammar's one statement per line; multi-line statements are judged at
whatever line the prefix cut them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.lines import split_lines
from models.problems import Problem, exec_request

ENTRY_POINT = "f"
HEADER = f"def {ENTRY_POINT}(v0: list[int]) -> list[int]:\n"
INDENT = "    "
MAX_LIST_LEN = 30
MAX_ABS_VALUE = 10**6
STEP_TRIES = 50
"""Draws per step before the problem is restarted (a step may be uninformative)."""
PROBLEM_TRIES = 10_000
"""Draws per problem before giving up: the config admits too few distinct problems."""


@dataclass(frozen=True)
class Op:
    """One step kind. ``arg`` is an integer (``int``), an earlier variable (``ref``) or none."""

    arg: Literal["int", "ref", "none"]
    phrase: str  # docstring text; {a} is the argument
    expr: str  # the line's right-hand side: {src} the previous variable, {ref} = v{a}


OPS: dict[str, Op] = {
    "add": Op("int", "add {a}", "[x + {a} for x in {src}]"),
    "sub": Op("int", "sub {a}", "[x - {a} for x in {src}]"),
    "mul": Op("int", "mul {a}", "[x * {a} for x in {src}]"),
    "div": Op("int", "div {a}", "[x // {a} for x in {src}]"),
    "mod": Op("int", "mod {a}", "[x % {a} for x in {src}]"),
    "min": Op("int", "min {a}", "[min(x, {a}) for x in {src}]"),
    "max": Op("int", "max {a}", "[max(x, {a}) for x in {src}]"),
    "gt": Op("int", "keep > {a}", "[x for x in {src} if x > {a}]"),
    "lt": Op("int", "keep < {a}", "[x for x in {src} if x < {a}]"),
    "mult": Op("int", "keep mult {a}", "[x for x in {src} if x % {a} == 0]"),
    "nmult": Op("int", "drop mult {a}", "[x for x in {src} if x % {a} != 0]"),
    "take": Op("int", "take {a}", "{src}[:{a}]"),
    "skip": Op("int", "skip {a}", "{src}[{a}:]"),
    "rev": Op("none", "reverse", "{src}[::-1]"),
    "sort": Op("none", "sort", "sorted({src})"),
    "zadd": Op("ref", "zip-add v{a}", "[x + y for x, y in zip({src}, {ref})]"),
    "cat": Op("ref", "append v{a}", "{src} + {ref}"),
}


class BenchmarkConfig(BaseModel):
    """The embedded benchmark's knobs; the same config always gives the same problems."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seed of the generator and of the held-out pairs.")
    n_train: int = Field(default=5000, ge=0, description="Problems in the train split.")
    n_test: int = Field(default=500, ge=0, description="Problems in the test split.")
    min_steps: int = Field(default=2, ge=1, le=30, description="Fewest steps (body lines - 1).")
    max_steps: int = Field(
        default=10, ge=1, le=30, description="Most steps; difficulty cycles min..max evenly."
    )
    ops: list[str] = Field(
        default_factory=lambda: list(OPS),
        min_length=1,
        description=f"Step kinds to use, from: {', '.join(OPS)}.",
    )
    param_min: int = Field(
        default=2, ge=2, description="Smallest integer argument (>= 2: div/mod by 1 do nothing)."
    )
    param_max: int = Field(default=9, ge=2, description="Largest integer argument.")
    holdout_per_op: int = Field(
        default=1,
        ge=1,
        description="Arguments held out of train per op with an argument; every test problem "
        "uses exactly one held-out (op, argument) pair.",
    )
    n_tests: int = Field(default=8, ge=5, le=50, description="Unit tests (inputs) per problem.")
    list_len_min: int = Field(default=5, ge=1, description="Shortest input list.")
    list_len_max: int = Field(default=10, ge=1, le=MAX_LIST_LEN, description="Longest input list.")
    value_min: int = Field(default=-5, description="Smallest input value.")
    value_max: int = Field(default=20, description="Largest input value.")

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkConfig:
        problems = []
        if self.min_steps > self.max_steps:
            problems.append("min_steps must be <= max_steps")
        if self.param_min > self.param_max:
            problems.append("param_min must be <= param_max")
        if self.list_len_min > self.list_len_max:
            problems.append("list_len_min must be <= list_len_max")
        if self.value_min >= self.value_max:
            problems.append("value_min must be < value_max")
        unknown = sorted(set(self.ops) - set(OPS))
        if unknown:
            problems.append(f"unknown ops {unknown}; known: {', '.join(OPS)}")
        if len(set(self.ops)) != len(self.ops):
            problems.append("ops must not repeat")
        if not any(OPS[op].arg == "int" for op in self.ops if op in OPS):
            problems.append("ops needs at least one op with an integer argument")
        if self.holdout_per_op >= self.param_max - self.param_min + 1:
            problems.append("holdout_per_op must leave each op at least one train argument")
        if any(OPS[op].arg == "ref" for op in self.ops if op in OPS) and (
            self.holdout_per_op >= self.max_steps - 1
        ):
            problems.append("zadd/cat need max_steps > holdout_per_op + 1 (or leave them out)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


Step = tuple[str, int | None]
"""(op name, argument): the argument is an integer, an earlier variable's index, or None."""


# ----------------------------------------------------------------------------- the split


def _arg_domain(op: str, cfg: BenchmarkConfig) -> list[int]:
    if OPS[op].arg == "int":
        return list(range(cfg.param_min, cfg.param_max + 1))
    return list(range(cfg.max_steps - 1))  # ref: v0 .. v{max_steps-2}


def held_out_pairs(cfg: BenchmarkConfig) -> list[Step]:
    """The (op, argument) pairs that appear in test problems only.

    Integer ops take their held-out arguments in turn from one seeded permutation of the
    argument range, so a held-out number is held out for few ops and seen with the others.
    """
    rng = random.Random(f"{cfg.seed}/held-out")
    values = _arg_domain(next(op for op in cfg.ops if OPS[op].arg == "int"), cfg)
    order = rng.sample(values, len(values))
    pairs: list[Step] = []
    int_ops = [op for op in cfg.ops if OPS[op].arg == "int"]
    for rank, op in enumerate(int_ops):
        k = cfg.holdout_per_op
        pairs += [(op, order[(rank * k + t) % len(order)]) for t in range(k)]
    for op in (op for op in cfg.ops if OPS[op].arg == "ref"):
        pairs += [(op, j) for j in sorted(rng.sample(_arg_domain(op, cfg), cfg.holdout_per_op))]
    return sorted(pairs)


def _feasible(step: Step, position: int) -> bool:
    """Can ``step`` be step number ``position`` (1-based)? A ref must name v0..v{position-2}."""
    op, arg = step
    return OPS[op].arg != "ref" or (arg is not None and arg <= position - 2)


# ----------------------------------------------------------------------------- rendering


def render_line(step: Step, position: int) -> str:
    """The reference line of ``step`` as step number ``position`` (no indent, no newline)."""
    op, arg = step
    expr = OPS[op].expr.format(src=f"v{position - 1}", ref=f"v{arg}", a=arg)
    return f"v{position} = {expr}"


def render_prompt(steps: Sequence[Step]) -> str:
    phrases = ", ".join(OPS[op].phrase.format(a=arg) for op, arg in steps)
    return f'{HEADER}{INDENT}"""{phrases}."""\n'


def render_reference(steps: Sequence[Step]) -> str:
    lines = [render_line(step, i) for i, step in enumerate(steps, start=1)]
    return "".join(f"{INDENT}{line}\n" for line in [*lines, f"return v{len(steps)}"])


# ----------------------------------------------------------------------------- semantics


_BUILTINS = {"min": min, "max": max, "zip": zip, "sorted": sorted}


@cache
def _compiled(op: str, arg: int | None) -> Callable[[list[int], list[int] | None], list[int]]:
    """The step as a function of its source list (and, for zadd/cat, the list it names).

    It is the very expression the reference line holds, so the tests computed here and the
    rendered reference cannot disagree (the sandbox test checks it end to end). Only our own
    templates are evaluated here, never generated code.
    """
    expr = OPS[op].expr.format(src="src", ref="ref", a=arg)
    return eval(f"lambda src, ref: {expr}", {"__builtins__": _BUILTINS})


def _trace(steps: Sequence[Step], xs: list[int]) -> list[list[int]]:
    """The values of ``v0`` … ``vn`` on input ``xs``."""
    values = [xs]
    for step in steps:
        values.append(_step(step, values))
    return values


def _step(step: Step, values: list[list[int]]) -> list[int]:
    """The value ``step`` binds, given the values bound before it (``v0`` … ``v{i-1}``)."""
    op, arg = step
    ref = values[arg] if OPS[op].arg == "ref" and arg is not None else None
    return _compiled(op, arg)(values[-1], ref)


def run_steps(
    steps: Sequence[Step], inputs: Sequence[list[int]]
) -> list[list[dict[str, list[int]]]]:
    """``states[m][t]``: every variable bound after step ``m`` (``v0`` … ``vm``) on input ``t``."""
    traces = [_trace(steps, list(xs)) for xs in inputs]
    return [
        [{f"v{j}": trace[j] for j in range(m + 1)} for trace in traces]
        for m in range(len(steps) + 1)
    ]


def _mistakes(steps: Sequence[Step]) -> Iterator[tuple[int, Step | None]]:
    """Plausible one-line mistakes, as (step index, replacement): the step left out (None),
    or its argument off by one."""
    for i, (op, arg) in enumerate(steps):
        yield i, None
        if arg is not None and (OPS[op].arg == "int" or arg > 0):
            yield i, (op, arg + 1 if OPS[op].arg == "int" else arg - 1)


def _rerun(steps: Sequence[Step], trace: list[list[int]], i: int, wrong: Step | None) -> list[int]:
    """The output when step ``i`` is replaced by ``wrong`` (None: left out), reusing the
    values before it from ``trace``."""
    values = trace[: i + 1]
    for k in range(i, len(steps)):
        step = wrong if k == i else steps[k]
        values.append(values[-1] if step is None else _step(step, values))
    return values[-1]


def _tests_catch_mistakes(steps: Sequence[Step], inputs: Sequence[list[int]]) -> bool:
    """Does every plausible mistake fail at least one test? A later step can erase an earlier
    one's effect (``max 7`` after ``div 6`` makes every value 7); then a wrong line would pass."""
    traces = [_trace(steps, xs) for xs in inputs]
    return all(
        any(_rerun(steps, trace, i, wrong) != trace[-1] for trace in traces)
        for i, wrong in _mistakes(steps)
    )


def _informative(new: list[list[int]], old: list[list[int]]) -> bool:
    """The acceptance rule of the module docstring, on all test inputs at once."""
    half = math.ceil(len(new) / 2)
    changed = sum(a != b for a, b in zip(new, old, strict=True))
    nonempty = sum(bool(v) for v in new)
    small = all(len(v) <= MAX_LIST_LEN and all(abs(x) <= MAX_ABS_VALUE for x in v) for v in new)
    return changed >= half and nonempty >= half and small


# ----------------------------------------------------------------------------- sampling


def _sample_inputs(rng: random.Random, cfg: BenchmarkConfig) -> list[list[int]]:
    inputs: list[list[int]] = []
    while len(inputs) < cfg.n_tests:
        length = rng.randint(cfg.list_len_min, cfg.list_len_max)
        xs = [rng.randint(cfg.value_min, cfg.value_max) for _ in range(length)]
        if xs not in inputs:
            inputs.append(xs)
    return inputs


def _sample_step(rng: random.Random, cfg: BenchmarkConfig, position: int, held: set[Step]) -> Step:
    """A train step for ``position``: any op, any argument except the held-out pairs."""
    while True:
        op = rng.choice(cfg.ops)
        if OPS[op].arg == "none":
            return op, None
        choices = [a for a in _arg_domain(op, cfg) if (op, a) not in held]
        choices = [a for a in choices if _feasible((op, a), position)]
        if choices:
            return op, rng.choice(choices)


def _sample_steps(
    rng: random.Random,
    cfg: BenchmarkConfig,
    n: int,
    inputs: list[list[int]],
    held: set[Step],
    forced: tuple[int, Step] | None,
) -> list[Step] | None:
    """``n`` informative steps (None if a step found none: the caller starts over)."""
    traces = [[xs] for xs in inputs]  # the values bound so far, per input
    steps: list[Step] = []
    for position in range(1, n + 1):
        for _ in range(STEP_TRIES):
            is_forced = forced is not None and forced[0] == position
            step = forced[1] if is_forced else _sample_step(rng, cfg, position, held)
            values = [_step(step, trace) for trace in traces]
            if _informative(values, [trace[-1] for trace in traces]):
                break
            if is_forced:
                return None
        else:
            return None
        steps.append(step)
        for trace, value in zip(traces, values, strict=True):
            trace.append(value)
    return steps if _tests_catch_mistakes(steps, inputs) else None


def _make_problem(
    task_id: str, split: str, steps: list[Step], inputs: list[list[int]], held_step: Step | None
) -> Problem:
    outputs = [state[f"v{len(steps)}"] for state in run_steps(steps, inputs)[-1]]
    return Problem(
        task_id=task_id,
        prompt=render_prompt(steps),
        entry_point=ENTRY_POINT,
        tests=[
            f"assert {ENTRY_POINT}({xs!r}) == {out!r}"
            for xs, out in zip(inputs, outputs, strict=True)
        ],
        reference=render_reference(steps),
        meta={
            "source": "embedded",
            "split": split,
            "difficulty": len(steps),
            "steps": [{"op": op, "arg": arg} for op, arg in steps],
            "inputs": inputs,
            "held_out": None if held_step is None else {"op": held_step[0], "arg": held_step[1]},
        },
    )


def generate(cfg: BenchmarkConfig | None = None) -> list[Problem]:
    """All problems, train first; difficulty cycles through ``min_steps..max_steps``."""
    cfg = cfg or BenchmarkConfig()
    held_list = held_out_pairs(cfg)
    held = set(held_list)
    span = cfg.max_steps - cfg.min_steps + 1
    problems: list[Problem] = []
    for split, count in (("train", cfg.n_train), ("test", cfg.n_test)):
        rng = random.Random(f"{cfg.seed}/{split}")
        prompts: set[str] = set()
        for k in range(count):
            n = cfg.min_steps + k % span
            for _ in range(PROBLEM_TRIES):
                inputs = _sample_inputs(rng, cfg)
                forced = None
                if split == "test":
                    position = rng.randint(1, n)
                    options = [s for s in held_list if _feasible(s, position)]
                    forced = (position, rng.choice(options))
                steps = _sample_steps(rng, cfg, n, inputs, held, forced)
                if steps is not None and render_prompt(steps) not in prompts:
                    break
            else:
                raise ValueError(
                    f"cannot draw {count} distinct {split} problems with {n} steps; "
                    "use more ops, a wider argument range, or fewer problems"
                )
            prompts.add(render_prompt(steps))
            task_id = f"embedded/{split}/{k:05d}"
            held_step = forced[1] if forced else None
            problems.append(_make_problem(task_id, split, steps, inputs, held_step))
    return problems


def problem_steps(problem: Problem) -> list[Step]:
    """The step list stored in an embedded problem's meta."""
    steps = problem.meta.get("steps")
    if problem.meta.get("source") != "embedded" or not isinstance(steps, list):
        raise ValueError(f"{problem.task_id} is not an embedded-benchmark problem")
    return [(step["op"], step["arg"]) for step in steps]


# ----------------------------------------------------------------------------- one-line mistakes


def one_line_mistakes(steps: Sequence[Step], seen: Collection[Step]) -> list[list[Step]]:
    """Every program one line away from the reference ``steps``, as step lists: one step's
    argument changed, its op swapped for another of the same kind with the same argument, or
    the step left out (the later steps move up a line). Only (op, argument) pairs in ``seen``
    are used, so a mistake never shows a pair the data did not already hold — train problems'
    mistakes never leak the test split's held-out pairs. Contrastive PRM data
    (``models.labeling.synthetic_mistakes``): the reference and its mistakes differ in one
    line's content only, which is the difference a PRM must learn to see."""
    candidates = sorted(seen, key=str)  # a fixed order, so seeded draws repeat
    mistakes: list[list[Step]] = []
    for i, (op, arg) in enumerate(steps):
        kind = OPS[op].arg
        for other_op, other_arg in candidates:
            same_op = other_op == op and other_arg != arg
            swapped = other_op != op and OPS[other_op].arg == kind and other_arg == arg
            if (same_op or swapped) and _feasible((other_op, other_arg), i + 1):
                mistakes.append([*steps[:i], (other_op, other_arg), *steps[i + 1 :]])
        rest = [*steps[:i], *steps[i + 1 :]]
        if rest and all(_feasible(step, position) for position, step in enumerate(rest, 1)):
            mistakes.append(rest)
    return mistakes


def misplaced_argument_mistakes(steps: Sequence[Step], seen: Collection[Step]) -> list[list[Step]]:
    """The one-line mistakes that give a step another step's integer argument, its op kept:
    a number the prompt does hold, on the wrong line — the error a policy makes when it pairs
    the statement's numbers with the wrong steps, and one that a PRM checking only whether a
    line's number appears in the prompt cannot see. Only (op, argument) pairs in ``seen``."""
    numbers = sorted({arg for op, arg in steps if OPS[op].arg == "int" and arg is not None})
    return [
        [*steps[:i], (op, other), *steps[i + 1 :]]
        for i, (op, arg) in enumerate(steps)
        if OPS[op].arg == "int"
        for other in numbers
        if other != arg and (op, other) in seen
    ]


def judge_program(
    steps: Sequence[Step], program: Sequence[Step], inputs: Sequence[list[int]]
) -> tuple[int, list[bool]]:
    """``render_reference(program)`` judged against the reference ``steps``: the tests it
    passes, and the verdicts ``ground_truth_requests`` would give, in the order
    ``labels_from_results`` reads them (the whole program, then the state after each code line
    but the last). Computed from the templates here, not in the sandbox: the program is our
    own rendering of known steps, not generated code."""
    reference, states = run_steps(steps, inputs), run_steps(program, inputs)
    n, last = len(steps), f"v{len(program)}"
    outputs_match = [s[last] == r[f"v{n}"] for s, r in zip(states[-1], reference[-1], strict=True)]
    prefixes = [
        all(
            all(key in state and state[key] == value for key, value in want.items())
            for state, want in zip(states[m], reference[min(m, n)], strict=True)
        )
        for m in range(1, len(program) + 1)
    ]
    return sum(outputs_match), [all(outputs_match), *prefixes]


# ----------------------------------------------------------------------------- ground truth

_SNAPSHOT = "raise _PrmSnapshot(locals())"
_CHECKER = """

class _PrmSnapshot(Exception):
    def __init__(self, env):
        self.env = env


def _prm_check(args, output, state):
    try:
        got = {entry}(*args)
    except _PrmSnapshot as snapshot:
        return all(k in snapshot.env and snapshot.env[k] == v for k, v in state.items())
    return got == output
"""


def ground_truth_requests(
    problem: Problem, completion: str, request_id: str = "gt"
) -> list[dict[str, Any]]:
    """Sandbox requests that judge each line of ``completion`` (module docstring).

    Request 0 runs the whole program against the problem's tests; request ``m`` (1 <= m < T,
    T code lines) runs the prefix through code line ``m`` and compares its state with the
    reference's. Blank and comment lines are not judged.
    """
    steps = problem_steps(problem)
    inputs = problem.meta["inputs"]
    states = run_steps(steps, inputs)
    outputs = [state[f"v{len(steps)}"] for state in states[-1]]
    lines = split_lines(completion)
    code = [line for line in lines if not line.neutral]
    indent = code[0].text[: len(code[0].text) - len(code[0].text.lstrip())] if code else INDENT
    checker = _CHECKER.format(entry=problem.entry_point)
    requests = [exec_request(problem, completion, f"{request_id}/full")]
    for m in range(1, len(code)):
        state_index = min(m, len(steps))
        tests = [
            f"assert _prm_check([{xs!r}], {out!r}, {states[state_index][t]!r})"
            for t, (xs, out) in enumerate(zip(inputs, outputs, strict=True))
        ]
        program = problem.prompt + completion[: code[m - 1].stop] + indent + _SNAPSHOT + checker
        requests.append(
            {**exec_request(problem, "", f"{request_id}/{m}"), "program": program, "tests": tests}
        )
    return requests


def labels_from_results(completion: str, passed: Sequence[bool]) -> list[int]:
    """One label per line of ``completion`` (``models.lines.split_lines``) from the verdicts
    of ``ground_truth_requests``: +1 before the first wrong code line, -1 from it on, 0 for
    blank and comment lines."""
    lines = split_lines(completion)
    code = [i for i, line in enumerate(lines) if not line.neutral]
    if len(passed) != max(len(code), 1):
        raise ValueError(f"expected {max(len(code), 1)} verdicts, got {len(passed)}")
    full_ok = passed[0]
    ok = [*passed[1:], full_ok]  # ok[m - 1]: is the prefix through code line m right?
    first_wrong = len(code) if full_ok else ok.index(False)
    labels = [0] * len(lines)
    for rank, index in enumerate(code):
        labels[index] = 1 if rank < first_wrong else -1
    return labels


def ground_truth_labels(
    problem: Problem, completion: str, run_batch: Callable[[list[dict[str, Any]]], Sequence[Any]]
) -> list[int]:
    """Exact line labels of ``completion``; ``run_batch`` is the sandbox (results with a
    ``status``), passed in so that this module stays free of the worker layer."""
    results = run_batch(ground_truth_requests(problem, completion))
    return labels_from_results(completion, [result.status == "passed" for result in results])
