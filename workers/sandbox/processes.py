"""Process plumbing shared by the processes inside the sandbox (standard library only)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def run_then_exit(body: Callable[[], None]) -> NoReturn:
    """A forked process's whole life: run ``body``, then leave without unwinding into the
    parent's stack, running its ``atexit`` handlers or flushing its buffers."""
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def keep_only(fd: int) -> None:
    """Close every descriptor above 2 except ``fd``: what a new process inherited by accident
    must not stay reachable from it."""
    os.closerange(3, fd)
    os.closerange(fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def kill_children(keep: frozenset[int] = frozenset(), rounds: int | None = None) -> int | None:
    """SIGKILL and reap every child except ``keep`` until none is left; how many there were,
    or None if some were still left after ``rounds`` rounds (processes forking as fast as they
    are killed, each in a group of its own).

    Orphans re-parent to this process (pid 1 of the sandbox, or a child subreaper), so
    repeating until no child is left also reaches grandchildren whose parents died first.
    """
    seen: set[int] = set()
    while pids := [pid for pid in _children() if pid not in keep]:
        if rounds is not None and (rounds := rounds - 1) < 0:
            return None
        for pid in pids:
            seen.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return len(seen)


def _children() -> list[int]:
    with open(f"/proc/self/task/{os.getpid()}/children") as listing:
        return [int(pid) for pid in listing.read().split()]


def wait_readable(fds: list[int], deadline: float) -> list[int]:
    """The descriptors of ``fds`` that became readable before ``deadline`` (monotonic)."""
    ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
    return ready


def empty(directory: str) -> None:
    """Delete everything in ``directory``, whatever permissions the program left on it."""
    for entry in os.scandir(directory):
        _remove(entry.path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        for entry in os.scandir(path):
            _remove(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def tasks_of_uid() -> int:
    """Tasks (threads) of this uid now: RLIMIT_NPROC counts them all, the harness's too."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


def limit(kind: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(kind, (soft, soft if hard is None else hard))


def prctl(option: int, value: int) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
