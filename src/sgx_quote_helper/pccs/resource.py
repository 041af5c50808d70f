"""What a PCCS client asked for: the PCS/PCCS URL paths and query parameters, parsed and checked.

A :class:`Resource` names one collateral document (TCB Info for an FMSPC, a PCK CRL for a CA, the
QE Identity, the root CA CRL, a PCK certificate for a platform TCB) and knows its canonical
path-and-query, which is both the cache key and the URL asked of an upstream. Parsing is pure:
no I/O, no clock. Bad parameters raise :class:`ParseError` (the HTTP layer answers 400 with it).

Paths (dcap-quote.md §3.4; Intel PCS API v3/v4 and PCCS)::

    /sgx/certification/v{3,4}/pckcert?encrypted_ppid=|ppid=&cpusvn=&pcesvn=&pceid=[&qeid=]  (or qeid alone)
    /sgx/certification/v{3,4}/pckcrl?ca=processor|platform[&encoding=der|pem]
    /sgx/certification/v{3,4}/tcb?fmspc=<12 hex>[&update=standard|early]
    /sgx/certification/v{3,4}/qe/identity[?update=]     (also qve/identity)
    /sgx/certification/v{3,4}/rootcacrl                 (PCCS only: hex text of the DER CRL)
    /sgx/certification/v{3,4}/crl?uri=<CRL distribution point>   (PCCS only: the DER CRL; what
        Intel's QCNL asks for the root CA CRL with "pccs_api_version": "3.1")
    /tdx/certification/v4/tcb?fmspc=[&update=]
    /tdx/certification/v4/qe/identity[?update=]

Unknown query parameters are ignored (clients add their own, e.g. Intel's QCNL); a known one given
twice, empty, or malformed is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast
from urllib.parse import unquote, urlencode, urlsplit

from ..errors import ParseError

Kind = Literal["pckcert", "pckcrl", "tcb", "qe_identity", "qve_identity", "rootcacrl", "crl"]
Tee = Literal["sgx", "tdx"]

#: longest query string accepted; an encrypted PPID (768 hex) plus the rest fits in ~900
MAX_QUERY_LENGTH = 2048

_HEX = re.compile(r"[0-9A-Fa-f]*")
_RAW_URI = re.compile(r"uri=https?://", re.IGNORECASE)
_PATH = re.compile(
    r"/(sgx|tdx)/certification/v([34])/(pckcert|pckcrl|tcb|qe/identity|qve/identity|rootcacrl|crl)"
)

#: (tee, version) -> kinds served there; TDX exists in API v4 only, for TCB Info and QE Identity
_KINDS: dict[tuple[str, int], frozenset[str]] = {
    ("sgx", 3): frozenset({"pckcert", "pckcrl", "tcb", "qe_identity", "qve_identity", "rootcacrl", "crl"}),
    ("sgx", 4): frozenset({"pckcert", "pckcrl", "tcb", "qe_identity", "qve_identity", "rootcacrl", "crl"}),
    ("tdx", 4): frozenset({"tcb", "qe_identity"}),
}

#: hex parameters of pckcert and their exact length in hex digits (PCS API v4)
_PCKCERT_HEX = {"encrypted_ppid": 768, "ppid": 32, "cpusvn": 32, "pcesvn": 4, "pceid": 4, "qeid": 32}


def _bad(reason: str) -> ParseError:
    return ParseError("PCCS request", 0, reason)


@dataclass(frozen=True)
class Resource:
    """One collateral document a client can ask for. Hex values are kept upper-case."""

    tee: Tee
    version: int
    kind: Kind
    fmspc: str | None = None
    ca: str | None = None
    encoding: str | None = None
    update: str = "standard"
    encrypted_ppid: str | None = None
    ppid: str | None = None
    cpusvn: str | None = None
    pcesvn: str | None = None
    pceid: str | None = None
    qeid: str | None = None
    uri: str | None = None

    @property
    def path(self) -> str:
        """The URL path, e.g. ``/sgx/certification/v4/tcb``."""
        segment = {"qe_identity": "qe/identity", "qve_identity": "qve/identity"}.get(self.kind, self.kind)
        return f"/{self.tee}/certification/v{self.version}/{segment}"

    def query(self) -> list[tuple[str, str]]:
        """The canonical query parameters, in PCS order (``update`` only where it means something)."""
        out: list[tuple[str, str]] = []
        if self.kind == "pckcert":
            for name, value in (
                ("encrypted_ppid", self.encrypted_ppid),
                ("ppid", self.ppid),
                ("cpusvn", self.cpusvn),
                ("pcesvn", self.pcesvn),
                ("pceid", self.pceid),
                ("qeid", self.qeid),
            ):
                if value is not None:
                    out.append((name, value))
        elif self.kind == "pckcrl":
            out.append(("ca", self.ca or "processor"))
            if self.encoding is not None:
                out.append(("encoding", self.encoding))
        elif self.kind == "tcb":
            out += [("fmspc", self.fmspc or ""), ("update", self.update)]
        elif self.kind in ("qe_identity", "qve_identity"):
            out.append(("update", self.update))
        elif self.kind == "crl":
            out.append(("uri", self.uri or ""))
        return out

    @property
    def key(self) -> str:
        """Canonical path and query: the cache key. ``qeid`` is left out when a PPID names the
        platform (it does not change the answer); a ``qeid``-only request (PCCS finds the platform
        by its QE ID) keeps it."""
        by_ppid = self.encrypted_ppid is not None or self.ppid is not None
        params = [(k, v) for k, v in self.query() if not (k == "qeid" and by_ppid)]
        return self.path + ("?" + urlencode(params) if params else "")

    def by_qeid(self) -> Resource | None:
        """For a ``pckcert`` request that names the QE ID: the same request by QE ID alone (the key
        a caching PCCS also files the answer under, as Intel's PCCS registers platforms)."""
        if self.kind != "pckcert" or self.qeid is None:
            return None
        return replace(self, encrypted_ppid=None, ppid=None)

    @property
    def endpoint(self) -> str:
        """A short label for metrics and logs, e.g. ``sgx/v4/tcb``."""
        return f"{self.tee}/v{self.version}/{self.kind}"

    @property
    def der_crl(self) -> bool:
        """For ``pckcrl``: is the answer DER (``encoding=der``) rather than PEM (the default)?"""
        return self.encoding == "der"


def _single(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in params:
        if name in out:
            raise _bad(f"parameter {name!r} given more than once")
        out[name] = value
    return out


def _hex_param(params: Mapping[str, str], name: str, digits: int, required: bool) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _bad(f"missing parameter {name!r} ({digits} hex digits)")
        return None
    if len(value) != digits or not _HEX.fullmatch(value):
        raise _bad(f"parameter {name!r} must be exactly {digits} hex digits")
    return value.upper()


def _choice(
    params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None
) -> str | None:
    value = params.get(name)
    if value is None:
        return default
    low = value.lower()
    if low not in allowed:
        raise _bad(f"parameter {name!r} must be one of {'|'.join(allowed)}")
    return low


def parse_resource(
    path: str, query: Iterable[tuple[str, str]], query_length: int = 0, raw_query: str | None = None
) -> Resource | None:
    """Parse a request path and its decoded query parameters.

    Args:
        path: the URL path (no query), e.g. ``/sgx/certification/v4/tcb``.
        query: the decoded ``(name, value)`` pairs in order.
        query_length: length of the raw query string (refused above :data:`MAX_QUERY_LENGTH`).
        raw_query: the raw query string, for ``crl?uri=``: Intel's QCNL appends the distribution
            point unescaped, so a ``?`` or ``&`` inside it belongs to the URI, not to our query.

    Returns:
        The resource, or ``None`` if ``path`` is not a collateral path (the caller answers 404).

    Raises:
        ParseError: a parameter is missing, repeated, malformed, or the query is too long.
    """
    m = _PATH.fullmatch(path.rstrip("/") if path != "/" else path)
    if m is None:
        return None
    tee, version, segment = m.group(1), int(m.group(2)), m.group(3)
    kind = segment.replace("/", "_")
    if kind not in _KINDS.get((tee, version), frozenset()):
        return None
    if query_length > MAX_QUERY_LENGTH:
        raise _bad(f"query string longer than {MAX_QUERY_LENGTH} characters")
    params = _single(query)
    t = cast(Tee, tee)
    if kind == "tcb":
        return Resource(
            tee=t,
            version=version,
            kind="tcb",
            fmspc=_hex_param(params, "fmspc", 12, required=True),
            update=_choice(params, "update", ("standard", "early"), "standard") or "standard",
        )
    if kind in ("qe_identity", "qve_identity"):
        return Resource(
            tee=t,
            version=version,
            kind=cast(Kind, kind),
            update=_choice(params, "update", ("standard", "early"), "standard") or "standard",
        )
    if kind == "pckcrl":
        if "ca" not in params:
            raise _bad("missing parameter 'ca' (processor|platform)")
        return Resource(
            tee=t,
            version=version,
            kind="pckcrl",
            ca=_choice(params, "ca", ("processor", "platform"), None),
            encoding=_choice(params, "encoding", ("der", "pem"), None),
        )
    if kind == "rootcacrl":
        return Resource(tee=t, version=version, kind="rootcacrl")
    if kind == "crl":
        return Resource(tee=t, version=version, kind="crl", uri=_crl_uri(params, raw_query))
    return _pckcert(t, version, params)


def _crl_uri(params: Mapping[str, str], raw_query: str | None) -> str:
    if raw_query is not None and _RAW_URI.match(raw_query):
        uri = unquote(raw_query[4:])  # an unescaped URI: all of the rest is the URI
    elif "uri" in params:
        uri = params["uri"]
    else:
        raise _bad("missing parameter 'uri' (a CRL distribution point URL)")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in uri for c in " \t\r\n\0"):
        raise _bad("parameter 'uri' must be an http(s) URL")
    return uri


def _pckcert(tee: Tee, version: int, params: Mapping[str, str]) -> Resource:
    if "encrypted_ppid" in params and "ppid" in params:
        raise _bad("give either 'encrypted_ppid' or 'ppid', not both")
    if not {"encrypted_ppid", "ppid", "qeid"} & params.keys():
        raise _bad(
            "missing parameter 'encrypted_ppid' (768 hex digits), 'ppid' (32) or 'qeid' (32, a platform "
            "this service already knows)"
        )
    v = {
        name: _hex_param(params, name, digits, required=name in ("cpusvn", "pcesvn", "pceid"))
        for name, digits in _PCKCERT_HEX.items()
    }
    return Resource(
        tee=tee,
        version=version,
        kind="pckcert",
        encrypted_ppid=v["encrypted_ppid"],
        ppid=v["ppid"],
        cpusvn=v["cpusvn"],
        pcesvn=v["pcesvn"],
        pceid=v["pceid"],
        qeid=v["qeid"],
    )


__all__ = ["MAX_QUERY_LENGTH", "Kind", "Resource", "Tee", "parse_resource"]
