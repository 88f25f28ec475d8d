"""The sandbox's first process, and why a program cannot fake a pass (standard library only).

The pool ships this module and those it imports into each sandbox (``isolation._SHIPPED``) and
calls ``main`` once; the interpreter then stays warm for thousands of requests::

    zygote   pid 1 of the sandbox's pid namespace: nothing inside can signal it. It never reads
    │        a request: per request it receives two fresh pipes from the pool (request in,
    │        outcomes out) and passes them to the judge with the program process it forked in
    │        advance; afterwards it kills every process left and empties /tmp.
    ├─ judge     long-lived, trusted: reads the request, runs the test code itself, writes one
    │            outcome per test to the pool. Forked once (again if it dies); never forks.
    └─ program   one per request, forked before the request exists: runs the program and
                 answers the judge's calls (``runner.py``).

Why a pass cannot be faked. The judge never executes program code. A test such as
``assert f(1) == 2`` runs in the judge, where ``f`` is a proxy whose calls are forwarded to the
program process and whose results come back as *data* (exact built-in types only; any other
object arrives as an opaque proxy that equals nothing but itself). So the comparison, the
``assert`` and the verdict happen in a process the program cannot reach:

* it cannot see the expected values: they exist only in the judge, and program processes are
  forked from the zygote, which never held any request;
* it cannot read or alter the judge: ``PR_SET_DUMPABLE`` 0 denies ``ptrace``, ``/proc/<pid>/mem``
  and ``/proc/<pid>/fd`` to same-uid processes, and it holds no descriptor of the judge's pipes;
* exiting (``sys.exit``, ``os._exit``, ``atexit``), printing, closing stdout or patching
  ``print``/``json``/``builtins`` only ends or alters the program process: a test passes only
  when the judge finished evaluating it and the process then ended as the judge asked.

What the program can still do is answer the calls it receives — which is what is graded.
A program that raises while being imported fails every test with that error (``error``, 0 of
all tests passed): no test can run without its definitions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass

from . import judge, runner
from .processes import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_PDEATHSIG,
    empty,
    keep_only,
    kill_children,
    prctl,
    run_then_exit,
    wait_readable,
)

GRACE_S = 1.0  # the zygote's deadline runs this long past the judge's own


@dataclass(frozen=True)
class Config:
    """Per-sandbox settings, passed once as JSON on the command line (see ``isolation.py``)."""

    control_fd: int  # SOCK_SEQPACKET to the pool: requests in, endings out
    memory_bytes: int  # RLIMIT_AS of the judge and of every program process
    file_bytes: int  # RLIMIT_FSIZE of program processes
    open_files: int  # RLIMIT_NOFILE of program processes
    processes: int  # processes + threads a program may add (RLIMIT_NPROC above the harness)
    output_bytes: int  # stdout / stderr kept per request for the result
    scratch: tuple[str, ...]  # directories emptied after every request


def main(argv: list[str]) -> None:
    """Entry point of the sandbox's interpreter: ``argv[0]`` is the JSON ``Config``."""
    fields = json.loads(argv[0])
    _Zygote(Config(**{**fields, "scratch": tuple(fields["scratch"])})).run()


class _Child:
    """A child process watched through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)

    def close(self) -> None:
        os.close(self.fd)


class _Program(_Child):
    """A program process forked ahead of its request, with the judge's ends of its channels."""

    def __init__(self, pid: int, judge_fds: list[int]) -> None:
        super().__init__(pid)
        self.judge_fds = judge_fds


class _Zygote:
    """Pid 1: hands requests to the judge, enforces the backstop deadline, cleans up after."""

    def __init__(self, config: Config) -> None:
        self.config = config
        prctl(PR_SET_DUMPABLE, 0)  # inherited by every process forked from here
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come here even without a pid namespace
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the pool (or bubblewrap) gone: so are we
        self.control = socket.socket(fileno=config.control_fd)
        self.judge, self.judge_socket = self._spawn_judge()
        self.program = self._spawn_program()

    def run(self) -> None:
        self.control.send(b"ready")
        while True:
            message, fds, _, _ = socket.recv_fds(self.control, 4096, 2)
            if not message:
                return  # the pool closed the sandbox
            request_fd, result_fd = fds
            outcome = self._serve(request_fd, result_fd, json.loads(message)["timeout_s"])
            self._clean_up(judge_healthy=outcome == "done")
            self.control.send(json.dumps({"judge": outcome}).encode())
            self.program = self._spawn_program()  # off the request's path: the pool has its answer

    def _serve(self, request_fd: int, result_fd: int, timeout_s: float) -> str:
        """Hand the request to the judge; "done", "died" (the judge) or "deadline"."""
        program = self.program
        fds = [request_fd, result_fd, *program.judge_fds]
        try:
            message = json.dumps({"timeout_s": timeout_s}).encode()
            socket.send_fds(self.judge_socket, [message], fds)
        except OSError:
            return "died"
        finally:
            for fd in fds:
                os.close(fd)
        deadline = time.monotonic() + timeout_s + GRACE_S
        while ready := wait_readable([self.judge_socket.fileno(), self.judge.fd], deadline):
            message = self.judge_socket.recv(64) if self.judge_socket.fileno() in ready else b""
            if message != b"status":
                return "done" if message == b"done" else "died"
            # The judge lost the program process and asks how it ended.
            if program.fd in wait_readable([program.fd, self.judge.fd], deadline):
                _, status = os.waitpid(program.pid, 0)
                self.judge_socket.send(json.dumps({"status": status}).encode())
        return "deadline"

    def _clean_up(self, judge_healthy: bool) -> None:
        """Kill everything of the request (the judge too if it misbehaved, then fork a new
        one) and empty the scratch directories."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.program.pid, signal.SIGKILL)  # atomic: no fork escapes it
        keep = frozenset({self.judge.pid}) if judge_healthy else frozenset()
        if kill_children(keep, rounds=100) is None and os.getpid() == 1:
            os.kill(-1, signal.SIGKILL)  # everything but us, atomically; the judge too
            kill_children()
            judge_healthy = False
        if not judge_healthy:
            self.judge.close()
            self.judge_socket.close()
        self.program.close()
        for directory in self.config.scratch:
            empty(directory)
        if not judge_healthy:
            self.judge, self.judge_socket = self._spawn_judge()

    def _spawn_judge(self) -> tuple[_Child, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            keep_only(theirs.fileno())
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            run_then_exit(lambda: judge.main(self.config, theirs))
        theirs.close()
        return _Child(pid), ours

    def _spawn_program(self) -> _Program:
        ours, theirs = socket.socketpair()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            run_then_exit(lambda: runner.main(self.config, theirs.fileno(), stdout_w, stderr_w))
        theirs.close()
        os.close(stdout_w)
        os.close(stderr_w)
        return _Program(pid, [ours.detach(), stdout_r, stderr_r])
