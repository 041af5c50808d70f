"""TDREPORT_STRUCT: the 1024-byte report the TDX module gives a TD (TDG.MR.REPORT), byte for byte.

Layout (``intel/linux-sgx:common/inc/sgx_report2.h``; DCAP ``sgx_quote_4.h``, ``sgx_quote_5.h``;
``shared/specs/tdx-qgs.md`` §1.6)::

    @0    REPORTMACSTRUCT (256)  report_type (type u8, subtype u8, version u8, reserved u8) @0,
                                 reserved1 (12) @4, cpu_svn (16) @16, tee_tcb_info_hash (48) @32,
                                 tee_info_hash (48) @80, report_data (64) @128, reserved2 (32) @192,
                                 mac (32) @224
    @256  TEE_TCB_INFO (239)     valid (8) @0, tee_tcb_svn (16) @8, mr_seam (48) @24,
                                 mr_signer_seam (48) @72, attributes (8) @120,
                                 TDX 1.5: tee_tcb_svn2 (16) @128, reserved (95) @144
                                 (TDX 1.0: reserved (111) @128)
    @495  reserved (17)
    @512  TDINFO (512)           attributes (8) @0, xfam (8) @8, mr_td @16, mr_config_id @64,
                                 mr_owner @112, mr_owner_config @160, rtmr0..3 @208 (48 each),
                                 TDX 1.5: mr_servicetd (48) @400, reserved (64) @448
                                 (TDX 1.0: reserved (112) @400)

The report version (``report_type.version``) says which layout applies: 0 = TDX 1.0, 1 = TDX 1.5.
Like Intel's TDQE (which reads every report through the 1.5 structures) we keep one structure per
part with the 1.5 field names; :meth:`TdInfo.reserved_for` and :meth:`TeeTcbInfo.reserved_for`
give the bytes that must be zero under each version. Parsing is structural (any 1024 bytes parse
and re-encode to the same bytes); what a quoting enclave accepts is decided by the TDQE
(:mod:`sgx_quote_helper.sim.tdqe`). No crypto here: the hashes and the MAC are computed by ``sim``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Self

from ..errors import ParseError
from ._bytes import check_field, expect_len

#: REPORTMACSTRUCT.report_type.type of a TDX report
TDX_REPORT_TYPE = 0x81
#: report_type.version: TDX 1.0 layout / TDX 1.5 layout
TDX_REPORT_VERSION_10 = 0
TDX_REPORT_VERSION_15 = 1
#: TEE_TCB_INFO.valid of a TDX 1.0 report (0x1FF) and of a 1.5 one with TEE_TCB_SVN2 (0x301FF), LE
TEE_TCB_INFO_VALID_10 = (0x1FF).to_bytes(8, "little")
TEE_TCB_INFO_VALID_15 = (0x301FF).to_bytes(8, "little")


class _Fixed:
    """A structure of fixed-size byte fields laid out in ``LAYOUT`` order (no padding)."""

    __slots__ = ()
    SIZE: ClassVar[int]
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]]

    def _check(self) -> None:
        for name, n in self.LAYOUT:
            check_field(type(self).__name__, name, getattr(self, name), n)

    @classmethod
    def _split(cls, data: bytes, offset: int = 0) -> dict[str, bytes]:
        b = expect_len(cls.__name__, data, cls.SIZE, offset)
        out: dict[str, bytes] = {}
        pos = 0
        for name, n in cls.LAYOUT:
            out[name] = b[pos : pos + n]
            pos += n
        return out

    def to_bytes(self) -> bytes:
        return b"".join(getattr(self, name) for name, _ in self.LAYOUT)

    @classmethod
    def offset_of(cls, field: str) -> int:
        """Byte offset of ``field`` within this structure."""
        pos = 0
        for name, n in cls.LAYOUT:
            if name == field:
                return pos
            pos += n
        raise KeyError(field)


@dataclass(frozen=True, slots=True)
class ReportType:
    """``TEE_REPORT_TYPE``: type (0x81 = TDX), subtype, version, reserved (one byte each)."""

    type: int = TDX_REPORT_TYPE
    subtype: int = 0
    version: int = TDX_REPORT_VERSION_10
    reserved: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or not 0 <= v <= 0xFF:
                raise ParseError("ReportType", 0, f"field {f.name} must be a byte value 0..255, got {v!r}")

    def to_bytes(self) -> bytes:
        return bytes((self.type, self.subtype, self.version, self.reserved))

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportType:
        b = expect_len("ReportType", data, 4)
        return cls(b[0], b[1], b[2], b[3])


@dataclass(frozen=True, slots=True)
class ReportMacStruct(_Fixed):
    """REPORTMACSTRUCT (256 bytes): the MAC'd part of a TDREPORT."""

    SIZE: ClassVar[int] = 256
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        ("report_type_bytes", 4),
        ("reserved1", 12),
        ("cpu_svn", 16),
        ("tee_tcb_info_hash", 48),
        ("tee_info_hash", 48),
        ("report_data", 64),
        ("reserved2", 32),
        ("mac", 32),
    )
    #: the MAC covers everything before the mac field
    MAC_OFFSET: ClassVar[int] = 224

    report_type_bytes: bytes
    reserved1: bytes
    cpu_svn: bytes
    tee_tcb_info_hash: bytes
    tee_info_hash: bytes
    report_data: bytes
    reserved2: bytes
    mac: bytes

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportMacStruct:
        return cls(**cls._split(data))

    @property
    def report_type(self) -> ReportType:
        return ReportType.from_bytes(self.report_type_bytes)

    @property
    def mac_input(self) -> bytes:
        """The 224 bytes the MAC is computed over."""
        return self.to_bytes()[: self.MAC_OFFSET]


@dataclass(frozen=True, slots=True)
class TeeTcbInfo(_Fixed):
    """TEE_TCB_INFO (239 bytes): the TDX module's identity and TCB."""

    SIZE: ClassVar[int] = 239
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        ("valid", 8),
        ("tee_tcb_svn", 16),
        ("mr_seam", 48),
        ("mr_signer_seam", 48),
        ("attributes", 8),
        ("tee_tcb_svn2", 16),
        ("reserved", 95),
    )

    valid: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    attributes: bytes
    tee_tcb_svn2: bytes
    reserved: bytes

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_bytes(cls, data: bytes) -> TeeTcbInfo:
        return cls(**cls._split(data, TdxReport.offset_of("tee_tcb_info")))

    def reserved_for(self, valid_svn2: bool) -> bytes:
        """The bytes that must be zero: ``reserved``, plus ``tee_tcb_svn2`` when the valid mask does
        not mark it (TDX 1.0 has 111 reserved bytes there)."""
        return self.reserved if valid_svn2 else self.tee_tcb_svn2 + self.reserved


@dataclass(frozen=True, slots=True)
class TdInfo(_Fixed):
    """TDINFO (512 bytes): the TD's measurements and attributes."""

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        ("attributes", 8),
        ("xfam", 8),
        ("mr_td", 48),
        ("mr_config_id", 48),
        ("mr_owner", 48),
        ("mr_owner_config", 48),
        ("rtmr0", 48),
        ("rtmr1", 48),
        ("rtmr2", 48),
        ("rtmr3", 48),
        ("mr_servicetd", 48),
        ("reserved", 64),
    )

    attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    mr_servicetd: bytes
    reserved: bytes

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_bytes(cls, data: bytes) -> TdInfo:
        return cls(**cls._split(data, TdxReport.offset_of("td_info")))

    def reserved_for(self, version: int) -> bytes:
        """The bytes that must be zero under report ``version``: 112 for TDX 1.0 (MRSERVICETD does
        not exist there), 64 for TDX 1.5 (``TD_INFO_RESERVED_BYTES_V1`` / ``_V1_5``)."""
        return self.mr_servicetd + self.reserved if version == TDX_REPORT_VERSION_10 else self.reserved


@dataclass(frozen=True, slots=True)
class TdxReport:
    """TDREPORT_STRUCT (1024 bytes)."""

    SIZE: ClassVar[int] = 1024
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        ("mac_struct", ReportMacStruct.SIZE),
        ("tee_tcb_info", TeeTcbInfo.SIZE),
        ("reserved", 17),
        ("td_info", TdInfo.SIZE),
    )

    mac_struct: ReportMacStruct
    tee_tcb_info: TeeTcbInfo
    td_info: TdInfo
    reserved: bytes = bytes(17)

    def __post_init__(self) -> None:
        check_field("TdxReport", "reserved", self.reserved, 17)

    @classmethod
    def offset_of(cls, field: str) -> int:
        pos = 0
        for name, n in cls.LAYOUT:
            if name == field:
                return pos
            pos += n
        raise KeyError(field)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        b = expect_len("TdxReport", data, cls.SIZE)
        return cls(
            mac_struct=ReportMacStruct.from_bytes(b[0:256]),
            tee_tcb_info=TeeTcbInfo.from_bytes(b[256:495]),
            reserved=b[495:512],
            td_info=TdInfo.from_bytes(b[512:1024]),
        )

    def to_bytes(self) -> bytes:
        return (
            self.mac_struct.to_bytes()
            + self.tee_tcb_info.to_bytes()
            + self.reserved
            + self.td_info.to_bytes()
        )

    @property
    def report_type(self) -> ReportType:
        return self.mac_struct.report_type

    @property
    def report_data(self) -> bytes:
        return self.mac_struct.report_data


__all__ = [
    "TDX_REPORT_TYPE",
    "TDX_REPORT_VERSION_10",
    "TDX_REPORT_VERSION_15",
    "TEE_TCB_INFO_VALID_10",
    "TEE_TCB_INFO_VALID_15",
    "ReportMacStruct",
    "ReportType",
    "TdInfo",
    "TdxReport",
    "TeeTcbInfo",
]
