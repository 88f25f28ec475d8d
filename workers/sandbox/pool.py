"""A pool of warm sandboxes that runs execution requests in parallel.

Each sandbox is one long-lived interpreter (the zygote, see ``zygote.py``) inside bubblewrap.
Per request the pool hands it two fresh pipes — the request goes in on one, the judge's
outcomes come back on the other — over a private control socket, and the zygote answers on that
socket once nothing of the request is left running. Fresh pipes per request mean nothing a
request left behind can be read as part of the next one.

Deadlines, innermost first: the judge stops at ``timeout_s`` (and reports the tests so far), the
zygote kills the judge and everything else at ``timeout_s + GRACE_S``, and the pool kills the
whole sandbox (from outside it) ``HOST_GRACE_S`` later and starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .isolation import (
    SANDBOX_GID,
    WEAK_WARNING,
    Launch,
    SandboxUnavailable,
    plan_launch,
    sandbox_mode,
)
from .models import ExecRequest, ExecResult, SandboxLimits, split_check
from .zygote import GRACE_S

log = logging.getLogger(__name__)

HOST_GRACE_S = 3.0  # past the zygote's deadline: it is hung, kill the whole sandbox
START_TIMEOUT_S = 30.0
_SHOWN_CHARS = 2000  # of a failing test's source in the result


class SandboxDied(RuntimeError):
    """The sandbox's zygote went away during a request."""


class Sandbox:
    """One warm sandbox: runs requests one at a time and restarts when it dies."""

    def __init__(self, mode: str, limits: SandboxLimits) -> None:
        self._mode = mode
        self._limits = limits
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._scratch: str | None = None
        self.start()

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        control, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        launch = plan_launch(self._mode, self._limits, inside.fileno())
        code = os.memfd_create("sandbox-code")
        with tempfile.TemporaryFile() as errors:
            try:
                os.write(code, launch.code)
                os.lseek(code, 0, os.SEEK_SET)
                self._process = _popen(
                    launch, stdin=code, stderr=errors, pass_fds=(inside.fileno(),)
                )
            finally:
                os.close(code)
                inside.close()
            self._control, self._scratch = control, launch.scratch
            control.settimeout(START_TIMEOUT_S)
            try:
                ready = control.recv(64)
            except OSError:
                ready = b""
            control.settimeout(None)
            if ready != b"ready":
                self.close()
                errors.seek(0)
                reason = errors.read().decode(errors="replace").strip() or "no message"
                raise SandboxUnavailable(f"the sandbox did not start: {reason}")

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            _stop(self._process)
            self._process = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def restart(self) -> None:
        self.close()
        self.start()

    @property
    def root_pid(self) -> int | None:
        """Host pid of the sandbox's first process: bubblewrap's (whose child is the zygote),
        or the zygote's in rlimits mode."""
        return None if self._process is None else self._process.pid

    # --------------------------------------------------------------------------- requests

    def execute(self, request: ExecRequest) -> ExecResult:
        """Run one request and return its verdict; a dead sandbox is restarted afterwards."""
        if self._control is None:  # an earlier restart failed: try again
            self.start()
        payload, shown = _payload(request)
        started = time.monotonic()
        try:
            events, ending = self._exchange(json.dumps(payload).encode(), request.timeout_s)
        except SandboxDied as exc:
            log.warning("sandbox died during request %r (%s); restarting it", request.id, exc)
            self.restart()
            events, ending = [], None
        return verdict(request, shown, events, ending, time.monotonic() - started)

    def _exchange(
        self, payload: bytes, timeout_s: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send one request; the judge's events and the zygote's ending."""
        assert self._control is not None  # started by execute()
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            message = json.dumps({"timeout_s": timeout_s}).encode()
            socket.send_fds(self._control, [message], [request_r, result_w])
        except OSError as exc:
            for fd in (request_w, result_r):
                os.close(fd)
            raise SandboxDied(f"cannot reach the zygote: {exc}") from None
        finally:
            os.close(request_r)
            os.close(result_w)
        with _Exchange(self._control, request_w, result_r, payload) as exchange:
            deadline = time.monotonic() + timeout_s + GRACE_S + HOST_GRACE_S
            if not exchange.run(deadline):
                raise SandboxDied("no answer by the deadline")
            return exchange.events, exchange.ending


class _Exchange:
    """The pool's side of one request: writes the payload, reads events and the ending."""

    def __init__(
        self, control: socket.socket, request_w: int, result_r: int, payload: bytes
    ) -> None:
        self._control = control
        self._request_w = request_w
        self._result_r = result_r
        self._pending = memoryview(payload)
        self._output = bytearray()
        self._selector = selectors.DefaultSelector()
        self.ending: dict[str, Any] = {}
        os.set_blocking(request_w, False)
        self._selector.register(request_w, selectors.EVENT_WRITE)
        self._selector.register(result_r, selectors.EVENT_READ)
        self._selector.register(control, selectors.EVENT_READ)

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *_: object) -> None:
        self._selector.close()
        for fd in (self._request_w, self._result_r):
            if fd >= 0:
                os.close(fd)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Complete lines only: a judge killed mid-write leaves a partial last line."""
        return [json.loads(line) for line in self._output.split(b"\n")[:-1]]

    def run(self, deadline: float) -> bool:
        """Until the ending arrived and the result pipe closed; False if the deadline came first."""
        while self._selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in self._selector.select(remaining):
                if key.fd == self._request_w:
                    self._write()
                elif key.fd == self._result_r:
                    self._read()
                else:
                    self._receive_ending()
        return True

    def _write(self) -> None:
        try:
            self._pending = self._pending[os.write(self._request_w, self._pending[: 1 << 16]) :]
        except BrokenPipeError:  # the judge is gone; the ending will say how
            self._pending = self._pending[:0]
        if not self._pending:
            self._close("_request_w")

    def _read(self) -> None:
        data = os.read(self._result_r, 1 << 16)
        if data:
            self._output += data
        else:
            self._close("_result_r")

    def _receive_ending(self) -> None:
        message = self._control.recv(4096)
        if not message:
            raise SandboxDied("the zygote exited")
        self.ending = json.loads(message)
        self._selector.unregister(self._control)

    def _close(self, name: str) -> None:
        fd = getattr(self, name)
        self._selector.unregister(fd)
        os.close(fd)
        setattr(self, name, -1)


# ============================================================================= verdicts


def _payload(request: ExecRequest) -> tuple[dict[str, Any], list[str]]:
    """What the judge receives, and the source of each unit as the result shows it."""
    common = {
        "program": request.program,
        "setup": request.setup,
        "entry_point": request.entry_point,
        "timeout_s": request.timeout_s,
        "prelude": None,
        "param": None,
    }
    if request.test is not None:
        param, units = split_check(request.test)
        return {
            **common,
            "mode": "call",
            "units": units,
            "prelude": request.test,
            "param": param,
        }, units
    if request.stdio:
        cases = [case.model_dump() for case in request.tests]  # type: ignore[union-attr]
        shown = [f"input:\n{c['input']}\nexpected output:\n{c['output']}" for c in cases]
        return {**common, "mode": "stdio", "units": cases}, shown
    tests = list(request.tests)  # type: ignore[arg-type]
    return {**common, "mode": "call", "units": tests}, tests


def verdict(
    request: ExecRequest,
    shown: list[str],
    events: list[dict[str, Any]],
    ending: dict[str, Any] | None,
    elapsed_s: float,
) -> ExecResult:
    """The result of a request from what the judge reported and how the request ended.

    A request passes only if the judge reported every unit as passed, finished its report, and
    exited cleanly; a unit the judge never reported did not pass.
    """
    total = len(shown)
    outcomes = {e["test"]: e for e in events if "test" in e}
    end = next((e for e in events if e.get("end")), {})
    fields: dict[str, Any] = {
        "id": request.id,
        "total": total,
        "passed": sum(o["outcome"] == "passed" for o in outcomes.values()),
        "elapsed_s": round(elapsed_s, 4),
        "stdout": end.get("stdout", ""),
        "stderr": end.get("stderr", ""),
    }
    load = next((e["load"] for e in events if "load" in e), None)
    if load is not None:
        detail = f"the program failed while loading: {load['detail']}"
        return ExecResult(
            **fields, status=load["outcome"], error_line=load["error_line"], detail=detail
        )
    for index in range(total):
        outcome = outcomes.get(index) or _unreported(end, ending)
        if outcome["outcome"] != "passed":
            return ExecResult(
                **fields,
                status=outcome["outcome"],
                error_line=outcome["error_line"],
                detail=f"test {index + 1}/{total} {outcome['outcome']}: {outcome['detail']}",
                failed_test=_clip(shown[index], _SHOWN_CHARS),
            )
    if not end or ending is None or ending.get("judge") != "done":
        return ExecResult(**fields, error_line=None, **_status(_unreported(end, ending)))
    return ExecResult(
        **fields, status="passed", error_line=None, detail=f"{total}/{total} tests passed"
    )


def _unreported(end: dict[str, Any], ending: dict[str, Any] | None) -> dict[str, Any]:
    """Why the judge did not report a unit (or its end): never a pass."""
    if ending is None:
        return _outcome("killed", "the sandbox was killed (it has been restarted)")
    if ending.get("judge") == "deadline" or end.get("stopped") == "timeout":
        return _outcome("timeout", "the time limit ran out before this test")
    return _outcome("killed", "the judge ended without reporting this test")


def _outcome(kind: str, detail: str) -> dict[str, Any]:
    return {"outcome": kind, "detail": detail, "error_line": None}


def _status(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"status": outcome["outcome"], "detail": outcome["detail"]}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ============================================================================= the pool


class SandboxPool:
    """Warm sandboxes (``workers`` of them, default one per CPU core) serving requests in
    parallel; use as a context manager and call ``run_batch`` or ``imap`` as often as needed."""

    def __init__(self, workers: int | None = None, limits: SandboxLimits | None = None) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        self.limits = limits or SandboxLimits()
        self._sandboxes: list[Sandbox] = []
        self._idle: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> SandboxPool:
        mode = sandbox_mode()
        if mode == "rlimits":
            log.warning(WEAK_WARNING)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        starts = [self._executor.submit(Sandbox, mode, self.limits) for _ in range(self.workers)]
        errors = []
        for start in starts:
            try:
                self._sandboxes.append(start.result())
            except Exception as exc:  # close the sandboxes that did start, then report
                errors.append(exc)
        if errors:
            self.close()
            raise errors[0]
        for sandbox in self._sandboxes:
            self._idle.put(sandbox)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for sandbox in self._sandboxes:
            sandbox.close()
        self._sandboxes.clear()

    def run_batch(self, requests: Iterable[ExecRequest | Mapping[str, Any]]) -> list[ExecResult]:
        """One result per request, in order (all requests are validated before any runs)."""
        return list(self.imap([_as_request(r) for r in requests]))

    def imap(self, requests: Iterable[ExecRequest | Mapping[str, Any]]) -> Iterator[ExecResult]:
        """Results in request order, streaming: at most two requests per worker are in flight."""
        if self._executor is None:
            raise RuntimeError("the pool is not started: use it as `with SandboxPool() as pool:`")
        in_flight: deque[Future[ExecResult]] = deque()
        for request in requests:
            in_flight.append(self._executor.submit(self._execute, _as_request(request)))
            if len(in_flight) >= 2 * self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def root_pids(self) -> list[int]:
        """Host pid of each sandbox's first process (see ``Sandbox.root_pid``)."""
        return [pid for sandbox in self._sandboxes if (pid := sandbox.root_pid) is not None]

    def _execute(self, request: ExecRequest) -> ExecResult:
        sandbox = self._idle.get()
        try:
            return sandbox.execute(request)
        finally:
            self._idle.put(sandbox)


def run_batch(
    requests: Iterable[ExecRequest | Mapping[str, Any]], workers: int | None = None
) -> list[ExecResult]:
    """Run requests in a pool started for the occasion (keep a ``SandboxPool`` to reuse one)."""
    checked = [_as_request(r) for r in requests]
    with SandboxPool(workers) as pool:
        return pool.run_batch(checked)


def _as_request(request: ExecRequest | Mapping[str, Any]) -> ExecRequest:
    return request if isinstance(request, ExecRequest) else ExecRequest.model_validate(request)


# ============================================================================= processes


def _popen(launch: Launch, **kwargs: Any) -> subprocess.Popen[bytes]:
    user = (
        {}
        if launch.user is None
        else {"user": launch.user, "group": SANDBOX_GID, "extra_groups": []}
    )
    return subprocess.Popen(
        launch.argv,
        env=launch.env,
        cwd=launch.cwd,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        **user,
        **kwargs,
    )


def _stop(launcher: subprocess.Popen[bytes]) -> None:
    """Stop a sandbox whose control socket is closed: SIGKILL the launcher's children (under
    bubblewrap the zygote, whose pid namespace dies with it; bubblewrap reaps it and exits),
    and the launcher's whole group if it is still there a second later."""
    children = f"/proc/{launcher.pid}/task/{launcher.pid}/children"
    with contextlib.suppress(OSError), open(children) as listing:
        for child in listing.read().split():
            os.kill(int(child), signal.SIGKILL)
    try:
        launcher.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
