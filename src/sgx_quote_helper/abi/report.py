"""SGX REPORT, REPORT body and TARGETINFO (``sgx_report.h``): 384, 432 and 512 bytes.

Layouts: ``shared/specs/aesm-protocol.md`` §4 and ``shared/specs/dcap-quote.md`` §1.2. All integers
little-endian. The MACed region of a report is its 384-byte body (:attr:`Report.mac_data`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._bytes import check_field, decoded_builder, expect_len

# ATTRIBUTES.flags bits (SDM vol. 3D, SECS.ATTRIBUTES)
FLAG_INIT = 0x01
FLAG_DEBUG = 0x02
FLAG_MODE64BIT = 0x04
FLAG_PROVISIONKEY = 0x10
FLAG_EINITTOKENKEY = 0x20
FLAG_KSS = 0x80


@dataclass(frozen=True, slots=True)
class Attributes:
    """SGX ATTRIBUTES: ``flags`` (u64) and ``xfrm`` (u64), 16 bytes."""

    SIZE: ClassVar[int] = 16
    flags: int = FLAG_INIT | FLAG_MODE64BIT
    xfrm: int = 0x3

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        flags, xfrm = struct.unpack("<QQ", expect_len("Attributes", data, cls.SIZE))
        return cls(flags, xfrm)

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.flags, self.xfrm)

    @property
    def debug(self) -> bool:
        return bool(self.flags & FLAG_DEBUG)


_Z16 = bytes(16)
_Z32 = bytes(32)
_Z64 = bytes(64)


@dataclass(frozen=True, slots=True)
class ReportBody:
    """``sgx_report_body_t`` (384 bytes): the enclave identity an EREPORT attests.

    The same layout is the ISV enclave body of an SGX quote and the QE report body inside it.
    """

    SIZE: ClassVar[int] = 384

    cpu_svn: bytes = _Z16
    misc_select: int = 0
    isv_ext_prod_id: bytes = _Z16
    attributes: Attributes = field(default_factory=Attributes)
    mr_enclave: bytes = _Z32
    mr_signer: bytes = _Z32
    config_id: bytes = _Z64
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    isv_family_id: bytes = _Z16
    report_data: bytes = _Z64
    # reserved areas are kept so that any 384 bytes round-trip exactly
    reserved1: bytes = bytes(12)
    reserved2: bytes = _Z32
    reserved3: bytes = _Z32
    reserved4: bytes = bytes(42)

    def __post_init__(self) -> None:
        for name, size in _BODY_FIELDS:
            check_field("ReportBody", name, getattr(self, name), size)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportBody:
        return _decode_body(_BODY.unpack(expect_len("ReportBody", data, cls.SIZE)))

    @classmethod
    def unpack_from(cls, data: bytes, offset: int) -> ReportBody:
        """The body at ``data[offset : offset + 384]``, which the caller has checked is there
        (quote decoding); :class:`struct.error` if it is not."""
        return _decode_body(_BODY.unpack_from(data, offset))

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                self.cpu_svn,
                self.misc_select.to_bytes(4, "little"),
                self.reserved1,
                self.isv_ext_prod_id,
                self.attributes.to_bytes(),
                self.mr_enclave,
                self.reserved2,
                self.mr_signer,
                self.reserved3,
                self.config_id,
                self.isv_prod_id.to_bytes(2, "little"),
                self.isv_svn.to_bytes(2, "little"),
                self.config_svn.to_bytes(2, "little"),
                self.reserved4,
                self.isv_family_id,
                self.report_data,
            )
        )

    @property
    def debug(self) -> bool:
        return self.attributes.debug


#: sgx_report_body_t in byte order (ATTRIBUTES as its two u64s)
_BODY = struct.Struct("<16sI12s16sQQ32s32s32s32s64sHHH42s16s64s")
_build_body = decoded_builder(ReportBody)
_build_attributes = decoded_builder(Attributes)


def _decode_body(values: tuple[Any, ...]) -> ReportBody:
    (
        cpu_svn, misc_select, reserved1, isv_ext_prod_id, flags, xfrm, mr_enclave, reserved2,
        mr_signer, reserved3, config_id, isv_prod_id, isv_svn, config_svn, reserved4,
        isv_family_id, report_data,
    ) = values  # fmt: skip
    # every field has its size by construction of _BODY: __post_init__'s checks would only
    # repeat it (this is the hot path of every quote parse)
    return _build_body(
        cpu_svn, misc_select, isv_ext_prod_id, _build_attributes(flags, xfrm), mr_enclave,
        mr_signer, config_id, isv_prod_id, isv_svn, config_svn, isv_family_id, report_data,
        reserved1, reserved2, reserved3, reserved4,
    )  # fmt: skip


_BODY_FIELDS = (
    ("cpu_svn", 16),
    ("isv_ext_prod_id", 16),
    ("mr_enclave", 32),
    ("mr_signer", 32),
    ("config_id", 64),
    ("isv_family_id", 16),
    ("report_data", 64),
    ("reserved1", 12),
    ("reserved2", 32),
    ("reserved3", 32),
    ("reserved4", 42),
)


@dataclass(frozen=True, slots=True)
class Report:
    """``sgx_report_t`` (432 bytes): body (384, MACed) | key_id (32) | mac (16)."""

    SIZE: ClassVar[int] = 432
    MAC_DATA_SIZE: ClassVar[int] = 384

    body: ReportBody
    key_id: bytes = _Z32
    mac: bytes = _Z16

    def __post_init__(self) -> None:
        check_field("Report", "key_id", self.key_id, 32)
        check_field("Report", "mac", self.mac, 16)

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        b = expect_len("Report", data, cls.SIZE)
        return cls(ReportBody.from_bytes(b[:384]), b[384:416], b[416:432])

    def to_bytes(self) -> bytes:
        return self.body.to_bytes() + self.key_id + self.mac

    @property
    def mac_data(self) -> bytes:
        """The bytes the MAC covers: the 384-byte body."""
        return self.body.to_bytes()


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """``sgx_target_info_t`` (512 bytes): names the enclave a REPORT is made for."""

    SIZE: ClassVar[int] = 512

    mr_enclave: bytes = _Z32
    attributes: Attributes = field(default_factory=Attributes)
    config_svn: int = 0
    misc_select: int = 0
    config_id: bytes = _Z64
    reserved1: bytes = bytes(2)
    reserved2: bytes = bytes(8)
    reserved3: bytes = bytes(384)

    def __post_init__(self) -> None:
        check_field("TargetInfo", "mr_enclave", self.mr_enclave, 32)
        check_field("TargetInfo", "config_id", self.config_id, 64)
        check_field("TargetInfo", "reserved1", self.reserved1, 2)
        check_field("TargetInfo", "reserved2", self.reserved2, 8)
        check_field("TargetInfo", "reserved3", self.reserved3, 384)

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        b = expect_len("TargetInfo", data, cls.SIZE)
        return cls(
            mr_enclave=b[0:32],
            attributes=Attributes.from_bytes(b[32:48]),
            reserved1=b[48:50],
            config_svn=int.from_bytes(b[50:52], "little"),
            misc_select=int.from_bytes(b[52:56], "little"),
            reserved2=b[56:64],
            config_id=b[64:128],
            reserved3=b[128:512],
        )

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                self.mr_enclave,
                self.attributes.to_bytes(),
                self.reserved1,
                self.config_svn.to_bytes(2, "little"),
                self.misc_select.to_bytes(4, "little"),
                self.reserved2,
                self.config_id,
                self.reserved3,
            )
        )

    @property
    def is_zero(self) -> bool:
        return self.to_bytes() == bytes(self.SIZE)


__all__ = [
    "FLAG_DEBUG",
    "FLAG_EINITTOKENKEY",
    "FLAG_INIT",
    "FLAG_KSS",
    "FLAG_MODE64BIT",
    "FLAG_PROVISIONKEY",
    "Attributes",
    "Report",
    "ReportBody",
    "TargetInfo",
]
