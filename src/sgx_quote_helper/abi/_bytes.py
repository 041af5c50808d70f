"""Small helpers shared by the structure modules: length checks and a bounds-checked reader."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from ..errors import ParseError

T = TypeVar("T")


def expect_len(structure: str, data: bytes, size: int, offset: int = 0) -> bytes:
    """Return ``bytes(data)`` if it is exactly ``size`` long, else raise :class:`ParseError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParseError(structure, offset, f"expected bytes, got {type(data).__name__}")
    if len(data) != size:
        raise ParseError(structure, offset + min(len(data), size), f"expected {size} bytes, got {len(data)}")
    return bytes(data)


def check_field(structure: str, name: str, value: bytes, size: int) -> None:
    """Refuse a fixed-size field of the wrong length when building a structure."""
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise ParseError(structure, 0, f"field {name} must be {size} bytes, got {got}")


def decoded_builder(cls: type[T]) -> Callable[..., T]:
    """A constructor for a frozen slots dataclass that takes every field positionally, in field
    order, and skips ``__init__``/``__post_init__``.

    Only where the values already have the checked shape by construction (slices of a fixed
    size taken by :class:`Reader` or at fixed offsets, integers from ``struct``, a wire decoder's
    fields, the service's one reply per quote): ``__post_init__`` would repeat checks that cannot
    fail there. Anything built from caller-supplied values goes through the class itself. The body is generated, one slot store
    per field (as ``dataclasses`` generates ``__init__``), to keep a quote parse cheap.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(f'v{i}' for i in range(len(names)))}):", "    obj = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = getattr(cls, name).__set__  # the slot's member descriptor
        lines.append(f"    _set{i}(obj, v{i})")
    lines.append("    return obj")
    exec("\n".join(lines), env)  # generated from the class's own field names
    build: Callable[..., T] = env["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build


class Reader:
    """Reads little-endian fields from a buffer and raises ParseError past its end.

    ``base`` is added to offsets in error messages so that nested structures report positions
    within the outermost input.
    """

    __slots__ = ("_data", "base", "pos", "structure")

    def __init__(self, data: bytes, structure: str, base: int = 0) -> None:
        self._data = data
        self.structure = structure
        self.base = base
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self._data):
            raise ParseError(
                self.structure,
                self.base + self.pos,
                f"{what} needs {n} bytes, only {len(self._data) - self.pos} left",
            )
        out = self._data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack_from("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack_from("<I", self.take(4, what))[0])

    def rest(self) -> bytes:
        out = self._data[self.pos :]
        self.pos = len(self._data)
        return out
