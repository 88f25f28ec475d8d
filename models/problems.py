"""Problems in the DESIGN §3 format, and the structural validator for user files.

A problem is a prompt the model continues plus unit tests: either ``tests`` (assertion strings,
or stdin/stdout pairs) or ``test`` (a HumanEval-style ``check(candidate)``), never both.

``validate_jsonl`` reads a whole file and returns every problem and every error at once, each
error naming the line and the field and saying how to fix it — a user fixes a file in one pass,
not one error per upload. It never raises on bad input (a hypothesis test holds it to that) and
never runs code: compiling is parsing. Running references against their tests needs the
sandbox and lives in ``workers.problemsets``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_LINE_BYTES = 1_000_000
"""One JSONL line (one problem) may hold at most 1 MB: HumanEval+'s largest is 0.2 MB."""
MAX_FILE_BYTES = 512_000_000
"""A whole file (after gunzip) may hold at most 512 MB: protects workers from a gzip bomb."""
DEFAULT_TIMEOUT_S = 10.0
"""Sandbox time limit for one program, unless ``meta["timeout_s"]`` asks for more."""
FORMATS: tuple[str, ...] = ("jsonl", "humaneval", "mbpp")


class IOTest(BaseModel):
    """A stdin/stdout test: the program reads ``input`` and must print ``output``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: str
    output: str


def _check_tests(value: Any) -> Any:
    """One clear message for the two shapes ``tests`` may take (pydantic's union errors
    list every branch and confuse more than they help)."""
    if value is None:
        return None
    shape = 'a non-empty list of assertion strings, or of {"input": ..., "output": ...} objects'
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be {shape}, got {_type_name(value)}")
    if isinstance(value[0], dict):
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"input", "output"}:
                raise ValueError(f"item {i} must be an object with exactly 'input' and 'output'")
            if not all(isinstance(item[key], str) for key in ("input", "output")):
                raise ValueError(f"item {i}: 'input' and 'output' must be strings")
        return [IOTest(**item) for item in value]
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"must be {shape}; item {i} is {_type_name(item)}")
    return value


class Problem(BaseModel):
    """One problem (DESIGN §3). Exactly one of ``tests`` / ``test`` is set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task_id: str = Field(
        min_length=1, max_length=200, description='a unique non-empty string, e.g. "mine/1"'
    )
    prompt: str = Field(description="a string: the code the model continues")
    entry_point: str | None = Field(
        default=None, description="the name of the function under test (a string), or null"
    )
    tests: list[str] | list[IOTest] | None = Field(
        default=None,
        description='a list of assertion strings such as "assert f(1) == 2", or a list of '
        '{"input": "...", "output": "..."} stdin/stdout pairs',
    )
    test: str | None = Field(
        default=None, description="a string defining check(candidate), as HumanEval does"
    )
    setup: str | None = Field(
        default=None, description="code run before the tests (imports, fixtures), or null"
    )
    reference: str | None = Field(
        default=None, description="a known-good completion of the prompt (a string), or null"
    )
    meta: dict[str, Any] = Field(
        default_factory=dict, description="an object with anything else (split, difficulty, …)"
    )

    _validate_tests = field_validator("tests", mode="before")(_check_tests)

    @field_validator("entry_point")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not value.isidentifier():
            raise ValueError(f"{value!r} is not a Python identifier")
        return value

    @model_validator(mode="after")
    def _exactly_one_test_kind(self) -> Problem:
        if (self.tests is None) == (self.test is None):
            which = "both are set" if self.tests is not None else "neither is set"
            raise ValueError(
                f"exactly one of 'tests' (a list of assertions) or 'test' (a check(candidate) "
                f"function) is required; {which}"
            )
        return self

    @property
    def split(self) -> str:
        """The split this problem belongs to (``meta["split"]``, default ``test``)."""
        split = self.meta.get("split")
        return split if isinstance(split, str) and split else "test"


# ----------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ProblemError:
    """One problem with one field of one line; ``message`` says what is wrong and how to fix it.

    ``line`` is 1-based; for a JSON array (accepted for MBPP) it is the line the record starts on.
    ``field`` is None for errors about the whole line or file.
    """

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """Every problem that parsed (with its line) and every error found, in file order."""

    problems: list[Problem] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[ProblemError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.problems)

    def summary(self) -> str:
        """What the CLI prints: the count, or every error."""
        if self.ok:
            return f"{len(self.problems)} problems, no errors"
        return "\n".join([f"{len(self.errors)} errors:", *(str(e) for e in self.errors)])


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    names |= {int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def pydantic_errors(
    model: type[BaseModel], error: ValidationError, line: int
) -> list[ProblemError]:
    """pydantic's errors as ``ProblemError``s whose hint is the field's own description."""
    out = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        name = loc[0] if loc else None
        info = model.model_fields.get(name) if name else None
        hint = f"expected {info.description}" if info and info.description else ""
        if item["type"] == "missing":
            message = f"missing required field: {hint}"
        elif item["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            message = f"unknown field; the fields are {allowed} (put anything else in 'meta')"
        else:
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] not in ("value_error", "assertion_error") and hint:
                message += f"; {hint}"
        if name is None:  # a model-level rule, e.g. exactly one of tests/test
            name = "tests/test" if "'tests'" in message else None
        out.append(ProblemError(line, ".".join(loc) if loc else name, message))
    return out


class InvalidProblemFile(ValueError):
    """A file with errors; ``report`` holds all of them (nothing is imported then)."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


# ----------------------------------------------------------------------------- compiling


def quiet_compile(source: str, what: str, flags: int = 0) -> Any:
    """``compile`` without warnings: old code's invalid escape sequences are not errors (and
    under ``-W error`` a warning would raise). ``ast.PyCF_ONLY_AST`` in flags gives a tree."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(source, what, "exec", flags, dont_inherit=True)


def _compile_error(source: str, what: str) -> str | None:
    """Why ``source`` does not compile (None if it does). Compiling only parses: nothing runs."""
    try:
        quiet_compile(source, what)
    except SyntaxError as error:
        return f"does not compile: {error.msg} (line {error.lineno}, column {error.offset})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as error:
        return f"does not compile: {type(error).__name__}: {error}"
    return None


def compile_errors(problem: Problem) -> list[tuple[str, str]]:
    """(field, message) for every piece of code in ``problem`` that is not valid Python."""
    errors = []
    if problem.tests and isinstance(problem.tests[0], str):
        for i, test in enumerate(problem.tests):
            why = _compile_error(test, f"<tests[{i}]>")
            if why:
                errors.append(
                    (f"tests.{i}", f"{why}; write one statement, e.g. 'assert f(1) == 2'")
                )
    if problem.test is not None:
        why = _compile_error(problem.test, "<test>")
        if why:
            errors.append(("test", f"{why}; it must define check(candidate)"))
    if problem.setup:
        why = _compile_error(problem.setup, "<setup>")
        if why:
            errors.append(("setup", why))
    if problem.reference is not None:
        why = _compile_error(problem.prompt + problem.reference, "<prompt + reference>")
        if why:
            errors.append(
                ("reference", f"prompt + reference {why}; the reference must continue the prompt")
            )
    return errors


# ----------------------------------------------------------------------------- reading


def _read_bytes(source: str | Path | bytes) -> bytes:
    """The file's bytes, gunzipped if they are gzip (by magic number, not by name)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        # Bounded read: a small .gz must not expand into all of memory.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
            data = unzipped.read(MAX_FILE_BYTES + 1)
    return data


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _json_error(error: json.JSONDecodeError | RecursionError) -> str:
    if isinstance(error, RecursionError):
        return "is nested too deeply to parse"
    return f"is not valid JSON: {error.msg} at column {error.colno}"


Record = tuple[int, Any] | ProblemError
"""A parsed JSON value with its line number, or the error that stopped it from parsing."""

LINE_TOO_LONG = (
    f"is over the limit of {MAX_LINE_BYTES:,} bytes (1 MB per line); "
    "shorten its tests or split the problem"
)
NOT_UTF8 = "is not valid UTF-8; save the file as UTF-8"


def _jsonl_records(data: bytes) -> Iterator[Record]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is harmless
        if len(raw) > MAX_LINE_BYTES:
            yield ProblemError(number, None, f"the line ({len(raw):,} bytes) {LINE_TOO_LONG}")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield ProblemError(number, None, f"byte {error.start + 1} {NOT_UTF8}")
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            why = f"{_json_error(error)}; each line must be one JSON object"
            yield ProblemError(number, None, why)


def _array_records(text: str) -> Iterator[Record]:
    """The records of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    index = text.index("[") + 1
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text):
            yield ProblemError(_line_of(text, index), None, "the JSON array is not closed by ']'")
            return
        if text[index] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, index)
        except (json.JSONDecodeError, RecursionError) as error:
            line = _line_of(text, getattr(error, "pos", index))
            yield ProblemError(line, None, f"the record here {_json_error(error)}")
            return
        yield _line_of(text, index), value
        index = end


def read_records(source: str | Path | bytes, *, allow_array: bool) -> Iterator[Record]:
    """Parse a JSONL file (or, when ``allow_array``, a JSON array) into (line, value) records.

    File-level problems (unreadable, too big, an unexpected array) come back as
    ``ProblemError``s like line-level ones: the caller reports them all the same way.
    """
    try:
        data = _read_bytes(source)
    except (OSError, EOFError, zlib.error) as error:
        yield ProblemError(1, None, f"cannot read the file: {error}")
        return
    if len(data) > MAX_FILE_BYTES:
        yield ProblemError(1, None, f"the file is over {MAX_FILE_BYTES:,} bytes; split it")
        return
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"["):
        yield from _jsonl_records(data)
        return
    line = data.count(b"\n", 0, len(data) - len(head)) + 1
    if not allow_array:
        yield ProblemError(
            line,
            None,
            "the file is a JSON array, not JSONL; put one JSON object on each line "
            "(e.g. jq -c '.[]' FILE > FILE.jsonl)",
        )
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        yield ProblemError(data.count(b"\n", 0, error.start) + 1, None, f"this line {NOT_UTF8}")
        return
    yield from _array_records(text)


# ----------------------------------------------------------------------------- validating


def _converter(fmt: str) -> Callable[[dict[str, Any]], Problem]:
    """The function turning one parsed record of ``fmt`` into a Problem (raises ValidationError)."""
    if fmt == "jsonl":
        return Problem.model_validate
    from models import importers  # importers build on this module

    return {"humaneval": importers.humaneval_problem, "mbpp": importers.mbpp_problem}[fmt]


def validate_jsonl(source: str | Path | bytes, fmt: str = "jsonl") -> ValidationReport:
    """Check a problem file without running anything; never raises on bad content.

    ``fmt`` is ``jsonl`` (DESIGN §3), ``humaneval`` (HumanEval or HumanEval+ records) or
    ``mbpp`` (MBPP full or sanitized records; a JSON array is accepted, as sanitized ships one).
    """
    report = ValidationReport()
    if fmt not in FORMATS:
        report.errors.append(
            ProblemError(0, None, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        )
        return report
    convert = _converter(fmt)
    seen: dict[str, int] = {}
    for record in read_records(source, allow_array=fmt == "mbpp"):
        if isinstance(record, ProblemError):
            report.errors.append(record)
            continue
        line, value = record
        if not isinstance(value, dict):
            report.errors.append(
                ProblemError(line, None, f"expected a JSON object, got {_type_name(value)}")
            )
            continue
        if not _is_unicode(value):
            report.errors.append(
                ProblemError(
                    line,
                    None,
                    "holds a lone surrogate escape (\\ud800-\\udfff), which is "
                    "not valid Unicode; encode the character as a surrogate pair",
                )
            )
            continue
        try:
            problem = convert(value)
        except ValidationError as error:
            report.errors.extend(pydantic_errors(_record_model(fmt, value), error, line))
            continue
        if problem.task_id in seen:
            report.errors.append(
                ProblemError(
                    line,
                    "task_id",
                    f"{problem.task_id!r} is already used on line {seen[problem.task_id]}; "
                    "task ids must be unique",
                )
            )
            continue
        seen[problem.task_id] = line
        compiled = compile_errors(problem)
        report.errors.extend(ProblemError(line, name, why) for name, why in compiled)
        if not compiled:
            report.problems.append(problem)
            report.lines.append(line)
    if not report.problems and not report.errors:
        report.errors.append(
            ProblemError(1, None, "the file is empty; expected one JSON object per line")
        )
    return report


def _is_unicode(value: Any) -> bool:
    """False if a JSON string escape produced a lone surrogate (UTF-8 cannot store it)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_model(fmt: str, value: dict[str, Any]) -> type[BaseModel]:
    """The pydantic model whose field descriptions explain an error in a ``fmt`` record."""
    if fmt == "jsonl":
        return Problem
    from models import importers

    return importers.record_model(fmt, value)


# ----------------------------------------------------------------------------- using problems


def exec_request(problem: Problem, completion: str, request_id: str) -> dict[str, Any]:
    """The sandbox request (DESIGN §3) that runs ``prompt + completion`` against the tests."""
    timeout = problem.meta.get("timeout_s")
    valid_timeout = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    request: dict[str, Any] = {
        "id": request_id,
        "program": problem.prompt + completion,
        "entry_point": problem.entry_point,
        "setup": problem.setup,
        "timeout_s": float(timeout) if valid_timeout and timeout > 0 else DEFAULT_TIMEOUT_S,
    }
    if problem.tests is not None:
        request["tests"] = [t if isinstance(t, str) else t.model_dump() for t in problem.tests]
    else:
        request["test"] = problem.test
    return request


def canonical_json(problems: Sequence[Problem]) -> str:
    """One byte-stable text for a list of problems: the input of the content hash."""
    payload = [p.model_dump(mode="json") for p in problems]
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(problems: Sequence[Problem]) -> str:
    """sha256 of the canonical JSON: two imports hold the same problems iff their hashes match."""
    return hashlib.sha256(canonical_json(problems).encode("utf-8")).hexdigest()


def write_jsonl(problems: Sequence[Problem], path: str | Path) -> None:
    """Write problems as JSONL (gzipped when the name ends in .gz)."""
    text = "".join(
        json.dumps(p.model_dump(mode="json"), ensure_ascii=False) + "\n" for p in problems
    )
    if str(path).endswith(".gz"):
        Path(path).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        Path(path).write_text(text, encoding="utf-8")


def verdict_fields(result: Any) -> dict[str, Any]:
    """A sandbox result (DESIGN §3) as the verdict fields every stored sample carries — the
    reading side of ``exec_request``."""
    return {
        "verdict": result.status,
        "passed": result.status == "passed",
        "tests_passed": result.passed,
        "tests_total": result.total,
        "error_line": result.error_line,
        "detail": result.detail or "",
    }
