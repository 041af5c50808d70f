"""What a PCCS client asked for: the PCS/PCCS URL paths and query strings, parsed and checked.

A :class:`Resource` names one collateral document (TCB Info for an FMSPC, a PCK CRL for a CA, the
QE Identity, the root CA CRL, a PCK certificate for a platform TCB, the list of TCB evaluation data
numbers) and knows its canonical path-and-query, which is both the cache key and the URL asked of an
upstream. Parsing is pure: no I/O, no clock. Bad parameters raise :class:`ParseError` (the HTTP layer
answers 400 with it).

Paths (dcap-quote.md §3.4; Intel PCS API v3/v4 and Intel's PCCS ``routes/index.js``)::

    /sgx/certification/v{3,4}/pckcert?qeid=&encrypted_ppid=|ppid=&cpusvn=&pcesvn=&pceid=
    /sgx/certification/v{3,4}/pckcrl?ca=processor|platform[&encoding=der|pem]
    /sgx/certification/v{3,4}/tcb?fmspc=<12 hex>[&update=standard|early | &tcbEvaluationDataNumber=N]
    /sgx/certification/v{3,4}/qe/identity[?update= | ?tcbEvaluationDataNumber=]   (also qve/identity)
    /sgx/certification/v{3,4}/rootcacrl                 (PCCS only: hex text of the DER CRL)
    /sgx/certification/v{3,4}/crl?uri=<CRL distribution point>   (PCCS only: the DER CRL)
    /sgx/certification/v4/tcbevaluationdatanumbers      (PCS v4: the signed list of numbers)
    /tdx/certification/v4/tcb?fmspc=[&update= | &tcbEvaluationDataNumber=]
    /tdx/certification/v4/qe/identity[?update= | ?tcbEvaluationDataNumber=]
    /tdx/certification/v4/tcbevaluationdatanumbers

Query strings are ``application/x-www-form-urlencoded`` as Intel's PCCS (express) reads them:
``&`` separates pairs, ``+`` is a space, ``%XX`` is decoded. Unknown parameters are ignored (clients add
their own: Intel's QCNL appends ``customParameter=<base64, + / = escaped>`` to every collateral
request it makes with ``sgx_ql_get_quote_verification_collateral_with_params``); a known one given
twice, empty or malformed is refused. ``pckcert``: an all-zero ``encrypted_ppid`` (what QCNL sends
when QE3 gave it none, ``certification_service.cpp`` build_pckcert_options) means "absent", so the
platform is found by its QE ID and PCE ID, as Intel's PCCS does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

from ..errors import ParseError

Kind = Literal[
    "pckcert", "pckcrl", "tcb", "qe_identity", "qve_identity", "rootcacrl", "crl", "tcbevaluationdatanumbers"
]
Tee = Literal["sgx", "tdx"]
Update = Literal["standard", "early"]

#: longest query string accepted; an encrypted PPID (768 hex) plus the rest fits in ~900
MAX_QUERY_LENGTH = 2048
#: most query parameters read (more is refused, so a client cannot make us split megabytes)
MAX_QUERY_PARAMS = 32
#: longest QE ID accepted (Intel's PCCS pckcertController: QEID_MAX_SIZE)
MAX_QEID_DIGITS = 260
#: largest TCB evaluation data number accepted (PCS numbers are small integers: 16, 17, 18...)
MAX_EVALUATION_NUMBER = 2**31 - 1
#: QCNL's parameter for the custom data of ..._with_params; PCCS ignores it (so does the cache key)
CUSTOM_PARAMETER = "customParameter"
EVALUATION_PARAMETER = "tcbEvaluationDataNumber"

_HEX = re.compile(r"[0-9A-Fa-f]*")
_DIGITS = re.compile(r"[0-9]{1,10}")
_PATH = re.compile(
    r"/(sgx|tdx)/certification/v([34])/"
    r"(pckcert|pckcrl|tcb|qe/identity|qve/identity|rootcacrl|crl|tcbevaluationdatanumbers)"
)

#: (tee, version) -> kinds served there; TDX exists in API v4 only, for TCB Info and QE Identity
_SGX_V3 = frozenset({"pckcert", "pckcrl", "tcb", "qe_identity", "qve_identity", "rootcacrl", "crl"})
_KINDS: dict[tuple[str, int], frozenset[str]] = {
    ("sgx", 3): _SGX_V3,
    ("sgx", 4): _SGX_V3 | {"tcbevaluationdatanumbers"},
    ("tdx", 4): frozenset({"tcb", "qe_identity", "tcbevaluationdatanumbers"}),
}

#: hex parameters of pckcert and their exact length in hex digits (PCS API v4; qeid: up to 260)
_PCKCERT_HEX = {"encrypted_ppid": 768, "ppid": 32, "cpusvn": 32, "pcesvn": 4, "pceid": 4}
#: the parameters each kind reads (others are ignored); a repeated one of these is refused
_KNOWN = {
    "pckcert": frozenset({*_PCKCERT_HEX, "qeid"}),
    "pckcrl": frozenset({"ca", "encoding"}),
    "tcb": frozenset({"fmspc", "update", EVALUATION_PARAMETER}),
    "qe_identity": frozenset({"update", EVALUATION_PARAMETER}),
    "qve_identity": frozenset({"update", EVALUATION_PARAMETER}),
    "rootcacrl": frozenset(),
    "crl": frozenset({"uri"}),
    "tcbevaluationdatanumbers": frozenset(),
}


def _bad(reason: str) -> ParseError:
    return ParseError("PCCS request", 0, reason)


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded ``(name, value)`` pairs, in order.

    ``&`` separates pairs, the first ``=`` splits name from value (no ``=``: an empty value), ``+``
    is a space and ``%XX`` a byte (UTF-8; undecodable bytes become U+FFFD; a ``%`` not followed by two
    hex digits stays as it is), empty pairs are skipped.

    Raises:
        ParseError: longer than :data:`MAX_QUERY_LENGTH` or more than :data:`MAX_QUERY_PARAMS` pairs.
    """
    if len(raw) > MAX_QUERY_LENGTH:
        raise _bad(f"query string longer than {MAX_QUERY_LENGTH} characters")
    try:
        return parse_qsl(raw, keep_blank_values=True, errors="replace", max_num_fields=MAX_QUERY_PARAMS)
    except ValueError:
        raise _bad(f"more than {MAX_QUERY_PARAMS} query parameters") from None


@dataclass(frozen=True)
class Resource:
    """One collateral document a client can ask for. Hex values are kept upper-case.

    ``update`` and ``evaluation`` (``tcbEvaluationDataNumber``) pick which TCB baseline a ``tcb`` or
    ``qe/identity`` document follows: a number when one was asked for, else the update type."""

    tee: Tee
    version: int
    kind: Kind
    fmspc: str | None = None
    ca: str | None = None
    encoding: str | None = None
    update: Update = "standard"
    evaluation: int | None = None
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

    @property
    def baseline(self) -> list[tuple[str, str]]:
        """``tcbEvaluationDataNumber=N`` or ``update=...`` (tcb and identities only)."""
        if self.kind not in ("tcb", "qe_identity", "qve_identity"):
            return []
        if self.evaluation is not None:
            return [(EVALUATION_PARAMETER, str(self.evaluation))]
        return [("update", self.update)]

    def query(self) -> list[tuple[str, str]]:
        """The canonical query parameters, in PCS order (QCNL's order for ``pckcert``)."""
        out: list[tuple[str, str]] = []
        if self.kind == "pckcert":
            for name, value in (
                ("qeid", self.qeid),
                ("encrypted_ppid", self.encrypted_ppid),
                ("ppid", self.ppid),
                ("cpusvn", self.cpusvn),
                ("pcesvn", self.pcesvn),
                ("pceid", self.pceid),
            ):
                if value is not None:
                    out.append((name, value))
        elif self.kind == "pckcrl":
            out.append(("ca", self.ca or "processor"))
            if self.encoding is not None:
                out.append(("encoding", self.encoding))
        elif self.kind == "tcb":
            out += [("fmspc", self.fmspc or ""), *self.baseline]
        elif self.kind in ("qe_identity", "qve_identity"):
            out += self.baseline
        elif self.kind == "crl":
            out.append(("uri", self.uri or ""))
        return out

    @property
    def key(self) -> str:
        """Canonical path and query: the cache key. A ``pckcert`` key holds every identity the
        client gave (QE ID and PPID), so an answer is filed only under the identity it was asked
        with."""
        params = self.query()
        return self.path + ("?" + urlencode(params) if params else "")

    def upstream_query(self) -> list[tuple[str, str]]:
        """The parameters sent upstream: a ``pckcert`` named by its PPID goes without the QE ID
        (PCS takes none); by QE ID alone (an upstream PCCS finds the platform by it) with it."""
        if self.kind == "pckcert" and (self.encrypted_ppid is not None or self.ppid is not None):
            return [(k, v) for k, v in self.query() if k != "qeid"]
        return self.query()

    def by_qeid(self) -> Resource | None:
        """For a ``pckcert`` request that names the QE ID and a PPID: the same request by QE ID
        alone (the key a caching PCCS may also file the answer under once it knows the QE ID is this
        platform's, as Intel's PCCS registers platforms)."""
        if self.kind != "pckcert" or self.qeid is None or (self.encrypted_ppid is None and self.ppid is None):
            return None
        return replace(self, encrypted_ppid=None, ppid=None)

    @property
    def endpoint(self) -> str:
        """A short label for metrics and logs, e.g. ``sgx/v4/tcb``."""
        return f"{self.tee}/v{self.version}/{self.kind}"

    @property
    def der_crl(self) -> bool:
        """For ``pckcrl``: is the answer DER (``encoding=der``) rather than text (the default)?"""
        return self.encoding == "der"


def _single(params: Iterable[tuple[str, str]], known: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in params:
        if name not in known:
            continue  # customParameter and a client's own parameters
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


def _baseline(params: Mapping[str, str], version: int, default_update: Update) -> tuple[Update, int | None]:
    """``update`` and ``tcbEvaluationDataNumber`` (PCS v4: one or the other, not both)."""
    number = params.get(EVALUATION_PARAMETER)
    if number is None:
        return cast(Update, _choice(params, "update", ("standard", "early"), default_update)), None
    if version < 4:
        raise _bad(f"parameter {EVALUATION_PARAMETER!r} exists in API v4 only")
    if "update" in params:
        raise _bad(f"give either 'update' or {EVALUATION_PARAMETER!r}, not both")
    if not _DIGITS.fullmatch(number) or not 0 < int(number) <= MAX_EVALUATION_NUMBER:
        raise _bad(f"parameter {EVALUATION_PARAMETER!r} must be a positive integer")
    return default_update, int(number)


def parse_resource(
    path: str,
    query: Iterable[tuple[str, str]],
    query_length: int = 0,
    raw_query: str | None = None,
    *,
    default_update: Update = "standard",
) -> Resource | None:
    """Parse a request path and its decoded query parameters.

    Args:
        path: the URL path (no query), e.g. ``/sgx/certification/v4/tcb``.
        query: the decoded ``(name, value)`` pairs in order (:func:`parse_query`).
        query_length: length of the raw query string (refused above :data:`MAX_QUERY_LENGTH`).
        raw_query: the raw query string, for ``crl?uri=``: a distribution point given unescaped with
            a query of its own (``.../pckcrl?ca=processor&encoding=der``) keeps the pairs after it,
            up to QCNL's ``customParameter``.
        default_update: the update type of a ``tcb`` / ``qe/identity`` request that names none
            (``pccs serve --update``).

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
    params = _single(query, _KNOWN[kind])
    t = cast(Tee, tee)
    if kind in ("tcb", "qe_identity", "qve_identity"):
        update, evaluation = _baseline(params, version, default_update)
        fmspc = _hex_param(params, "fmspc", 12, required=True) if kind == "tcb" else None
        return Resource(t, version, cast(Kind, kind), fmspc=fmspc, update=update, evaluation=evaluation)
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
    if kind in ("rootcacrl", "tcbevaluationdatanumbers"):
        return Resource(tee=t, version=version, kind=cast(Kind, kind))
    if kind == "crl":
        return Resource(tee=t, version=version, kind="crl", uri=_crl_uri(params, raw_query))
    return _pckcert(t, version, params)


def parse_target(path: str, raw_query: str, *, default_update: Update = "standard") -> Resource | None:
    """:func:`parse_resource` of a path and its raw query string (what the HTTP layer calls)."""
    return parse_resource(
        path, parse_query(raw_query), len(raw_query), raw_query, default_update=default_update
    )


def _crl_uri(params: Mapping[str, str], raw_query: str | None) -> str:
    uri = params.get("uri")
    if not uri:
        raise _bad("missing parameter 'uri' (a CRL distribution point URL)")
    if raw_query is not None and "?" in uri:
        uri = _raw_uri_tail(uri, raw_query)
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in uri for c in " \t\r\n\0"):
        raise _bad("parameter 'uri' must be an http(s) URL")
    return uri


def _raw_uri_tail(uri: str, raw_query: str) -> str:
    """``uri`` plus the raw pairs after it that belong to its own query (everything up to QCNL's
    ``customParameter`` or another ``uri``)."""
    pieces = raw_query.split("&")
    start = next((i for i, p in enumerate(pieces) if p.startswith("uri=")), None)
    if start is None:
        return uri
    tail: list[str] = []
    for piece in pieces[start + 1 :]:
        name = unquote_plus(piece.partition("=")[0])
        if name in (CUSTOM_PARAMETER, "uri"):
            break
        tail.append(unquote_plus(piece))
    return "&".join([uri, *tail])


def _is_absent_ppid(value: str | None) -> bool:
    return value is not None and value.strip("0") == ""


def _pckcert(tee: Tee, version: int, params: Mapping[str, str]) -> Resource:
    if "encrypted_ppid" in params and "ppid" in params:
        raise _bad("give either 'encrypted_ppid' or 'ppid', not both")
    v = {
        name: _hex_param(params, name, digits, required=name in ("cpusvn", "pcesvn", "pceid"))
        for name, digits in _PCKCERT_HEX.items()
    }
    if _is_absent_ppid(v["encrypted_ppid"]):  # QCNL's placeholder when QE3 gave no encrypted PPID
        v["encrypted_ppid"] = None
    qeid = params.get("qeid")
    if qeid is not None:
        if not 0 < len(qeid) <= MAX_QEID_DIGITS or len(qeid) % 2 or not _HEX.fullmatch(qeid):
            raise _bad(f"parameter 'qeid' must be an even number of hex digits, at most {MAX_QEID_DIGITS}")
        qeid = qeid.upper()
    if qeid is None and v["encrypted_ppid"] is None and v["ppid"] is None:
        raise _bad(
            "missing parameter 'qeid' (the platform's QE ID), 'encrypted_ppid' (768 hex digits, not all "
            "zero) or 'ppid' (32)"
        )
    return Resource(
        tee=tee,
        version=version,
        kind="pckcert",
        encrypted_ppid=v["encrypted_ppid"],
        ppid=v["ppid"],
        cpusvn=v["cpusvn"],
        pcesvn=v["pcesvn"],
        pceid=v["pceid"],
        qeid=qeid,
    )


__all__ = [
    "CUSTOM_PARAMETER",
    "EVALUATION_PARAMETER",
    "MAX_QEID_DIGITS",
    "MAX_QUERY_LENGTH",
    "Kind",
    "Resource",
    "Tee",
    "Update",
    "parse_query",
    "parse_resource",
    "parse_target",
]
