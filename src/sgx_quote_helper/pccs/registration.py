"""Platform registration: the ``POST /sgx/certification/v{3,4}/platforms`` body Intel's PCK ID
retrieval tool sends to a PCCS (``PccsAdminTool``/``PCKRetrievalTool``; Intel's PCCS
``pccs_schemas.js`` PLATFORM_REG_SCHEMA and ``platformsRegService.js``).

The body is one JSON object: ``qe_id`` (1-260 characters; hex here), ``pce_id`` (4 hex), and either
``cpu_svn`` (32 hex) + ``pce_svn`` (4 hex) + ``enc_ppid`` (768 hex), or a ``platform_manifest`` (hex)
for multi-package platforms, in which case the other three are ignored, as Intel's PCCS does.
A registration becomes the ``pckcert`` lookup it stands for (:meth:`Registration.resource`): by QE
ID + PCE ID, with the encrypted PPID when there is one; the caching PCCS fetches that certificate
upstream and binds the QE ID to its PPID, which is what later lets QCNL's zero-PPID requests (a
fresh node) be answered. Pure parsing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from .resource import MAX_QEID_DIGITS, Resource

#: largest body read (a platform manifest of an 8-socket platform is a few KiB)
MAX_BODY = 64 * 1024

_HEX = re.compile(r"[0-9A-Fa-f]*")


def _bad(reason: str) -> ParseError:
    return ParseError("platform registration", 0, reason)


def _hex(obj: dict[str, Any], name: str, digits: int | None, required: bool) -> str | None:
    value = obj.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise _bad(f"missing {name!r}")
        return None
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise _bad(f"{name!r} must be a hex string")
    if digits is not None and len(value) != digits:
        raise _bad(f"{name!r} must be {digits} hex digits")
    return value.upper()


@dataclass(frozen=True)
class Registration:
    """One platform's registration data (hex upper-case)."""

    qe_id: str
    pce_id: str
    cpu_svn: str | None = None
    pce_svn: str | None = None
    enc_ppid: str | None = None
    platform_manifest: str | None = None

    def resource(self, version: int) -> Resource:
        """The ``pckcert`` request this registration stands for (the platform's certificate for the
        registered raw TCB; with a manifest only: by QE ID alone at the lowest raw TCB)."""
        return Resource(
            tee="sgx",
            version=version,
            kind="pckcert",
            qeid=self.qe_id,
            pceid=self.pce_id,
            encrypted_ppid=self.enc_ppid,
            cpusvn=self.cpu_svn or "00" * 16,
            pcesvn=self.pce_svn or "0000",
        )


def parse_registration(body: bytes) -> Registration:
    """Parse and check a registration body.

    Raises:
        ParseError: not a JSON object, too large, a field of the wrong shape, or neither the
            (cpu_svn, pce_svn, enc_ppid) triple nor a platform manifest.
    """
    if len(body) > MAX_BODY:
        raise _bad(f"body larger than {MAX_BODY} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise _bad("body is not JSON") from None
    if not isinstance(obj, dict):
        raise _bad("body is not a JSON object")
    qe_id = _hex(obj, "qe_id", None, required=True)
    assert qe_id is not None
    if not 0 < len(qe_id) <= MAX_QEID_DIGITS or len(qe_id) % 2:
        raise _bad(f"'qe_id' must be an even number of hex digits, at most {MAX_QEID_DIGITS}")
    pce_id = _hex(obj, "pce_id", 4, required=True)
    assert pce_id is not None
    manifest = _hex(obj, "platform_manifest", None, required=False)
    if manifest is not None:  # Intel's PCCS ignores the rest then (normalizeRegData)
        return Registration(qe_id, pce_id, platform_manifest=manifest)
    cpu_svn = _hex(obj, "cpu_svn", 32, required=True)
    pce_svn = _hex(obj, "pce_svn", 4, required=True)
    enc_ppid = _hex(obj, "enc_ppid", 768, required=True)
    if enc_ppid is not None and enc_ppid.strip("0") == "":
        enc_ppid = None  # all zero: no PPID (found by QE ID alone)
    return Registration(qe_id, pce_id, cpu_svn, pce_svn, enc_ppid)


__all__ = ["MAX_BODY", "Registration", "parse_registration"]
