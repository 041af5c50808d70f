"""TDREPORT_STRUCT (1024 bytes) and the TD report quote bodies, byte for byte (tdx-qgs.md §1.6)."""

from __future__ import annotations

import dataclasses

import pytest

from sgx_quote_helper.abi.tdreport import TdReport10, TdReport15
from sgx_quote_helper.abi.tdx_report import ReportMacStruct, ReportType, TdInfo, TdxReport, TeeTcbInfo
from sgx_quote_helper.errors import ParseError


def _patterned() -> bytes:
    """1024 bytes where every byte says its own offset (mod 251), so misplaced fields show."""
    return bytes(i % 251 for i in range(1024))


def test_offsets_of_every_field() -> None:
    raw = _patterned()
    r = TdxReport.from_bytes(raw)
    ms, tcb, info = r.mac_struct, r.tee_tcb_info, r.td_info
    expect = {
        # REPORTMACSTRUCT @0
        (ms.report_type_bytes, 0, 4),
        (ms.reserved1, 4, 12),
        (ms.cpu_svn, 16, 16),
        (ms.tee_tcb_info_hash, 32, 48),
        (ms.tee_info_hash, 80, 48),
        (ms.report_data, 128, 64),
        (ms.reserved2, 192, 32),
        (ms.mac, 224, 32),
        # TEE_TCB_INFO @256
        (tcb.valid, 256, 8),
        (tcb.tee_tcb_svn, 264, 16),
        (tcb.mr_seam, 280, 48),
        (tcb.mr_signer_seam, 328, 48),
        (tcb.attributes, 376, 8),
        (tcb.tee_tcb_svn2, 384, 16),
        (tcb.reserved, 400, 95),
        (r.reserved, 495, 17),
        # TDINFO @512
        (info.attributes, 512, 8),
        (info.xfam, 520, 8),
        (info.mr_td, 528, 48),
        (info.mr_config_id, 576, 48),
        (info.mr_owner, 624, 48),
        (info.mr_owner_config, 672, 48),
        (info.rtmr0, 720, 48),
        (info.rtmr1, 768, 48),
        (info.rtmr2, 816, 48),
        (info.rtmr3, 864, 48),
        (info.mr_servicetd, 912, 48),
        (info.reserved, 960, 64),
    }
    for value, off, size in expect:
        assert value == raw[off : off + size], (off, size)
    assert r.to_bytes() == raw
    assert r.report_type == ReportType(raw[0], raw[1], raw[2], raw[3])
    assert ms.mac_input == raw[:224]
    assert TdxReport.offset_of("td_info") == 512 and TeeTcbInfo.offset_of("tee_tcb_svn2") == 128


def test_version_dependent_reserved_regions() -> None:
    r = TdxReport.from_bytes(_patterned())
    assert r.td_info.reserved_for(0) == _patterned()[912:1024]  # TDX 1.0: 112 bytes @400
    assert r.td_info.reserved_for(1) == _patterned()[960:1024]  # TDX 1.5: 64 bytes @448
    assert r.tee_tcb_info.reserved_for(False) == _patterned()[384:495]  # 111 bytes @128
    assert r.tee_tcb_info.reserved_for(True) == _patterned()[400:495]


@pytest.mark.parametrize("size", [0, 1, 1023, 1025, 2048])
def test_wrong_length_rejected(size: int) -> None:
    with pytest.raises(ParseError, match="TdxReport"):
        TdxReport.from_bytes(bytes(size))


def test_wrong_field_sizes_rejected_when_building() -> None:
    r = TdxReport.from_bytes(bytes(1024))
    with pytest.raises(ParseError, match="mr_td"):
        dataclasses.replace(r.td_info, mr_td=bytes(47))
    with pytest.raises(ParseError, match="mac"):
        dataclasses.replace(r.mac_struct, mac=bytes(16))
    with pytest.raises(ParseError, match="reserved"):
        TdxReport(r.mac_struct, r.tee_tcb_info, r.td_info, reserved=bytes(16))
    with pytest.raises(ParseError, match="version"):
        ReportType(0x81, 0, 256, 0)
    with pytest.raises(ParseError):
        TdxReport.from_bytes("x" * 1024)  # type: ignore[arg-type]


def test_parts_parse_alone() -> None:
    raw = _patterned()
    assert ReportMacStruct.from_bytes(raw[:256]).to_bytes() == raw[:256]
    assert TeeTcbInfo.from_bytes(raw[256:495]).to_bytes() == raw[256:495]
    assert TdInfo.from_bytes(raw[512:]).to_bytes() == raw[512:]
    with pytest.raises(ParseError, match="TeeTcbInfo"):
        TeeTcbInfo.from_bytes(raw[256:494])


def test_td_report_15_extends_10() -> None:
    raw = bytes(i % 256 for i in range(TdReport15.SIZE))
    b15 = TdReport15.from_bytes(raw)
    assert isinstance(b15, TdReport10)
    assert TdReport15.LAYOUT[: len(TdReport10.LAYOUT)] == TdReport10.LAYOUT
    # the first 584 bytes of a 1.5 body are a 1.0 body with the same fields
    b10 = TdReport10.from_bytes(raw[:584])
    assert all(getattr(b15, n) == getattr(b10, n) for n, _ in TdReport10.LAYOUT)
    assert b15.tee_tcb_svn2 == raw[584:600] and b15.mr_service_td == raw[600:648]
    assert b15.to_bytes() == raw and b10.to_bytes() == raw[:584]
    assert [f.name for f in dataclasses.fields(b15)] == [n for n, _ in TdReport15.LAYOUT]
    with pytest.raises(ParseError, match="TdReport15"):
        TdReport15.from_bytes(raw[:584])
