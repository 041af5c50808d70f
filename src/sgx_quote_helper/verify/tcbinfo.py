"""TCB Info (versions 2 and 3, SGX and TDX) parsed from the exact text Intel signed.

The model keeps the signed text (:attr:`TcbInfo.text`) beside the parsed values; the signature is
checked over that text elsewhere (``verify.steps``). Levels are sorted descending by (SGX
components, PCESVN, TDX components), as QVL holds them, whatever order the JSON used.
Layout: ``shared/specs/dcap-quote.md`` §3.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from ..abi._bytes import decoded_builder
from ..errors import CollateralError
from ._json import date_or_none, get, get_advisories, get_date, get_hex, get_int, loads_object
from .status import TcbStatus

_W = "TCB Info"
_SVNS = frozenset(range(256))


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One ``tcbLevels`` entry."""

    sgx_components: tuple[int, ...]
    pcesvn: int
    tdx_components: tuple[int, ...] | None
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]

    def sort_key(self) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
        return (self.sgx_components, self.pcesvn, self.tdx_components or ())


@dataclass(frozen=True, slots=True)
class ModuleTcbLevel:
    """A ``tdxModuleIdentities[].tcbLevels`` entry (keyed by the module ISVSVN)."""

    isvsvn: int
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    """``tdxModule`` (id ``None``, no levels) or one ``tdxModuleIdentities`` entry."""

    id: str | None
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[ModuleTcbLevel, ...] = ()


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """A parsed TCB Info body plus the exact text it was parsed from."""

    text: str
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None = None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] = ()

    @property
    def is_tdx(self) -> bool:
        return self.id == "TDX"

    @classmethod
    def parse(cls, text: str) -> TcbInfo:
        """Parse the signed ``tcbInfo`` JSON text (v2 or v3); CollateralError on anything else."""
        obj = loads_object(text, _W)
        version = get_int(obj, "version", _W)
        if version == 2:
            tcb_id = "SGX"
            if "id" in obj:
                raise CollateralError("TCB Info: version 2 has no 'id' field")
        elif version == 3:
            tcb_id = get(obj, "id", str, _W)
            if tcb_id not in ("SGX", "TDX"):
                raise CollateralError(f"TCB Info: unknown id {tcb_id!r}")
        else:
            raise CollateralError(f"TCB Info: unsupported version {version}")
        raw_levels = get(obj, "tcbLevels", list, _W)
        if not raw_levels:
            raise CollateralError("TCB Info: no tcbLevels")
        tdx = tcb_id == "TDX"
        levels = [_plain_level(lv, version, tdx) or _level(lv, version, tdx) for lv in raw_levels]
        levels.sort(key=TcbLevel.sort_key, reverse=True)
        tdx_module = None
        identities: tuple[TdxModuleIdentity, ...] = ()
        if tcb_id == "TDX":
            tdx_module = _module(get(obj, "tdxModule", dict, _W), None)
            if "tdxModuleIdentities" in obj:
                ids = get(obj, "tdxModuleIdentities", list, _W)
                identities = tuple(_module(_obj(i), get(_obj(i), "id", str, _W)) for i in ids)
        return cls(
            text=text,
            id=tcb_id,
            version=version,
            issue_date=get_date(obj, "issueDate", _W),
            next_update=get_date(obj, "nextUpdate", _W),
            fmspc=get_hex(obj, "fmspc", 6, _W),
            pce_id=get_hex(obj, "pceId", 2, _W),
            tcb_type=get_int(obj, "tcbType", _W) if version == 3 or "tcbType" in obj else 0,
            tcb_evaluation_data_number=get_int(obj, "tcbEvaluationDataNumber", _W),
            levels=tuple(levels),
            tdx_module=tdx_module,
            tdx_module_identities=identities,
        )


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CollateralError("TCB Info: expected a JSON object")
    return value


def _svn_list(items: Any, what: str) -> tuple[int, ...]:
    if type(items) is not list or len(items) != 16:
        raise CollateralError(f"TCB Info: {what} must list 16 components")
    try:  # hot path of cold verification: one comprehension and a set test
        svns = tuple([c["svn"] for c in items])
    except (TypeError, KeyError):
        raise CollateralError(f"TCB Info: {what} entries need an 'svn'") from None
    if not _SVNS.issuperset(svns) or True in [type(s) is bool for s in svns]:
        raise CollateralError(f"TCB Info: {what} 'svn' values must be integers in 0..255")
    return svns


_svn_of = itemgetter("svn")
_INT = frozenset({int})


def _plain_svns(items: Any) -> tuple[int, ...] | None:
    """:func:`_svn_list` of a well-formed list, else ``None`` (the same tests, without frames)."""
    if type(items) is not list or len(items) != 16:
        return None
    try:
        svns = tuple(map(_svn_of, items))
    except (TypeError, KeyError):
        return None
    if not _SVNS.issuperset(svns) or not _INT.issuperset(map(type, svns)):  # bools are not SVNs
        return None
    return svns


def _plain_level(lv: Any, version: int, tdx: bool) -> TcbLevel | None:
    """The hot path of :func:`_level` (once per level of every TCB Info on a cold verification):
    a well-formed v3 level read with the same rules in fewer steps, or ``None`` for anything
    else, which :func:`_level` then reads (and names what is wrong with it)."""
    if version != 3 or type(lv) is not dict:
        return None
    tcb = lv.get("tcb")
    if type(tcb) is not dict:
        return None
    comps = _plain_svns(tcb.get("sgxtcbcomponents"))
    tdx_components = _plain_svns(tcb.get("tdxtcbcomponents")) if tdx else None
    pcesvn = tcb.get("pcesvn")
    date, status = lv.get("tcbDate"), lv.get("tcbStatus")
    if (
        comps is None
        or (tdx and tdx_components is None)
        or type(pcesvn) is not int
        or not 0 <= pcesvn <= 0xFFFF
        or type(date) is not str
        or type(status) is not str
    ):
        return None
    tcb_date, tcb_status = date_or_none(date), TcbStatus.named(status)
    if tcb_date is None or tcb_status is None:
        return None
    advisories: tuple[str, ...] = ()
    if "advisoryIDs" in lv:
        ids = lv["advisoryIDs"]
        if type(ids) is not list or not {str}.issuperset(map(type, ids)):
            return None
        advisories = tuple(ids)
    return _build_level(comps, pcesvn, tdx_components, tcb_date, tcb_status, advisories)


#: TcbLevel from its checked values (it has no __post_init__: the plain path skips only __init__)
_build_level = decoded_builder(TcbLevel)


def _level(raw: Any, version: int, tdx: bool) -> TcbLevel:
    lv = _obj(raw)
    tcb = lv.get("tcb")
    if type(tcb) is not dict:
        raise CollateralError("TCB Info: a level needs a 'tcb' object")
    tdx_components = None
    if version == 2:
        comps = tuple(get_int(tcb, f"sgxtcbcomp{i:02d}svn", _W, 0, 255) for i in range(1, 17))
    else:
        comps = _svn_list(get(tcb, "sgxtcbcomponents", list, _W), "sgxtcbcomponents")
        if tdx:
            tdx_components = _svn_list(get(tcb, "tdxtcbcomponents", list, _W), "tdxtcbcomponents")
    return TcbLevel(
        sgx_components=comps,
        pcesvn=get_int(tcb, "pcesvn", _W, 0, 0xFFFF),
        tdx_components=tdx_components,
        tcb_date=get_date(lv, "tcbDate", _W),
        status=TcbStatus.parse(get(lv, "tcbStatus", str, _W), _W),
        advisory_ids=get_advisories(lv, _W),
    )


def _module(raw: dict[str, Any], ident: str | None) -> TdxModuleIdentity:
    levels: list[ModuleTcbLevel] = []
    if ident is not None:
        for item in get(raw, "tcbLevels", list, _W):
            lv = _obj(item)
            levels.append(
                ModuleTcbLevel(
                    isvsvn=get_int(get(lv, "tcb", dict, _W), "isvsvn", _W, 0, 255),
                    tcb_date=get_date(lv, "tcbDate", _W),
                    status=TcbStatus.parse(get(lv, "tcbStatus", str, _W), _W),
                    advisory_ids=get_advisories(lv, _W),
                )
            )
        levels.sort(key=lambda m: m.isvsvn, reverse=True)
    return TdxModuleIdentity(
        id=ident,
        mrsigner=get_hex(raw, "mrsigner", 48, _W),
        attributes=get_hex(raw, "attributes", 8, _W),
        attributes_mask=get_hex(raw, "attributesMask", 8, _W),
        levels=tuple(levels),
    )


__all__ = ["ModuleTcbLevel", "TcbInfo", "TcbLevel", "TdxModuleIdentity"]
