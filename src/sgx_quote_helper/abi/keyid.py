"""Attestation key ids and QE report info (``sgx_quote_3.h``, ``sgx_quote.h``).

- :class:`AttKeyId`: ``sgx_att_key_id_ext_t``, 256 bytes, whose first 158 bytes are the
  ``sgx_ql_att_key_id_t`` base that AESM compares with ``memcmp``.
- :class:`AttKeyIdList`: ``sgx_ql_att_key_id_list_header_t`` (8 bytes) + n x 256.
- :class:`QeReportInfo`: ``sgx_ql_qe_report_info_t``, 960 bytes: nonce, app target info, QE report.

See ``shared/specs/aesm-protocol.md`` §4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ParseError
from ._bytes import check_field, expect_len
from .report import Report, TargetInfo

# sgx_ql_attestation_algorithm_id_t
ALG_EPID = 0
ALG_RESERVED_1 = 1  # EPID linkable
ALG_ECDSA_P256 = 2
ALG_ECDSA_P384 = 3

#: MRSIGNER of Intel's production QE3 (sgx_ql_core_wrapper.cpp)
QE3_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
QE3_PROD_ID = 1


@dataclass(frozen=True, slots=True)
class AttKeyId:
    """``sgx_att_key_id_ext_t`` (256 bytes). ``base`` (the first 158 bytes) identifies the key."""

    SIZE: ClassVar[int] = 256
    BASE_SIZE: ClassVar[int] = 158

    id: int = 0
    version: int = 0
    mrsigner_length: int = 32
    mrsigner: bytes = QE3_MRSIGNER + bytes(16)  # 48-byte field
    prod_id: int = QE3_PROD_ID
    extended_prod_id: bytes = bytes(16)
    config_id: bytes = bytes(64)
    family_id: bytes = bytes(16)
    algorithm_id: int = ALG_ECDSA_P256
    spid: bytes = bytes(16)
    att_key_type: int = 0
    reserved: bytes = bytes(80)

    def __post_init__(self) -> None:
        check_field("AttKeyId", "mrsigner", self.mrsigner, 48)
        check_field("AttKeyId", "extended_prod_id", self.extended_prod_id, 16)
        check_field("AttKeyId", "config_id", self.config_id, 64)
        check_field("AttKeyId", "family_id", self.family_id, 16)
        check_field("AttKeyId", "spid", self.spid, 16)
        check_field("AttKeyId", "reserved", self.reserved, 80)

    @classmethod
    def ecdsa_p256_qe3(cls) -> AttKeyId:
        """The one key id Intel's ECDSA QE3 offers (what ``sgx_ql_get_keyid`` writes)."""
        return cls()

    @classmethod
    def from_bytes(cls, data: bytes) -> AttKeyId:
        b = expect_len("AttKeyId", data, cls.SIZE)
        id_, version, mrsigner_length = struct.unpack_from("<HHH", b, 0)
        return cls(
            id=id_,
            version=version,
            mrsigner_length=mrsigner_length,
            mrsigner=b[6:54],
            prod_id=struct.unpack_from("<I", b, 54)[0],
            extended_prod_id=b[58:74],
            config_id=b[74:138],
            family_id=b[138:154],
            algorithm_id=struct.unpack_from("<I", b, 154)[0],
            spid=b[158:174],
            att_key_type=struct.unpack_from("<H", b, 174)[0],
            reserved=b[176:256],
        )

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                struct.pack("<HHH", self.id, self.version, self.mrsigner_length),
                self.mrsigner,
                struct.pack("<I", self.prod_id),
                self.extended_prod_id,
                self.config_id,
                self.family_id,
                struct.pack("<I", self.algorithm_id),
                self.spid,
                struct.pack("<H", self.att_key_type),
                self.reserved,
            )
        )

    @property
    def base(self) -> bytes:
        """The 158-byte ``sgx_ql_att_key_id_t`` that AESM matches key ids by."""
        return self.to_bytes()[: self.BASE_SIZE]


@dataclass(frozen=True, slots=True)
class AttKeyIdList:
    """SelectAttKeyID's list: header ``{u16 id=0; u16 version=0; u32 n}`` then n x 256 bytes."""

    HEADER_SIZE: ClassVar[int] = 8

    key_ids: tuple[AttKeyId, ...]
    id: int = 0
    version: int = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> AttKeyIdList:
        if len(data) < cls.HEADER_SIZE:
            raise ParseError("AttKeyIdList", len(data), f"header needs 8 bytes, got {len(data)}")
        id_, version, n = struct.unpack_from("<HHI", data, 0)
        expected = cls.HEADER_SIZE + n * AttKeyId.SIZE
        if len(data) != expected:
            raise ParseError(
                "AttKeyIdList",
                min(len(data), expected),
                f"{n} entries need {expected} bytes, got {len(data)}",
            )
        ids = tuple(AttKeyId.from_bytes(data[8 + i * 256 : 8 + (i + 1) * 256]) for i in range(n))
        return cls(ids, id_, version)

    def to_bytes(self) -> bytes:
        head = struct.pack("<HHI", self.id, self.version, len(self.key_ids))
        return head + b"".join(k.to_bytes() for k in self.key_ids)


@dataclass(frozen=True, slots=True)
class QeReportInfo:
    """``sgx_ql_qe_report_info_t`` (960 bytes): nonce (16) | app target info (512) | QE report (432)."""

    SIZE: ClassVar[int] = 960

    nonce: bytes
    app_enclave_target_info: TargetInfo
    qe_report: bytes = bytes(Report.SIZE)  # raw: all zero in requests

    def __post_init__(self) -> None:
        check_field("QeReportInfo", "nonce", self.nonce, 16)
        check_field("QeReportInfo", "qe_report", self.qe_report, Report.SIZE)

    @classmethod
    def from_bytes(cls, data: bytes) -> QeReportInfo:
        b = expect_len("QeReportInfo", data, cls.SIZE)
        return cls(b[0:16], TargetInfo.from_bytes(b[16:528]), b[528:960])

    def to_bytes(self) -> bytes:
        return self.nonce + self.app_enclave_target_info.to_bytes() + self.qe_report

    def with_qe_report(self, report: Report) -> QeReportInfo:
        return QeReportInfo(self.nonce, self.app_enclave_target_info, report.to_bytes())


__all__ = [
    "ALG_ECDSA_P256",
    "ALG_ECDSA_P384",
    "ALG_EPID",
    "ALG_RESERVED_1",
    "QE3_MRSIGNER",
    "QE3_PROD_ID",
    "AttKeyId",
    "AttKeyIdList",
    "QeReportInfo",
]
