"""abi.report / abi.keyid: sizes, offsets, round trips and refusals."""

from __future__ import annotations

import pytest

from sgx_quote_helper.abi.keyid import QE3_MRSIGNER, AttKeyId, AttKeyIdList, QeReportInfo
from sgx_quote_helper.abi.report import Attributes, Report, ReportBody, TargetInfo
from sgx_quote_helper.errors import ParseError


def patterned(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


@pytest.mark.parametrize("cls", [ReportBody, Report, TargetInfo, AttKeyId, QeReportInfo, Attributes])
def test_round_trip_any_bytes(cls: type) -> None:
    raw = patterned(cls.SIZE)
    obj = cls.from_bytes(raw)
    assert obj.to_bytes() == raw
    assert len(cls().to_bytes() if cls in (ReportBody, TargetInfo, AttKeyId, Attributes) else raw) == cls.SIZE


@pytest.mark.parametrize("cls", [ReportBody, Report, TargetInfo, AttKeyId, QeReportInfo])
@pytest.mark.parametrize("delta", [-1, 1, -100])
def test_wrong_length_refused_with_structure_name(cls: type, delta: int) -> None:
    with pytest.raises(ParseError) as info:
        cls.from_bytes(bytes(cls.SIZE + delta))
    assert info.value.structure == cls.__name__


def test_report_body_offsets() -> None:
    raw = bytearray(384)
    raw[64:96] = b"\x11" * 32  # mr_enclave
    raw[128:160] = b"\x22" * 32  # mr_signer
    raw[256:258] = (0x1234).to_bytes(2, "little")
    raw[258:260] = (7).to_bytes(2, "little")
    raw[48] = 0x07  # INIT | DEBUG | MODE64BIT
    raw[320:384] = b"\x33" * 64
    body = ReportBody.from_bytes(bytes(raw))
    assert body.mr_enclave == b"\x11" * 32
    assert body.mr_signer == b"\x22" * 32
    assert body.isv_prod_id == 0x1234 and body.isv_svn == 7
    assert body.debug is True
    assert body.report_data == b"\x33" * 64


def test_report_mac_region_is_body() -> None:
    raw = patterned(432)
    report = Report.from_bytes(raw)
    assert report.mac_data == raw[:384]
    assert report.key_id == raw[384:416] and report.mac == raw[416:432]


def test_target_info_offsets() -> None:
    raw = bytearray(512)
    raw[0:32] = b"\xaa" * 32
    raw[52:56] = (5).to_bytes(4, "little")
    ti = TargetInfo.from_bytes(bytes(raw))
    assert ti.mr_enclave == b"\xaa" * 32 and ti.misc_select == 5


def test_builder_refuses_wrong_field_sizes() -> None:
    with pytest.raises(ParseError):
        ReportBody(mr_enclave=b"short")
    with pytest.raises(ParseError):
        Report(ReportBody(), key_id=b"x")


def test_qe3_key_id_matches_intel_layout() -> None:
    raw = AttKeyId.ecdsa_p256_qe3().to_bytes()
    assert len(raw) == 256
    assert raw[0:6] == bytes([0, 0, 0, 0, 32, 0])
    assert raw[6:38] == QE3_MRSIGNER and raw[38:54] == bytes(16)
    assert raw[54:58] == (1).to_bytes(4, "little")
    assert raw[154:158] == (2).to_bytes(4, "little")
    assert raw[158:] == bytes(98)
    assert AttKeyId.from_bytes(raw).base == raw[:158]


def test_key_id_list() -> None:
    key = AttKeyId.ecdsa_p256_qe3()
    lst = AttKeyIdList((key, key))
    raw = lst.to_bytes()
    assert raw[:8] == bytes([0, 0, 0, 0, 2, 0, 0, 0]) and len(raw) == 8 + 512
    assert AttKeyIdList.from_bytes(raw) == lst
    with pytest.raises(ParseError):
        AttKeyIdList.from_bytes(raw[:-1])
    with pytest.raises(ParseError):
        AttKeyIdList.from_bytes(b"\x00" * 4)


def test_qe_report_info_layout() -> None:
    raw = patterned(960)
    info = QeReportInfo.from_bytes(raw)
    assert info.nonce == raw[:16]
    assert info.app_enclave_target_info.to_bytes() == raw[16:528]
    assert info.qe_report == raw[528:]
    replaced = info.with_qe_report(Report.from_bytes(bytes(432)))
    assert replaced.to_bytes()[:528] == raw[:528] and replaced.qe_report == bytes(432)
