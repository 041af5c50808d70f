"""The public identity of a simulated platform: FMSPC, SVNs, PPID, QE ID, CA type (``manifest.json``).

Pure data and its JSON form; the PCK certificate's SGX extension is derived from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..abi.pck import PlatformConfiguration, SgxExtensions
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
        """Rebuild from the manifest's fields; raises ``KeyError``/``ValueError``/``TypeError`` if malformed."""
        hexes = {"fmspc": 6, "cpusvn": 16, "ppid": 16, "qe_id": 16}
        kw: dict[str, Any] = {}
        for name, size in hexes.items():
            raw = bytes.fromhex(obj[name])
            if len(raw) != size:
                raise ValueError(f"{name} must be {size} bytes")
            kw[name] = raw
        for name in ("pcesvn", "pce_id", "qe_svn", "sgx_type"):
            if not isinstance(obj[name], int) or not 0 <= obj[name] <= 0xFFFF:
                raise ValueError(f"{name} must be an integer 0..65535")
            kw[name] = obj[name]
        if obj["ca"] not in CA_TYPES or obj["cert_data"] not in CERT_DATA_KINDS:
            raise ValueError("ca or cert_data has an unknown value")
        pid = obj.get("platform_instance_id")
        return cls(
            ca=obj["ca"],
            cert_data=obj["cert_data"],
            platform_instance_id=bytes.fromhex(pid) if pid is not None else None,
            **kw,
        )

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
