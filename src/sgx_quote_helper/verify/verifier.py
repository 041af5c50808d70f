"""``verify(quote, collateral, now)``: the numbered steps strung together, with caching.

:meth:`Verifier.verify` reads top to bottom as the recipe (dcap-qvl's ``verify_impl``): steps 1
to 14 of :class:`~sgx_quote_helper.verify.steps.Step`, in order, each one call to a step
function. Caching is one layer around those calls (:meth:`Verifier._memo`), keyed by the step's
inputs, so repeated quotes from a known platform are cheap (``performance.md`` §1.6):

- verified collateral (root CA CRL, TCB Info and QE Identity with their signing chains), keyed
  by the collateral's fields and the root;
- verified PCK chains (with the PCK CRL), keyed by the chain, collateral and root;
- verified QE report signatures, attestation public keys, platform TCB levels.

Every hit re-checks the validity windows it was verified under against ``now``; outside them
the full checks run again and fail with the precise step. Nothing here reads the clock or the
network: quote bytes, collateral, root and ``now`` are parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

from ..abi.quote import Quote
from ..abi.tdreport import TdReport10, TdReport15
from ..errors import ParseError, VerificationError
from . import steps as st
from .cache import BoundedCache, intersect
from .chain import TrustedRoot, Window
from .collateral import Collateral
from .policy import DEFAULT_POLICY, Policy
from .steps import Step, VerifiedCollateral, VerifiedPck
from .verdict import Body, Verdict


def as_datetime(now: datetime | float) -> datetime:
    """``now`` as an aware UTC datetime (Unix seconds or a datetime; naive means UTC)."""
    if isinstance(now, datetime):
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return datetime.fromtimestamp(float(now), UTC)


class _Timeless(NamedTuple):
    """A cached result that does not depend on ``now`` (a signature, a key, a TCB level)."""

    value: Any
    windows: tuple[Window, ...] = ()


class Verifier:
    """A DCAP quote verifier with a pinned root, a default policy and caches.

    Example::

        v = Verifier()                                   # Intel's production root
        verdict = v.verify(quote_bytes, load_dcap_qvl_json(text), now=1750334400)
        verdict.status, verdict.accepted, verdict.violations

    ``root_ca``: another trust anchor (DER/PEM bytes or a TrustedRoot), only when given explicitly.
    ``dangerous_skip_crls``: accept collateral without CRLs (no revocation checking at all).
    ``cache_size``: entries per cache (0: cache nothing).
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
        self._caches: dict[str, BoundedCache[Any]] = {
            "pck": BoundedCache(cache_size),
            "crls": BoundedCache(cache_size),
            "collateral": BoundedCache(cache_size),
            "qe_signature": BoundedCache(cache_size * 4),
            "attestation_key": BoundedCache(cache_size * 16),
            "platform_tcb": BoundedCache(cache_size * 4),
        }

    def clear_caches(self) -> None:
        """Forget everything verified so far."""
        for c in self._caches.values():
            c.clear()

    # -- the recipe (dcap-qvl's verify_impl): every step in order ---------------------------------
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
        chain for quotes with certification data types 1-4 (else the collateral's
        ``pck_certificate_chain`` is used). A Verdict means authentic; ``verdict.violations``
        lists every policy rule it breaks (empty: accepted).
        """
        now_dt = as_datetime(now)
        q = quote if isinstance(quote, Quote) else Quote.from_bytes(quote)
        qe_cert, sig = q.signature_data.qe_cert, q.signature_data
        signed, qe_bytes = _signed_regions(quote, q)
        root, skip = self.root, self.dangerous_skip_crls
        memo = self._memo
        # 1. quote format (QVL's Quote::validate)
        st.check_quote_format(q)
        # 2-3. PCK chain (quote type 5, the caller, or the collateral): pinned root, PCK CA, leaf
        chain_pem = _pck_chain_of(q, pck_chain, collateral)
        pck: VerifiedPck = memo(
            "pck", (chain_pem, root.der), now_dt, lambda: _check_pck(chain_pem, root, now_dt)
        )
        # 4. root CA CRL and PCK CRL; the PCK CA and leaf not revoked
        crl_key = (collateral.root_ca_crl, collateral.pck_crl, chain_pem, root.der, skip)
        crls: st.VerifiedCrls = memo(
            "crls",
            crl_key,
            now_dt,
            lambda: st.check_crls(
                collateral.root_ca_crl, collateral.pck_crl, pck, root, now_dt, skip_missing=skip
            ),
        )
        # 5-6. TCB Info and QE Identity: signing chains (not revoked), signatures, windows
        vc: VerifiedCollateral = memo(
            "collateral",
            (_signed_documents(collateral), root.der, collateral.root_ca_crl),
            now_dt,
            lambda: st.check_collateral(collateral, root, crls.root_crl, now_dt),
        )
        # 7. platform match: FMSPC, PCE-ID, collateral kinds for the TEE
        st.check_platform_match(q, pck.extensions, vc.tcb_info, vc.qe_identity)
        # 8. QE report signed by the PCK key
        qe_sig = qe_cert.qe_report_signature
        memo("qe_signature", (chain_pem, qe_bytes, qe_sig), now_dt, lambda: _qe_signed(pck, qe_bytes, qe_sig))
        # 9. QE report data binds the attestation key and the QE auth data
        st.check_qe_report_data(qe_cert.qe_report, sig.attestation_key, qe_cert.qe_auth_data)
        # 10. QE report vs QE Identity (masks, MRSIGNER, ISVPRODID, ISVSVN level)
        qe_level = st.check_qe_identity(qe_cert.qe_report, vc.qe_identity)
        # 11. header || body signed by the attestation key
        att_key = memo(
            "attestation_key", sig.attestation_key, now_dt, lambda: _attestation_key(sig.attestation_key)
        )
        st.check_isv_signature(att_key.value, signed, sig.signature)
        # 12-13. platform TCB level; TDX module identity and level
        ptcb = memo(
            "platform_tcb",
            (chain_pem, collateral.tcb_info, _tdx_inputs(q.body)),
            now_dt,
            lambda: _Timeless(st.platform_tcb(q, pck.extensions, vc.tcb_info)),
        )
        # 14. Intel's status convergence (TD relaunch), then every violation of the policy
        return st.converge_and_decide(q, pck, crls, vc, ptcb.value, qe_level, policy or self.policy, now_dt)

    def verify_collateral(self, collateral: Collateral, now: datetime | float) -> VerifiedCollateral:
        """Steps 4 (root CA CRL half) to 6 on their own: the collateral's signatures and windows."""
        now_dt = as_datetime(now)
        root_crl = None
        if collateral.root_ca_crl is not None:
            root_crl, _ = st.check_root_crl(collateral.root_ca_crl, self.root, now_dt)
        elif not self.dangerous_skip_crls:
            raise st.fail(Step.CRL, "root-ca-crl-missing")
        return st.check_collateral(collateral, self.root, root_crl, now_dt)

    # -- the caching layer: one memo around step functions, keyed by their inputs -----------------
    def _memo(self, cache: str, key: Hashable, now: datetime, compute: Callable[[], V]) -> V:
        """``compute()``, or its cached result for ``key`` while ``now`` is inside its windows
        (stored with the one window inside all of them: :func:`~.cache.intersect`)."""
        c = self._caches[cache]
        hit = c.get(key)
        if hit is not None:
            value, window = hit
            if window is None:
                return cast(V, value)
            lo, hi, inclusive = window
            if lo <= now < hi or (inclusive and now == hi):
                return cast(V, value)
        value = compute()
        windows = value.windows  # type: ignore[attr-defined]
        c.put(key, (value, intersect(windows) if windows else None))
        return value


# -- step functions the recipe calls (pure: inputs in, result or VerificationError out) ----------
def _check_pck(chain_pem: bytes, root: TrustedRoot, now: datetime) -> VerifiedPck:
    """Steps 2-3, one window for the cache."""
    pck = st.check_pck_chain(st.load_pck_chain(chain_pem, root), now)
    return dataclasses.replace(pck, windows=(intersect(pck.windows),))


def _signed_documents(c: Collateral) -> Hashable:
    return (
        c.tcb_info_issuer_chain,
        c.tcb_info,
        c.tcb_info_signature,
        c.qe_identity_issuer_chain,
        c.qe_identity,
        c.qe_identity_signature,
    )


def _qe_signed(pck: VerifiedPck, qe_report: bytes, signature: bytes) -> _Timeless:
    st.check_qe_report_signature(pck.key, qe_report, signature)
    return _Timeless(True)


def _attestation_key(raw: bytes) -> _Timeless:
    return _Timeless(st.raw_public_key(raw, Step.ISV_SIGNATURE, "attestation-key"))


V = TypeVar("V")


def _signed_regions(quote: bytes | Quote, q: Quote) -> tuple[bytes, bytes]:
    """The attestation-key-signed header || body and the PCK-signed QE report, exactly as they
    sit in the input bytes (offsets from ``abi``: :attr:`Quote.regions`); re-encoded from a
    parsed Quote."""
    if isinstance(quote, Quote):
        return q.signed_bytes, q.qe_report.to_bytes()
    r = q.regions
    return quote[r.signed], quote[r.qe_report]


def _tdx_inputs(body: Body) -> Hashable:
    """The TD report fields steps 12-13 read (``None`` for an SGX enclave)."""
    if isinstance(body, (TdReport10, TdReport15)):
        return (body.tee_tcb_svn, body.mr_signer_seam, body.seam_attributes)
    return None


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
