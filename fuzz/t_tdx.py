"""TDX targets: the TDREPORT parser and the simulated TDQE's checks (``abi.tdx_report``, ``sim.tdqe``).

Invariant: any bytes parse as a TdxReport only when exactly 1024 long and then re-encode exactly;
the TDQE's checks refuse with EngineError (never another exception), and a report they pass yields
a quote body carrying that report's REPORTDATA and TDINFO measurements. Structured inputs re-MAC
random field changes with the platform's key, so the format checks after the MAC are reached.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

from sgx_quote_helper.abi.tdx_report import TdxReport
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.tdqe import check_report, quote_body
from sgx_quote_helper.sim.tdx_module import TdxModule, tee_info_hash, tee_tcb_info_hash

from .target import Target, ours


@cache
def _module() -> TdxModule:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-tdx-"))
    platform = Platform.init(tmp / "p", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return TdxModule.open(platform)


def check_tdreport(data: bytes) -> int:
    report = ours(TdxReport.from_bytes, data)
    if report is None:
        assert len(data) != TdxReport.SIZE, "1024 bytes must always parse"
        return 1
    assert report.to_bytes() == data, "TdxReport does not round-trip"
    shape = ours(check_report, _module(), report)
    if shape is not None:
        body = quote_body(report, shape)
        assert body.report_data == report.report_data and body.mr_td == report.td_info.mr_td
        assert body.mr_signer_seam == bytes(48)
    return 1


@cache
def tdreport_seeds() -> tuple[bytes, ...]:
    m = _module()
    return (
        m.report(b"seed", version=0).to_bytes(),
        m.report(b"seed", version=1).to_bytes(),
        b"\x81" + bytes(1023),  # Intel test_client's "zeroed report"
    )


def _resigned() -> st.SearchStrategy[bytes]:
    """A genuine report with a few bytes changed, then re-hashed and re-MAC'd."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        m = _module()
        raw = bytearray(
            m.report(draw(st.binary(max_size=64)), version=draw(st.sampled_from([0, 1]))).to_bytes()
        )
        for _ in range(draw(st.integers(0, 4))):
            raw[draw(st.integers(0, 1023))] = draw(st.integers(0, 255))
        r = TdxReport.from_bytes(bytes(raw))
        ms = dataclasses.replace(
            r.mac_struct,
            tee_tcb_info_hash=tee_tcb_info_hash(r.tee_tcb_info),
            tee_info_hash=tee_info_hash(r.td_info),
        )
        return dataclasses.replace(r, mac_struct=dataclasses.replace(ms, mac=m.mac(ms))).to_bytes()

    return build()


TDREPORT = Target(
    "tdreport",
    "abi.tdx_report.TdxReport (TDREPORT_STRUCT) and the simulated TDQE's checks and body derivation",
    check_tdreport,
    tdreport_seeds,
    max_size=1100,
    extra=_resigned,
)

__all__ = ["TDREPORT", "check_tdreport", "tdreport_seeds"]
