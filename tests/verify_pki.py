"""Knobs over the product's simulated PKI (:mod:`sgx_quote_helper.sim.pki`), to build quotes and
collateral for the verifier's failure-step tests: every certificate and CRL comes from
``sim.pki`` (SIMULATED names), every TCB Info, QE Identity and quote is really signed with
``cryptography``, and each knob breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgx_quote_helper.abi.pck import SgxExtensions
from sgx_quote_helper.abi.quote import (
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_TDX,
    CertificationData,
    EcdsaSigData,
    EncryptedPpid,
    QeReportCertData,
    Quote,
    QuoteHeader,
)
from sgx_quote_helper.abi.report import Attributes, ReportBody
from sgx_quote_helper.abi.tdreport import TdReport10
from sgx_quote_helper.sim import pki
from sgx_quote_helper.verify.collateral import Collateral

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FMSPC = bytes.fromhex("00A067110000")
QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
QE_ID = bytes.fromhex("3987622ee6968a54977c8626ef471235")
COMPONENTS = (11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
#: TDX: the TD's TEE_TCB_SVN (module major 0) and the simulated TDX module's signer
TEE_TCB_SVN = bytes([3, 0, 2] + [0] * 13)
TDX_MODULE_MRSIGNER = b"\x5a" * 48


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    serial: int,
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=3650),
    ext: bytes | None = None,
) -> x509.Certificate:
    return pki.make_certificate(
        subject,
        key.public_key(),
        issuer,
        issuer_key,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        ca=ca,
        sgx_extension_der=ext,
    )


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _crl(
    issuer_cn: str,
    key: ec.EllipticCurvePrivateKey,
    revoked: tuple[int, ...],
    last: datetime,
    nxt: datetime,
) -> bytes:
    crl = pki.make_crl(
        key,
        pki.simulated_name(issuer_cn),
        now=last + pki.ISSUE_BACKDATE,
        validity=nxt - last,
        revoked_serials=revoked,
    )
    return crl.public_bytes(serialization.Encoding.DER)


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _date(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimPki:
    """Knobs (all default to a valid, UpToDate SGX v3 quote at :data:`NOW`)."""

    revoked_pck: bool = False
    crl_window: tuple[datetime, datetime] = (NOW - timedelta(days=5), NOW + timedelta(days=25))
    info_window: tuple[datetime, datetime] = (NOW - timedelta(days=3), NOW + timedelta(days=27))
    qe_window: tuple[datetime, datetime] | None = None  # default: info_window
    signer_window: tuple[datetime, datetime] = (NOW - timedelta(days=365), NOW + timedelta(days=3650))
    leaf_window: tuple[datetime, datetime] = (NOW - timedelta(days=30), NOW + timedelta(days=2000))
    tcb_fmspc: bytes = FMSPC
    qe_isvsvn: int = 10
    platform_status: str = "UpToDate"
    qe_level_status: str = "UpToDate"
    debug: bool = False
    cert_type: int = 5
    quote_version: int = 3  # 3, 4 (SGX body, type-6 QE certification) or 5 (body type 1)
    tcb_info_version: int = 3
    tdx: bool = False  # a TD quote (v4, TD report 1.0) with TDX TCB Info and a TD_QE identity
    seam_attributes: bytes = bytes(8)  # the TD report's SEAMATTRIBUTES
    module_attributes: str = "0000000000000000"  # TCB Info tdxModule attributes / mask (hex)
    module_attributes_mask: str = "FFFFFFFFFFFFFFFF"
    tcb_evaluation_data_number: int = 17
    qe_evaluation_data_number: int = 17
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("root", "ca", "leaf", "tcb", "att"):
            self.keys.setdefault(name, _key())
        k = self.keys
        self.root = _cert(
            "SIMULATED Intel SGX Root CA", k["root"], "SIMULATED Intel SGX Root CA", k["root"], True, 1
        )
        self.ca = _cert("SIMULATED Intel SGX PCK Processor CA", k["ca"], self.root_cn, k["root"], True, 2)
        ext = SgxExtensions(
            ppid=bytes(range(16)),
            tcb_components=COMPONENTS,
            pcesvn=13,
            cpusvn=bytes(COMPONENTS),
            pceid=b"\0\0",
            fmspc=FMSPC,
            sgx_type=0,
        ).to_der()
        lo, hi = self.leaf_window
        self.leaf = _cert(
            "SIMULATED Intel SGX PCK Certificate", k["leaf"], self.ca_cn, k["ca"], False, 0x1234, lo, hi, ext
        )
        lo, hi = self.signer_window
        self.tcb = _cert(
            "SIMULATED Intel SGX TCB Signing", k["tcb"], self.root_cn, k["root"], False, 3, lo, hi
        )

    root_cn = "SIMULATED Intel SGX Root CA"
    ca_cn = "SIMULATED Intel SGX PCK Processor CA"

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def tcb_info_text(self) -> str:
        lo, hi = self.info_window
        levels: list[dict[str, Any]] = [
            {
                "tcb": {"sgxtcbcomponents": [{"svn": c} for c in COMPONENTS], "pcesvn": 13},
                "tcbDate": "2025-01-01T00:00:00Z",
                "tcbStatus": self.platform_status,
                "advisoryIDs": ["INTEL-SA-99999"] if self.platform_status != "UpToDate" else [],
            },
            {
                "tcb": {"sgxtcbcomponents": [{"svn": 1} for _ in COMPONENTS], "pcesvn": 5},
                "tcbDate": "2020-01-01T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": ["INTEL-SA-00001"],
            },
        ]
        if self.tdx:
            for lv, svn in zip(levels, (TEE_TCB_SVN, bytes(16)), strict=True):
                lv["tcb"]["tdxtcbcomponents"] = [{"svn": c} for c in svn]
        body = {
            "id": "TDX" if self.tdx else "SGX",
            "version": 3,
            "issueDate": _date(lo),
            "nextUpdate": _date(hi),
            "fmspc": self.tcb_fmspc.hex(),
            "pceId": "0000",
            "tcbType": 0,
            "tcbEvaluationDataNumber": self.tcb_evaluation_data_number,
            "tcbLevels": levels,
        }
        if self.tdx:  # module major 0 (TEE_TCB_SVN[1] == 0): judged by tdxModule alone
            body["tdxModule"] = {
                "mrsigner": TDX_MODULE_MRSIGNER.hex().upper(),
                "attributes": self.module_attributes,
                "attributesMask": self.module_attributes_mask,
            }
        if self.tcb_info_version == 2:  # API v3 shape: no id, flat component fields
            del body["id"]
            body["version"] = 2
            for lv in levels:
                comps = lv["tcb"].pop("sgxtcbcomponents")
                lv["tcb"] = {
                    **{f"sgxtcbcomp{i + 1:02d}svn": c["svn"] for i, c in enumerate(comps)},
                    **lv["tcb"],
                }
        return json.dumps(body, separators=(",", ":"))

    def qe_identity_text(self) -> str:
        lo, hi = self.qe_window or self.info_window
        body = {
            "id": "TD_QE" if self.tdx else "QE",
            "version": 2,
            "issueDate": _date(lo),
            "nextUpdate": _date(hi),
            "tcbEvaluationDataNumber": self.qe_evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MRSIGNER.hex().upper(),
            "isvprodid": 1,
            "tcbLevels": [
                {"tcb": {"isvsvn": 8}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": self.qe_level_status},
                {"tcb": {"isvsvn": 2}, "tcbDate": "2019-01-01T00:00:00Z", "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["INTEL-SA-00002"]},
            ],
        }  # fmt: skip
        return json.dumps(body, separators=(",", ":"))

    def collateral(self) -> Collateral:
        k = self.keys
        lo, hi = self.crl_window
        tcb_text, qe_text = self.tcb_info_text(), self.qe_identity_text()
        chain = _pem(self.tcb, self.root)
        return Collateral(
            tcb_info_issuer_chain=chain,
            tcb_info=tcb_text,
            tcb_info_signature=raw_sign(k["tcb"], tcb_text.encode()),
            qe_identity_issuer_chain=chain,
            qe_identity=qe_text,
            qe_identity_signature=raw_sign(k["tcb"], qe_text.encode()),
            pck_crl_issuer_chain=_pem(self.ca, self.root),
            root_ca_crl=_crl(self.root_cn, k["root"], (), lo, hi),
            pck_crl=_crl(self.ca_cn, k["ca"], (0x1234,) if self.revoked_pck else (), lo, hi),
        )

    def td_report(self) -> TdReport10:
        """The TD report a TDX quote carries (MRSIGNERSEAM of the simulated module)."""
        z48 = bytes(48)
        return TdReport10(
            tee_tcb_svn=TEE_TCB_SVN,
            mr_seam=b"\x5e" * 48,
            mr_signer_seam=TDX_MODULE_MRSIGNER,
            seam_attributes=self.seam_attributes,
            td_attributes=bytes(8),
            xfam=bytes.fromhex("e718060000000000"),
            mr_td=b"\x7d" * 48,
            mr_config_id=z48,
            mr_owner=z48,
            mr_owner_config=z48,
            rtmr0=z48,
            rtmr1=z48,
            rtmr2=z48,
            rtmr3=z48,
            report_data=b"SIMULATED TD".ljust(64, b"\0"),
        )

    def quote(
        self, auth_data: bytes = bytes(range(32)), body: ReportBody | TdReport10 | None = None
    ) -> bytes:
        k = self.keys
        att = (
            k["att"]
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        )
        qe_report = ReportBody(
            cpu_svn=bytes(COMPONENTS),
            attributes=Attributes(0x11, 0xE7),
            mr_enclave=bytes(32),
            mr_signer=QE_MRSIGNER,
            isv_prod_id=1,
            isv_svn=self.qe_isvsvn,
            report_data=hashlib.sha256(att + auth_data).digest() + bytes(32),
        )
        flags = 0x07 if self.debug else 0x05
        if body is None and self.tdx:
            body = self.td_report()
        isv = body or ReportBody(
            cpu_svn=bytes(COMPONENTS),
            attributes=Attributes(flags, 3),
            mr_enclave=b"\xe1" * 32,
            mr_signer=b"\x51" * 32,
            isv_prod_id=7,
            isv_svn=3,
            report_data=b"SIMULATED".ljust(64, b"\0"),
        )
        if self.cert_type == 5:
            cert = CertificationData(5, _pem(self.leaf, self.ca, self.root).encode() + b"\0")
        else:
            ppid = EncryptedPpid(b"\xee" * 384, bytes(COMPONENTS), 13, 0)
            cert = CertificationData(3, ppid.to_bytes())
        qe_cert = QeReportCertData(qe_report, raw_sign(k["leaf"], qe_report.to_bytes()), auth_data, cert)
        version, tee = (4, TEE_TYPE_TDX) if isinstance(isv, TdReport10) else (self.quote_version, 0)
        header = QuoteHeader(version, 2, tee, self.qe_isvsvn, 15, INTEL_QE_VENDOR_ID, QE_ID + bytes(4))
        body_type = 1 if version == 5 else None
        q = Quote(
            header=header, body=isv, signature_data=EcdsaSigData(bytes(64), att, qe_cert), body_type=body_type
        )
        sig = raw_sign(k["att"], q.signed_bytes)
        return dataclasses.replace(
            q, signature_data=dataclasses.replace(q.signature_data, signature=sig)
        ).to_bytes()

    def pccs_routes(self) -> dict[str, tuple[int, bytes, dict[str, str]]]:
        """PCCS answers (path with query -> status, body, headers) for :class:`~sgx_quote_helper.testing.fakes.FakePccs`."""
        c = self.collateral()
        return pccs_routes(
            c, FMSPC, "processor", leaf_pem=_pem(self.leaf), leaf_chain=_pem(self.ca, self.root)
        )


def pccs_routes(
    c: Collateral, fmspc: bytes, ca: str, tee: str = "sgx", leaf_pem: str = "", leaf_chain: str = ""
) -> dict[str, tuple[int, bytes, dict[str, str]]]:
    """What a PCCS serves for this collateral, keyed by the path (and query) dcap-qvl requests."""

    def enc(pem: str | None) -> str:
        return quote(pem or "", safe="")

    tcb = ('{"tcbInfo":' + c.tcb_info + ',"signature":"' + c.tcb_info_signature.hex() + '"}').encode()
    qe = (
        '{"enclaveIdentity":' + c.qe_identity + ',"signature":"' + c.qe_identity_signature.hex() + '"}'
    ).encode()
    v4 = "/sgx/certification/v4"
    routes = {
        f"{v4}/pckcrl?ca={ca}&encoding=der": (200, c.pck_crl or b"", {"SGX-PCK-CRL-Issuer-Chain": enc(c.pck_crl_issuer_chain)}),
        f"/{tee}/certification/v4/tcb?fmspc={fmspc.hex().upper()}": (200, tcb, {"TCB-Info-Issuer-Chain": enc(c.tcb_info_issuer_chain)}),
        f"/{tee}/certification/v4/qe/identity": (200, qe, {"SGX-Enclave-Identity-Issuer-Chain": enc(c.qe_identity_issuer_chain)}),
        f"{v4}/rootcacrl": (200, (c.root_ca_crl or b"").hex().encode(), {}),
    }  # fmt: skip
    if leaf_pem:
        tcbm = (bytes(COMPONENTS) + (13).to_bytes(2, "little")).hex().upper()
        routes[f"{v4}/pckcert"] = (  # any query: FakePccs falls back to the bare path
            200,
            leaf_pem.encode(),
            {"SGX-PCK-Certificate-Issuer-Chain": enc(leaf_chain), "SGX-TCBm": tcbm},
        )
    return routes


__all__ = ["FMSPC", "NOW", "SimPki", "raw_sign"]
