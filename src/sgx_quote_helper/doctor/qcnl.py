"""Intel's quote provider configuration, ``/etc/sgx_default_qcnl.conf``: where the PCCS is.

Two formats exist. DCAP >= 1.13 writes JSON with ``//`` comments (keys ``pccs_url``,
``use_secure_cert``, ``collateral_service``...); older releases wrote ``KEY=value`` lines
(``PCCS_URL=...``, ``USE_SECURE_CERT=FALSE``, ``#`` comments). :func:`parse_qcnl` reads either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_QCNL_CONF = Path("/etc/sgx_default_qcnl.conf")


@dataclass(frozen=True)
class QcnlConfig:
    """What the doctor needs from the file: the PCCS URL, TLS verification, and the format seen."""

    pccs_url: str | None
    use_secure_cert: bool
    collateral_service: str | None
    format: str  # "json" or "key=value"


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments outside JSON strings (Intel's file has them)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
        elif ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def parse_qcnl(text: str) -> QcnlConfig:
    """Parse either format.

    Raises:
        ConfigError: neither valid JSON (after removing comments) nor ``KEY=value`` lines.
    """
    stripped = strip_json_comments(text).strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"JSON QCNL configuration does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("JSON QCNL configuration is not an object")
        url = data.get("pccs_url")
        service = data.get("collateral_service")
        return QcnlConfig(
            url if isinstance(url, str) and url else None,
            _truthy(data.get("use_secure_cert", True)),
            service if isinstance(service, str) and service else None,
            "json",
        )
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "//", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"line {number} is neither JSON nor KEY=value: {line[:60]!r}")
        values[key.strip().upper()] = value.strip()
    return QcnlConfig(
        values.get("PCCS_URL") or None,
        _truthy(values.get("USE_SECURE_CERT", "TRUE")),
        values.get("COLLATERAL_SERVICE") or None,
        "key=value",
    )


def read_qcnl(path: Path) -> QcnlConfig | None:
    """The parsed file, or None when it does not exist.

    Raises:
        ConfigError: unreadable or unparseable.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_qcnl(text)


__all__ = ["DEFAULT_QCNL_CONF", "QcnlConfig", "parse_qcnl", "read_qcnl", "strip_json_comments"]
