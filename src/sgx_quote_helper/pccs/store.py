"""The simulated mode of the collateral service: collateral by FMSPC / CA / QE kind for the simulated
platforms of one or more state directories.

Documents are made with :mod:`sim.collateral` (signed by the SIMULATED TCB signing key over the
exact JSON served) and re-made as time passes: a document is re-issued once it is ``reissue`` old
(a day, as Intel re-issues TCB Info daily), so its issueDate/nextUpdate keep moving and clients
never see expired collateral. Between re-issues the bytes are stable.

``pckcert`` answers for platforms whose quotes carry an encrypted PPID (certification data type 3):
the PPID is decrypted with each platform's SIMULATED PCE encryption key
(:func:`sim.collateral.decrypt_ppid`) and the platform whose PPID it is gets its PCK certificate
served, provided the asked raw TCB is not below the certificate's TCB (PCS picks the best
certificate at or below the raw TCB; a simulated platform has exactly one).

All platforms served together must share one SIMULATED root CA and TCB signing certificate, and one
PCK CA per CA type: ``/rootcacrl``, ``/crl``, ``/pckcrl`` and ``/qe/identity`` name no platform.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError
from ..sim import collateral as sim
from ..sim.platform import Platform
from ..sim.tcb_history import TCB_EVALUATION_DATA_NUMBER, TCB_LEVELS
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


def tcb_info_v2_json(platform: Platform, tcb_info_v3: bytes) -> bytes:
    """TCB Info version 2 (PCS API v3 shape: no ``id``, flat ``sgxtcbcompNNsvn``), same dates as
    ``tcb_info_v3`` (the v3 text of the same issue)."""
    v3 = json.loads(tcb_info_v3)
    levels: list[dict[str, Any]] = []
    for level in TCB_LEVELS:
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
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tcbLevels": levels,
    }
    return json.dumps(obj, separators=(",", ":")).encode()


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
        if resource.tee != "sgx" or resource.kind == "qve_identity":
            return None  # simulated platforms are SGX; no QvE identity is simulated
        first = self.platforms[0]
        chain = first.tcb_signing_chain_pem()
        if resource.kind == "tcb":
            platform = next(
                (p for p in self.platforms if p.identity.fmspc.hex().upper() == resource.fmspc), None
            )
            if platform is None:
                return None
            text = sim.tcb_info_json(platform, now)
            if resource.version == 3:
                text = tcb_info_v2_json(platform, text)
            return self._json_document(resource, platform, "tcbInfo", text, chain)
        if resource.kind == "qe_identity":
            return self._json_document(resource, first, "enclaveIdentity", sim.qe_identity_json(now), chain)
        if resource.kind == "rootcacrl":
            return self._crl_document(resource, sim.root_ca_crl_der(first, now), b"")
        if resource.kind == "crl":
            return self._crl_by_uri(resource, now)
        if resource.kind == "pckcrl":
            platform = next((p for p in self.platforms if p.identity.ca == resource.ca), None)
            if platform is None:
                return None
            return self._crl_document(resource, sim.pck_crl_der(platform, now), platform.pck_ca_chain_pem())
        return self._pck_cert(resource)

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
        if name == "rootcacrl" or name.startswith("IntelSGXRootCA."):
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

    def _crl_document(self, resource: Resource, der: bytes, chain: bytes) -> Document:
        crl = x509.load_der_x509_crl(der)
        next_update = crl.next_update_utc
        assert next_update is not None  # engine CRLs always carry nextUpdate
        if resource.kind == "rootcacrl":
            return Document(der.hex().encode(), CRL, (), next_update, crl.last_update_utc)
        body = der if resource.der_crl else crl.public_bytes(serialization.Encoding.PEM)
        headers = ((PCK_CRL_CHAIN, encode_chain(chain)),)
        return Document(body, content_type(resource), headers, next_update, crl.last_update_utc)

    def _platform_for(self, resource: Resource) -> Platform | None:
        if resource.ppid is not None:
            return next((p for p in self.platforms if p.identity.ppid.hex().upper() == resource.ppid), None)
        if resource.encrypted_ppid is None:  # by QE ID alone: every simulated platform is "registered"
            return next((p for p in self.platforms if p.identity.qe_id.hex().upper() == resource.qeid), None)
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
        if platform is None:
            return None
        ident = platform.identity
        pceid = bytes.fromhex(resource.pceid or "")
        if ident.pce_id not in (int.from_bytes(pceid, "big"), int.from_bytes(pceid, "little")):
            return None
        raw_cpusvn = bytes.fromhex(resource.cpusvn or "")
        raw_pcesvn = int.from_bytes(bytes.fromhex(resource.pcesvn or ""), "little")
        if raw_pcesvn < ident.pcesvn or any(r < c for r, c in zip(raw_cpusvn, ident.cpusvn, strict=True)):
            return None  # the raw TCB is below the only certificate's TCB
        return self._pck_document(platform)

    def _pck_document(self, platform: Platform) -> Document:
        """The platform's (only) PCK certificate answer, made once."""
        key = str(platform.state.path)
        if key not in self._pck_docs:
            leaf, chain = sim.pck_cert_pem(platform)
            cert = platform.certs["pck"]
            self._pck_docs[key] = pck_document(
                leaf,
                chain,
                sim.pck_cert_tcbm(platform),
                platform.identity.fmspc.hex(),
                platform.identity.ca,
                cert.not_valid_after_utc,
                cert.not_valid_before_utc,
            )
        return self._pck_docs[key]


__all__ = ["REISSUE", "SimulatedStore", "tcb_info_v2_json"]
