"""TDX TD report bodies carried in quotes v4/v5: TD report 1.0 (584 bytes) and 1.5 (648 bytes).

Layout: DCAP ``sgx_quote_4.h`` / ``sgx_quote_5.h`` (``sgx_report2_body_t``, ``..._v1_5_t``);
``shared/specs/dcap-quote.md`` §1.5. TD report 1.5 is TD report 1.0 followed by two fields, and
:class:`TdReport15` says so by extending :class:`TdReport10`. Byte strings are kept as they appear;
SVNs are raw bytes. (The 1024-byte TDREPORT_STRUCT a TD gets from the TDX module, from which these
bodies are derived, is :mod:`~sgx_quote_helper.abi.tdx_report`.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Self, cast

from ._bytes import check_field, decoded_builder, expect_len


@dataclass(frozen=True, slots=True)
class TdReport10:
    """TD report 1.0 (584 bytes), the body of TDX quotes v4 and v5 body type 2."""

    SIZE: ClassVar[int] = 584
    BODY_TYPE: ClassVar[int] = 2
    #: field name -> size, in wire order (the dataclass fields, in the same order)
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        ("tee_tcb_svn", 16),
        ("mr_seam", 48),
        ("mr_signer_seam", 48),
        ("seam_attributes", 8),
        ("td_attributes", 8),
        ("xfam", 8),
        ("mr_td", 48),
        ("mr_config_id", 48),
        ("mr_owner", 48),
        ("mr_owner_config", 48),
        ("rtmr0", 48),
        ("rtmr1", 48),
        ("rtmr2", 48),
        ("rtmr3", 48),
        ("report_data", 64),
    )

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        for name, n in self.LAYOUT:
            check_field(type(self).__name__, name, getattr(self, name), n)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        b = expect_len(cls.__name__, data, cls.SIZE)
        decoder = _DECODERS.get(cls)
        if decoder is None:  # a subclass: field by field, with the checks
            out: dict[str, bytes] = {}
            pos = 0
            for name, n in cls.LAYOUT:
                out[name] = b[pos : pos + n]
                pos += n
            return cls(**out)
        layout, build = decoder
        # every field has its LAYOUT size by construction of the struct: no __post_init__ needed
        return cast(Self, build(*layout.unpack(b)))

    def to_bytes(self) -> bytes:
        return b"".join(getattr(self, f.name) for f in fields(self))

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0 (DEBUG)."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True, slots=True)
class TdReport15(TdReport10):
    """TD report 1.5 (648 bytes): TD report 1.0 + TEE_TCB_SVN2 + MRSERVICETD; v5 body type 3."""

    SIZE: ClassVar[int] = 648
    BODY_TYPE: ClassVar[int] = 3
    LAYOUT: ClassVar[tuple[tuple[str, int], ...]] = (
        *TdReport10.LAYOUT,
        ("tee_tcb_svn2", 16),
        ("mr_service_td", 48),
    )

    tee_tcb_svn2: bytes
    mr_service_td: bytes


def _decoder(cls: type[TdReport10]) -> tuple[struct.Struct, Callable[..., TdReport10]]:
    return struct.Struct("".join(f"{n}s" for _, n in cls.LAYOUT)), decoded_builder(cls)


#: the fields of each report in one unpack (wire order is field order), and its builder
_DECODERS = {cls: _decoder(cls) for cls in (TdReport10, TdReport15)}

__all__ = ["TdReport10", "TdReport15"]
