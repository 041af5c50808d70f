"""Shared test fixtures: where the real test vectors live, and temporary platforms.

The real quotes and Intel collateral are read in place from ``../shared/testdata/real`` (beside
the project root, as on developer machines and in CI); they are never copied into the project.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGX_QUOTE_HELPER_SHARED", ROOT.parent / "shared"))
REAL = SHARED / "testdata" / "real"

#: every real quote vector directory (SGX and TDX)
REAL_QUOTE_DIRS = sorted(p.parent for p in REAL.rglob("quote.bin")) if REAL.is_dir() else []


def real_dir(name: str) -> Path:
    """Path of one real vector directory, e.g. ``real_dir("phala-sgx-v3-processor")``."""
    path = REAL / name
    if not path.is_dir():
        pytest.skip(f"real test vectors not found at {path} (set SGX_QUOTE_HELPER_SHARED)")
    return path


def load_expected(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "expected.json").read_text())
    return data


@pytest.fixture
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real test vectors not found at {REAL}")
    return REAL
