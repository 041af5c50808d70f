"""The SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1), decoded and encoded.

Layout (``shared/specs/dcap-quote.md`` §2.1): a SEQUENCE of (OID, value) SEQUENCEs: PPID, TCB
(16 component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type, and for Platform-CA certificates
PlatformInstanceID and Configuration. Pure DER: callers pass the extension's value bytes (with
``cryptography``: ``cert.extensions.get_extension_for_oid(...).value.value``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParseError
from . import der
from ._bytes import decoded_builder

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_B = SGX_EXTENSION_OID
OID_PPID = f"{_B}.1"
OID_TCB = f"{_B}.2"
OID_PCESVN = f"{_B}.2.17"
OID_CPUSVN = f"{_B}.2.18"
OID_PCEID = f"{_B}.3"
OID_FMSPC = f"{_B}.4"
OID_SGX_TYPE = f"{_B}.5"
OID_PLATFORM_INSTANCE_ID = f"{_B}.6"
OID_CONFIGURATION = f"{_B}.7"
OID_DYNAMIC_PLATFORM = f"{_B}.7.1"
OID_CACHED_KEYS = f"{_B}.7.2"
OID_SMT_ENABLED = f"{_B}.7.3"

SGX_TYPE_NAMES = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}
#: TCB component OIDs ``...2.1`` .. ``...2.16`` -> their index
_COMPONENT_INDEX = {f"{OID_TCB}.{i}": i for i in range(1, 17)}

_S = "SgxExtensions"


@dataclass(frozen=True, slots=True)
class PlatformConfiguration:
    """Configuration SEQUENCE of Platform-CA PCK certificates."""

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class SgxExtensions:
    """The decoded SGX extension of a PCK leaf certificate."""

    ppid: bytes
    tcb_components: tuple[int, ...]
    pcesvn: int
    cpusvn: bytes
    pceid: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: PlatformConfiguration | None = None

    def __post_init__(self) -> None:
        if len(self.tcb_components) != 16 or not all(0 <= c <= 255 for c in self.tcb_components):
            raise ParseError(_S, 0, "tcb_components must be 16 values in 0..255")
        for name, size in (("ppid", 16), ("cpusvn", 16), ("pceid", 2), ("fmspc", 6)):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise ParseError(_S, 0, f"{name} must be {size} bytes")

    @classmethod
    def from_der(cls, data: bytes) -> SgxExtensions:
        """Decode the extension value (a DER SEQUENCE); raise ParseError when it is malformed or
        a required entry (PPID, TCB, PCE-ID, FMSPC, SGX type) is missing."""
        data = bytes(data)
        try:
            plain = _plain_extensions(data)
        except ParseError:  # the checked reader below names the fault
            plain = None
        return plain if plain is not None else cls._from_der_checked(data)

    @classmethod
    def _from_der_checked(cls, data: bytes) -> SgxExtensions:
        """The element-by-element reader: decodes what we accept, names the fault of the rest."""
        tag, body, end = der.read_tlv(data, 0, _S)
        der.expect(tag, der.TAG_SEQUENCE, _S, "extension")
        if end != len(data):
            raise ParseError(_S, end, "bytes after the extension SEQUENCE")
        fields: dict[str, object] = {}
        for oid, vtag, value in _pairs(body):
            if oid == OID_PPID:
                fields["ppid"] = _octets(vtag, value, 16, "PPID")
            elif oid == OID_TCB:
                fields.update(_tcb(vtag, value))
            elif oid == OID_PCEID:
                fields["pceid"] = _octets(vtag, value, 2, "PCE-ID")
            elif oid == OID_FMSPC:
                fields["fmspc"] = _octets(vtag, value, 6, "FMSPC")
            elif oid == OID_SGX_TYPE:
                der.expect(vtag, der.TAG_ENUMERATED, _S, "SGX type")
                fields["sgx_type"] = der.decode_int(value, _S, "SGX type")
            elif oid == OID_PLATFORM_INSTANCE_ID:
                fields["platform_instance_id"] = _octets(vtag, value, 16, "PlatformInstanceID")
            elif oid == OID_CONFIGURATION:
                fields["configuration"] = _configuration(vtag, value)
        missing = [
            k
            for k in ("ppid", "tcb_components", "pcesvn", "cpusvn", "pceid", "fmspc", "sgx_type")
            if k not in fields
        ]
        if missing:
            raise ParseError(_S, 0, f"missing entries: {', '.join(missing)}")
        return cls(**fields)  # type: ignore[arg-type]

    def to_der(self) -> bytes:
        """Encode as Intel does (entry order of real PCK certificates)."""
        tcb = [
            der.enc_seq(der.enc_oid(f"{OID_TCB}.{i + 1}"), der.enc_int(svn))
            for i, svn in enumerate(self.tcb_components)
        ]
        tcb.append(der.enc_seq(der.enc_oid(OID_PCESVN), der.enc_int(self.pcesvn)))
        tcb.append(der.enc_seq(der.enc_oid(OID_CPUSVN), der.enc_octets(self.cpusvn)))
        items = [
            der.enc_seq(der.enc_oid(OID_PPID), der.enc_octets(self.ppid)),
            der.enc_seq(der.enc_oid(OID_TCB), der.enc_seq(*tcb)),
            der.enc_seq(der.enc_oid(OID_PCEID), der.enc_octets(self.pceid)),
            der.enc_seq(der.enc_oid(OID_FMSPC), der.enc_octets(self.fmspc)),
            der.enc_seq(der.enc_oid(OID_SGX_TYPE), der.enc_int(self.sgx_type, der.TAG_ENUMERATED)),
        ]
        if self.platform_instance_id is not None:
            items.append(
                der.enc_seq(der.enc_oid(OID_PLATFORM_INSTANCE_ID), der.enc_octets(self.platform_instance_id))
            )
        if self.configuration is not None:
            conf = []
            for oid, val in (
                (OID_DYNAMIC_PLATFORM, self.configuration.dynamic_platform),
                (OID_CACHED_KEYS, self.configuration.cached_keys),
                (OID_SMT_ENABLED, self.configuration.smt_enabled),
            ):
                if val is not None:
                    conf.append(der.enc_seq(der.enc_oid(oid), der.enc_bool(val)))
            items.append(der.enc_seq(der.enc_oid(OID_CONFIGURATION), der.enc_seq(*conf)))
        return der.enc_seq(*items)


def _tlv_at(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """``(tag, value_start, value_end)`` of the TLV at ``pos`` inside ``data[:end]`` by the rules
    of :func:`der.read_tlv` (single-byte tag, definite minimal length up to 4 bytes), without
    copying; ``None`` where read_tlv would raise."""
    if pos + 2 > end:
        return None
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        return None
    pos += 2
    if first >= 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end or data[pos] == 0:
            return None
        first = int.from_bytes(data[pos : pos + n])
        if first < 0x80:
            return None
        pos += n
    stop = pos + first
    return (tag, pos, stop) if stop <= end else None


def _plain_pairs(data: bytes, pos: int, end: int) -> list[tuple[str, int, int, int]] | None:
    """:func:`_pairs` of ``data[pos:end]`` as ``(oid, value tag, value start, value end)``, or
    ``None`` for anything :func:`_pairs` would reject. Short-form headers are read inline."""
    out = []
    while pos < end:
        if pos + 2 <= end and data[pos] == der.TAG_SEQUENCE and data[pos + 1] < 0x80:
            start = pos + 2
            pos = start + data[pos + 1]
            if pos > end:
                return None
        else:
            entry = _tlv_at(data, pos, end)
            if entry is None or entry[0] != der.TAG_SEQUENCE:
                return None
            _, start, pos = entry
        if start + 2 > pos or data[start] != der.TAG_OID or data[start + 1] >= 0x80:
            return None
        oid_end = start + 2 + data[start + 1]
        if oid_end + 2 > pos or data[oid_end] & 0x1F == 0x1F:
            return None
        if data[oid_end + 1] < 0x80:
            value: tuple[int, int, int] | None = (data[oid_end], oid_end + 2, oid_end + 2 + data[oid_end + 1])
        else:
            value = _tlv_at(data, oid_end, pos)
        if value is None or value[2] != pos:  # exactly (OID, value)
            return None
        raw_oid = data[start + 2 : oid_end]
        oid = _KNOWN_OIDS.get(raw_oid) or der.decode_oid(raw_oid, _S)
        out.append((oid, value[0], value[1], pos))
    return out


def _plain_extensions(data: bytes) -> SgxExtensions | None:
    """The SGX extension as Intel writes it (no Configuration entry), read in place with the rules
    of :meth:`SgxExtensions._from_der_checked`; ``None`` for anything else (and anything that
    reader rejects), which the checked reader then decodes or rejects. On the verifier's cold
    path (once per PCK certificate)."""
    outer = _tlv_at(data, 0, len(data))
    if outer is None or outer[0] != der.TAG_SEQUENCE or outer[2] != len(data):
        return None
    entries = _plain_pairs(data, outer[1], outer[2])
    if entries is None:
        return None
    ppid = tcb = pceid = fmspc = sgx_type = instance = None
    for oid, tag, start, stop in entries:
        if oid == OID_PPID:
            ppid = _plain_octets(data, tag, start, stop, 16)
            if ppid is None:
                return None
        elif oid == OID_TCB:
            tcb = _plain_tcb(data, tag, start, stop) if tag == der.TAG_SEQUENCE else None
            if tcb is None:
                return None
        elif oid == OID_PCEID:
            pceid = _plain_octets(data, tag, start, stop, 2)
            if pceid is None:
                return None
        elif oid == OID_FMSPC:
            fmspc = _plain_octets(data, tag, start, stop, 6)
            if fmspc is None:
                return None
        elif oid == OID_SGX_TYPE:
            if tag != der.TAG_ENUMERATED:
                return None
            sgx_type = der.decode_int(data[start:stop], _S, "SGX type")
        elif oid == OID_PLATFORM_INSTANCE_ID:
            instance = _plain_octets(data, tag, start, stop, 16)
            if instance is None:
                return None
        elif oid == OID_CONFIGURATION:
            return None  # Platform-CA certificates: the checked reader
    if ppid is None or tcb is None or pceid is None or fmspc is None or sgx_type is None:
        return None
    components, pcesvn, cpusvn = tcb
    return _build_extensions(ppid, components, pcesvn, cpusvn, pceid, fmspc, sgx_type, instance, None)


def _plain_octets(data: bytes, tag: int, start: int, stop: int, size: int) -> bytes | None:
    return data[start:stop] if tag == der.TAG_OCTET_STRING and stop - start == size else None


def _plain_tcb(data: bytes, tag: int, start: int, stop: int) -> tuple[tuple[int, ...], int, bytes] | None:
    """:func:`_tcb` in place: 16 components in 0..255 (each once or repeated, the last wins, as
    there), PCESVN and CPUSVN; ``None`` for anything else."""
    entries = _plain_pairs(data, start, stop)
    if entries is None:
        return None
    comps: dict[int, int] = {}
    pcesvn: int | None = None
    cpusvn: bytes | None = None
    for oid, vtag, vs, ve in entries:
        idx = _COMPONENT_INDEX.get(oid)
        if idx is not None:
            if vtag != der.TAG_INTEGER:
                return None
            if ve - vs == 1 and not data[vs] & 0x80:
                comps[idx] = data[vs]
            else:  # 128..255 take two bytes
                svn = der.decode_int(data[vs:ve], _S, "TCB component")
                if svn > 255:
                    return None
                comps[idx] = svn
        elif oid == OID_PCESVN:
            if vtag != der.TAG_INTEGER:
                return None
            pcesvn = der.decode_int(data[vs:ve], _S, "PCESVN")
        elif oid == OID_CPUSVN:
            cpusvn = _plain_octets(data, vtag, vs, ve, 16)
            if cpusvn is None:
                return None
    if len(comps) != 16 or pcesvn is None or cpusvn is None:
        return None
    return tuple([comps[i] for i in range(1, 17)]), pcesvn, cpusvn


def _pairs(body: bytes) -> list[tuple[str, int, bytes]]:
    out = []
    for tag, value in der.read_all(body, _S):
        if tag != der.TAG_SEQUENCE:
            der.expect(tag, der.TAG_SEQUENCE, _S, "entry")
        parts = der.read_all(value, _S)
        if len(parts) != 2:
            raise ParseError(_S, 0, f"entry must be (OID, value), got {len(parts)} elements")
        (otag, oid), (vtag, v) = parts
        if otag != der.TAG_OID:
            der.expect(otag, der.TAG_OID, _S, "entry OID")
        out.append((der.decode_oid(oid, _S), vtag, v))
    return out


def _octets(tag: int, value: bytes, size: int, what: str) -> bytes:
    der.expect(tag, der.TAG_OCTET_STRING, _S, what)
    if len(value) != size:
        raise ParseError(_S, 0, f"{what} must be {size} bytes, got {len(value)}")
    return value


def _tcb(tag: int, value: bytes) -> dict[str, object]:
    der.expect(tag, der.TAG_SEQUENCE, _S, "TCB")
    comps: dict[int, int] = {}
    out: dict[str, object] = {}
    for oid, vtag, v in _pairs(value):
        if oid == OID_PCESVN:
            der.expect(vtag, der.TAG_INTEGER, _S, "PCESVN")
            out["pcesvn"] = der.decode_int(v, _S, "PCESVN")
        elif oid == OID_CPUSVN:
            out["cpusvn"] = _octets(vtag, v, 16, "CPUSVN")
        elif oid in _COMPONENT_INDEX:
            idx = _COMPONENT_INDEX[oid]
            if vtag != der.TAG_INTEGER or len(v) != 1 or v[0] & 0x80:  # the 0..127 fast path
                der.expect(vtag, der.TAG_INTEGER, _S, f"TCB component {idx}")
                svn = der.decode_int(v, _S, f"TCB component {idx}")
                if svn > 255:
                    raise ParseError(_S, 0, f"TCB component {idx} out of range: {svn}")
            else:
                svn = v[0]
            comps[idx] = svn
    if sorted(comps) != list(range(1, 17)):
        raise ParseError(_S, 0, f"TCB needs 16 components, found {len(comps)}")
    if "pcesvn" not in out or "cpusvn" not in out:
        raise ParseError(_S, 0, "TCB lacks PCESVN or CPUSVN")
    out["tcb_components"] = tuple(comps[i] for i in range(1, 17))
    return out


def _configuration(tag: int, value: bytes) -> PlatformConfiguration:
    der.expect(tag, der.TAG_SEQUENCE, _S, "Configuration")
    vals: dict[str, bool] = {}
    names = {
        OID_DYNAMIC_PLATFORM: "dynamic_platform",
        OID_CACHED_KEYS: "cached_keys",
        OID_SMT_ENABLED: "smt_enabled",
    }
    for oid, vtag, v in _pairs(value):
        if oid in names:
            der.expect(vtag, der.TAG_BOOLEAN, _S, names[oid])
            if len(v) != 1:
                raise ParseError(_S, 0, f"{names[oid]}: BOOLEAN must be 1 byte")
            vals[names[oid]] = v != b"\x00"
    return PlatformConfiguration(**vals)


#: the DER contents of every OID the extension holds -> its dotted form (der.decode_oid's result)
_KNOWN_OIDS = {
    der.enc_oid(oid)[2:]: oid
    for oid in (
        OID_PPID, OID_TCB, OID_PCESVN, OID_CPUSVN, OID_PCEID, OID_FMSPC, OID_SGX_TYPE,
        OID_PLATFORM_INSTANCE_ID, OID_CONFIGURATION, OID_DYNAMIC_PLATFORM, OID_CACHED_KEYS,
        OID_SMT_ENABLED, *_COMPONENT_INDEX,
    )
}  # fmt: skip
#: the decoders' constructor: sizes and ranges hold by construction (no __post_init__ re-check)
_build_extensions = decoded_builder(SgxExtensions)

__all__ = [
    "SGX_EXTENSION_OID",
    "SGX_TYPE_NAMES",
    "PlatformConfiguration",
    "SgxExtensions",
]
