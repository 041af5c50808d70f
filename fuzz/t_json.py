"""Text and JSON targets: collateral (dcap-qvl JSON, raw PCS responses, TCB Info and QE Identity
models), PCCS request parameters and Kubernetes AdmissionReview bodies.

Invariant: parse, or raise CollateralError / ParseError (ours), never a KeyError, TypeError,
RecursionError...; a webhook answer is always an allowed AdmissionReview response.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from urllib.parse import quote

from hypothesis import strategies as st

from sgx_quote_helper.doctor.qcnl import parse_qcnl
from sgx_quote_helper.k8s.webhook import OPT_IN_KEY, parse_review, review_response
from sgx_quote_helper.pccs.document import upstream_document
from sgx_quote_helper.pccs.registration import parse_registration
from sgx_quote_helper.pccs.resource import parse_resource, parse_target
from sgx_quote_helper.pccs.trust import check_trusted
from sgx_quote_helper.verify.chain import TrustedRoot
from sgx_quote_helper.verify.collateral import from_pcs_responses, load_dcap_qvl_json
from sgx_quote_helper.verify.qeidentity import QeIdentity
from sgx_quote_helper.verify.tcbinfo import TcbInfo

from .seeds import real_files
from .target import Target, ours

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=16),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=16,
)

#: JSON nested deeper than the decoder's recursion limit
DEEP = b"[" * 100_000

# ---------------------------------------------------------------- collateral

COLLATERAL_MODES = ("dcap-qvl", "tcb-info", "qe-identity", "pcs")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def check_collateral(data: bytes) -> int:
    """Byte 0 picks the loader: dcap-qvl JSON (then its lazy TCB Info / QE Identity models), a TCB
    Info or QE Identity body, or PCS responses (tcb body, issuer-chain header, QE identity body
    separated by NUL bytes)."""
    if not data:
        return 1
    mode, body = COLLATERAL_MODES[data[0] % len(COLLATERAL_MODES)], data[1:]
    if mode == "dcap-qvl":
        collateral = ours(load_dcap_qvl_json, body)
        if collateral is not None:
            ours(lambda c=collateral: c.tcb_info_model)
            ours(lambda c=collateral: c.qe_identity_model)
    elif mode == "tcb-info":
        ours(TcbInfo.parse, _text(body))
    elif mode == "qe-identity":
        ours(QeIdentity.parse, _text(body))
    else:
        tcb, _, rest = body.partition(b"\x00")
        chain, _, qe = rest.partition(b"\x00")
        collateral = ours(
            from_pcs_responses, tcb_info_response=tcb, tcb_info_issuer_chain=chain, qe_identity_response=qe
        )
        if collateral is not None:
            ours(lambda c=collateral: c.tcb_info_model)
            ours(lambda c=collateral: c.qe_identity_model)
    return 1


@cache
def _qvl_objects() -> tuple[dict[str, object], ...]:
    return tuple(json.loads(raw) for raw in real_files("*.dcap-qvl.json"))


@cache
def collateral_seeds() -> tuple[bytes, ...]:
    """The real dcap-qvl collateral, its TCB Info / QE Identity bodies, the raw PCS responses."""
    seeds = [b"\x00" + raw for raw in real_files("*.dcap-qvl.json")]
    for obj in _qvl_objects():
        if isinstance(obj.get("tcb_info"), str):
            seeds.append(b"\x01" + str(obj["tcb_info"]).encode())
        if isinstance(obj.get("qe_identity"), str):
            seeds.append(b"\x02" + str(obj["qe_identity"]).encode())
    tcbs, qes = real_files("tcb_info_v3_*.json"), real_files("qe_identity_*.json")
    chains = real_files("tcb_info_issuer_chain.pem")
    for tcb, qe, chain in zip(tcbs, qes, chains, strict=False):
        seeds.append(b"\x03" + tcb + b"\x00" + chain + b"\x00" + qe)
    seeds += [b"\x00" + DEEP, b"\x01" + DEEP, b"\x02" + DEEP, b"\x03" + DEEP]
    return tuple(seeds)


def _structured_collateral() -> st.SearchStrategy[bytes]:
    objs = _qvl_objects()
    if not objs:
        return json_values.map(lambda v: b"\x00" + json.dumps(v).encode())

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        obj = dict(draw(st.sampled_from(list(objs))))
        which = draw(st.sampled_from(["outer", "tcb_info", "qe_identity"]))
        if which == "outer":
            obj[draw(st.sampled_from(sorted(obj)))] = draw(json_values)
            return b"\x00" + json.dumps(obj).encode()
        inner = json.loads(str(obj[which]))
        if isinstance(inner, dict) and inner:
            inner[draw(st.sampled_from(sorted(inner)))] = draw(json_values)
        prefix = b"\x01" if which == "tcb_info" else b"\x02"
        return prefix + json.dumps(inner).encode()

    return mutate()


COLLATERAL = Target(
    "collateral",
    "verify.collateral loaders (dcap-qvl JSON, raw PCS responses) and the TCB Info / QE Identity models",
    check_collateral,
    collateral_seeds,
    max_size=8192,
    extra=_structured_collateral,
)

# ---------------------------------------------------------------- PCCS request parameters


def decode_pccs(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Raw bytes -> (path, query pairs): NUL-separated path, name, value, name, value..."""
    parts = data.decode("utf-8", "replace").split("\x00")
    path, rest = parts[0], parts[1:]
    return path, [(rest[i], rest[i + 1] if i + 1 < len(rest) else "") for i in range(0, len(rest), 2)]


def check_pccs(inp: tuple[str, list[tuple[str, str]]]) -> int:
    """parse_resource answers a Resource, None (404) or ParseError; a Resource's canonical key
    parses back to the same Resource."""
    path, query = inp
    length = sum(len(k) + len(v) + 2 for k, v in query)
    resource = ours(parse_resource, path, query, length)
    if resource is not None:
        again = parse_resource(resource.path, resource.query(), 0)
        assert again == resource, (resource, again)
        assert resource.key.startswith(resource.path)
    return 1


def _pccs_raw(path: str, *pairs: tuple[str, str]) -> bytes:
    return "\x00".join([path, *(x for p in pairs for x in p)]).encode()


@cache
def pccs_seeds() -> tuple[bytes, ...]:
    """Every collateral path with valid parameters (Intel's PCS API v3/v4, SGX and TDX)."""
    eppid, cpusvn = "ab" * 384, "0f" * 16
    return (
        _pccs_raw("/sgx/certification/v4/tcb", ("fmspc", "00906ED50000"), ("update", "early")),
        _pccs_raw("/tdx/certification/v4/tcb", ("fmspc", "00806f050000")),
        _pccs_raw("/sgx/certification/v3/tcb", ("fmspc", "00906ED50000")),
        _pccs_raw("/sgx/certification/v4/qe/identity", ("update", "standard")),
        _pccs_raw("/tdx/certification/v4/qe/identity"),
        _pccs_raw("/sgx/certification/v4/qve/identity"),
        _pccs_raw("/sgx/certification/v4/pckcrl", ("ca", "processor"), ("encoding", "der")),
        _pccs_raw("/sgx/certification/v4/rootcacrl"),
        _pccs_raw(
            "/sgx/certification/v4/pckcert",
            ("encrypted_ppid", eppid),
            ("cpusvn", cpusvn),
            ("pcesvn", "0e00"),
            ("pceid", "0000"),
            ("qeid", "11" * 16),
        ),
        _pccs_raw(
            "/sgx/certification/v4/pckcert",
            ("ppid", "22" * 16),
            ("cpusvn", cpusvn),
            ("pcesvn", "0e00"),
            ("pceid", "0000"),
        ),
    )


def _structured_pccs() -> st.SearchStrategy[tuple[str, list[tuple[str, str]]]]:
    paths = st.sampled_from([decode_pccs(s)[0] for s in pccs_seeds()]) | st.text(max_size=40)
    names = st.sampled_from(
        ["fmspc", "update", "ca", "encoding", "encrypted_ppid", "ppid", "cpusvn", "pcesvn", "pceid", "qeid"]
    ) | st.text(max_size=8)
    values = st.text(alphabet="0123456789abcdefABCDEFxyz-", max_size=800) | st.text(max_size=20)
    return st.tuples(paths, st.lists(st.tuples(names, values), max_size=7))


PCCS = Target(
    "pccs",
    "pccs.resource.parse_resource (collateral paths and their query parameters)",
    check_pccs,
    pccs_seeds,
    decode=decode_pccs,
    max_size=2048,
    extra=_structured_pccs,
)

# ---------------------------------------------------------------- PCCS raw request targets


def decode_pccs_target(data: bytes) -> tuple[str, str]:
    """Raw bytes -> (path, raw query string): the request target split at its first ``?``."""
    path, _, query = data.decode("utf-8", "replace").partition("?")
    return path, query


def check_pccs_target(inp: tuple[str, str]) -> int:
    """parse_target (resource.parse_query + parse_resource) answers a Resource, None or ParseError;
    a Resource's canonical key parses back to the same key."""
    path, query = inp
    resource = ours(parse_target, path, query)
    if resource is not None:
        key_path, _, key_query = resource.key.partition("?")
        again = parse_target(key_path, key_query)
        assert again is not None and again.key == resource.key, (resource, again)
    return 1


@cache
def pccs_target_seeds() -> tuple[bytes, ...]:
    """The exact request strings Intel's QCNL builds (certification_service.cpp, DCAP 1.23), and the
    PCS v4 baseline parameters."""
    custom = "customParameter=eyJhIjoiYiJ9%2B%2F%3D"
    q = "/sgx/certification/v4/"
    tcb = "cpusvn=0F0F0303FFFF01000000000000000000&pcesvn=0D00&pceid=0000"
    return tuple(
        s.encode()
        for s in (
            f"{q}pckcert?qeid={'5A' * 16}&encrypted_ppid={'0' * 768}&{tcb}",
            f"{q}pckcert?qeid={'5A' * 16}&encrypted_ppid={'AB' * 384}&{tcb}",
            f"{q}pckcrl?ca=processor&{custom}",
            f"{q}pckcrl?ca=platform&encoding=der&{custom}",
            f"{q}tcb?fmspc=00906ED50000&update=standard&{custom}",
            f"/tdx/certification/v4/tcb?fmspc=00806F050000&update=early&{custom}",
            f"{q}qe/identity?update=early&{custom}",
            f"{q}qve/identity?update=standard&{custom}",
            f"/sgx/certification/v3/rootcacrl?{custom}",
            f"{q}crl?uri=https://certificates.trustedservices.intel.com/IntelSGXRootCA.der&{custom}",
            f"{q}crl?uri=https%3A%2F%2Fcertificates.trustedservices.intel.com%2FIntelSGXRootCA.der",
            f"{q}crl?uri=https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
            f"{q}tcb?fmspc=00906ED50000&tcbEvaluationDataNumber=17",
            f"{q}tcbevaluationdatanumbers",
        )
    )


PCCS_TARGET = Target(
    "pccs_target",
    "pccs.resource.parse_target (raw request target: query-string splitting, decoding, parameters)",
    check_pccs_target,
    pccs_target_seeds,
    decode=decode_pccs_target,
    max_size=2048,
)

# ---------------------------------------------------------------- PCCS upstream answers

UPSTREAM_PATHS = (
    "/sgx/certification/v4/tcb?fmspc=00906ED50000&tcbEvaluationDataNumber=17",
    "/sgx/certification/v4/tcb?fmspc=00906ED50000",
    "/sgx/certification/v4/qe/identity",
    "/sgx/certification/v4/tcbevaluationdatanumbers",
    "/tdx/certification/v4/tcbevaluationdatanumbers",
    "/sgx/certification/v4/pckcrl?ca=processor",
    "/sgx/certification/v4/rootcacrl",
    "/sgx/certification/v4/pckcert?qeid=00&cpusvn=" + "0" * 32 + "&pcesvn=0000&pceid=0000",
)


def decode_upstream(data: bytes) -> tuple[int, str, bytes]:
    """Raw bytes -> (which request, issuer-chain header value, body): byte 0 picks the request, then
    the header and the body separated by the first NUL."""
    head, _, body = data[1:].partition(b"\x00")
    return (data[0] if data else 0), head.decode("latin-1"), body


def check_upstream(inp: tuple[int, str, bytes]) -> int:
    """upstream_document then check_trusted (Intel's root) accept or raise CollateralError, whatever
    the body (TCB Info, QE Identity, the evaluation-numbers JSON, CRLs, certificates) and header."""
    which, header, body = inp
    path, _, query = UPSTREAM_PATHS[which % len(UPSTREAM_PATHS)].partition("?")
    resource = parse_target(path, query)
    assert resource is not None
    names = (
        "TCB-Info-Issuer-Chain",
        "SGX-Enclave-Identity-Issuer-Chain",
        "TCB-Evaluation-Data-Numbers-Issuer-Chain",
        "SGX-PCK-CRL-Issuer-Chain",
        "SGX-PCK-Certificate-Issuer-Chain",
    )
    headers = {n: header for n in names} | {
        "SGX-TCBm": "0" * 36,
        "SGX-FMSPC": "00906ED50000",
        "SGX-PCK-Certificate-CA-Type": "processor",
    }
    document = ours(upstream_document, resource, headers, body)
    if document is not None:
        ours(check_trusted, resource, document, TrustedRoot.intel())
    return 1


@cache
def upstream_seeds() -> tuple[bytes, ...]:
    """Real Intel answers (TCB Info, QE Identity with their issuer chain) and an evaluation-numbers
    list in PCS's shape."""
    out: list[bytes] = []
    for raw in real_files("collateral-*.dcap-qvl.json")[:2]:
        try:
            c = json.loads(raw)
            chain = quote(c["tcb_info_issuer_chain"], safe="").encode()
            tcb = (
                b'{"tcbInfo":'
                + c["tcb_info"].encode()
                + b',"signature":"'
                + c["tcb_info_signature"].encode()
                + b'"}'
            )
            qe = (
                b'{"enclaveIdentity":'
                + c["qe_identity"].encode()
                + b',"signature":"'
                + c["qe_identity_signature"].encode()
                + b'"}'
            )
        except (ValueError, KeyError, AttributeError):
            continue
        out += [b"\x01" + chain + b"\x00" + tcb, b"\x02" + chain + b"\x00" + qe]
        out.append(b"\x06" + b"\x00" + c["root_ca_crl"].encode())
    numbers = (
        b'{"tcbEvaluationDataNumbers":{"id":"SGX","version":1,"issueDate":"2025-06-02T02:43:30Z",'
        b'"nextUpdate":"2025-07-02T02:43:30Z","tcbEvalNumbers":[{"tcbEvaluationDataNumber":19,'
        b'"tcbRecoveryEventDate":"2025-05-13T00:00:00Z","tcbDate":"2025-05-14T00:00:00Z"}]},"signature":"'
        + b"00" * 64
        + b'"}'
    )
    out.append(b"\x03" + (out[0][1:].partition(b"\x00")[0] if out else b"") + b"\x00" + numbers)
    return tuple(out)


PCCS_UPSTREAM = Target(
    "pccs_upstream",
    "pccs.document.upstream_document + pccs.trust.check_trusted (what a caching PCCS stores)",
    check_upstream,
    upstream_seeds,
    decode=decode_upstream,
    max_size=16384,
)

# ---------------------------------------------------------------- PCCS platform registration


def check_registration(data: bytes) -> int:
    """parse_registration answers a Registration (whose pckcert resource has a canonical key that
    parses back) or raises ParseError."""
    registration = ours(parse_registration, data)
    if registration is not None:
        resource = registration.resource(4)
        key_path, _, key_query = resource.key.partition("?")
        again = parse_target(key_path, key_query)
        assert again is not None and again.key == resource.key, (resource, again)
    return 1


@cache
def registration_seeds() -> tuple[bytes, ...]:
    """The PCK ID retrieval tool's bodies: with an encrypted PPID, all-zero, with a manifest."""
    base = {"qe_id": "5a" * 16, "pce_id": "0000", "cpu_svn": "0f" * 16, "pce_svn": "0d00"}
    return (
        json.dumps({**base, "enc_ppid": "ab" * 384}).encode(),
        json.dumps({**base, "enc_ppid": "00" * 384}).encode(),
        json.dumps({"qe_id": "5a" * 16, "pce_id": "0000", "platform_manifest": "4d" * 64}).encode(),
    )


PCCS_REGISTRATION = Target(
    "pccs_registration",
    "pccs.registration.parse_registration (POST /platforms bodies of the PCK ID retrieval tool)",
    check_registration,
    registration_seeds,
    max_size=4096,
    extra=lambda: json_values.map(lambda v: json.dumps(v).encode()),
)

# ---------------------------------------------------------------- AdmissionReview


def check_admission(body: bytes) -> int:
    """parse_review + review_response raise ParseError or answer an allowed review whose patch
    (if any) is base64 JSON of a list of operations."""
    review = ours(parse_review, body)
    if review is None:
        return 1
    answer = ours(review_response, review)
    if answer is None:
        return 1
    response = answer["response"]
    assert response["allowed"] is True and response["uid"] == review["request"]["uid"]
    if "patch" in response:
        ops = json.loads(base64.b64decode(response["patch"]))
        assert isinstance(ops, list) and all(isinstance(op, dict) and "op" in op for op in ops)
    return 1


def review(pod: object) -> dict[str, object]:
    """An AdmissionReview v1 request for ``pod``."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "object": pod,
        },
    }


def _pod(resources: object, annotations: object = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": "app"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}]}}


@cache
def admission_seeds() -> tuple[bytes, ...]:
    """A pod requesting EPC, an opted-in pod, a plain pod, a non-pod review."""
    epc = {"limits": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": 10}}
    pods = [
        _pod(epc),
        _pod({}, {OPT_IN_KEY: "true"}),
        _pod({}),
        _pod({"limits": {"sgx.intel.com/epc": "512Ki"}}),
    ]
    seeds = [json.dumps(review(p)).encode() for p in pods]
    other = review({})
    other["request"] = {"uid": "u-2", "kind": {"group": "apps", "kind": "Deployment"}, "object": {}}
    return (*seeds, json.dumps(other).encode(), DEEP, b'{"a":' * 20000)


def _structured_admission() -> st.SearchStrategy[bytes]:
    epc = {"limits": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": 10}}
    spec = st.fixed_dictionaries({"containers": json_values | st.lists(json_values, max_size=3)})
    pods = st.one_of(
        json_values,
        st.builds(lambda s: {"metadata": {}, "spec": s}, json_values | spec),
        st.builds(lambda v: _pod(epc, v), json_values),
        st.builds(
            lambda v: {
                **_pod(epc),
                "spec": {
                    "containers": [{"name": "a", "resources": epc, "env": v, "volumeMounts": v}],
                    "volumes": v,
                },
            },
            json_values,
        ),
    )
    return pods.map(lambda p: json.dumps(review(p)).encode())


ADMISSION = Target(
    "admission",
    "k8s.webhook parse_review + review_response (AdmissionReview v1 bodies)",
    check_admission,
    admission_seeds,
    max_size=4096,
    extra=_structured_admission,
)

# ---------------------------------------------------------------- QCNL configuration (doctor)


def check_qcnl(data: bytes) -> int:
    """doctor.qcnl.parse_qcnl: JSON-with-comments or KEY=value, else ConfigError."""
    conf = ours(parse_qcnl, data.decode("utf-8", "replace"))
    if conf is not None:
        assert conf.format in ("json", "key=value")
        assert conf.pccs_url is None or isinstance(conf.pccs_url, str)
    return 1


@cache
def qcnl_seeds() -> tuple[bytes, ...]:
    """Intel's two formats (DCAP >= 1.13 JSON with comments; the older KEY=value)."""
    return (
        b'{\n  // PCCS server address\n  "pccs_url": "https://localhost:8081/sgx/certification/v4/",\n'
        b'  /* self-signed */ "use_secure_cert": false,\n  "retry_times": 6,\n'
        b'  "collateral_service": "https://api.trustedservices.intel.com/sgx/certification/v4/"\n}\n',
        b"# PCCS server address\nPCCS_URL=https://localhost:8081/sgx/certification/v3/\nUSE_SECURE_CERT=FALSE\n",
        b"{" + DEEP,
    )


QCNL = Target(
    "qcnl",
    "doctor.qcnl.parse_qcnl (sgx_default_qcnl.conf, JSON with comments or KEY=value)",
    check_qcnl,
    qcnl_seeds,
    max_size=2048,
)

__all__ = [
    "ADMISSION",
    "COLLATERAL",
    "PCCS",
    "PCCS_REGISTRATION",
    "PCCS_TARGET",
    "PCCS_UPSTREAM",
    "QCNL",
    "json_values",
]
