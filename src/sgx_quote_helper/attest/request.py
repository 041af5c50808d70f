"""MAA attestation requests: the JSON bodies of ``/attest/SgxEnclave``, ``/attest/OpenEnclave`` and
``/attest/TdxVm``, their base64url fields, and Open Enclave's report header.

Shapes (learn.microsoft.com/rest/api/attestation, and what ``azure-security-attestation`` 1.0.0
sends): ``{"quote" | "report": B64URL, "runtimeData": {"data": B64URL, "dataType": "Binary" |
"JSON"}, "initTimeData": {...}, "draftPolicyForAttestation": "policy text", "nonce": "..."}``;
the SDK omits absent fields and sends base64url without padding (padding is accepted too). An
Open Enclave report is ``oe_report_header_t`` (u32 version = 1, u32 report_type = 2 for a remote
SGX report, u64 report_size) followed by the SGX quote.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import AttestationError

#: api-version values accepted: what the SDK sends (2020-10-01) and the REST reference's versions
API_VERSIONS = ("2018-09-01-preview", "2020-10-01", "2022-08-01", "2023-04-01-preview", "2025-06-01")
#: Open Enclave report header: version, report type (2 = SGX remote), report size
OE_HEADER = struct.Struct("<IIQ")
OE_REPORT_HEADER_VERSION = 1
OE_REPORT_TYPE_SGX_REMOTE = 2
#: the body fields each route accepts
_FIELDS = {"quote", "report", "runtimeData", "initTimeData", "draftPolicyForAttestation", "nonce"}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
MAX_NONCE = 1024

Route = Literal["SgxEnclave", "OpenEnclave", "TdxVm"]


def bad(message: str) -> AttestationError:
    return AttestationError("InvalidParameter", message, 400)


def b64url_decode(value: Any, what: str) -> bytes:
    """Decode MAA base64url (padding optional); AttestationError for anything else.

    The alphabet is ``A-Z a-z 0-9 - _`` with at most two ``=`` at the end; a length of 1 mod 4
    is refused. (One strict C pass: no regex over a quote's few KiB.)"""
    if not isinstance(value, str):
        raise bad(f"{what} must be a base64url string")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise bad(f"{what} is not valid base64url") from None
    core = raw.rstrip(b"=")
    # '+' and '/' are standard base64, not base64url: refused before they are translated
    if len(raw) - len(core) > 2 or len(core) % 4 == 1 or b"+" in core or b"/" in core:
        raise bad(f"{what} is not valid base64url")
    try:
        return binascii.a2b_base64(core.translate(_TO_STANDARD) + b"=" * (-len(core) % 4), strict_mode=True)
    except binascii.Error:
        raise bad(f"{what} is not valid base64url") from None


@dataclass(frozen=True)
class Data:
    """runtimeData / initTimeData: the decoded bytes and how to interpret them."""

    data: bytes
    data_type: Literal["Binary", "JSON"]

    def json(self, what: str) -> Any:
        """The data parsed as JSON (for ``dataType: JSON``); AttestationError when it is not."""
        try:
            return json.loads(self.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad(f"{what}.data has dataType JSON but is not UTF-8 JSON") from None


def _data(obj: Any, what: str) -> Data | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise bad(f"{what} must be an object")
    unknown = set(obj) - {"data", "dataType"}
    if unknown:
        raise bad(f"{what}: unknown fields {sorted(unknown)}")
    dtype = obj.get("dataType", "Binary")
    if dtype not in ("Binary", "JSON"):
        raise bad(f"{what}.dataType must be Binary or JSON")
    if "data" not in obj:
        raise bad(f"{what}.data is missing")
    return Data(b64url_decode(obj["data"], f"{what}.data"), dtype)


@dataclass(frozen=True)
class AttestRequest:
    """A parsed attestation request (the quote already unwrapped from an OE report)."""

    route: Route
    quote: bytes
    runtime_data: Data | None = None
    init_time_data: Data | None = None
    draft_policy: str | None = None
    nonce: str | None = None


def unwrap_open_enclave(report: bytes) -> bytes:
    """The SGX quote inside an Open Enclave remote report (AttestationError if it is not one)."""
    if len(report) < OE_HEADER.size:
        raise bad("report is shorter than an Open Enclave report header")
    version, rtype, size = OE_HEADER.unpack_from(report)
    if version != OE_REPORT_HEADER_VERSION:
        raise bad(f"Open Enclave report header version {version}, expected 1")
    if rtype != OE_REPORT_TYPE_SGX_REMOTE:
        raise bad(f"Open Enclave report type {rtype}: only remote SGX reports (2) can be attested")
    if size != len(report) - OE_HEADER.size:
        raise bad(
            f"Open Enclave report size {size} does not match the {len(report) - OE_HEADER.size} bytes sent"
        )
    return report[OE_HEADER.size :]


def open_enclave_report(quote: bytes) -> bytes:
    """Wrap an SGX quote as an Open Enclave remote report (for clients and tests)."""
    return OE_HEADER.pack(OE_REPORT_HEADER_VERSION, OE_REPORT_TYPE_SGX_REMOTE, len(quote)) + quote


def check_api_version(value: str | None) -> str:
    """The api-version query parameter (AttestationError when missing or unknown)."""
    if value is None:
        raise AttestationError("MissingApiVersionParameter", "the api-version query parameter is required")
    if value not in API_VERSIONS:
        raise AttestationError(
            "InvalidApiVersionParameter",
            f"api-version {value[:40]!r} is not supported; supported versions: {', '.join(API_VERSIONS)}",
        )
    return value


def parse_request(route: Route, body: bytes) -> AttestRequest:
    """Parse one request body (AttestationError for bad JSON, fields or encodings)."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("the request body is not JSON") from None
    if not isinstance(obj, dict):
        raise bad("the request body must be a JSON object")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise bad(f"unknown fields {sorted(unknown)[:5]}")
    key = "report" if route == "OpenEnclave" else "quote"
    other = "quote" if key == "report" else "report"
    if other in obj:
        raise bad(f"/attest/{route} takes {key!r}, not {other!r}")
    if key not in obj:
        raise bad(f"{key} is missing")
    raw = b64url_decode(obj[key], key)
    quote = unwrap_open_enclave(raw) if route == "OpenEnclave" else raw
    policy = obj.get("draftPolicyForAttestation")
    if policy is not None and not isinstance(policy, str):
        raise bad("draftPolicyForAttestation must be a string")
    nonce = obj.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > MAX_NONCE):
        raise bad(f"nonce must be a string of at most {MAX_NONCE} characters")
    return AttestRequest(
        route=route,
        quote=quote,
        runtime_data=_data(obj.get("runtimeData"), "runtimeData"),
        init_time_data=_data(obj.get("initTimeData"), "initTimeData"),
        draft_policy=policy,
        nonce=nonce,
    )


__all__ = [
    "API_VERSIONS",
    "AttestRequest",
    "Data",
    "Route",
    "b64url_decode",
    "check_api_version",
    "open_enclave_report",
    "parse_request",
    "unwrap_open_enclave",
]
