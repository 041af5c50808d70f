"""pccs.resource: PCS/PCCS paths and query parameters are parsed strictly; anything else is refused
with ParseError (or ``None`` for a path that is not a collateral path), never another exception."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import ParseError
from sgx_quote_helper.pccs.resource import (
    MAX_QUERY_LENGTH,
    Resource,
    parse_query,
    parse_resource,
    parse_target,
)

EPPID = "ab" * 384
TCB = "/sgx/certification/v4/tcb"


def _parse(url: str) -> Resource | None:
    path, _, query = url.partition("?")
    return parse_resource(path, parse_qsl(query, keep_blank_values=True), len(query), query)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (f"{TCB}?fmspc=00a067110000", f"{TCB}?fmspc=00A067110000&update=standard"),
        (f"{TCB}?fmspc=00A067110000&update=early", f"{TCB}?fmspc=00A067110000&update=early"),
        (f"{TCB}?fmspc=00A067110000&update=EARLY&foo=bar", f"{TCB}?fmspc=00A067110000&update=early"),
        (
            "/sgx/certification/v3/tcb?fmspc=00606a000000",
            "/sgx/certification/v3/tcb?fmspc=00606A000000&update=standard",
        ),
        (
            "/tdx/certification/v4/tcb?fmspc=90C06F000000",
            "/tdx/certification/v4/tcb?fmspc=90C06F000000&update=standard",
        ),
        ("/sgx/certification/v4/qe/identity", "/sgx/certification/v4/qe/identity?update=standard"),
        ("/tdx/certification/v4/qe/identity?update=early", "/tdx/certification/v4/qe/identity?update=early"),
        ("/sgx/certification/v4/qve/identity", "/sgx/certification/v4/qve/identity?update=standard"),
        (
            "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
            "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
        ),
        ("/sgx/certification/v3/pckcrl?ca=Platform", "/sgx/certification/v3/pckcrl?ca=platform"),
        ("/sgx/certification/v4/rootcacrl", "/sgx/certification/v4/rootcacrl"),
        ("/sgx/certification/v4/rootcacrl/", "/sgx/certification/v4/rootcacrl"),
        (
            f"/sgx/certification/v4/pckcert?qeid={'00' * 16}&encrypted_ppid={EPPID}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
            f"/sgx/certification/v4/pckcert?qeid={'00' * 16}&encrypted_ppid={EPPID.upper()}&cpusvn={'0A' * 16}&pcesvn=0D00&pceid=0000",
        ),
        (
            f"/sgx/certification/v4/pckcert?ppid={'11' * 16}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
            f"/sgx/certification/v4/pckcert?ppid={'11' * 16}&cpusvn={'0A' * 16}&pcesvn=0D00&pceid=0000",
        ),
        (
            f"/sgx/certification/v4/pckcert?qeid={'ab' * 16}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
            f"/sgx/certification/v4/pckcert?qeid={'AB' * 16}&cpusvn={'0A' * 16}&pcesvn=0D00&pceid=0000",
        ),
        (
            "/sgx/certification/v4/crl?uri=https%3A%2F%2Fcertificates.trustedservices.intel.com%2FIntelSGXRootCA.der",
            "/sgx/certification/v4/crl?uri=https%3A%2F%2Fcertificates.trustedservices.intel.com%2FIntelSGXRootCA.der",
        ),
        (  # Intel's QCNL appends the distribution point unescaped: its ? and & belong to it
            "/sgx/certification/v3/crl?uri=https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
            "/sgx/certification/v3/crl?uri=https%3A%2F%2Fapi.trustedservices.intel.com%2Fsgx%2Fcertification%2Fv4%2Fpckcrl%3Fca%3Dprocessor%26encoding%3Dder",
        ),
    ],
)
def test_valid_requests_have_canonical_keys(url: str, key: str) -> None:
    resource = _parse(url)
    assert resource is not None
    assert resource.key == key
    # the key parses back to the same resource (the cache relies on it)
    again = _parse(key)
    assert again is not None and again.key == key


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/sgx/certification/v2/tcb?fmspc=00A067110000",
        "/sgx/certification/v4/tcbx?fmspc=00A067110000",
        "/tdx/certification/v3/tcb?fmspc=00A067110000",
        "/tdx/certification/v4/pckcrl?ca=processor",
        "/tdx/certification/v4/rootcacrl",
        "/sgx/certification/v4/../v4/tcb",
    ],
)
def test_other_paths_are_not_collateral(url: str) -> None:
    assert _parse(url) is None


@pytest.mark.parametrize(
    "url",
    [
        TCB,
        f"{TCB}?fmspc=",
        f"{TCB}?fmspc=00A0671100",
        f"{TCB}?fmspc=00A06711000000",
        f"{TCB}?fmspc=00A06711000G",
        f"{TCB}?fmspc=00A067110000&fmspc=00A067110000",
        f"{TCB}?fmspc=00A067110000&update=late",
        "/sgx/certification/v4/qe/identity?update=",
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/pckcrl?ca=cpu",
        "/sgx/certification/v4/pckcrl?ca=processor&encoding=base64",
        "/sgx/certification/v4/pckcert?cpusvn=00&pcesvn=0000&pceid=0000",
        f"/sgx/certification/v4/pckcert?encrypted_ppid={EPPID}&pcesvn=0d00&pceid=0000",
        f"/sgx/certification/v4/pckcert?encrypted_ppid={EPPID[:-2]}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
        f"/sgx/certification/v4/pckcert?ppid={'11' * 16}&encrypted_ppid={EPPID}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
        f"/sgx/certification/v4/pckcert?ppid={'11' * 16}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000&qeid=123",
        f"/sgx/certification/v4/pckcert?qeid={'1' * 262}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
        # QCNL's all-zero encrypted PPID is no PPID: without a QE ID nothing names the platform
        f"/sgx/certification/v4/pckcert?encrypted_ppid={'0' * 768}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000",
        f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=17&update=early",
        f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=0",
        f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=-1",
        f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=1e3",
        f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=99999999999",
        "/sgx/certification/v3/tcb?fmspc=00A067110000&tcbEvaluationDataNumber=17",
        "/sgx/certification/v4/qe/identity?tcbEvaluationDataNumber=",
        f"{TCB}?fmspc=00A067110000&pad={'a' * MAX_QUERY_LENGTH}",
        "/sgx/certification/v4/crl",
        "/sgx/certification/v4/crl?uri=",
        "/sgx/certification/v4/crl?uri=ftp%3A%2F%2Fexample.com%2Fx.crl",
        "/sgx/certification/v4/crl?uri=https%3A%2F%2Fexample.com%2Fa%20b.crl",
    ],
)
def test_bad_parameters_raise_parse_error(url: str) -> None:
    with pytest.raises(ParseError):
        _parse(url)


def test_labels_and_encodings() -> None:
    crl = _parse("/sgx/certification/v4/pckcrl?ca=processor&encoding=der")
    assert crl is not None and crl.der_crl and crl.endpoint == "sgx/v4/pckcrl"
    pem = _parse("/sgx/certification/v3/pckcrl?ca=processor")
    assert pem is not None and not pem.der_crl
    tdx = _parse("/tdx/certification/v4/qe/identity")
    assert tdx is not None and tdx.path == "/tdx/certification/v4/qe/identity" and tdx.tee == "tdx"


_NAMES = st.sampled_from(
    [
        "fmspc",
        "ca",
        "encoding",
        "update",
        "encrypted_ppid",
        "ppid",
        "cpusvn",
        "pcesvn",
        "pceid",
        "qeid",
        "uri",
        "x",
    ]
)
_PATHS = st.sampled_from(
    [
        "/sgx/certification/v4/tcb",
        "/sgx/certification/v3/tcb",
        "/tdx/certification/v4/tcb",
        "/sgx/certification/v4/qe/identity",
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/pckcert",
        "/sgx/certification/v4/rootcacrl",
        "/sgx/certification/v4/crl",
    ]
) | st.text(max_size=60)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    path=_PATHS,
    pairs=st.lists(
        st.tuples(
            _NAMES | st.text(max_size=8),
            st.text(max_size=40)
            | st.text("0123456789abcdefABCDEF", max_size=34)
            | st.sampled_from(["https://h.example/IntelSGXRootCA.der", "http://h/p?ca=x&y=%26", "https://"])
            | st.text(max_size=30).map(lambda t: "https://h/" + t),
        ),
        max_size=8,
    ),
    encoded=st.booleans(),
)
def test_fuzz_parse_or_refuse(path: str, pairs: list[tuple[str, str]], encoded: bool) -> None:
    try:
        raw = urlencode(pairs) if encoded else "&".join(f"{a}={b}" for a, b in pairs)  # as QCNL sends uri=
        resource = parse_resource(path, pairs, len(raw), raw)
    except ParseError:
        return
    if resource is not None:
        # whatever parsed has a canonical key that parses back to itself
        again = _parse(resource.key)
        assert again is not None and again.key == resource.key


def test_pckcert_key_is_every_identity_asked_with() -> None:
    r = _parse(
        f"/sgx/certification/v4/pckcert?encrypted_ppid={EPPID}&cpusvn={'0a' * 16}&pcesvn=0d00&pceid=0000&qeid={'cd' * 16}"
    )
    assert r is not None
    alias = r.by_qeid()
    assert alias is not None and alias.encrypted_ppid is None and alias.qeid == "CD" * 16
    assert alias.key != r.key and "qeid=" in alias.key and "qeid=" in r.key and "encrypted_ppid=" in r.key
    assert "qeid" not in dict(r.upstream_query())  # PCS takes no QE ID
    assert "qeid" in dict(alias.upstream_query())  # an upstream PCCS finds the platform by it
    assert alias.by_qeid() is None
    assert _parse(f"{TCB}?fmspc=00A067110000").by_qeid() is None  # type: ignore[union-attr]


# QCNL, QuoteGeneration/qcnl/certification_service.cpp, build_pckcert_options (DCAP 1.23, lines 187-226):
# "pckcert?qeid=" + hex(qe3_id) + "&encrypted_ppid=" + hex(enc_ppid or 384 zero bytes) + "&cpusvn=" ...
QE_ID = "5A" * 16
QCNL_PCKCERT_NO_PPID = (
    f"/sgx/certification/v4/pckcert?qeid={QE_ID}&encrypted_ppid={'00' * 384}"
    f"&cpusvn=0F0F0303FFFF01000000000000000000&pcesvn=0D00&pceid=0000"
)


def test_qcnl_all_zero_encrypted_ppid_is_absent() -> None:
    r = _parse(QCNL_PCKCERT_NO_PPID)
    assert r is not None and r.encrypted_ppid is None and r.qeid == QE_ID
    assert r.key == (
        f"/sgx/certification/v4/pckcert?qeid={QE_ID}&cpusvn=0F0F0303FFFF01000000000000000000&pcesvn=0D00&pceid=0000"
    )
    # the same request without the placeholder (PCK ID retrieval tool / Intel's PCCS form) is the same key
    bare = _parse(
        f"/sgx/certification/v4/pckcert?qeid={QE_ID}&cpusvn=0F0F0303FFFF01000000000000000000&pcesvn=0D00&pceid=0000"
    )
    assert bare is not None and bare.key == r.key


# QCNL get_custom_param_string (certification_service.cpp lines 175-185): base64 with + / = escaped,
# appended to pckcrl (266), tcb (293), qe/identity (313), qve/identity (325), rootcacrl "?" (341) and
# crl?uri= (347)
CUSTOM = "customParameter=eyJhIjoiYiJ9%2B%2F%3D"
ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (
            f"/sgx/certification/v4/crl?uri={ROOT_CRL_URL}&{CUSTOM}",
            "/sgx/certification/v4/crl?uri=" + quote(ROOT_CRL_URL, safe=""),
        ),
        (
            f"/sgx/certification/v4/crl?uri={quote(ROOT_CRL_URL, safe='')}&{CUSTOM}",
            "/sgx/certification/v4/crl?uri=" + quote(ROOT_CRL_URL, safe=""),
        ),
        (f"/sgx/certification/v3/rootcacrl?{CUSTOM}", "/sgx/certification/v3/rootcacrl"),
        (
            f"/sgx/certification/v4/pckcrl?ca=processor&encoding=der&{CUSTOM}",
            "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
        ),
        (f"{TCB}?fmspc=00A067110000&update=standard&{CUSTOM}", f"{TCB}?fmspc=00A067110000&update=standard"),
        (
            f"/sgx/certification/v4/qe/identity?update=early&{CUSTOM}",
            "/sgx/certification/v4/qe/identity?update=early",
        ),
        (
            f"/sgx/certification/v4/qve/identity?update=standard&{CUSTOM}",
            "/sgx/certification/v4/qve/identity?update=standard",
        ),
        (
            f"/tdx/certification/v4/qe/identity?update=standard&{CUSTOM}",
            "/tdx/certification/v4/qe/identity?update=standard",
        ),
        (
            f"/sgx/certification/v4/crl?uri=https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der&{CUSTOM}",
            "/sgx/certification/v4/crl?uri="
            + quote(
                "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
                safe="",
            ),
        ),
    ],
)
def test_custom_parameter_is_ignored_on_every_route(url: str, key: str) -> None:
    path, _, query = url.partition("?")
    resource = parse_target(path, query)
    assert resource is not None and resource.key == key


def test_evaluation_numbers_and_update_default() -> None:
    r = parse_target(TCB, "fmspc=00a067110000&tcbEvaluationDataNumber=17")
    assert (
        r is not None
        and r.evaluation == 17
        and r.key == f"{TCB}?fmspc=00A067110000&tcbEvaluationDataNumber=17"
    )
    early = parse_target(TCB, "fmspc=00a067110000", default_update="early")
    assert early is not None and early.key == f"{TCB}?fmspc=00A067110000&update=early"
    asked = parse_target(TCB, "fmspc=00a067110000&update=standard", default_update="early")
    assert asked is not None and asked.update == "standard"
    for tee in ("sgx", "tdx"):
        lst = parse_target(f"/{tee}/certification/v4/tcbevaluationdatanumbers", CUSTOM)
        assert lst is not None and lst.kind == "tcbevaluationdatanumbers" and lst.key == lst.path
    assert parse_target("/sgx/certification/v3/tcbevaluationdatanumbers", "") is None


def test_query_strings_are_bounded() -> None:
    with pytest.raises(ParseError):
        parse_query("a=1&" * 40)
    with pytest.raises(ParseError):
        parse_query("x" * (MAX_QUERY_LENGTH + 1))
    assert parse_query("a=%2B+b&c&=d&&e=%ZZ") == [("a", "+ b"), ("c", ""), ("", "d"), ("e", "%ZZ")]
