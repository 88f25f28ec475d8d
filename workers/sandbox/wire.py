"""Frames and the value codec between the judge and the program runner (inside the sandbox).

Standard library only: this module runs inside the sandbox (see ``isolation._SHIPPED``).

A value crosses between the two processes as JSON, with tagged objects (``{"t": tag, ...}``)
for what JSON lacks (tuples, sets, dicts with any keys, bytes, big ints...). Decoding builds
*only* exact built-in and standard-library data types, so a value that comes from the program can
never bring its own ``__eq__``, ``__hash__`` or ``__bool__`` into the judge: a program object
that is not plain data travels as an opaque reference (``{"t": "ref"}``), which the judge turns
into a proxy that equals nothing but itself. Subclasses of the data types (``class E(int)``) are
not data for the same reason.

What the codec cannot express is left to two callbacks, ``opaque`` when encoding and ``special``
when decoding, because each side resolves references differently (the runner keeps a table of
objects, the judge makes proxies).
"""

from __future__ import annotations

import builtins
import collections
import decimal
import fractions
import functools
import importlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

MAX_FRAME_BYTES = 64 << 20  # a bigger reply is refused instead of exhausting the judge's memory
_HEADER = struct.Struct(">I")
_JSON_INT_BITS = 12_000  # below Python's int<->str digit limit (4300 digits ≈ 14_000 bits)

# defaultdict factories that can be rebuilt by name; any other factory is dropped (it does not
# take part in equality).
_FACTORIES: dict[str, type] = {t.__name__: t for t in (int, float, str, list, set, dict, tuple)}


class WireError(ValueError):
    """A frame or value that does not follow the protocol (from a broken or hostile peer)."""


# ----------------------------------------------------------------------------- frames


def pack(message: dict[str, Any]) -> bytes:
    """One length-prefixed JSON frame."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


def send(fd: int, message: dict[str, Any]) -> None:
    """Write one frame completely (a blocking descriptor)."""
    view = memoryview(pack(message))
    while view:
        view = view[os.write(fd, view) :]


class FrameReader:
    """Collects bytes from a stream and hands out the complete frames in them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> Iterator[dict[str, Any]]:
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise WireError(f"a frame of {size} bytes exceeds the {MAX_FRAME_BYTES} limit")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                return
            data = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            try:
                message = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise WireError(f"unreadable frame: {exc}") from None
            if not isinstance(message, dict):
                raise WireError("a frame must hold a JSON object")
            yield message


def receive(fd: int, reader: FrameReader) -> dict[str, Any] | None:
    """Block until the next frame arrives on ``fd``; None at end of stream."""
    while True:
        for message in reader.frames():
            return message
        data = os.read(fd, 1 << 16)
        if not data:
            return None
        reader.feed(data)


# ----------------------------------------------------------------------------- values


def encode(value: Any, opaque: Callable[[Any], dict[str, Any]]) -> Any:
    """A JSON-ready form of ``value``; objects that are not plain data go through ``opaque``."""
    kind = type(value)
    if value is None or kind in (bool, str, float):
        return value
    if kind is list:
        return [encode(item, opaque) for item in value]
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value, lambda item: encode(item, opaque))
    if _is_namedtuple(kind):
        items = [encode(item, opaque) for item in value]
        return {"t": "namedtuple", "name": kind.__name__, "fields": list(kind._fields), "v": items}
    return opaque(value)


def decode(data: Any, special: Callable[[dict[str, Any]], Any]) -> Any:
    """Rebuild a value from its encoded form; tags the codec does not know go to ``special``."""
    if isinstance(data, list):
        return [decode(item, special) for item in data]
    if not isinstance(data, dict):
        return data
    decoder = _DECODERS.get(data.get("t"))
    if decoder is None:
        return special(data)
    try:
        return decoder(data, lambda item: decode(item, special))
    except (KeyError, TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise WireError(f"malformed {data.get('t')!r} value: {exc}") from None


Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]


def _int(value: int, _: Encode) -> Any:
    return value if value.bit_length() <= _JSON_INT_BITS else {"t": "int", "v": hex(value)}


def _items(tag: str) -> Callable[[Any, Encode], dict[str, Any]]:
    return lambda value, enc: {"t": tag, "v": [enc(item) for item in value]}


def _pairs(tag: str) -> Callable[[Any, Encode], dict[str, Any]]:
    return lambda value, enc: {"t": tag, "v": [[enc(k), enc(v)] for k, v in value.items()]}


def _defaultdict(value: collections.defaultdict, enc: Encode) -> dict[str, Any]:
    factory = value.default_factory
    name = factory.__name__ if factory in _FACTORIES.values() else None
    return {**_pairs("defaultdict")(value, enc), "factory": name}


def _is_namedtuple(kind: type) -> bool:
    return kind.__bases__ == (tuple,) and isinstance(getattr(kind, "_fields", None), tuple)


_ENCODERS: dict[type, Callable[[Any, Encode], Any]] = {
    int: _int,
    tuple: _items("tuple"),
    set: _items("set"),
    frozenset: _items("frozenset"),
    collections.deque: _items("deque"),
    type({}.keys()): _items("keys"),
    type({}.values()): _items("values"),
    type({}.items()): _items("items"),
    dict: _pairs("dict"),
    collections.OrderedDict: _pairs("OrderedDict"),
    collections.Counter: _pairs("Counter"),
    collections.defaultdict: _defaultdict,
    bytes: lambda value, _: {"t": "bytes", "v": value.hex()},
    bytearray: lambda value, _: {"t": "bytearray", "v": value.hex()},
    complex: lambda value, _: {"t": "complex", "v": [value.real, value.imag]},
    range: lambda value, _: {"t": "range", "v": [value.start, value.stop, value.step]},
    decimal.Decimal: lambda value, _: {"t": "Decimal", "v": str(value)},
    fractions.Fraction: lambda value, enc: {
        "t": "Fraction",
        "v": [enc(value.numerator), enc(value.denominator)],
    },
}


def _list(message: dict[str, Any], dec: Decode) -> list[Any]:
    items = message["v"]
    if not isinstance(items, list):
        raise TypeError("'v' must be a list")
    return [dec(item) for item in items]


def _pair_list(message: dict[str, Any], dec: Decode) -> list[tuple[Any, Any]]:
    return [(dec(k), dec(v)) for k, v in message["v"]]


@functools.lru_cache(maxsize=256)
def _namedtuple_type(name: str, fields: tuple[str, ...]) -> type:
    return collections.namedtuple(name, fields)


_DECODERS: dict[Any, Callable[[dict[str, Any], Decode], Any]] = {
    "int": lambda m, _: int(m["v"], 16),
    "tuple": lambda m, dec: tuple(_list(m, dec)),
    "set": lambda m, dec: set(_list(m, dec)),
    "frozenset": lambda m, dec: frozenset(_list(m, dec)),
    "deque": lambda m, dec: collections.deque(_list(m, dec)),
    "keys": lambda m, dec: dict.fromkeys(_list(m, dec)).keys(),
    "values": lambda m, dec: dict(enumerate(_list(m, dec))).values(),
    "items": lambda m, dec: dict(_list(m, dec)).items(),
    "dict": lambda m, dec: dict(_pair_list(m, dec)),
    "OrderedDict": lambda m, dec: collections.OrderedDict(_pair_list(m, dec)),
    "Counter": lambda m, dec: collections.Counter(dict(_pair_list(m, dec))),
    "defaultdict": lambda m, dec: collections.defaultdict(
        _FACTORIES.get(m["factory"]), _pair_list(m, dec)
    ),
    "bytes": lambda m, _: bytes.fromhex(m["v"]),
    "bytearray": lambda m, _: bytearray.fromhex(m["v"]),
    "complex": lambda m, _: complex(*m["v"]),
    "range": lambda m, _: range(*m["v"]),
    "Decimal": lambda m, _: decimal.Decimal(m["v"]),
    "Fraction": lambda m, dec: fractions.Fraction(*_list(m, dec)),
    "namedtuple": lambda m, dec: _namedtuple_type(m["name"], tuple(m["fields"]))(*_list(m, dec)),
}


def index(value: Any, size: int) -> int:
    """A reference id from the peer, checked to be an int in ``range(size)``."""
    if type(value) is not int or not 0 <= value < size:
        raise WireError(f"bad reference {str(value)[:40]!r}")
    return value


def resolve(module: str, name: str) -> Any:
    """The object ``name`` (a qualified name) of ``module``, importing it."""
    value: Any = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


# ----------------------------------------------------------------------------- exceptions

DETAIL_CHARS = 500
_EXITS = ("SystemExit", "KeyboardInterrupt", "GeneratorExit")


class ProgramError(Exception):
    """An exception reported by the peer, of a type that is not rebuilt as itself."""


class ProgramExit(BaseException):
    """``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` reported by the peer."""


def exception_message(exc: BaseException, line: int | None = None) -> dict[str, Any]:
    """The frame that reports ``exc`` (raised at ``line`` of the program, if known)."""
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable>"
    return {"op": "raise", "type": type(exc).__name__, "message": text[:DETAIL_CHARS], "line": line}


def rebuild_exception(message: dict[str, Any]) -> BaseException:
    """The exception a ``raise`` frame reports: a built-in type where there is one (so that
    ``except ValueError`` still works across the wire), else ``ProgramError``/``ProgramExit``.
    ``origin`` keeps (type name, message, program line) for the verdict."""
    if message.get("op") != "raise":
        return WireError(f"unexpected message {str(message.get('op'))[:40]!r}")
    name = str(message.get("type"))[:100]
    text = str(message.get("message"))[:DETAIL_CHARS]
    line = message.get("line")
    kind = getattr(builtins, name, None)
    exc: BaseException
    try:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise TypeError(name)
        exc = kind(text)
    except Exception:
        exc = (ProgramExit if name in _EXITS else ProgramError)(f"{name}: {text}")
    exc.origin = (name, text, line if type(line) is int else None)  # type: ignore[attr-defined]
    return exc
