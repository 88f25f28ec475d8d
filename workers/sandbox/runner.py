"""The program's side of a request (inside the sandbox; standard library only).

One process per request, forked by the zygote *before* the request exists, so nothing of any
request's tests is in its memory. It closes every descriptor but its own, sets its resource
limits, and only then receives and runs the program:

* calls mode: imports the program once and performs the judge's operations on its objects
  (call ``f`` with these arguments, get an attribute...), replying with plain data
  (``wire.py``) or an opaque reference, until the judge dismisses it;
* stdio mode: compiles the program and, per case, forks a child that runs it as
  ``__main__`` on that case's stdin.

Nothing this process says is trusted: the judge only ever compares the data it sends.
"""

from __future__ import annotations

import operator
import os
import resource
import signal
import sys
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import wire
from .processes import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    flush_std,
    keep_only,
    kill_children,
    limit,
    prctl,
    run_then_exit,
    tasks_of_uid,
)

if TYPE_CHECKING:
    from .zygote import Config

PROGRAM_FILE = "<program>"  # the filename of the program's code objects: error lines come from it


def main(config: Config, fd: int, stdout_w: int, stderr_w: int) -> None:
    """Serve one request on socket ``fd``, with the program's stdout/stderr on the pipes."""
    fd = _plumb(fd, stdout_w, stderr_w)
    os.setpgid(0, 0)  # a group of its own: the zygote kills it (a fork bomb too) in one go
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # the program's orphans come back here to be counted
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises instead of killing
    limit(resource.RLIMIT_AS, config.memory_bytes)
    limit(resource.RLIMIT_FSIZE, config.file_bytes)
    limit(resource.RLIMIT_NOFILE, config.open_files)
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NPROC, tasks_of_uid() + config.processes)

    reader = wire.FrameReader()
    load = wire.receive(fd, reader)
    if load is None:
        return  # the sandbox is closing
    limit(resource.RLIMIT_CPU, int(load["cpu_s"]), int(load["cpu_s"]) + 1)
    try:
        program, names = _load(load["program"], load["mode"])
    except BaseException as exc:
        wire.send(fd, wire.exception_message(exc, program_line(exc)))
        return
    finally:
        flush_std()  # before any fork, or each child would print the buffer again
    wire.send(fd, {"op": "loaded", "names": names})
    if load["mode"] == "stdio":
        while (message := wire.receive(fd, reader)) is not None:
            if message.get("op") == "fork":
                wire.send(fd, _run_case(lambda r=reader: _Server(fd, r, program).serve()))
                reader = wire.FrameReader()  # what the case's process read was its own
    else:
        _Server(fd, reader, program).serve()
        wire.send(fd, {"op": "exited", "status": 0, "orphans": kill_children()})


def _plumb(fd: int, stdout_w: int, stderr_w: int) -> int:
    """stdin from /dev/null, stdout/stderr to the judge's pipes, the socket on fd 3, and no
    other descriptor (the zygote's control socket, the judge's...)."""
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (stdout_w, 1), (stderr_w, 2), (fd, 3)):
        os.dup2(source, target)
    keep_only(3)
    return 3


def _load(source: str, mode: str) -> tuple[Any, dict[str, str]]:
    """Compile (stdio) or import (calls) the program: the code or module, and the kind of
    each of its global names: ``module:<name>``, ``callable`` or ``value``."""
    code = compile(source, PROGRAM_FILE, "exec")
    if mode == "stdio":
        return code, {}
    module = types.ModuleType("solution")
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    names = {
        name: _kind(value)
        for name, value in vars(module).items()
        if not (name.startswith("__") and name.endswith("__"))
    }
    return module, names


def _kind(value: Any) -> str:
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    return "callable" if callable(value) else "value"


def _run_case(body: Callable[[], None]) -> dict[str, Any]:
    """Fork a stdio case's process running ``body``; wait for it and kill what it left."""
    try:
        pid = os.fork()
    except OSError as exc:
        return {
            "op": "exited",
            "status": None,
            "orphans": 0,
            "error": f"{type(exc).__name__}: {exc}",
        }
    if pid == 0:
        run_then_exit(body)
    _, status = os.waitpid(pid, 0)
    return {"op": "exited", "status": status, "orphans": kill_children()}


def program_line(exc: BaseException) -> int | None:
    """The 1-based line of the program where ``exc`` was raised (the innermost such frame)."""
    if isinstance(exc, SyntaxError) and exc.filename == PROGRAM_FILE:
        return exc.lineno
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == PROGRAM_FILE:
            line = lineno
    return line


_OPERATIONS: dict[str, Callable[..., Any]] = {
    "call": lambda function, *args, **kwargs: function(*args, **kwargs),
    "getattr": getattr,
    "setattr": setattr,
    "getitem": operator.getitem,
    "iter": iter,
    "next": next,
    "len": len,
    "bool": bool,
    "str": str,
}


class _Callback:
    """The program's handle on a function of the test (a lambda passed as an argument)."""

    __slots__ = ("id", "server")

    def __init__(self, server: _Server, index: int) -> None:
        self.server = server
        self.id = index

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.server.call_back(self.id, args, kwargs)


class _Server:
    """Performs the judge's operations on the program's objects until dismissed."""

    def __init__(self, fd: int, reader: wire.FrameReader, program: Any) -> None:
        self.fd = fd
        self.reader = reader
        self.program = program  # the module (calls) or the code object (stdio)
        self.objects: list[Any] = []  # what "ref" ids point at

    def serve(self) -> None:
        while (message := wire.receive(self.fd, self.reader)) is not None:
            if message.get("op") == "end":
                break
            self._answer(message)
        flush_std()

    def call_back(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a function of the test in the judge; serve nested calls until it returns."""
        call = {"op": "callback", "id": index, "args": self._encode(list(args))}
        wire.send(self.fd, {**call, "kwargs": self._encode(kwargs)})
        while (message := wire.receive(self.fd, self.reader)) is not None:
            op = message.get("op")
            if op == "return":
                return self._decode(message.get("value"))
            if op == "raise":
                raise wire.rebuild_exception(message)
            if op == "end":
                break
            self._answer(message)  # the callback itself called into the program
        flush_std()
        os._exit(0)  # the judge is done with the program (or gone) while it waited

    def _answer(self, message: dict[str, Any]) -> None:
        try:
            value = self._perform(message)
            reply = {"op": "return", "value": self._encode(value)}
        except BaseException as exc:
            reply = wire.exception_message(exc, program_line(exc))
        wire.send(self.fd, reply)

    def _perform(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        args = [self._decode(a) for a in message.get("args", [])]
        if op == "run":
            return _run_main(self.program, *args)
        if op == "values":  # the current values of the program's globals named in args[0]
            return {str(name): getattr(self.program, str(name)) for name in args[0]}
        kwargs = {str(k): self._decode(v) for k, v in message.get("kwargs", {}).items()}
        return _OPERATIONS[op](self._decode(message.get("target")), *args, **kwargs)

    def _encode(self, value: Any) -> Any:
        try:
            return wire.encode(value, self._register)
        except (RecursionError, ValueError):  # too deep or cyclic: hand it over as one object
            return self._register(value)

    def _register(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, _Callback):
            return {"t": "cb", "id": obj.id}
        self.objects.append(obj)
        return {"t": "ref", "id": len(self.objects) - 1, "type": type(obj).__name__}

    def _decode(self, data: Any) -> Any:
        return wire.decode(data, self._special)

    def _special(self, data: dict[str, Any]) -> Any:
        tag = data.get("t")
        if tag == "ref":
            return self.objects[wire.index(data.get("id"), len(self.objects))]
        if tag == "name":
            try:
                return getattr(self.program, str(data.get("name")))
            except AttributeError:
                raise NameError(f"name {data.get('name')!r} is not defined") from None
        if tag == "global":
            return wire.resolve(str(data.get("module")), str(data.get("name")))
        if tag == "cb":
            return _Callback(self, wire.index(data.get("id"), 1 << 62))
        raise wire.WireError(f"unknown value tag {str(tag)[:40]!r}")


def _run_main(code: types.CodeType, stdin: str) -> None:
    """Run a stdio program as ``__main__`` on ``stdin``; ``sys.exit(0)`` is a normal end."""
    memory = os.memfd_create("stdin")
    data = stdin.encode()
    while data:
        data = data[os.write(memory, data) :]
    os.lseek(memory, 0, os.SEEK_SET)
    os.dup2(memory, 0)
    os.close(memory)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - fd 0 outlives it
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    finally:
        flush_std()
