"""Seed corpora: the real quotes and collateral read in place (never copied into the project) and
synthesized valid messages.

The real vectors are found at ``$SGX_QUOTE_HELPER_SHARED/testdata/real``, else
``../shared/testdata/real`` beside the project root (as ``tests/conftest.py`` does). Without them the
targets still run on synthesized seeds and random bytes.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def real_root() -> Path:
    """Where the real test vectors are (may not exist)."""
    shared = Path(os.environ.get("SGX_QUOTE_HELPER_SHARED", ROOT.parent / "shared"))
    return shared / "testdata" / "real"


@cache
def real_files(pattern: str) -> tuple[bytes, ...]:
    """Contents of every real vector file matching ``pattern`` (e.g. ``quote.bin``), sorted by path."""
    root = real_root()
    if not root.is_dir():
        return ()
    return tuple(p.read_bytes() for p in sorted(root.rglob(pattern)))


@cache
def real_quotes() -> tuple[bytes, ...]:
    """Every real quote (SGX v3, TDX v4/v5)."""
    return real_files("quote.bin")


__all__ = ["ROOT", "real_files", "real_quotes", "real_root"]
