"""QE Identity (enclave identity v2; ids ``QE``, ``TD_QE``, ``QVE``) parsed from its signed text.

Layout: ``shared/specs/dcap-quote.md`` §3.2. Levels are sorted by ISVSVN descending. The MISCSELECT
hex strings are the report's bytes in order, so they decode as a little-endian u32 (as QVL's
``vectorToUint32`` and dcap-qvl do: ``"01000000"`` is MISCSELECT 1); ATTRIBUTES stay 16 raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..abi._bytes import decoded_builder
from ..errors import CollateralError
from ._json import date_or_none, get, get_advisories, get_date, get_hex, get_int, loads_object
from .status import TcbStatus

_W = "QE Identity"


@dataclass(frozen=True, slots=True)
class QeTcbLevel:
    """One QE Identity ``tcbLevels`` entry."""

    isvsvn: int
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """A parsed ``enclaveIdentity`` body plus the exact text it was parsed from."""

    text: str
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[QeTcbLevel, ...]

    @classmethod
    def parse(cls, text: str) -> QeIdentity:
        """Parse the signed ``enclaveIdentity`` JSON text; CollateralError on anything else."""
        obj = loads_object(text, _W)
        ident = get(obj, "id", str, _W)
        if ident not in ("QE", "TD_QE", "QVE"):
            raise CollateralError(f"QE Identity: unknown id {ident!r}")
        version = get_int(obj, "version", _W)
        if version not in (2, 3):
            raise CollateralError(f"QE Identity: unsupported version {version}")
        levels: list[QeTcbLevel] = []
        for item in get(obj, "tcbLevels", list, _W):
            plain = _plain_level(item)
            if plain is not None:
                levels.append(plain)
                continue
            if not isinstance(item, dict):
                raise CollateralError("QE Identity: tcbLevels entries must be objects")
            levels.append(
                QeTcbLevel(
                    isvsvn=get_int(get(item, "tcb", dict, _W), "isvsvn", _W, 0, 0xFFFF),
                    tcb_date=get_date(item, "tcbDate", _W),
                    status=TcbStatus.parse(get(item, "tcbStatus", str, _W), _W),
                    advisory_ids=get_advisories(item, _W),
                )
            )
        if not levels:
            raise CollateralError("QE Identity: no tcbLevels")
        levels.sort(key=lambda lv: lv.isvsvn, reverse=True)
        return cls(
            text=text,
            id=ident,
            version=version,
            issue_date=get_date(obj, "issueDate", _W),
            next_update=get_date(obj, "nextUpdate", _W),
            tcb_evaluation_data_number=get_int(obj, "tcbEvaluationDataNumber", _W),
            miscselect=int.from_bytes(get_hex(obj, "miscselect", 4, _W), "little"),
            miscselect_mask=int.from_bytes(get_hex(obj, "miscselectMask", 4, _W), "little"),
            attributes=get_hex(obj, "attributes", 16, _W),
            attributes_mask=get_hex(obj, "attributesMask", 16, _W),
            mrsigner=get_hex(obj, "mrsigner", 32, _W),
            isvprodid=get_int(obj, "isvprodid", _W, 0, 0xFFFF),
            levels=tuple(levels),
        )


def _plain_level(item: Any) -> QeTcbLevel | None:
    """A well-formed ``tcbLevels`` entry read with the parser's rules in fewer steps (the cold
    path), or ``None`` for anything else, which the parser then reads and names the fault of."""
    if type(item) is not dict:
        return None
    tcb, date, status = item.get("tcb"), item.get("tcbDate"), item.get("tcbStatus")
    if type(tcb) is not dict or type(date) is not str or type(status) is not str:
        return None
    isvsvn = tcb.get("isvsvn")
    if type(isvsvn) is not int or not 0 <= isvsvn <= 0xFFFF:
        return None
    tcb_date, tcb_status = date_or_none(date), TcbStatus.named(status)
    if tcb_date is None or tcb_status is None:
        return None
    advisories: tuple[str, ...] = ()
    if "advisoryIDs" in item:
        ids = item["advisoryIDs"]
        if type(ids) is not list or not {str}.issuperset(map(type, ids)):
            return None
        advisories = tuple(ids)
    return _build_level(isvsvn, tcb_date, tcb_status, advisories)


#: QeTcbLevel from its checked values (no __post_init__ to skip; only the frozen __init__)
_build_level = decoded_builder(QeTcbLevel)


__all__ = ["QeIdentity", "QeTcbLevel"]
