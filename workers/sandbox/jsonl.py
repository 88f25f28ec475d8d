"""``prm-studio exec``: run a JSONL file of execution requests, write one result per line."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .models import ExecRequest
from .pool import SandboxPool


class RequestFileError(ValueError):
    """A request line that is not valid JSON or not a valid request; names the line and field."""


def exec_jsonl(
    in_path: Path,
    out_path: Path,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every request of ``in_path`` and write the results to ``out_path`` in the same order.

    The whole file is validated before anything runs, so a bad line costs nothing. Returns a
    summary: request count, passed count, count per status, wall time and throughput.
    """
    total = check_requests(in_path)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    with SandboxPool(workers) as pool, Path(out_path).open("w") as out:
        requests = (request for _, request in _read(in_path))
        for done, result in enumerate(pool.imap(requests), start=1):
            out.write(result.model_dump_json() + "\n")
            counts[result.status] += 1
            if on_progress is not None:
                on_progress(done, total)
    elapsed = time.monotonic() - started
    return {
        "requests": total,
        "passed": counts["passed"],
        "by_status": dict(counts),
        "elapsed_s": round(elapsed, 3),
        "per_s": round(total / elapsed, 1) if elapsed > 0 else None,
    }


def check_requests(path: Path) -> int:
    """Validate every line of ``path`` (ids must be unique); the number of requests."""
    first_seen: dict[str, int] = {}
    for line_no, request in _read(path):
        if request.id in first_seen:
            raise RequestFileError(
                f"{path}:{line_no}: field 'id': duplicate id {request.id!r} "
                f"(first on line {first_seen[request.id]}); ids must be unique"
            )
        first_seen[request.id] = line_no
    return len(first_seen)


def _read(path: Path) -> Iterator[tuple[int, ExecRequest]]:
    """(line number, request) for each non-blank line."""
    with Path(path).open() as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, ExecRequest.model_validate(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RequestFileError(
                    f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            except ValidationError as exc:
                raise RequestFileError(f"{path}:{line_no}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    # Drop the union members pydantic names in the path ("tests.list[str].0" -> "tests.0").
    where = ".".join(str(part) for part in error["loc"] if "[" not in str(part))
    message = error["msg"].removeprefix("Value error, ")
    return f"field '{where}': {message}" if where else message
