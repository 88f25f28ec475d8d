"""The sandbox's request and result (DESIGN §3), its resource limits, and how tests become units.

A *unit* is what ``passed`` / ``total`` count and what runs in its own process: one assertion
string, one stdin/stdout case, or one assertion of a HumanEval ``check`` body (see
``split_check``).
"""

from __future__ import annotations

import ast
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["passed", "failed", "error", "timeout", "memory", "killed"]


class StdioCase(BaseModel):
    """A competitive-programming test: run the program on ``input``, compare its stdout."""

    model_config = ConfigDict(extra="forbid")

    input: str
    output: str


class ExecRequest(BaseModel):
    """One program and its tests (the ``prm-studio exec`` JSONL line)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Echoed in the result.")
    program: str = Field(description="The full source: prompt + completion.")
    tests: list[str] | list[StdioCase] | None = Field(
        default=None,
        description='Assertion strings ("assert f(1) == 2"), or {"input", "output"} cases.',
    )
    test: str | None = Field(
        default=None, description="A HumanEval test module that defines check(candidate)."
    )
    entry_point: str | None = Field(
        default=None, description="The function check(candidate) receives (with 'test')."
    )
    setup: str | None = Field(
        default=None, description="Test code run before the tests, after the program loads."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=600, description="Wall-clock limit.")

    @model_validator(mode="after")
    def _one_kind_of_tests(self) -> ExecRequest:
        if (self.tests is None) == (self.test is None):
            raise ValueError("give exactly one of 'tests' (a list) or 'test' (a check module)")
        if self.tests is not None and not self.tests:
            raise ValueError("'tests' is empty: give at least one test")
        if self.stdio and self.setup:
            raise ValueError(
                "'setup' is for assertion tests: stdin/stdout cases run the program alone"
            )
        if self.entry_point is not None and not self.entry_point.isidentifier():
            raise ValueError(f"'entry_point' {self.entry_point!r} is not a Python identifier")
        if self.test is not None:
            if self.entry_point is None:
                raise ValueError("'test' needs 'entry_point': the function check() receives")
            split_check(self.test)
        return self

    @property
    def stdio(self) -> bool:
        return bool(self.tests) and isinstance(self.tests[0], StdioCase)


class ExecResult(BaseModel):
    """The verdict on one request. ``status`` describes the first test that did not pass."""

    id: str
    status: Status
    passed: int = Field(description="Units that passed.")
    total: int = Field(description="Units in the request.")
    error_line: int | None = Field(
        description="1-based line of 'program' where the reported exception was raised."
    )
    detail: str = Field(description="A short reason.")
    elapsed_s: float
    failed_test: str | None = Field(default=None, description="Source of the first failing unit.")
    stdout: str = Field(default="", description="What the program printed (capped).")
    stderr: str = Field(default="", description="What the program wrote to stderr (capped).")


class SandboxLimits(BaseModel):
    """Resource limits of every sandbox in a pool (per program process unless said otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: int = Field(default=1024, ge=128, description="Address space (RLIMIT_AS).")
    max_processes: int = Field(
        default=32, ge=2, description="Processes + threads a program may run at once."
    )
    max_open_files: int = Field(default=256, ge=16, description="RLIMIT_NOFILE.")
    max_file_mb: int = Field(default=16, ge=1, description="Largest file a program may write.")
    tmp_mb: int = Field(default=64, ge=1, description="Size of the private /tmp and /dev/shm.")
    output_bytes: int = Field(
        default=4096, ge=0, description="stdout and stderr kept for the result, each."
    )


def split_check(test: str) -> tuple[str, list[str]]:
    """``check``'s parameter name and its body cut into units, one per assertion.

    Each unit is an assertion together with the plain statements just before it (assignments,
    imports) and runs at module level in one shared namespace, so later units still see the
    names earlier ones bound. A compound statement that contains assertions (a ``for`` loop)
    is one unit. A body that cannot run that way (``return``, ``yield``, ``nonlocal``) or has
    no assertion at all is a single unit: the call ``check(candidate)``.
    """
    try:
        module = ast.parse(test)
    except SyntaxError as exc:
        raise ValueError(f"'test' does not parse: line {exc.lineno}: {exc.msg}") from None
    check = next(
        (n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None
    )
    if check is None or len(check.args.args) != 1 or check.args.vararg or check.args.kwonlyargs:
        raise ValueError("'test' must define check(candidate), a function of one parameter")
    param = check.args.args[0].arg
    units: list[list[ast.stmt]] = []
    pending: list[ast.stmt] = []
    for statement in check.body:
        pending.append(statement)
        if any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
            units.append(pending)
            pending = []
    if units:
        units[-1].extend(pending)
    sources = ["\n".join(ast.unparse(s) for s in unit) for unit in units]
    if not sources or not all(_runs_at_module_level(source) for source in sources):
        return param, [f"check({param})"]
    return param, sources


def _runs_at_module_level(source: str) -> bool:
    try:
        compile(source, "<unit>", "exec")
    except SyntaxError:
        return False
    return True
