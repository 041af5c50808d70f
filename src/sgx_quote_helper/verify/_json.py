"""Small helpers to read Intel's signed JSON collateral strictly (types, hex sizes, dates).

Also finds the exact text of a top-level member of a PCS response (``{"tcbInfo": {...},
"signature": "..."}``), because the signature covers those bytes as served, never a re-encoding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from ..errors import CollateralError

_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def top_level_members(text: str, what: str) -> dict[str, str]:
    """Map each top-level key of the JSON object ``text`` to the exact text of its value."""
    try:
        pos = _skip_ws(text, 0)
        if text[pos : pos + 1] != "{":
            raise CollateralError(f"{what}: not a JSON object")
        pos = _skip_ws(text, pos + 1)
        out: dict[str, str] = {}
        if text[pos : pos + 1] == "}":
            return out
        while True:
            if text[pos : pos + 1] != '"':
                raise CollateralError(f"{what}: expected a member name at offset {pos}")
            key, pos = scanstring(text, pos + 1)
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ":":
                raise CollateralError(f"{what}: expected ':' at offset {pos}")
            start = _skip_ws(text, pos + 1)
            _, end = _DECODER.raw_decode(text, start)
            out[key] = text[start:end]
            pos = _skip_ws(text, end)
            if text[pos : pos + 1] == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            if text[pos : pos + 1] == "}" and not text[pos + 1 :].strip(_WS):
                return out
            raise CollateralError(f"{what}: malformed JSON object near offset {pos}")
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, CollateralError):
            raise
        raise CollateralError(f"{what}: invalid JSON: {exc}") from None


def loads_object(text: str, what: str) -> dict[str, Any]:
    """``json.loads`` that only accepts an object and raises CollateralError."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CollateralError(f"{what}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CollateralError(f"{what}: expected a JSON object")
    return value


def get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """A required member of the given JSON type (bool is never an int here)."""
    if key not in obj:
        raise CollateralError(f"{what}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CollateralError(f"{what}: field {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise CollateralError(f"{what}: field {key!r} has the wrong type")
    return value


def get_int(obj: dict[str, Any], key: str, what: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
    value: int = get(obj, key, int, what)
    if not lo <= value <= hi:
        raise CollateralError(f"{what}: field {key!r} out of range")
    return value


def get_hex(obj: dict[str, Any], key: str, size: int, what: str) -> bytes:
    """A hex string member that must decode to exactly ``size`` bytes (any case)."""
    text: str = get(obj, key, str, what)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise CollateralError(f"{what}: field {key!r} is not hex") from None
    if len(raw) != size:
        raise CollateralError(f"{what}: field {key!r} must be {size} bytes")
    return raw


@lru_cache(maxsize=1024)  # TCB dates repeat across levels and documents
def _date(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def date_or_none(text: str) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime, or ``None`` (what :func:`get_date` reads)."""
    return _date(text)


def get_date(obj: dict[str, Any], key: str, what: str) -> datetime:
    """An RFC 3339 UTC timestamp member, as an aware datetime."""
    text: str = get(obj, key, str, what)
    value = _date(text)
    if value is None:
        raise CollateralError(f"{what}: field {key!r} is not an RFC 3339 date")
    return value


def get_advisories(obj: dict[str, Any], what: str) -> tuple[str, ...]:
    """The optional ``advisoryIDs`` list of strings."""
    if "advisoryIDs" not in obj:
        return ()
    ids = get(obj, "advisoryIDs", list, what)
    if not all(isinstance(i, str) for i in ids):
        raise CollateralError(f"{what}: advisoryIDs must be strings")
    return tuple(ids)


__all__ = [
    "date_or_none",
    "get",
    "get_advisories",
    "get_date",
    "get_hex",
    "get_int",
    "loads_object",
    "top_level_members",
]
