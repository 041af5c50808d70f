"""``verify(quote, collateral, now)``: the numbered steps strung together, with caching.

:class:`Verifier` holds the trust anchor, the default policy, and the caches that make repeated
quotes from a known platform cheap (``performance.md`` §1.6):

- verified collateral (root CA CRL, TCB Info and QE Identity with their signing chains), keyed
  by the collateral's digest and the root;
- verified PCK chains (with the PCK CRL) per platform, keyed by the chain, collateral and root;
- verified QE reports (the PCK signature and the QE Identity match) per platform;
- attestation public keys.

Every hit re-checks the validity windows it was verified under against ``now``; outside them
the full checks run again and fail with the precise step. Nothing here reads the clock or the
network: quote bytes, collateral, root and ``now`` are parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..abi.quote import Quote
from ..abi.tdreport import TdReport10, TdReport15
from ..errors import ParseError, VerificationError
from . import steps as st
from . import tcb
from .cache import BoundedCache, intersect, within
from .chain import TrustedRoot, Window
from .collateral import Collateral
from .policy import DEFAULT_POLICY, Policy
from .qeidentity import QeIdentity, QeTcbLevel
from .status import TcbStatus, converge
from .steps import Step, VerifiedPck
from .tcbinfo import TcbInfo, TcbLevel
from .verdict import Body, Verdict

Key = tuple[object, ...]


def as_datetime(now: datetime | float) -> datetime:
    """``now`` as an aware UTC datetime (Unix seconds or a datetime; naive means UTC)."""
    if isinstance(now, datetime):
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return datetime.fromtimestamp(float(now), UTC)


@dataclass(frozen=True)
class VerifiedCollateral:
    """Collateral that passed the root CA CRL, TCB Info and QE Identity checks (steps 4-6)."""

    tcb_info: TcbInfo
    qe_identity: QeIdentity
    root_crl: x509.CertificateRevocationList | None
    pck_crl: x509.CertificateRevocationList | None
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class _QeCheck:
    level: QeTcbLevel


class Verifier:
    """A DCAP quote verifier with a pinned root, a default policy and caches.

    Example::

        v = Verifier()                                   # Intel's production root
        verdict = v.verify(quote_bytes, load_dcap_qvl_json(text), now=1750334400)
        verdict.status, verdict.accepted, verdict.advisory_ids

    ``root_ca``: another trust anchor (DER/PEM bytes or a TrustedRoot), only when given explicitly.
    ``dangerous_skip_crls``: accept collateral without CRLs (no revocation checking at all).
    """

    def __init__(
        self,
        root_ca: TrustedRoot | bytes | None = None,
        *,
        policy: Policy = DEFAULT_POLICY,
        dangerous_skip_crls: bool = False,
        cache_size: int = 256,
    ) -> None:
        if root_ca is None:
            self.root = TrustedRoot.intel()
        elif isinstance(root_ca, TrustedRoot):
            self.root = root_ca
        else:
            self.root = TrustedRoot.load(root_ca)
        self.policy = policy
        self.dangerous_skip_crls = dangerous_skip_crls
        self._collateral: BoundedCache[VerifiedCollateral] = BoundedCache(cache_size)
        self._pck: BoundedCache[VerifiedPck] = BoundedCache(cache_size)
        self._qe: BoundedCache[_QeCheck] = BoundedCache(cache_size * 4)
        self._keys: BoundedCache[ec.EllipticCurvePublicKey] = BoundedCache(cache_size * 16)
        self._tcb: BoundedCache[PlatformTcb] = BoundedCache(cache_size * 4)

    def clear_caches(self) -> None:
        """Forget everything verified so far."""
        for c in (self._collateral, self._pck, self._qe, self._keys, self._tcb):
            c.clear()

    # -- collateral (steps 4-6) ------------------------------------------------------------------
    def verify_collateral(self, collateral: Collateral, now: datetime | float) -> VerifiedCollateral:
        """Steps 4 (root CA CRL), 5 (TCB Info) and 6 (QE Identity); cached per collateral and root."""
        now = as_datetime(now)
        key = (collateral.cache_key, self.root.sha256, self.dangerous_skip_crls)
        hit = self._collateral.get(key)
        if hit is not None and within(hit.windows, now):
            return hit
        windows: list[Window] = []
        root_crl = pck_crl = None
        if collateral.root_ca_crl is not None:
            root_crl, w = st.check_root_crl(collateral.root_ca_crl, self.root, now)
            windows.append(w)
        elif not self.dangerous_skip_crls:
            raise st.fail(Step.CRL, "root-ca-crl-missing")
        if collateral.pck_crl is not None:
            pck_crl = st.load_pck_crl(collateral.pck_crl)
        elif not self.dangerous_skip_crls:
            raise st.fail(Step.CRL, "pck-crl-missing")
        signer, w5 = st.check_signing_chain(
            Step.TCB_INFO, "tcb-info", collateral.tcb_info_issuer_chain, self.root, root_crl, now
        )
        windows += w5
        st.check_json_signature(
            Step.TCB_INFO, "tcb-info", signer, collateral.tcb_info, collateral.tcb_info_signature
        )
        tcb_info = collateral.tcb_info_model
        st.check_issued_window(Step.TCB_INFO, "tcb-info", tcb_info.issue_date, tcb_info.next_update, now)
        windows.append((tcb_info.issue_date, tcb_info.next_update, True))
        if collateral.qe_identity_issuer_chain != collateral.tcb_info_issuer_chain:
            signer, w6 = st.check_signing_chain(
                Step.QE_IDENTITY, "qe-identity", collateral.qe_identity_issuer_chain, self.root, root_crl, now
            )
            windows += w6
        st.check_json_signature(
            Step.QE_IDENTITY, "qe-identity", signer, collateral.qe_identity, collateral.qe_identity_signature
        )
        qe = collateral.qe_identity_model
        st.check_issued_window(Step.QE_IDENTITY, "qe-identity", qe.issue_date, qe.next_update, now)
        windows.append((qe.issue_date, qe.next_update, True))
        out = VerifiedCollateral(tcb_info, qe, root_crl, pck_crl, (intersect(windows),))
        self._collateral.put(key, out)
        return out

    # -- PCK chain (steps 2-4) -------------------------------------------------------------------
    def _cached_pck(
        self, chain_pem: bytes, collateral: Collateral, now: datetime
    ) -> tuple[VerifiedPck | None, Key]:
        key = (chain_pem, collateral.cache_key, self.root.sha256, self.dangerous_skip_crls)
        hit = self._pck.get(key)
        if hit is not None and within(hit.windows, now):
            return hit, key
        return None, key

    def _attestation_key(self, raw: bytes) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(raw)
        if key is None:
            key = st.raw_public_key(raw, Step.ISV_SIGNATURE, "attestation-key")
            self._keys.put(raw, key)
        return key

    # -- the whole thing ---------------------------------------------------------------------------
    def verify(
        self,
        quote: bytes | Quote,
        collateral: Collateral,
        now: datetime | float,
        *,
        policy: Policy | None = None,
        pck_chain: bytes | str | None = None,
    ) -> Verdict:
        """Verify ``quote`` against ``collateral`` at ``now``; return the policy-evaluated Verdict.

        Raises VerificationError (a failed check: ``.step``, ``.reason``), ParseError (not a
        quote) or CollateralError (collateral that does not parse). ``pck_chain`` supplies the PCK
        chain for quotes with certification data types 1-3 (else the collateral's
        ``pck_certificate_chain`` is used).
        """
        now_dt = as_datetime(now)
        q = quote if isinstance(quote, Quote) else Quote.from_bytes(quote)
        st.check_quote_format(q)
        chain_pem = _pck_chain_of(q, pck_chain, collateral)
        pck, pck_key = self._cached_pck(chain_pem, collateral, now_dt)
        chain = st.load_pck_chain(chain_pem, self.root) if pck is None else None  # root pinning first
        vc = self.verify_collateral(collateral, now_dt)
        if chain is not None:
            pck = st.check_pck_chain(chain, now_dt, vc.root_crl, vc.pck_crl)
            pck = dataclasses.replace(pck, windows=(intersect(pck.windows),))
            self._pck.put(pck_key, pck)
        assert pck is not None
        ext = pck.extensions
        st.check_platform_match(q, ext, vc.tcb_info, vc.qe_identity)
        qe_cert = q.signature_data.qe_cert
        raw = _raw_regions(quote, q)
        qe_bytes = raw[1] if raw is not None else qe_cert.qe_report.to_bytes()
        qe_key = (pck_key, qe_bytes, qe_cert.qe_report_signature)
        qe_hit = self._qe.get(qe_key)
        if qe_hit is None:
            st.check_qe_report_signature(pck.key, qe_bytes, qe_cert.qe_report_signature)
        st.check_qe_report_data(qe_cert.qe_report, q.signature_data.attestation_key, qe_cert.qe_auth_data)
        if qe_hit is None:
            qe_hit = _QeCheck(st.check_qe_identity(qe_cert.qe_report, vc.qe_identity))
            self._qe.put(qe_key, qe_hit)
        att_key = self._attestation_key(q.signature_data.attestation_key)
        st.check_isv_signature(
            att_key, raw[0] if raw is not None else q.signed_bytes, q.signature_data.signature
        )
        body = q.body
        tdx_key = (
            (body.tee_tcb_svn, body.mr_signer_seam, body.seam_attributes)
            if isinstance(body, (TdReport10, TdReport15))
            else None
        )
        ptcb = self._tcb.get((pck_key, tdx_key))
        if ptcb is None:
            ptcb = platform_tcb(q, pck, vc.tcb_info)
            self._tcb.put((pck_key, tdx_key), ptcb)
        return _verdict(q, pck, vc, ptcb, qe_hit.level, policy or self.policy, now_dt)


def _raw_regions(quote: bytes | Quote, q: Quote) -> tuple[bytes, bytes] | None:
    """The signed header||body and the QE report as they sit in the input bytes (no re-encoding).

    ``None`` when the caller passed a parsed Quote. Offsets follow dcap-quote.md §1.3/§1.5; the
    parser has already validated every length, so slicing cannot run past the data.
    """
    if isinstance(quote, Quote):
        return None
    signed_len = 48 + (6 if q.body_type is not None else 0) + type(q.body).SIZE
    qe_off = signed_len + 4 + 128 + (6 if q.version >= 4 else 0)
    return quote[:signed_len], quote[qe_off : qe_off + 384]


def _pck_chain_of(q: Quote, explicit: bytes | str | None, collateral: Collateral) -> bytes:
    if explicit is not None:
        return explicit.encode() if isinstance(explicit, str) else explicit
    try:
        in_quote = q.pck_chain_pem
    except ParseError as exc:
        raise st.fail(Step.PCK_CHAIN, "pck-chain-malformed", str(exc)) from None
    if in_quote is not None:
        return in_quote
    if collateral.pck_certificate_chain:
        return collateral.pck_certificate_chain.encode()
    raise st.fail(
        Step.PCK_CHAIN,
        "pck-chain-missing",
        f"certification data type {q.certification_data.cert_type} carries no PCK chain; fetch it (--pccs)",
    )


@dataclass(frozen=True)
class PlatformTcb:
    """Steps 12-13 for one platform (and TD module): the level, its status and advisories."""

    level: TcbLevel
    status: TcbStatus
    advisory_ids: tuple[str, ...]
    module_status: TcbStatus | None
    sgx_status: TcbStatus  # QVL's SGX-only level (feeds the TD relaunch check)


def platform_tcb(q: Quote, pck: VerifiedPck, tcb_info: TcbInfo) -> PlatformTcb:
    """Steps 12-13: the platform TCB level (and TDX module identity and level)."""
    ext = pck.extensions
    body = q.body
    tee_tcb_svn = body.tee_tcb_svn if isinstance(body, (TdReport10, TdReport15)) else None
    level = tcb.match_platform_level(tcb_info, ext.tcb_components, ext.pcesvn, tee_tcb_svn)
    if level is None:
        raise st.fail(Step.TCB_LEVEL, "no-matching-tcb-level")
    platform = level.status
    advisories = list(level.advisory_ids)
    module_status: TcbStatus | None = None
    if isinstance(body, (TdReport10, TdReport15)):
        module_status, module_advisories = _tdx_module(tcb_info, body)
        if module_status is not None:
            platform = tcb.converge_module(module_status, platform)
        advisories += [a for a in module_advisories if a not in advisories]
    sgx_level = (
        level if tee_tcb_svn is None else tcb.match_sgx_level(tcb_info, ext.tcb_components, ext.pcesvn)
    )
    assert sgx_level is not None  # a level matching SGX and TDX components matches SGX alone
    return PlatformTcb(level, platform, tuple(advisories), module_status, sgx_level.status)


class _Facts(NamedTuple):
    body: Body
    status: TcbStatus
    advisory_ids: tuple[str, ...]
    qe_advisory_ids: tuple[str, ...]


def _verdict(
    q: Quote,
    pck: VerifiedPck,
    vc: VerifiedCollateral,
    p: PlatformTcb,
    qe: QeTcbLevel,
    policy: Policy,
    now: datetime,
) -> Verdict:
    """Intel's status convergence, the policy's decision, and the verdict value."""
    ext = pck.extensions
    platform = p.status
    if isinstance(q.body, TdReport15):
        try:
            platform = tcb.relaunch_status(
                q.body.tee_tcb_svn2, vc.tcb_info, p.sgx_status, p.status, p.module_status, qe.status
            )
        except LookupError as exc:
            raise st.fail(Step.TDX_MODULE, "tdx-module-unknown", str(exc)) from None
    status = converge(qe.status, platform)
    issued = min(vc.tcb_info.issue_date, vc.qe_identity.issue_date)
    rejection, warnings = policy.decide(_Facts(q.body, status, p.advisory_ids, qe.advisory_ids), now, issued)
    return Verdict(
        rejection=rejection,
        warnings=warnings,
        status=status,
        platform_status=platform,
        qe_status=qe.status,
        advisory_ids=p.advisory_ids,
        qe_advisory_ids=qe.advisory_ids,
        tcb_date=p.level.tcb_date,
        qe_tcb_date=qe.tcb_date,
        tcb_evaluation_data_number=vc.tcb_info.tcb_evaluation_data_number,
        earliest_expiration=min(w[1] for w in (*vc.windows, *pck.windows)),
        fmspc=ext.fmspc,
        pce_id=ext.pceid,
        ca_type=pck.ca_type,
        sgx_type=ext.sgx_type,
        tee="TDX" if q.is_tdx else "SGX",
        quote_version=q.version,
        body=q.body,
        crls_checked=vc.root_crl is not None and vc.pck_crl is not None,
        tdx_module_status=p.module_status,
    )


def _tdx_module(tcb_info: TcbInfo, body: TdReport10 | TdReport15) -> tuple[TcbStatus | None, tuple[str, ...]]:
    """Step 13: MRSIGNERSEAM / SEAM attributes vs the module identity; the module's TCB level."""
    ident = tcb.find_module_identity(tcb_info, body.tee_tcb_svn)
    if ident is None:
        raise st.fail(
            Step.TDX_MODULE, "tdx-module-unknown", f"no identity for TDX module {body.tee_tcb_svn[1]}"
        )
    if body.mr_signer_seam != ident.mrsigner:
        raise st.fail(Step.TDX_MODULE, "tdx-module-mrsigner-mismatch")
    mask = ident.attributes_mask
    if any((a & m) != (b & m) for a, b, m in zip(body.seam_attributes, ident.attributes, mask, strict=True)):
        raise st.fail(Step.TDX_MODULE, "tdx-module-attributes-mismatch")
    if ident.id is None:
        return None, ()
    level = tcb.match_module_level(ident, body.tee_tcb_svn)
    if level is None:
        raise st.fail(Step.TDX_MODULE, "tdx-module-tcb-not-supported")
    return level.status, level.advisory_ids


def verify(
    quote: bytes | Quote,
    collateral: Collateral,
    now: datetime | float,
    *,
    root_ca: TrustedRoot | bytes | None = None,
    policy: Policy = DEFAULT_POLICY,
    dangerous_skip_crls: bool = False,
) -> Verdict:
    """One-shot verification with a fresh :class:`Verifier` (nothing cached between calls)."""
    v = Verifier(root_ca, policy=policy, dangerous_skip_crls=dangerous_skip_crls, cache_size=0)
    return v.verify(quote, collateral, now)


__all__ = ["VerificationError", "VerifiedCollateral", "Verifier", "as_datetime", "verify"]
