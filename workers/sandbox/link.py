"""The judge's channel to the program's process, and the proxies of program objects
(inside the sandbox; standard library only).

A ``Remote`` stands in, in the judge, for a program object that is not plain data; every
operation on it becomes a request on the ``Link``, and its result comes back decoded by
``wire.py`` (data, or another ``Remote``). The link multiplexes the program's socket with its
stdout and stderr pipes, and asks the zygote how the process ended when it disappears.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import wire

if TYPE_CHECKING:
    from .zygote import Config


class ChildDied(BaseException):
    """The program's process ended before answering."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report)
        self.report = report


class ProcessGone(BaseException):
    """The program's process died during an earlier test, so this one cannot run."""


class StaleObjectError(Exception):
    """A program object from another process (a stdin/stdout case's) was used."""


class Capture:
    """The first ``limit`` bytes of an output stream, and how many bytes there were in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def overflowed(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        text = self.data.decode(errors="replace")
        hidden = self.total - len(self.data)
        return text + f"\n… [{hidden} more bytes]" if hidden else text


class Remote:
    """The judge's stand-in for a program object that is not plain data.

    Calls, attribute and item access, iteration, ``len``, ``bool`` and ``str`` are forwarded to
    the program (their results come back as data or as new proxies). Comparisons and arithmetic
    are not: a proxy equals only itself, so an object whose ``__eq__`` always says True cannot
    pass ``assert f(x) == expected``. Nor is ``in`` (``__contains__`` would hand the expected
    value to the program): the judge iterates and compares itself.
    """

    __slots__ = ("_label", "_link", "_session", "_tag")

    def __init__(self, link: Link, tag: dict[str, Any], session: int | None, label: str) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_tag", tag)
        object.__setattr__(self, "_session", session)  # None: a global name, valid anywhere
        object.__setattr__(self, "_label", label)

    def _ask(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return self._link.request(op, self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # protocol probes (copy, pickle...) stay local
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name, value)

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key)

    def __iter__(self) -> Any:
        return self._ask("iter")

    def __next__(self) -> Any:
        return self._ask("next")

    def __len__(self) -> int:
        return self._ask("len")

    def __bool__(self) -> bool:
        return self._ask("bool")

    def __str__(self) -> str:
        return self._ask("str")

    def __repr__(self) -> str:
        return f"<program {self._label}>"


class Link:
    """The judge's end of the socket to the program's process (and to its stdio cases').

    It multiplexes that socket with the program's stdout and stderr pipes, so a program that
    prints a lot never blocks while the judge waits for an answer. When the process disappears
    it asks the zygote how it ended.
    """

    def __init__(
        self,
        program_fd: int,
        stdout_fd: int,
        stderr_fd: int,
        zygote: socket.socket,
        config: Config,
        per_case: bool,
    ) -> None:
        self._fd = program_fd
        self._zygote = zygote
        self._reader = wire.FrameReader()
        self._selector = selectors.DefaultSelector()
        self.stdout = Capture(config.output_bytes)
        self.stderr = Capture(config.output_bytes)
        self.case_output: Capture | None = None
        self._stdout_fd = stdout_fd
        self._outputs = {stdout_fd: self.stdout, stderr_fd: self.stderr}
        for fd in (program_fd, stdout_fd, stderr_fd):
            self._selector.register(fd, selectors.EVENT_READ)
        self._alive = not per_case  # stdio: a process per case, forked on its first request
        self._gone = False  # the program's process died: nothing can be asked any more
        self.session = 0 if per_case else 1  # numbers the serving processes
        self.death: dict[str, Any] | None = None  # exit report of a process that died mid-test
        self._callbacks: list[Callable[..., Any]] = []
        self.last_value: Any = None

    def close(self) -> None:
        for fd in (self._fd, *self._outputs):
            os.close(fd)
        self._selector.close()

    # --------------------------------------------------------------------------- transport

    def send(self, message: dict[str, Any]) -> None:
        try:
            wire.send(self._fd, message)
        except BrokenPipeError:
            self._lost()

    def next_message(self) -> dict[str, Any]:
        if self._gone:
            raise ProcessGone
        while True:
            for message in self._reader.frames():
                return message
            for key, _ in self._selector.select():
                self._pump(key.fd)

    def _pump(self, fd: int) -> None:
        data = os.read(fd, 1 << 16)
        if fd == self._fd:
            if not data:
                self._lost()
            self._reader.feed(data)
        elif not data:
            self._selector.unregister(fd)
        else:
            self._outputs[fd].feed(data)
            if fd == self._stdout_fd and self.case_output is not None:
                self.case_output.feed(data)

    def _lost(self) -> None:
        """The program's process closed the socket: ask the zygote how it ended, and raise."""
        self._gone = True
        self._alive = False
        self._zygote.send(b"status")
        self.death = json.loads(self._zygote.recv(4096))
        raise ChildDied(self.death)

    def drain_outputs(self, limit: int = 1 << 24) -> None:
        """Read what the program printed that is still in the pipes (up to ``limit`` bytes)."""
        drained = 0
        while drained < limit:
            ready = [k.fd for k, _ in self._selector.select(0) if k.fd in self._outputs]
            if not ready:
                return
            for fd in ready:
                before = self._outputs[fd].total
                self._pump(fd)
                drained += self._outputs[fd].total - before + 1

    # --------------------------------------------------------------------------- requests

    def global_proxy(self, name: str) -> Remote:
        return Remote(self, {"t": "name", "name": name}, None, name)

    def request(
        self,
        op: str,
        target: Remote | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Perform ``op`` in the program's process and return its decoded result."""
        if self._gone:
            raise ProcessGone
        if not self._alive:
            self.send({"op": "fork"})
            self._alive = True
            self.session += 1
            self._callbacks = []
        self.send(
            {
                "op": op,
                "target": None if target is None else self._encode_arg(target),
                "args": [self._encode_arg(a) for a in args],
                "kwargs": {k: self._encode_arg(v) for k, v in (kwargs or {}).items()},
            }
        )
        return self._await_reply()

    def dismiss(self) -> dict[str, Any] | None:
        """End the serving process; its exit report, or None if none was serving."""
        if not self._alive:
            return None
        self.send({"op": "end"})
        while True:
            message = self.next_message()
            if message.get("op") == "exited":
                self._alive = False
                return message

    def _await_reply(self) -> Any:
        while True:
            message = self.next_message()
            op = message.get("op")
            if op == "return":
                self.last_value = wire.decode(message.get("value"), self._decode_special)
                return self.last_value
            if op == "callback":
                self._serve_callback(message)
            elif op == "exited":  # a stdio case's process died (its parent reports it)
                self._alive = False
                self.death = message
                raise ChildDied(message)
            else:
                raise wire.rebuild_exception(message)

    def _serve_callback(self, message: dict[str, Any]) -> None:
        """The program called a function the test passed it (a lambda, say): run it here."""
        try:
            function = self._callbacks[wire.index(message.get("id"), len(self._callbacks))]
            args = wire.decode(message.get("args"), self._decode_special)
            kwargs = wire.decode(message.get("kwargs"), self._decode_special)
            value = function(*args, **kwargs)
        except Exception as exc:
            self.send(wire.exception_message(exc))
            return
        self.send({"op": "return", "value": self._encode_arg(value)})

    # --------------------------------------------------------------------------- values

    def _encode_arg(self, value: Any) -> Any:
        return wire.encode(value, self._opaque_arg)

    def _opaque_arg(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, Remote):
            if obj._session not in (None, self.session):
                raise StaleObjectError(f"{obj!r} belongs to another program process")
            return obj._tag
        location = _stdlib_location(obj)
        if location is not None:
            return {"t": "global", "module": location[0], "name": location[1]}
        if callable(obj):
            self._callbacks.append(obj)
            return {"t": "cb", "id": len(self._callbacks) - 1}
        raise TypeError(f"a {type(obj).__name__} cannot be passed to the program")

    def _decode_special(self, data: dict[str, Any]) -> Any:
        if data.get("t") == "ref":
            tag = {"t": "ref", "id": wire.index(data.get("id"), 1 << 62)}
            return Remote(self, tag, self.session, str(data.get("type"))[:60])
        if data.get("t") == "cb":
            return self._callbacks[wire.index(data.get("id"), len(self._callbacks))]
        raise wire.WireError(f"unknown value tag {str(data.get('t'))[:40]!r}")


def _stdlib_location(obj: Any) -> tuple[str, str] | None:
    """(module, qualified name) of a standard-library class or function, if it is one."""
    owner = getattr(obj, "__objclass__", None)  # a method descriptor such as str.upper
    module = getattr(obj, "__module__", None) or getattr(owner, "__module__", None)
    name = getattr(obj, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)):
        return None
    if module != "builtins" and module.partition(".")[0] not in sys.stdlib_module_names:
        return None
    try:
        return (module, name) if wire.resolve(module, name) is obj else None
    except Exception:
        return None
