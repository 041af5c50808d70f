"""One case per verification step's failure, matched on VerificationError.step / .reason.

Quotes and collateral come from a test PKI (``verify_pki.SimPki``, SIMULATED names, really
signed) or from a real vector with bytes flipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest

from sgx_quote_helper.errors import ParseError, VerificationError
from sgx_quote_helper.verify.collateral import Collateral, load_dcap_qvl_json
from sgx_quote_helper.verify.status import TcbStatus
from sgx_quote_helper.verify.steps import Step
from sgx_quote_helper.verify.verifier import Verifier, verify

from .conftest import real_dir
from .verify_pki import NOW, SimPki

D = timedelta(days=1)
PAST = (NOW - 60 * D, NOW - 30 * D)
FUTURE = (NOW + 30 * D, NOW + 60 * D)


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def flip_text(text: str, index: int) -> str:
    return text[:index] + chr(ord(text[index]) ^ 0x01) + text[index + 1 :]


def test_simulated_baseline_is_up_to_date() -> None:
    p = SimPki()
    v = verify(p.quote(), p.collateral(), NOW, root_ca=p.root_der)
    assert v.status is TcbStatus.UP_TO_DATE and v.accepted and not v.warnings


Mut = Callable[[SimPki, bytes, Collateral], tuple[bytes, Collateral]]
QE_REPORT = 564  # v3: 436 + 64 + 64
QE_AUTH = 1014  # v3: QE auth data after its u16 size

CASES: list[tuple[str, dict[str, object], Mut | None, Step, str]] = [
    ("vendor", {}, lambda p, q, c: (flip(q, 12), c), Step.QUOTE_FORMAT, "unknown-qe-vendor"),
    ("leaf expired", {"leaf_window": PAST}, None, Step.PCK_CHAIN, "pck-cert-expired"),
    ("leaf not yet valid", {"leaf_window": FUTURE}, None, Step.PCK_CHAIN, "pck-cert-not-yet-valid"),
    ("crl expired", {"crl_window": PAST}, None, Step.CRL, "root-ca-crl-expired"),
    ("crl not yet valid", {"crl_window": FUTURE}, None, Step.CRL, "root-ca-crl-not-yet-valid"),
    ("pck revoked", {"revoked_pck": True}, None, Step.CRL, "pck-cert-revoked"),
    ("tcb info expired", {"info_window": PAST}, None, Step.TCB_INFO, "tcb-info-expired"),
    ("tcb info future", {"info_window": FUTURE}, None, Step.TCB_INFO, "tcb-info-not-yet-valid"),
    (
        "tcb info tampered",
        {},
        lambda p, q, c: (q, dataclasses.replace(c, tcb_info=c.tcb_info.replace('"UpToDate"', '"OutOfDate"'))),
        Step.TCB_INFO,
        "tcb-info-bad-signature",
    ),
    (
        "tcb info signature",
        {},
        lambda p, q, c: (q, dataclasses.replace(c, tcb_info_signature=flip(c.tcb_info_signature, 5))),
        Step.TCB_INFO,
        "tcb-info-bad-signature",
    ),
    (
        "qe identity tampered",
        {},
        lambda p, q, c: (
            q,
            dataclasses.replace(c, qe_identity=c.qe_identity.replace('"isvprodid":1', '"isvprodid":2')),
        ),
        Step.QE_IDENTITY,
        "qe-identity-bad-signature",
    ),
    ("qe identity expired", {"qe_window": PAST}, None, Step.QE_IDENTITY, "qe-identity-expired"),
    ("qe identity future", {"qe_window": FUTURE}, None, Step.QE_IDENTITY, "qe-identity-not-yet-valid"),
    ("signer expired", {"signer_window": PAST}, None, Step.TCB_INFO, "tcb-signing-cert-expired"),
    ("signer future", {"signer_window": FUTURE}, None, Step.TCB_INFO, "tcb-signing-cert-not-yet-valid"),
    ("fmspc", {"tcb_fmspc": bytes(6)}, None, Step.PLATFORM_MATCH, "fmspc-mismatch"),
    (
        "qe report",
        {},
        lambda p, q, c: (flip(q, QE_REPORT + 70), c),
        Step.QE_REPORT_SIGNATURE,
        "qe-report-bad-signature",
    ),
    (
        "qe auth data",
        {},
        lambda p, q, c: (flip(q, QE_AUTH), c),
        Step.QE_REPORT_DATA,
        "qe-report-data-mismatch",
    ),
    ("qe isvsvn", {"qe_isvsvn": 1}, None, Step.QE_IDENTITY_MATCH, "qe-tcb-not-supported"),
    ("isv body", {}, lambda p, q, c: (flip(q, 48 + 64), c), Step.ISV_SIGNATURE, "quote-bad-signature"),
    ("isv signature", {}, lambda p, q, c: (flip(q, 436 + 3), c), Step.ISV_SIGNATURE, "quote-bad-signature"),
]


@pytest.mark.parametrize(("name", "knobs", "mutate", "step", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_step_failure(
    name: str, knobs: dict[str, object], mutate: Mut | None, step: Step, reason: str
) -> None:
    p = SimPki(**knobs)  # type: ignore[arg-type]
    q, c = p.quote(), p.collateral()
    if mutate is not None:
        q, c = mutate(p, q, c)
    with pytest.raises(VerificationError) as exc:
        verify(q, c, NOW, root_ca=p.root_der)
    assert (exc.value.step, exc.value.reason) == (step, reason)


@pytest.mark.parametrize(("version", "tcb_version"), [(3, 2), (4, 3), (5, 3), (4, 2)])
def test_sgx_quote_versions_and_tcb_info_v2(version: int, tcb_version: int) -> None:
    p = SimPki(quote_version=version, tcb_info_version=tcb_version, platform_status="ConfigurationNeeded")
    v = verify(p.quote(), p.collateral(), NOW, root_ca=p.root_der)
    assert v.quote_version == version and v.tee == "SGX"
    assert v.status is TcbStatus.CONFIGURATION_NEEDED and v.advisory_ids == ("INTEL-SA-99999",)


def test_untrusted_root_is_the_pinning_step() -> None:
    p = SimPki()
    with pytest.raises(VerificationError) as exc:
        verify(p.quote(), p.collateral(), NOW)  # Intel's production root by default
    assert (exc.value.step, exc.value.reason) == (Step.ROOT_CA, "untrusted-root")
    other = SimPki()
    with pytest.raises(VerificationError) as exc:
        verify(p.quote(), p.collateral(), NOW, root_ca=other.root_der)
    assert (exc.value.step, exc.value.reason) == (Step.ROOT_CA, "untrusted-root")


def test_qe_and_platform_statuses_converge_like_qvl() -> None:
    p = SimPki(platform_status="ConfigurationNeeded", qe_level_status="OutOfDate")
    v = verify(p.quote(), p.collateral(), NOW, root_ca=p.root_der)
    assert v.platform_status is TcbStatus.CONFIGURATION_NEEDED and v.qe_status is TcbStatus.OUT_OF_DATE
    assert v.status is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED  # dcap-qvl would say OutOfDate
    assert v.rejection is not None and v.rejection.reason == "tcb-status"


def test_revoked_platform_level_is_a_status_not_an_error() -> None:
    p = SimPki(platform_status="Revoked")
    v = verify(p.quote(), p.collateral(), NOW, root_ca=p.root_der)
    assert v.status is TcbStatus.REVOKED and not v.accepted


def test_debug_simulated_enclave_rejected_by_policy() -> None:
    p = SimPki(debug=True)
    v = verify(p.quote(), p.collateral(), NOW, root_ca=p.root_der)
    assert v.rejection is not None and (v.rejection.step, v.rejection.reason) == ("policy", "debug")


def test_pck_revocation_survives_the_warm_cache() -> None:
    pki = SimPki()
    v = Verifier(pki.root_der)
    q = pki.quote()
    assert v.verify(q, pki.collateral(), NOW).accepted
    pki.revoked_pck = True  # same keys and certificates, a new PCK CRL listing the leaf
    with pytest.raises(VerificationError) as exc:
        v.verify(q, pki.collateral(), NOW)
    assert exc.value.reason == "pck-cert-revoked"


# --- exhaustive single-byte tampering ------------------------------------------------------------
def _assert_all_rejected(
    v: Verifier, quote: bytes, coll: Collateral, now: int | object, offsets: range
) -> None:
    for off in offsets:
        try:
            v.verify(flip(quote, off), coll, now)  # type: ignore[arg-type]
        except (VerificationError, ParseError):
            continue
        pytest.fail(f"flipping quote byte {off} was accepted")


def test_every_signed_quote_byte_of_a_simulated_quote() -> None:
    p = SimPki()
    v = Verifier(p.root_der)
    q, c = p.quote(), p.collateral()
    assert v.verify(q, c, NOW).accepted
    _assert_all_rejected(v, q, c, NOW, range(0, 432))  # header + ISV body
    _assert_all_rejected(v, q, c, NOW, range(QE_REPORT, QE_REPORT + 384 + 64 + 2 + 32))  # QE report..auth


def test_every_signed_quote_byte_of_a_real_quote() -> None:
    d = real_dir("phala-sgx-v3-processor")
    q = (d / "quote.bin").read_bytes()
    c = load_dcap_qvl_json((d / "collateral-2025-06.dcap-qvl.json").read_text())
    v = Verifier()
    _assert_all_rejected(v, q, c, 1750334400, range(0, 432))
    _assert_all_rejected(v, q, c, 1750334400, range(QE_REPORT, QE_REPORT + 384 + 64 + 2 + 32))


@pytest.mark.parametrize("field", ["tcb_info", "qe_identity"])
def test_every_byte_of_signed_collateral_text(field: str) -> None:
    p = SimPki()
    q, c = p.quote(), p.collateral()
    v = Verifier(p.root_der)
    text: str = getattr(c, field)
    for i in range(len(text)):
        t = flip_text(text, i)
        tampered = (
            dataclasses.replace(c, tcb_info=t)
            if field == "tcb_info"
            else dataclasses.replace(c, qe_identity=t)
        )
        with pytest.raises(VerificationError) as exc:
            v.verify(q, tampered, NOW)
        assert exc.value.step in (Step.TCB_INFO, Step.QE_IDENTITY)


@pytest.mark.slow
@pytest.mark.parametrize("field", ["tcb_info", "qe_identity"])
def test_every_byte_of_real_signed_collateral_text(field: str) -> None:
    d = real_dir("phala-sgx-v3-processor")
    q = (d / "quote.bin").read_bytes()
    c = load_dcap_qvl_json((d / "collateral-2025-06.dcap-qvl.json").read_text())
    v = Verifier()
    text: str = getattr(c, field)
    for i in range(len(text)):
        t = flip_text(text, i)
        tampered = (
            dataclasses.replace(c, tcb_info=t)
            if field == "tcb_info"
            else dataclasses.replace(c, qe_identity=t)
        )
        with pytest.raises(VerificationError) as exc:
            v.verify(q, tampered, 1750334400)
        assert exc.value.step in (Step.TCB_INFO, Step.QE_IDENTITY)
