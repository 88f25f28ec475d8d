"""The judge: runs the tests and decides every verdict (inside the sandbox; stdlib only).

The judge is trusted and never executes program code. A test such as ``assert f(1) == 2``
runs *here*, where ``f`` is a ``Remote`` proxy (``link.py``): calling it sends the call to the
program's process and the result comes back as plain data (``wire.py`` builds only exact
built-in types), or as another proxy that equals nothing but itself. The comparison, the
``assert`` and the verdict therefore happen in a process the program cannot reach (see
``zygote.py``).

A test passes when its code raised nothing here and the program's process neither died during
it nor, when dismissed after the last test, exited uncleanly or left processes behind.
Plain data crosses by copy: a test that mutates a list the program returned changes its own copy
(attribute assignment on a program object, as MBPP's setup code does, is forwarded).
Assertion tests share one program process, as they share one process in the usual harnesses;
a process that dies takes the remaining tests with it. Each stdin/stdout case gets a fresh
process, and its output is compared here.

The judge lives across requests (forking one per request would double the cost of each): every
request gets fresh namespaces and a re-seeded global ``random``, but other process-wide state
that test code changes (a thread it starts, the recursion limit) carries over. Test code comes
from the dataset, not from the model.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import json
import os
import random
import resource
import signal
import socket
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import wire
from .link import Capture, ChildDied, Link, ProcessGone
from .processes import limit

if TYPE_CHECKING:
    from .zygote import Config

CASE_OUTPUT_BYTES = 8 << 20  # stdout kept for comparing a stdin/stdout case
_BUILTIN_NAMES = frozenset(dir(builtins))
Outcome = dict[str, Any]  # {"outcome": status, "detail": str, "error_line": int | None}


def main(config: Config, zygote: socket.socket) -> None:
    """Judge requests as the zygote hands them over, until it goes away."""
    limit(resource.RLIMIT_AS, config.memory_bytes)
    while True:
        message, fds, _, _ = socket.recv_fds(zygote, 4096, 5)
        if not message:
            return
        if len(fds) != 5:  # a status the zygote sent after this judge's deadline gave up on it
            continue
        request_fd, result_fd, program_fd, stdout_fd, stderr_fd = fds
        with os.fdopen(request_fd, "rb") as stream:
            request = json.loads(stream.read())
        link = Link(program_fd, stdout_fd, stderr_fd, zygote, config, request["mode"] == "stdio")
        try:
            _judge(request, link, lambda event, fd=result_fd: _emit(fd, event))
        finally:
            link.close()
            os.close(result_fd)
        zygote.send(b"done")


def _judge(request: dict[str, Any], link: Link, emit: Callable[[dict[str, Any]], None]) -> None:
    random.seed(0)  # test code drawing from the global generator sees the same numbers each run
    deadline = _Deadline(request["timeout_s"])
    _Judge(link, request, deadline, emit).run()
    deadline.cancel()
    link.drain_outputs()
    stopped = "timeout" if deadline.expired else None
    emit(
        {
            "end": True,
            "stopped": stopped,
            "stdout": link.stdout.text(),
            "stderr": link.stderr.text(),
        }
    )


def _emit(fd: int, event: dict[str, Any]) -> None:
    data = (json.dumps(event) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


class _Timeout(BaseException):
    """The request's deadline passed (a BaseException so test code cannot swallow it)."""


class _Deadline:
    """A one-shot SIGALRM at the request's deadline that interrupts guarded sections only.

    Outside ``guard()`` the alarm just records expiry, so the judge's own reporting is never cut
    in half; inside, it raises ``_Timeout`` wherever the judge is (test code, a blocking read).
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._armed = False
        signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))

    def _fire(self, *_: Any) -> None:
        self.expired = True
        if self._armed:
            raise _Timeout

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        if self.expired:
            raise _Timeout
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def cancel(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ============================================================================= running tests


class _Judge:
    """Runs one request's tests against the program and emits one outcome per test."""

    def __init__(
        self,
        link: Link,
        request: dict[str, Any],
        deadline: _Deadline,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.link = link
        self.request = request
        self.deadline = deadline
        self.emit = emit

    def run(self) -> None:
        names = self._load()
        if names is None:
            return
        units = self.request["units"]
        if self.request["mode"] == "stdio":
            runs = [self._case_runner(case) for case in units]
        else:
            runs = self._unit_runners(names)
        for index, run in enumerate(runs):
            self.emit({"test": index, **run(index == len(runs) - 1)})
            if self.deadline.expired:
                return

    def _load(self) -> dict[str, Any] | None:
        """Have the program's process load the program; its global names, or None after
        reporting why not (every test then counts as not passed)."""
        message = {
            "op": "load",
            "program": self.request["program"],
            "mode": self.request["mode"],
            "cpu_s": int(self.request["timeout_s"]) + 1,
        }
        try:
            with self.deadline.guard():
                self.link.send(message)
                reply = self.link.next_message()
        except _Timeout:
            self.emit({"load": _outcome("timeout", _timeout_detail(self.request))})
            return None
        except ChildDied as exc:
            self.emit({"load": _outcome_of_exit(exc.report) or _outcome("error", "no reply")})
            return None
        if reply.get("op") == "loaded" and isinstance(reply.get("names"), dict):
            return reply["names"]
        self.emit({"load": _outcome_of(wire.rebuild_exception(reply))})
        return None

    def _unit_runners(self, names: dict[str, Any]) -> list[Callable[[bool], Outcome]]:
        """One runner per unit. With a HumanEval ``test`` module (``prelude``) the units share
        one namespace, as the statements of ``check`` share its locals; assertion strings each
        get a fresh one. The program's callables are proxies, its stdlib modules the judge's
        own, and its other globals are fetched as values before each unit (so a test sees
        what earlier calls did to them)."""
        setup = compile(self.request.get("setup") or "", "<setup>", "exec")
        prelude = self.request.get("prelude")
        sources = [self.request.get("setup"), prelude, *self.request["units"]]
        visible = _program_names(names, _referenced_names(sources), self.request.get("entry_point"))
        program = {
            name: _stdlib_module(kind) or self.link.global_proxy(name)
            for name, kind in visible
            if kind != "value"
        }
        values = [name for name, kind in visible if kind == "value"]
        shared: dict[str, Any] = {}

        def namespace() -> dict[str, Any]:
            current = self.link.request("values", None, (values,)) if values else {}
            if prelude is not None and shared:
                shared.update(current)
                return shared
            built = {"__builtins__": builtins, "__name__": "__test__", **program, **current}
            exec(setup, built)
            if prelude is None:
                return built
            exec(compile(prelude, "<test>", "exec"), built)
            built[self.request["param"]] = self.link.global_proxy(self.request["entry_point"])
            shared.update(built)
            return shared

        def runner(index: int, source: str) -> Callable[[bool], Outcome]:
            def execute() -> None:
                exec(compile(source, f"<test {index + 1}>", "exec"), namespace())

            return lambda last: self._run_unit(execute, dismiss=last)

        return [runner(i, source) for i, source in enumerate(self.request["units"])]

    def _case_runner(self, case: dict[str, str]) -> Callable[[bool], Outcome]:
        def run(_: bool) -> Outcome:
            self.link.case_output = Capture(CASE_OUTPUT_BYTES)
            execute = lambda: self.link.request("run", None, (case["input"],))  # noqa: E731
            outcome = self._run_unit(execute, dismiss=True)
            self.link.drain_outputs()
            output, self.link.case_output = self.link.case_output, None
            if outcome["outcome"] != "passed":
                return outcome
            if output.overflowed:
                return _outcome("failed", f"printed more than {CASE_OUTPUT_BYTES} bytes")
            got, expected = _normalise(output.text()), _normalise(case["output"])
            if got != expected:
                return _outcome(
                    "failed", f"expected {_clip(expected, 120)!r}, got {_clip(got, 120)!r}"
                )
            return outcome

        return run

    def _run_unit(self, execute: Callable[[], None], dismiss: bool) -> Outcome:
        """Run one test, then (``dismiss``) end the program's process and check how it ended."""
        self.link.death = None
        self.link.last_value = None
        ending = None
        try:
            with self.deadline.guard():
                try:
                    execute()
                    outcome = _outcome("passed")
                except _Timeout:
                    raise
                except BaseException as exc:
                    outcome = _outcome_of(exc, self.link.last_value)
                if dismiss:
                    ending = self._dismiss()
        except _Timeout:
            return _outcome("timeout", _timeout_detail(self.request))
        for report in (self.link.death, ending):  # a death the test code swallowed counts too
            if report is not None and outcome["outcome"] == "passed":
                outcome = _outcome_of_exit(report) or outcome
        return outcome

    def _dismiss(self) -> dict[str, Any] | None:
        try:
            return self.link.dismiss()
        except ChildDied as exc:
            return exc.report


def _outcome(kind: str, detail: str = "", error_line: int | None = None) -> Outcome:
    return {"outcome": kind, "detail": _clip(detail, wire.DETAIL_CHARS), "error_line": error_line}


def _outcome_of(exc: BaseException, last_value: Any = None) -> Outcome:
    """Classify what a test raised (here, or rebuilt from the program's report)."""
    if isinstance(exc, ChildDied):
        ended = "the program's process exited (status 0) before answering"
        return _outcome_of_exit(exc.report) or _outcome("error", ended)
    if isinstance(exc, ProcessGone):
        return _outcome("error", "not run: the program's process died during an earlier test")
    origin = getattr(exc, "origin", None)
    if origin is not None:
        kind_name, text, line = origin
        kind = "memory" if kind_name == "MemoryError" else "error"
        return _outcome(kind, f"{kind_name}: {text}" if text else kind_name, line)
    if isinstance(exc, AssertionError):
        message = f": {exc}" if str(exc) else ""
        returned = f" (the program last returned {_clip(repr(last_value), 200)})"
        return _outcome("failed", f"assertion failed{message}{returned}")
    if isinstance(exc, MemoryError):
        return _outcome("memory", "MemoryError")
    if isinstance(exc, wire.WireError):
        return _outcome("error", f"malformed reply from the program: {exc}")
    return _outcome("error", f"{type(exc).__name__}: {exc}")


def _outcome_of_exit(report: dict[str, Any]) -> Outcome | None:
    """What the end of a program process says, or None for a clean exit."""
    status = report.get("status")
    if type(status) is not int:
        return _outcome("error", f"could not start the program's process: {report.get('error')}")
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGXCPU:
            return _outcome("timeout", "CPU time limit exceeded")
        return _outcome("killed", f"the program's process was killed by {_signal_name(signum)}")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return _outcome("error", f"the program's process exited early (status {code})")
    orphans = report.get("orphans")
    if orphans:
        return _outcome("error", f"the program left {orphans} background process(es) running")
    return None


def _timeout_detail(request: dict[str, Any]) -> str:
    return f"exceeded the {request['timeout_s']:g} s time limit"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _normalise(text: str) -> str:
    """Output as judges compare it: trailing spaces and surrounding blank lines do not count."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _program_names(
    names: dict[str, Any], referenced: set[str], entry_point: str | None
) -> list[tuple[str, str]]:
    """(name, kind) of the program's globals that the test code sees (kinds: see ``runner``).

    A name that shadows a builtin or a standard-library module without being that module is
    hidden, so a program defining ``set`` (or ``math``) cannot rig ``assert set(f(x)) ==
    set(y)``: the test gets the judge's own. It stays visible when it is the entry point or,
    with none declared, when the tests use no other program name (MBPP task 126 asks for a
    function named ``sum``). Values are only fetched for names the tests mention.
    """
    kinds = {
        str(n): str(k)
        for n, k in names.items()
        if not (str(n).startswith("__") and str(n).endswith("__"))
    }
    shadowing = {
        name
        for name, kind in kinds.items()
        if _stdlib_module(kind) is None
        and (name in _BUILTIN_NAMES or name in sys.stdlib_module_names)
    }
    if entry_point is not None:
        allowed = {entry_point}
    elif any(name in referenced for name in kinds if name not in shadowing):
        allowed = set()
    else:
        allowed = shadowing
    return [
        (name, kind)
        for name, kind in kinds.items()
        if (name not in shadowing or name in allowed) and (kind != "value" or name in referenced)
    ]


def _referenced_names(sources: list[str | None]) -> set[str]:
    """Every name the test code mentions (sources that do not parse mention none)."""
    found: set[str] = set()
    for source in sources:
        with contextlib.suppress(SyntaxError, ValueError):
            found.update(n.id for n in ast.walk(ast.parse(source or "")) if isinstance(n, ast.Name))
    return found


def _stdlib_module(kind: str) -> types.ModuleType | None:
    """The judge's own copy of the standard-library module of a ``module:<name>`` kind."""
    name = kind.removeprefix("module:")
    if name == kind or name.partition(".")[0] not in sys.stdlib_module_names:
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None
