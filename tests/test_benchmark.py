"""The embedded benchmark: deterministic, well-formed, a split that holds out what it claims,
references that pass their own tests in the sandbox, and exact ground-truth line labels."""

from __future__ import annotations

import ast
from collections import Counter

import pytest
from pydantic import ValidationError

from models.benchmark import (
    OPS,
    BenchmarkConfig,
    generate,
    ground_truth_labels,
    ground_truth_requests,
    held_out_pairs,
    judge_program,
    labels_from_results,
    misplaced_argument_mistakes,
    one_line_mistakes,
    problem_steps,
    render_reference,
    run_steps,
)
from models.problems import exec_request

SMALL = BenchmarkConfig(n_train=300, n_test=120, seed=3)


@pytest.fixture(scope="module")
def default_problems():
    return generate()


def test_deterministic_from_the_seed() -> None:
    first, again = generate(SMALL), generate(SMALL)
    assert [p.model_dump() for p in first] == [p.model_dump() for p in again]
    other = generate(SMALL.model_copy(update={"seed": 4}))
    assert [p.prompt for p in other] != [p.prompt for p in first]


def test_default_sizes_and_difficulties(default_problems) -> None:
    splits = Counter(p.split for p in default_problems)
    assert splits == {"train": 5000, "test": 500}
    for split in ("train", "test"):
        difficulty = Counter(p.meta["difficulty"] for p in default_problems if p.split == split)
        assert set(difficulty) == set(range(2, 11))
        assert max(difficulty.values()) - min(difficulty.values()) <= 1  # evenly spread
    assert len({p.prompt for p in default_problems}) == len(default_problems)
    assert len({p.task_id for p in default_problems}) == len(default_problems)


def test_problem_format() -> None:
    for problem in generate(SMALL):
        steps = problem_steps(problem)
        assert problem.entry_point == "f"
        assert problem.prompt.startswith("def f(v0: list[int]) -> list[int]:\n")
        assert problem.prompt.endswith('."""\n') and problem.prompt.count("\n") == 2
        lines = problem.reference.splitlines()
        assert len(lines) == len(steps) + 1 == problem.meta["difficulty"] + 1
        for i, line in enumerate(lines, start=1):
            assert line.startswith("    ") and not line.startswith("     ")
            assert len(ast.parse(line.strip()).body) == 1  # one statement a line
            assert "#" not in line and line.strip()
            expected_start = f"v{i} = " if i < len(lines) else f"return v{len(steps)}"
            assert line.strip().startswith(expected_start)
        assert problem.reference.endswith("\n")
        assert len(problem.tests) >= 5
        outputs = [s[f"v{len(steps)}"] for s in run_steps(steps, problem.meta["inputs"])[-1]]
        assert problem.tests == [
            f"assert f({xs!r}) == {out!r}"
            for xs, out in zip(problem.meta["inputs"], outputs, strict=True)
        ]
        compile(problem.prompt + problem.reference, problem.task_id, "exec")


def test_every_op_is_used(default_problems) -> None:
    used = Counter(step["op"] for p in default_problems for step in p.meta["steps"])
    assert set(used) == set(OPS)


def test_split_holds_out_what_it_claims(default_problems) -> None:
    cfg = BenchmarkConfig()
    held = set(held_out_pairs(cfg))
    int_ops = [op for op in cfg.ops if OPS[op].arg == "int"]
    ref_ops = [op for op in cfg.ops if OPS[op].arg == "ref"]
    assert {op for op, _ in held} == set(int_ops + ref_ops)
    assert len(held) == cfg.holdout_per_op * len(int_ops + ref_ops)
    train_pairs = {
        (s["op"], s["arg"]) for p in default_problems if p.split == "train" for s in p.meta["steps"]
    }
    assert not held & train_pairs, "a held-out (op, argument) pair appears in train"
    for problem in (p for p in default_problems if p.split == "test"):
        pairs = [(s["op"], s["arg"]) for s in problem.meta["steps"]]
        held_here = [pair for pair in pairs if pair in held]
        assert len(held_here) == 1
        assert problem.meta["held_out"] == {"op": held_here[0][0], "arg": held_here[0][1]}
    # Every held-out pair is tested, and each held-out number is seen in train with other ops,
    # so the test split asks to combine known parts, not to guess unseen ones.
    tested = {tuple(p.meta["held_out"].values()) for p in default_problems if p.split == "test"}
    assert tested == held
    train_args = {arg for op, arg in train_pairs if OPS[op].arg == "int"}
    assert {arg for op, arg in held if OPS[op].arg == "int"} <= train_args


def test_held_out_pairs_follow_the_seed() -> None:
    assert held_out_pairs(BenchmarkConfig(seed=1)) == held_out_pairs(BenchmarkConfig(seed=1))
    assert held_out_pairs(BenchmarkConfig(seed=1)) != held_out_pairs(BenchmarkConfig(seed=2))
    two = held_out_pairs(BenchmarkConfig(holdout_per_op=2))
    assert Counter(op for op, _ in two) == {op: 2 for op in OPS if OPS[op].arg != "none"}


def test_knobs() -> None:
    cfg = BenchmarkConfig(
        n_train=40, n_test=20, min_steps=3, max_steps=4, ops=["add", "mul", "rev", "take"]
    )
    problems = generate(cfg)
    assert {p.meta["difficulty"] for p in problems} == {3, 4}
    assert {s["op"] for p in problems for s in p.meta["steps"]} <= {"add", "mul", "rev", "take"}


@pytest.mark.parametrize(
    "update, message",
    [
        ({"min_steps": 5, "max_steps": 4}, "min_steps must be <= max_steps"),
        ({"ops": ["add", "nope"]}, "unknown ops"),
        ({"ops": ["rev", "sort"]}, "at least one op with an integer argument"),
        ({"param_min": 2, "param_max": 3, "holdout_per_op": 2}, "holdout_per_op"),
        ({"n_tests": 3}, "greater than or equal to 5"),
    ],
)
def test_config_errors(update, message) -> None:
    with pytest.raises(ValidationError, match=message):
        BenchmarkConfig(**update)


def test_too_small_a_space_is_an_error_not_a_hang() -> None:
    cfg = BenchmarkConfig(
        n_train=200, n_test=0, min_steps=1, max_steps=1, ops=["add"], param_min=2, param_max=4
    )
    with pytest.raises(ValueError, match="distinct train problems"):
        generate(cfg)


def test_labels_from_results() -> None:
    completion = "    v1 = a\n    # note\n\n    v2 = b\n    return v2\n"
    # verdicts: [full program, prefix through code line 1, through code line 2]
    assert labels_from_results(completion, [True, False, False]) == [1, 0, 0, 1, 1]
    assert labels_from_results(completion, [False, True, False]) == [1, 0, 0, -1, -1]
    assert labels_from_results(completion, [False, False, True]) == [-1, 0, 0, -1, -1]
    assert labels_from_results(completion, [False, True, True]) == [1, 0, 0, 1, -1]
    assert labels_from_results("\n# only a comment\n", [False]) == [0, 0]
    with pytest.raises(ValueError, match="expected 3 verdicts"):
        labels_from_results(completion, [True])


def test_ground_truth_requests_shape() -> None:
    problem = generate(SMALL)[0]
    completion = problem.reference
    requests = ground_truth_requests(problem, completion)
    n_code = len(completion.splitlines())
    assert len(requests) == n_code
    assert requests[0] == exec_request(problem, completion, "gt/full")
    for m, request in enumerate(requests[1:], start=1):
        assert request["id"] == f"gt/{m}"
        assert request["program"].startswith(problem.prompt)
        assert len(request["tests"]) == len(problem.tests)


# ----------------------------------------------------------------------------- in the sandbox


def test_every_reference_passes_its_tests(sandbox_run_batch, default_problems) -> None:
    # Every 20th problem: all ops, difficulties and both splits, in seconds instead of minutes
    # (the whole default set passes too; it runs 44,000 test processes).
    sample = default_problems[::20]
    assert {s["op"] for p in sample for s in p.meta["steps"]} == set(OPS)
    assert {(p.split, p.meta["difficulty"]) for p in sample} == {
        (split, n) for split in ("train", "test") for n in range(2, 11)
    }
    requests = [exec_request(p, p.reference, p.task_id) for p in sample]
    results = sandbox_run_batch(requests)
    failed = [(r.id, r.status, r.detail) for r in results if r.status != "passed"]
    assert not failed, failed[:5]
    assert all(r.passed == r.total == 8 for r in results)


def _mutate(line: str) -> str:
    """A plausible mistake: a different number, or a different op on the same variable."""
    head, _, expr = line.partition(" = ")
    return f"{head} = {expr.replace('x', 'x + 1', 1)}" if "x" in expr else f"{head} = [1]\n"


def test_ground_truth_labels(sandbox_run_batch) -> None:
    # Problems whose later steps do not read v1, so that merging steps 1 and 2 stays correct.
    problems = [
        p
        for p in generate(SMALL)
        if p.meta["difficulty"] >= 4 and all(s["arg"] != 1 for s in p.meta["steps"][2:])
    ][:6]
    for problem in problems:
        lines = problem.reference.splitlines(keepends=True)
        n = len(lines)
        assert ground_truth_labels(problem, problem.reference, sandbox_run_batch) == [1] * n

        wrong = 2  # 0-based: the third line goes wrong
        mutated = [*lines[:wrong], _mutate(lines[wrong]), *lines[wrong + 1 :]]
        with_comment = [mutated[0], "    # a comment\n", "\n", *mutated[1:]]
        labels = ground_truth_labels(problem, "".join(with_comment), sandbox_run_batch)
        assert labels == [1, 0, 0, 1] + [-1] * (n - wrong), problem.task_id

        no_return = "".join(lines[:-1])  # every step right, but it never returns
        expected = [1] * (n - 2) + [-1]
        assert ground_truth_labels(problem, no_return, sandbox_run_batch) == expected

        # Two steps merged into one line are still right: the program passes.
        steps = problem_steps(problem)
        first, second = lines[0].strip(), lines[1].strip()
        merged_expr = second.partition(" = ")[2].replace("v1", f"({first.partition(' = ')[2]})")
        merged = [f"    v2 = {merged_expr}\n", *lines[2:]]
        labels = ground_truth_labels(problem, "".join(merged), sandbox_run_batch)
        assert labels == [1] * (n - 1), (steps, merged)


def test_one_line_mistakes_change_one_line_and_use_only_pairs_already_seen() -> None:
    problems = generate(SMALL)
    train = [p for p in problems if p.meta["split"] == "train"]
    seen = {step for p in train for step in problem_steps(p)}
    assert not seen & set(held_out_pairs(SMALL))
    kinds = Counter()
    for problem in train[:40]:
        steps = problem_steps(problem)
        mistakes = one_line_mistakes(steps, seen)
        assert mistakes and steps not in mistakes
        for program in mistakes:
            assert set(program) <= seen
            if len(program) == len(steps):  # one step replaced
                (i,) = [i for i, (a, b) in enumerate(zip(program, steps, strict=True)) if a != b]
                kinds["op" if program[i][0] != steps[i][0] else "argument"] += 1
            else:  # one step left out, the rest in order
                assert len(program) == len(steps) - 1
                assert any(program == steps[:i] + steps[i + 1 :] for i in range(len(steps)))
                kinds["left out"] += 1
            render_reference(program)  # every ref names an earlier variable
    assert set(kinds) == {"op", "argument", "left out"}


def test_misplaced_arguments_move_a_number_of_the_prompt_to_another_step() -> None:
    train = [p for p in generate(SMALL) if p.meta["split"] == "train"]
    seen = {step for p in train for step in problem_steps(p)}
    found = 0
    for problem in train[:40]:
        steps = problem_steps(problem)
        numbers = {arg for op, arg in steps if OPS[op].arg == "int"}
        misplaced = misplaced_argument_mistakes(steps, seen)
        assert len(misplaced) == len({tuple(m) for m in misplaced})
        for program in misplaced:
            (i,) = [i for i, (a, b) in enumerate(zip(program, steps, strict=True)) if a != b]
            (op, arg), (old_op, old_arg) = program[i], steps[i]
            assert op == old_op and arg != old_arg and arg in numbers and (op, arg) in seen
            assert program in one_line_mistakes(steps, seen)  # one of them, drawn apart
        found += len(misplaced)
        if len(numbers) < 2:
            assert misplaced == []
    assert found > 40


def test_judged_mistakes_get_the_labels_the_sandbox_gives(sandbox_run_batch) -> None:
    """judge_program (pure Python, for our own renderings) and ground_truth_requests (the
    sandbox, for generated code) are one rule: every mistake of a few problems gets the same
    labels and the same test count from both."""
    problems = [p for p in generate(SMALL) if p.meta["split"] == "train"][:6]
    seen = {step for p in problems for step in problem_steps(p)}
    for problem in problems:
        steps = problem_steps(problem)
        for program in [steps, *one_line_mistakes(steps, seen)[::3]]:
            text = render_reference(program)
            tests_passed, verdicts = judge_program(steps, program, problem.meta["inputs"])
            results = sandbox_run_batch(ground_truth_requests(problem, text))
            assert labels_from_results(text, verdicts) == labels_from_results(
                text, [r.status == "passed" for r in results]
            ), (problem.task_id, program)
            assert tests_passed == results[0].passed, (problem.task_id, program)
