"""The public identity of a simulated platform: FMSPC, SVNs, PPID, QE ID, CA type (``manifest.json``).

Pure data and its JSON form; the PCK certificate's SGX extension is derived from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..abi.pck import PlatformConfiguration, SgxExtensions
from ..errors import PlatformStateError
from .pki import CaType
from .tcb_history import CURRENT_COMPONENTS, CURRENT_PCESVN, CURRENT_QE_SVN

CertDataKind = Literal["pck-chain", "encrypted-ppid"]

#: a simulated FMSPC (family-model-stepping-platform-custom SKU); not a real Intel one
DEFAULT_FMSPC = bytes.fromhex("00A0A5510000")
DEFAULT_CPUSVN = bytes(CURRENT_COMPONENTS)
DEFAULT_PCESVN = CURRENT_PCESVN
DEFAULT_QE_SVN = CURRENT_QE_SVN
PCE_ID = 0  # every real PCK certificate carries PCE-ID 0000
CA_TYPES = ("processor", "platform")
CERT_DATA_KINDS = ("pck-chain", "encrypted-ppid")


def _hex_field(obj: dict[str, Any], name: str) -> bytes | None:
    """``obj[name]`` as bytes from hex; ``None`` when it is missing, not a string, or not hex."""
    value = obj.get(name)
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:  # bytes.fromhex's own signal for bad hex
        return None


@dataclass(frozen=True, slots=True)
class PlatformIdentity:
    """The public identity of a simulated platform (what ``manifest.json`` records)."""

    fmspc: bytes
    cpusvn: bytes
    pcesvn: int
    pce_id: int
    qe_svn: int
    sgx_type: int
    ca: CaType
    cert_data: CertDataKind
    ppid: bytes
    qe_id: bytes
    platform_instance_id: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, bytes):
                out[k] = v.hex()
        return out

    @classmethod
    def from_json(cls, obj: Any) -> PlatformIdentity:
        """Rebuild from the manifest's fields.

        Raises:
            PlatformStateError: a field is missing or malformed (the message names it).
        """
        if not isinstance(obj, dict):
            raise PlatformStateError("the identity is not a JSON object")
        hexes = {"fmspc": 6, "cpusvn": 16, "ppid": 16, "qe_id": 16}
        kw: dict[str, Any] = {}
        for name, size in hexes.items():
            raw = _hex_field(obj, name)
            if raw is None or len(raw) != size:
                raise PlatformStateError(f"{name} must be {size} bytes of hex")
            kw[name] = raw
        for name in ("pcesvn", "pce_id", "qe_svn", "sgx_type"):
            value = obj.get(name)
            if type(value) is not int or not 0 <= value <= 0xFFFF:
                raise PlatformStateError(f"{name} must be an integer 0..65535")
            kw[name] = value
        if obj.get("ca") not in CA_TYPES or obj.get("cert_data") not in CERT_DATA_KINDS:
            raise PlatformStateError("ca or cert_data is missing or has an unknown value")
        pid = None
        if obj.get("platform_instance_id") is not None:
            pid = _hex_field(obj, "platform_instance_id")
            if pid is None:
                raise PlatformStateError("platform_instance_id must be hex")
        return cls(ca=obj["ca"], cert_data=obj["cert_data"], platform_instance_id=pid, **kw)

    def sgx_extensions(self) -> SgxExtensions:
        """The SGX extension of this platform's PCK certificate."""
        platform = self.ca == "platform"
        return SgxExtensions(
            ppid=self.ppid,
            tcb_components=tuple(self.cpusvn),
            pcesvn=self.pcesvn,
            cpusvn=self.cpusvn,
            pceid=self.pce_id.to_bytes(2, "big"),
            fmspc=self.fmspc,
            sgx_type=self.sgx_type,
            platform_instance_id=self.platform_instance_id if platform else None,
            configuration=PlatformConfiguration(True, False, False) if platform else None,
        )


__all__ = [
    "CA_TYPES",
    "CERT_DATA_KINDS",
    "DEFAULT_CPUSVN",
    "DEFAULT_FMSPC",
    "DEFAULT_PCESVN",
    "DEFAULT_QE_SVN",
    "PCE_ID",
    "CertDataKind",
    "PlatformIdentity",
]
