"""The simulated mode of the collateral service: collateral by FMSPC / CA / QE kind for the simulated
platforms of one or more state directories.

Documents are made with :mod:`sim.collateral` and, on the ``/tdx/certification/v4`` paths,
:mod:`sim.tdx_collateral` (TCB Info ``id`` TDX, QE Identity ``id`` TD_QE), signed by the SIMULATED TCB
signing key over the exact JSON served, and re-made as time passes: a document is re-issued once it
is ``reissue`` old (a day, as Intel re-issues TCB Info daily), so its issueDate/nextUpdate keep
moving and clients never see expired collateral. Between re-issues the bytes are stable.

TCB Info and QE Identity follow the published TCB evaluations of :mod:`sim.tcb_history`:
``update=early`` the newest, ``update=standard`` (the default, or ``pccs serve --update``) the
standard one, ``tcbEvaluationDataNumber=N`` that number (404 when it is not published);
``tcbevaluationdatanumbers`` lists them (``id`` SGX or TDX by the path), signed like TCB Info. What a
TEE's document is lives in one place, :meth:`SimulatedStore.signed_json`; the headers are the same for
both TEEs, as Intel's PCS and PCCS send them (``TCB-Info-Issuer-Chain``,
``SGX-Enclave-Identity-Issuer-Chain``, ``TCB-Evaluation-Data-Numbers-Issuer-Chain``; Intel's PCCS
``controllers/identityController.js`` getTdQeIdentity sets the SGX enclave identity header for TD_QE).

``pckcert`` finds the platform as Intel's PCCS does (``pckcertService.js``): by QE ID and PCE ID
first; only when no platform has that QE ID, by the PPID (``ppid=``) or the encrypted PPID, which is
decrypted with each platform's SIMULATED PCE encryption key (:func:`sim.collateral.decrypt_ppid`).
An all-zero encrypted PPID (QCNL's placeholder) is no PPID. The certificate served is the one
Intel's PCK certificate selection (:mod:`.pck_selection`) picks for the raw CPUSVN/PCESVN among
the platform's certificates: one per TCB level at or below its TCB (:func:`sim.collateral.registered_tcbs`).

All platforms served together must share one SIMULATED root CA and TCB signing certificate, and one
PCK CA per CA type: ``/rootcacrl``, ``/crl``, ``/pckcrl`` and ``/qe/identity`` name no platform.

Encodings are Intel's PCCS's: ``/rootcacrl`` the hex text of the DER CRL, ``/crl?uri=`` the raw
DER, ``/pckcrl`` hex text of the DER without ``encoding`` (what QCNL with ``pccs_api_version`` 3.0
expects), raw DER with ``encoding=der`` (3.1 and PCS), PEM with ``encoding=pem``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError
from ..sim import collateral as sim
from ..sim import tdx_collateral as tdx
from ..sim.platform import Platform
from ..sim.tcb_history import EVALUATIONS, TcbEvaluation, evaluation
from .cache import Clock, Lookup
from .document import (
    CRL,
    ENCLAVE_CHAIN,
    JSON,
    PCK_CRL_CHAIN,
    Document,
    chain_header_name,
    content_type,
    encode_chain,
    parse_time,
    pck_document,
)
from .pck_selection import select_pck
from .resource import Resource

#: a simulated document is re-issued (new dates, new signature) once it is this old
REISSUE = timedelta(days=1)
#: decrypted PPIDs remembered (each decryption is one RSA-3072 private operation per platform)
MAX_REMEMBERED_PPIDS = 4096


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_shared_pki(platforms: Sequence[Platform]) -> None:
    first = platforms[0]
    ca_of: dict[str, Platform] = {}
    for p in platforms:
        for role in ("root", "tcb_signing"):
            if _der(p.certs[role]) != _der(first.certs[role]):
                raise ConfigError(
                    f"platforms {first.state.path} and {p.state.path} have different SIMULATED {role} "
                    "certificates; one PCCS can only serve platforms of one PKI (run one pccs per platform)"
                )
        other = ca_of.setdefault(p.identity.ca, p)
        if _der(other.certs["pck_ca"]) != _der(p.certs["pck_ca"]):
            raise ConfigError(
                f"platforms {other.state.path} and {p.state.path} have different {p.identity.ca} PCK CAs"
            )


def tcb_info_v2_json(platform: Platform, tcb_info_v3: bytes, published: TcbEvaluation | None = None) -> bytes:
    """TCB Info version 2 (PCS API v3 shape: no ``id``, flat ``sgxtcbcompNNsvn``), same dates and
    evaluation as ``tcb_info_v3`` (the v3 text of the same issue)."""
    v3 = json.loads(tcb_info_v3)
    ev = published or evaluation()
    assert ev is not None
    levels: list[dict[str, Any]] = []
    for level in ev.tcb_levels:
        tcb: dict[str, Any] = {f"sgxtcbcomp{i + 1:02d}svn": c for i, c in enumerate(level.components)}
        tcb["pcesvn"] = level.pcesvn
        levels.append({"tcb": tcb, "tcbDate": level.tcb_date, "tcbStatus": level.status})
    obj = {
        "version": 2,
        "issueDate": v3["issueDate"],
        "nextUpdate": v3["nextUpdate"],
        "fmspc": v3["fmspc"],
        "pceId": v3["pceId"],
        "tcbType": 0,
        "tcbEvaluationDataNumber": ev.number,
        "tcbLevels": levels,
    }
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Builders:
    """How one TEE's TCB Info (``id`` SGX|TDX) and QE Identity (``id`` QE|TD_QE) are made."""

    tcb_info: Callable[[Platform, datetime, TcbEvaluation], bytes]
    qe_identity: Callable[[datetime, TcbEvaluation], bytes]


_BUILDERS: dict[str, _Builders] = {
    "sgx": _Builders(sim.tcb_info_json, sim.qe_identity_json),
    "tdx": _Builders(tdx.tdx_tcb_info_json, tdx.td_qe_identity_json),
}


def _signed(platform: Platform, member: str, text: bytes) -> bytes:
    signature = sim.sign_json(platform, text).hex().encode()
    return b'{"' + member.encode() + b'":' + text + b',"signature":"' + signature + b'"}'


@dataclass
class SimulatedStore:
    """Collateral for simulated platforms, re-signed as ``clock`` moves."""

    platforms: Sequence[Platform]
    clock: Clock
    reissue: timedelta = REISSUE
    _docs: dict[str, Document] = field(default_factory=dict, init=False)
    _ppids: dict[str, Platform | None] = field(default_factory=dict, init=False)
    _pck_docs: dict[str, Document] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not self.platforms:
            raise ConfigError("simulated mode needs at least one platform state directory")
        _check_shared_pki(self.platforms)

    @property
    def mode(self) -> str:
        return "simulated"

    async def get(self, resource: Resource, api_key: str | None = None) -> Lookup:
        """The document for ``resource`` (``None`` when no simulated platform has it)."""
        document = self.document(resource, self.clock())
        return Lookup(document, "simulated" if document is not None else "not-found")

    def document(self, resource: Resource, now: datetime) -> Document | None:
        """The current issue of ``resource``'s document at ``now`` (made again once it is due)."""
        if resource.kind == "crl":  # the same CRL issue as /rootcacrl or /pckcrl, as raw DER
            return self._crl_by_uri(resource, now)
        cached = self._docs.get(resource.key)
        if cached is not None and self._current(cached, now):
            return cached
        document = self.make(resource, now)
        if document is not None and resource.kind != "pckcert":
            self._docs[resource.key] = document
        return document

    def _current(self, document: Document, now: datetime) -> bool:
        """Issued no later than ``now`` (a clock set back gets new documents) and not yet due."""
        issued = document.issue_date
        return issued is not None and issued <= now < issued + self.reissue

    def make(self, resource: Resource, now: datetime) -> Document | None:
        """Issue the document for ``resource`` at ``now`` (``None``: not served in simulated mode)."""
        first = self.platforms[0]
        if resource.kind in ("tcb", "qe_identity", "qve_identity", "tcbevaluationdatanumbers"):
            signed = self.signed_json(resource, now)
            if signed is None:
                return None
            signer, member, text = signed
            return self._json_document(resource, signer, member, text, first.tcb_signing_chain_pem())
        if resource.tee != "sgx":
            return None
        if resource.kind == "rootcacrl":
            return self._crl_document(resource, sim.root_ca_crl_der(first, now), b"")
        if resource.kind == "crl":
            return self._crl_by_uri(resource, now)
        if resource.kind == "pckcrl" and not resource.der_crl:  # the same CRL issue, re-encoded
            same = self.document(
                Resource(tee="sgx", version=4, kind="pckcrl", ca=resource.ca, encoding="der"), now
            )
            if same is None:
                return None
            return self._crl_document(resource, same.body, b"", same.headers)
        if resource.kind == "pckcrl":
            issuer = next((p for p in self.platforms if p.identity.ca == resource.ca), None)
            if issuer is None:
                return None
            return self._crl_document(resource, sim.pck_crl_der(issuer, now), issuer.pck_ca_chain_pem())
        return self._pck_cert(resource)

    def signed_json(self, resource: Resource, now: datetime) -> tuple[Platform, str, bytes] | None:
        """What a TEE's signed JSON document is: (the platform whose key signs it, the member name,
        the exact text) for ``tcb``, ``qe/identity`` and ``tcbevaluationdatanumbers``; ``None`` when
        no simulated platform has it. Every simulated platform is both an SGX and a TDX platform (its
        TDX module is :mod:`sim.tdx_module`), so both TEEs are served for the same FMSPCs, by the same
        baseline choice; only the document builders differ (:data:`_BUILDERS`). No QvE identity is
        simulated."""
        if resource.kind == "qve_identity":
            return None
        first = self.platforms[0]
        if resource.kind == "tcbevaluationdatanumbers":
            text = sim.tcb_evaluation_data_numbers_json(resource.tee, now)
            return first, "tcbEvaluationDataNumbers", text
        published = evaluation(resource.evaluation, resource.update)
        if published is None:
            return None  # a number that is not (or no longer) published: PCS answers 404
        build = _BUILDERS[resource.tee]
        if resource.kind == "qe_identity":
            return first, "enclaveIdentity", build.qe_identity(now, published)
        platform = next((p for p in self.platforms if p.identity.fmspc.hex().upper() == resource.fmspc), None)
        if platform is None:
            return None
        text = build.tcb_info(platform, now, published)
        if resource.version == 3:  # SGX only: TDX exists in API v4 only (resource.py)
            text = tcb_info_v2_json(platform, text, published)
        return platform, "tcbInfo", text

    def _json_document(
        self, resource: Resource, platform: Platform, member: str, text: bytes, chain: bytes
    ) -> Document:
        obj = json.loads(text)
        header = chain_header_name(resource) or ENCLAVE_CHAIN
        return Document(
            _signed(platform, member, text),
            JSON,
            ((header, encode_chain(chain)),),
            parse_time(obj["nextUpdate"], "nextUpdate"),
            parse_time(obj["issueDate"], "issueDate"),
        )

    def _crl_by_uri(self, resource: Resource, now: datetime) -> Document | None:
        """``crl?uri=``: the CRL a distribution point names, by its shape (``.../rootcacrl`` or
        ``IntelSGXRootCA.*``: the root's; ``.../pckcrl?ca=X``: the X PCK CA's), as raw DER."""
        parts = urlsplit(resource.uri or "")
        name = parts.path.rsplit("/", 1)[-1]
        if name in ("rootcacrl", "IntelSGXRootCA.crl") or name.startswith("IntelSGXRootCA."):
            same = Resource(tee="sgx", version=4, kind="rootcacrl")
        elif name == "pckcrl":
            ca = dict(parse_qsl(parts.query)).get("ca", "").lower()
            same = Resource(tee="sgx", version=4, kind="pckcrl", ca=ca, encoding="der")
        else:
            return None
        document = self.document(same, now)
        if document is None:
            return None
        der = bytes.fromhex(document.body.decode()) if same.kind == "rootcacrl" else document.body
        return Document(der, CRL, (), document.next_update, document.issue_date)

    def _crl_document(
        self, resource: Resource, der: bytes, chain: bytes, headers: tuple[tuple[str, str], ...] | None = None
    ) -> Document:
        crl = x509.load_der_x509_crl(der)
        next_update = crl.next_update_utc
        assert next_update is not None  # engine CRLs always carry nextUpdate
        if resource.kind == "rootcacrl":
            return Document(der.hex().encode(), CRL, (), next_update, crl.last_update_utc)
        if resource.der_crl:
            body = der
        elif resource.encoding == "pem":
            body = crl.public_bytes(serialization.Encoding.PEM)
        else:  # Intel's PCCS (pckcrlService.js): hex text of the DER unless encoding=der
            body = der.hex().encode()
        if headers is None:
            headers = ((PCK_CRL_CHAIN, encode_chain(chain)),)
        return Document(body, content_type(resource), headers, next_update, crl.last_update_utc)

    def _platform_for(self, resource: Resource) -> Platform | None:
        """QE ID + PCE ID first (Intel's PCCS), then the PPID, then the encrypted PPID."""
        if resource.qeid is not None:
            found = next((p for p in self.platforms if p.identity.qe_id.hex().upper() == resource.qeid), None)
            if found is not None and _pceid_matches(found, resource.pceid):
                return found
        if resource.ppid is not None:
            return next((p for p in self.platforms if p.identity.ppid.hex().upper() == resource.ppid), None)
        if resource.encrypted_ppid is None:
            return None
        encrypted = resource.encrypted_ppid
        if encrypted not in self._ppids:
            if len(self._ppids) >= MAX_REMEMBERED_PPIDS:  # bounded: clients choose these values
                self._ppids.clear()
            self._ppids[encrypted] = self._decrypt(bytes.fromhex(encrypted))
        return self._ppids[encrypted]

    def _decrypt(self, encrypted: bytes) -> Platform | None:
        return next((p for p in self.platforms if sim.decrypt_ppid(p, encrypted) == p.identity.ppid), None)

    def _pck_cert(self, resource: Resource) -> Document | None:
        platform = self._platform_for(resource)
        if platform is None or not _pceid_matches(platform, resource.pceid):
            return None
        raw = (
            bytes.fromhex(resource.cpusvn or ""),
            int.from_bytes(bytes.fromhex(resource.pcesvn or ""), "little"),
        )
        tcbs = sim.registered_tcbs(platform)
        # Intel's PCCS selects with the early TCB Info when it has one (pckcertService.js)
        levels = [(bytes(lv.components), lv.pcesvn) for lv in EVALUATIONS[0].tcb_levels]
        index = select_pck(raw, levels, tcbs)
        if index is None:
            return None  # the raw TCB is below every certificate's TCB
        return self._pck_document(platform, *tcbs[index])

    def _pck_document(self, platform: Platform, cpusvn: bytes, pcesvn: int) -> Document:
        """The platform's PCK certificate answer for one of its TCBs, made once."""
        key = f"{platform.state.path}|{cpusvn.hex()}|{pcesvn}"
        if key not in self._pck_docs:
            cert = sim.pck_cert_at(platform, cpusvn, pcesvn)
            self._pck_docs[key] = pck_document(
                cert.public_bytes(serialization.Encoding.PEM),
                platform.pck_ca_chain_pem(),
                sim.tcbm(cpusvn, pcesvn),
                platform.identity.fmspc.hex(),
                platform.identity.ca,
                cert.not_valid_after_utc,
                cert.not_valid_before_utc,
            )
        return self._pck_docs[key]


def _pceid_matches(platform: Platform, pceid_hex: str | None) -> bool:
    """QCNL sends the PCE ID as the bytes of the little-endian u16; PCS documents it big-endian."""
    pceid = bytes.fromhex(pceid_hex or "")
    return platform.identity.pce_id in (int.from_bytes(pceid, "big"), int.from_bytes(pceid, "little"))


__all__ = ["REISSUE", "SimulatedStore", "tcb_info_v2_json"]
