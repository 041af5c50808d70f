"""Intel QVL's strictness, on quotes re-signed under the simulated PKI: step 1 as
``Quote::validate()`` (header TEE type, certification data types) and step 13's SEAM attributes
compared as QVL's QuoteVerifier does (``applyMask(report, mask) == identity``).

Each rejected quote below is otherwise valid (ISV signature, QE report signature, PCK chain all
genuine), and each test verifies a control quote that differs only in the checked field, so the
rejection is the check's and not a signature's.
"""

from __future__ import annotations

import dataclasses

import pytest

from sgx_quote_helper.abi.quote import TEE_TYPE_TDX, CertificationData, Quote
from sgx_quote_helper.errors import VerificationError
from sgx_quote_helper.verify import Step, verify

from .verify_pki import NOW, SimPki, _pem, raw_sign


def _resign(p: SimPki, q: Quote) -> bytes:
    """The quote with a fresh attestation-key signature over its (edited) header || body."""
    sig = raw_sign(p.keys["att"], q.signed_bytes)
    return dataclasses.replace(
        q, signature_data=dataclasses.replace(q.signature_data, signature=sig)
    ).to_bytes()


def _reject(p: SimPki, quote: bytes, reason: str, **kw: object) -> VerificationError:
    with pytest.raises(VerificationError) as exc:
        verify(quote, p.collateral() if "c" not in kw else kw["c"], NOW, root_ca=p.root_der)  # type: ignore[arg-type]
    assert (exc.value.step, exc.value.reason) == (Step.QUOTE_FORMAT, reason), exc.value
    return exc.value


@pytest.mark.parametrize("version", [3, 4, 5])
def test_header_tee_type_must_match_the_body(version: int) -> None:
    """v3: QVL's "Quote v3 supports only SGX tee type" (the field is att_key_data_0 there)."""
    p = SimPki(quote_version=version)
    q = Quote.from_bytes(p.quote())
    assert verify(_resign(p, q), p.collateral(), NOW, root_ca=p.root_der).accepted  # control
    if version == 3:
        bad = dataclasses.replace(q, header=dataclasses.replace(q.header, tee_type=TEE_TYPE_TDX))
        _reject(p, _resign(p, bad), "tee-type-mismatch")
    for tee in (1, 0x80):
        bad = dataclasses.replace(q, header=dataclasses.replace(q.header, tee_type=tee))
        if version == 3:
            _reject(p, _resign(p, bad), "tee-type-mismatch")
        else:  # v4/v5 parsers already refuse a TEE type that names no body
            with pytest.raises(ValueError):
                Quote.from_bytes(bad.to_bytes())


def _with_cert_data(p: SimPki, cert_type: int, data: bytes) -> bytes:
    q = Quote.from_bytes(p.quote())
    qe = dataclasses.replace(q.signature_data.qe_cert, certification_data=CertificationData(cert_type, data))
    return _resign(
        p, dataclasses.replace(q, signature_data=dataclasses.replace(q.signature_data, qe_cert=qe))
    )


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("cert_type", [0, 6, 7, 99])
def test_certification_data_types_qvl_rejects_even_with_a_chain(version: int, cert_type: int) -> None:
    """Types outside 1-5 are rejected although the collateral supplies a valid PCK chain."""
    p = SimPki(quote_version=version)
    chain = _pem(p.leaf, p.ca, p.root)
    c = dataclasses.replace(p.collateral(), pck_certificate_chain=chain)
    ppid = Quote.from_bytes(
        SimPki(keys=p.keys, cert_type=3, quote_version=version).quote()
    ).certification_data
    assert verify(_with_cert_data(p, 3, ppid.data), c, NOW, root_ca=p.root_der).accepted  # control: type 3
    payload = chain.encode() + b"\0" if cert_type != 6 else ppid.data
    err = _reject(p, _with_cert_data(p, cert_type, payload), "unsupported-certification-data-type", c=c)
    assert str(cert_type) in err.detail


@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 5])
def test_certification_data_types_qvl_accepts_pass_step_1(cert_type: int) -> None:
    p = SimPki()
    chain = _pem(p.leaf, p.ca, p.root)
    c = dataclasses.replace(p.collateral(), pck_certificate_chain=chain)
    data = {1: 16, 2: 256, 3: 384}
    payload = chain.encode() + b"\0" if cert_type >= 4 else b"\xee" * data[cert_type] + bytes(20)
    assert verify(_with_cert_data(p, cert_type, payload), c, NOW, root_ca=p.root_der).accepted


# --- step 13: SEAM attributes, report side masked only --------------------------------------------
def test_seam_attributes_report_side_masked_only() -> None:
    good = SimPki(tdx=True)
    assert verify(good.quote(), good.collateral(), NOW, root_ca=good.root_der).accepted  # control
    # a report bit outside the mask is ignored
    loose = SimPki(tdx=True, seam_attributes=b"\x01" + bytes(7), module_attributes_mask="00" + "FF" * 7)
    assert verify(loose.quote(), loose.collateral(), NOW, root_ca=loose.root_der).accepted
    # inside the mask it must match
    strict = SimPki(tdx=True, seam_attributes=b"\x01" + bytes(7))
    with pytest.raises(VerificationError) as exc:
        verify(strict.quote(), strict.collateral(), NOW, root_ca=strict.root_der)
    assert (exc.value.step, exc.value.reason) == (Step.TDX_MODULE, "tdx-module-attributes-mismatch")
    # the identity's value is not masked: a bit outside its own mask matches no module, even one
    # whose report carries the same bit (masking both sides would accept this quote)
    odd = SimPki(
        tdx=True,
        seam_attributes=b"\x01" + bytes(7),
        module_attributes="01" + "00" * 7,
        module_attributes_mask="00" + "FF" * 7,
    )
    with pytest.raises(VerificationError) as exc:
        verify(odd.quote(), odd.collateral(), NOW, root_ca=odd.root_der)
    assert (exc.value.step, exc.value.reason) == (Step.TDX_MODULE, "tdx-module-attributes-mismatch")
