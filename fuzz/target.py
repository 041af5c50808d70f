"""What a fuzz target is: raw-bytes and hypothesis inputs, seeds, and the check of one input.

Every target takes its input as ``bytes`` (``decode`` turns raw bytes into the structured input,
so atheris and the random mutator drive every target the same way); hypothesis may add structured
strategies of its own (``extra``). ``check`` runs one input and returns how many units it covered
(frames for the frame target, 1 elsewhere). Any exception escaping ``check`` is a finding.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

from sgx_quote_helper.errors import SgxQuoteHelperError

T = TypeVar("T")


def ours(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args)``, or None when it raised one of our errors; anything else propagates."""
    try:
        return fn(*args, **kwargs)
    except SgxQuoteHelperError:
        return None


def _identity(data: bytes) -> Any:
    return data


@dataclass(frozen=True)
class Target:
    """One fuzz target (see the module doc)."""

    name: str
    doc: str
    check: Callable[[Any], int]
    seeds: Callable[[], Sequence[bytes]]
    decode: Callable[[bytes], Any] = _identity
    max_size: int = 4096
    extra: Callable[[], st.SearchStrategy[Any]] | None = None
    tags: tuple[str, ...] = field(default=())

    def run_bytes(self, data: bytes) -> int:
        """Check the input that raw ``data`` decodes to (atheris and the random engine)."""
        return self.check(self.decode(data))

    def strategy(self) -> st.SearchStrategy[Any]:
        """Hypothesis inputs: random bytes, mutated seeds, and the target's own structured ones."""
        raw = mutated(self.seeds(), self.max_size).map(self.decode)
        return st.one_of(raw, self.extra()) if self.extra is not None else raw


def mutated(seeds: Sequence[bytes], max_size: int) -> st.SearchStrategy[bytes]:
    """Random bytes, plus seeds with byte overwrites, cuts and splices (hypothesis)."""
    plain = st.binary(max_size=max_size)
    if not seeds:
        return plain

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(list(seeds))))
        for _ in range(draw(st.integers(0, 6))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, max(len(data), 1) - 1))
            if op == 0 and data:
                data[pos % len(data)] = draw(st.integers(0, 255))
            elif op == 1:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            elif op == 2:
                del data[pos : pos + draw(st.integers(1, 64))]
            else:
                data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    return st.one_of(plain, mutate(), st.sampled_from(list(seeds)))


_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)


def random_mutation(rng: random.Random, seeds: Sequence[bytes], max_size: int) -> bytes:
    """The random engine's input: a seed with a few mutations, or plain random bytes."""
    if not seeds or rng.random() < 0.2:
        return rng.randbytes(rng.randrange(0, max_size + 1))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(0, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[pos % len(data)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos % len(data)] = rng.choice(_INTERESTING)
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        elif op == 3:
            del data[pos : pos + rng.randrange(1, 64)]
        elif op == 4:
            data = data[:pos]
        else:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            data[pos:pos] = other[start : start + rng.randrange(1, 256)]
    return bytes(data[: max_size * 4])


__all__ = ["Target", "mutated", "ours", "random_mutation"]
