"""Run the benchmark scripts and collect their figures in BENCHMARKS.md.

    python -m bench                          # every bench/*.py, then BENCHMARKS.md at the root
    python -m bench --only sandbox,labeling  # some of them; the others' last results are kept
    python -m bench --out /tmp/BENCHMARKS.md

Every ``bench/*.py`` script (but this one) is a benchmark: it runs as its own process
(``python -m bench.NAME``, its defaults), its output streamed here prefixed with its name and
the seconds elapsed, and its last line of output is one JSON object of figures (DESIGN §6).
BENCHMARKS.md gets, per benchmark, the machine it ran on, the date, what it compares (the first
paragraph of its docstring) and its figures, ratios first. The results also sit in the file as
one JSON comment, so that a later ``--only`` run replaces just the benchmarks it runs. The exit
status is 1 when a benchmark failed (its section says how), 2 for an unknown ``--only`` name.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psutil

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR.parent / "BENCHMARKS.md"
RESULTS_MARK = "<!-- bench results: "
TICK_S = 60.0  # a line saying the bench is still running, when it has been quiet this long
TAIL_LINES = 15


@dataclass
class BenchResult:
    name: str
    compares: str  # the first paragraph of the script's docstring
    date: str
    seconds: float
    returncode: int
    figures: dict[str, Any] | None  # the last line's JSON object; None if there was none
    tail: list[str] = field(default_factory=list)  # the last lines of output, on failure
    machine: dict[str, str] = field(default_factory=dict)  # what it ran on (``machine()``)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.figures is not None


# ============================================================================ discovery


def discover(folder: Path) -> list[str]:
    """The benchmark scripts in ``folder``: every ``*.py`` but ``__init__``/``__main__``."""
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__"))


def compares(script: Path) -> str:
    """The first paragraph of a script's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def last_json(lines: Sequence[str]) -> dict[str, Any] | None:
    """The JSON object on the last non-blank line, if that is what it holds."""
    last = next((line for line in reversed(lines) if line.strip()), "")
    try:
        value = json.loads(last)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# ============================================================================ running


def run_bench(folder: Path, name: str, log: TextIO, facts: dict[str, str]) -> BenchResult:
    """Run ``folder/name.py`` as ``python -m <folder>.<name>`` from the folder's parent,
    streaming its stdout (its stderr goes straight through)."""
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = [sys.executable, "-u", "-m", f"{folder.name}.{name}"]
    process = subprocess.Popen(
        command, cwd=folder.parent, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert process.stdout is not None
    heard = [time.monotonic()]
    done = threading.Event()

    def tick() -> None:
        while not done.wait(5.0):
            if time.monotonic() - heard[0] >= TICK_S:
                print(f"[{name} {time.monotonic() - started:5.0f}s] … running", file=log)
                heard[0] = time.monotonic()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            heard[0] = time.monotonic()
            print(f"[{name} {heard[0] - started:5.0f}s] {line}", end="", file=log, flush=True)
        returncode = process.wait()
    finally:
        done.set()
        ticker.join()
    figures = last_json(lines)
    return BenchResult(
        name=name,
        compares=compares(folder / f"{name}.py"),
        date=date,
        seconds=round(time.monotonic() - started, 1),
        returncode=returncode,
        figures=figures,
        tail=[] if returncode == 0 and figures is not None else lines[-TAIL_LINES:],
        machine=facts,
    )


def gpus() -> str:
    """The GPUs ``nvidia-smi`` lists (without initialising CUDA here), or "none"."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    listing = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    )
    names = [line.strip() for line in listing.stdout.splitlines() if line.strip()]
    return ", ".join(names) if listing.returncode == 0 and names else "none"


FACT_ORDER = ["CPU", "cores", "RAM", "GPU", "OS", "Python", "torch"]  # rows of the table


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "GPU": gpus(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "load average (1 min) at start": f"{os.getloadavg()[0]:.1f}",
    }


# ============================================================================ BENCHMARKS.md


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as ``outer.inner`` keys."""
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


RATIO = re.compile(r"(^|_)ratio($|_)")  # "ratio", "ratio_all", "linear_ratio"; not "generation"


def ratios(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(figures).items() if RATIO.search(k.rsplit(".", 1)[-1])}


def machine_labels(results: Sequence[BenchResult]) -> dict[str, str]:
    """A letter per distinct machine (A, B, …, in order of first use), keyed by its facts;
    the load average is left out (it is not the machine)."""
    labels: dict[str, str] = {}
    for result in results:
        labels.setdefault(machine_key(result.machine), chr(ord("A") + len(labels)))
    return labels


def machine_key(facts: dict[str, str]) -> str:
    return json.dumps({k: v for k, v in facts.items() if not k.startswith("load")}, sort_keys=True)


def section(result: BenchResult, label: str) -> list[str]:
    lines = [f"## {result.name}", "", result.compares, ""]
    lines.append(
        f"`python -m bench.{result.name}` on {result.date}, {result.seconds / 60:.1f} min, "
        f"on machine {label}."
    )
    lines.append("")
    if not result.ok:
        reason = "no JSON last line" if result.returncode == 0 else f"exit {result.returncode}"
        lines += [f"**Failed** ({reason}). Its last lines:", "", "```", *result.tail, "```", ""]
        return lines
    flat = flatten(result.figures or {})
    first = ratios(result.figures or {})
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| **{k}** | **{show(v)}** |" for k, v in first.items()]
    lines += [f"| {k} | {show(v)} |" for k, v in flat.items() if k not in first]
    return [*lines, ""]


def summary_row(result: BenchResult, label: str) -> str:
    if not result.ok:
        status = "failed"
    elif "skipped" in (result.figures or {}):
        status = f"skipped: {result.figures['skipped']}"
    else:
        status = "ok"
    found = ", ".join(f"{k} {show(v)}" for k, v in ratios(result.figures or {}).items())
    return f"| {result.name} | {label} | {status} | {result.seconds / 60:.1f} | {found or '–'} |"


def render(results: Iterable[BenchResult], date: str) -> str:
    results = sorted(results, key=lambda r: r.name)
    labels = machine_labels(results)
    machines = {labels[machine_key(r.machine)]: r.machine for r in results}
    keys = sorted(
        {k for facts in machines.values() for k in facts},
        key=lambda k: (FACT_ORDER.index(k) if k in FACT_ORDER else len(FACT_ORDER), k),
    )
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m bench` on {date}. Each benchmark measures the product against "
        "a baseline in the same run (DESIGN §6): ratios hold on a noisy shared machine, "
        "absolute times do not. A benchmark that needs a GPU is run on a GPU host with "
        "`python -m bench --only NAME`, which keeps the other results and their machines.",
        "",
        "## Machines",
        "",
        f"| | {' | '.join(machines)} |",
        f"|---|{'---|' * len(machines)}",
        *(f"| {k} | {' | '.join(f.get(k, '–') for f in machines.values())} |" for k in keys),
        "",
        "## Summary",
        "",
        "| benchmark | machine | status | minutes | ratios |",
        "|---|---|---|---|---|",
        *(summary_row(r, labels[machine_key(r.machine)]) for r in results),
        "",
    ]
    for result in results:
        lines += section(result, labels[machine_key(result.machine)])
    stored = json.dumps([asdict(r) for r in results], sort_keys=True)
    return "\n".join([*lines, f"{RESULTS_MARK}{stored} -->", ""])


def previous_results(path: Path) -> dict[str, BenchResult]:
    """The results stored in an earlier BENCHMARKS.md (none if it has no results comment)."""
    if not path.exists():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(RESULTS_MARK):
            stored = json.loads(line.removeprefix(RESULTS_MARK).removesuffix(" -->"))
            return {r["name"]: BenchResult(**r) for r in stored}
    return {}


# ============================================================================ main


def parse_args(argv: Sequence[str] | None, available: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--only", help=f"comma-separated names of: {', '.join(available)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown to write")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else []
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)} (have: {', '.join(available)})")
    args.names = args.names or list(available)
    return args


def main(argv: Sequence[str] | None = None, folder: Path = BENCH_DIR) -> int:
    available = discover(folder)
    args = parse_args(argv, available)
    facts = machine()
    results = previous_results(args.out) if args.only else {}
    for index, name in enumerate(args.names, start=1):
        print(f"== [{index}/{len(args.names)}] {name}", file=sys.stderr, flush=True)
        result = run_bench(folder, name, sys.stderr, facts)
        results[name] = result
        verdict = "ok" if result.ok else "FAILED"
        print(f"== {name}: {verdict} in {result.seconds:.0f}s", file=sys.stderr, flush=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.write_text(render(results.values(), date), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(results[name].ok for name in args.names) else 1


if __name__ == "__main__":
    sys.exit(main())
