"""The simulated TDX module: a platform's TEE TCB and the TDREPORTs its TDs get (TDG.MR.REPORT).

On hardware the TDX module builds the TDREPORT of the calling TD: TEE_TCB_INFO (the module's
measurement MRSEAM, its signer, its TCB SVN), TDINFO (the TD's measurements), and a REPORTMACSTRUCT
holding SHA-384 of both, the TD's REPORTDATA and a MAC under a key only the CPU knows, which a
quoting enclave on the same platform checks with EVERIFYREPORT2. Ours does the same in software:

    mac_key = HMAC-SHA-256(platform secret, "SIMULATED-TDX-REPORTMAC" || platform CPUSVN)
    mac     = HMAC-SHA-256(mac_key, REPORTMACSTRUCT bytes 0..223)

(the key comes from :meth:`Platform.derived_key`, so only the simulated TDQE of the same platform
accepts the report, and a TCB recovery of the SGX side changes it, as on hardware).

The module's state is ``tdx.json`` in the platform's state directory (``sim init --tee-tcb-svn``):
its TEE_TCB_SVN; absent, the current simulated level. MRSEAM is a fixed SIMULATED value (SHA-384 of
a label); MRSIGNERSEAM and the SEAM attributes are zero, as for Intel-signed modules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace

from ..abi.tdx_report import (
    TDX_REPORT_TYPE,
    TDX_REPORT_VERSION_10,
    TDX_REPORT_VERSION_15,
    TEE_TCB_INFO_VALID_10,
    TEE_TCB_INFO_VALID_15,
    ReportMacStruct,
    ReportType,
    TdInfo,
    TdxReport,
    TeeTcbInfo,
)
from ..errors import ConfigError, ParseError, PlatformStateError
from .platform import TDX_STATE, Platform
from .tdx_tcb_history import CURRENT_TEE_TCB_SVN

FORMAT = "sgx-quote-helper simulated TDX module"
FORMAT_VERSION = 1
#: MRSEAM of the simulated TDX module (no real module has it)
SIMULATED_MR_SEAM = hashlib.sha384(b"sgx-quote-helper SIMULATED TDX module v1").digest()
#: TDATTRIBUTES of a production TD: only SEPT_VE_DISABLE (bit 28), which verifiers require
DEFAULT_TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")
#: XFAM of a typical TD: x87, SSE, AVX, AVX-512 (opmask, ZMM), PKRU, AMX
DEFAULT_XFAM = bytes.fromhex("e702060000000000")
_MAC_LABEL = b"SIMULATED-TDX-REPORTMAC"


def tee_info_hash(td_info: TdInfo) -> bytes:
    return hashlib.sha384(td_info.to_bytes()).digest()


def tee_tcb_info_hash(tcb: TeeTcbInfo) -> bytes:
    return hashlib.sha384(tcb.to_bytes()).digest()


@dataclass(frozen=True, slots=True)
class TdIdentity:
    """What the TD contributes to its TDREPORT (TDINFO fields; 48-byte measurements, 8-byte masks)."""

    mr_td: bytes = bytes(48)
    rtmr0: bytes = bytes(48)
    rtmr1: bytes = bytes(48)
    rtmr2: bytes = bytes(48)
    rtmr3: bytes = bytes(48)
    td_attributes: bytes = DEFAULT_TD_ATTRIBUTES
    xfam: bytes = DEFAULT_XFAM
    mr_config_id: bytes = bytes(48)
    mr_owner: bytes = bytes(48)
    mr_owner_config: bytes = bytes(48)
    mr_servicetd: bytes = bytes(48)

    def td_info(self, version: int) -> TdInfo:
        """TDINFO of this TD; MRSERVICETD only exists in the TDX 1.5 layout."""
        return TdInfo(
            attributes=self.td_attributes,
            xfam=self.xfam,
            mr_td=self.mr_td,
            mr_config_id=self.mr_config_id,
            mr_owner=self.mr_owner,
            mr_owner_config=self.mr_owner_config,
            rtmr0=self.rtmr0,
            rtmr1=self.rtmr1,
            rtmr2=self.rtmr2,
            rtmr3=self.rtmr3,
            mr_servicetd=self.mr_servicetd if version == TDX_REPORT_VERSION_15 else bytes(48),
            reserved=bytes(64),
        )


class TdxModule:
    """The TDX module of a simulated platform. Create with :meth:`open` or :meth:`init`."""

    def __init__(self, platform: Platform, tee_tcb_svn: bytes = CURRENT_TEE_TCB_SVN) -> None:
        if not isinstance(tee_tcb_svn, bytes) or len(tee_tcb_svn) != 16:
            raise ConfigError("TEE_TCB_SVN must be 16 bytes")
        self.platform = platform
        self.tee_tcb_svn = tee_tcb_svn
        self.mr_seam = SIMULATED_MR_SEAM
        self._mac_key = platform.derived_key(_MAC_LABEL)

    # -- state ------------------------------------------------------------------------------------

    @classmethod
    def init(cls, platform: Platform, tee_tcb_svn: bytes = CURRENT_TEE_TCB_SVN) -> TdxModule:
        """Set the platform's TDX TCB (writes ``tdx.json``)."""
        module = cls(platform, tee_tcb_svn)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "tee_tcb_svn": tee_tcb_svn.hex()}
        with platform.state.lock():
            platform.state.write(TDX_STATE, json.dumps(doc, indent=2).encode() + b"\n")
        return module

    @classmethod
    def open(cls, platform: Platform) -> TdxModule:
        """The platform's TDX module: as ``tdx.json`` says, or the current simulated level if absent.

        Raises:
            PlatformStateError: ``tdx.json`` exists but is corrupt.
        """
        path = platform.state.file(TDX_STATE)
        if not path.exists():
            return cls(platform)
        try:
            doc = json.loads(platform.state.read(TDX_STATE))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a TDX module state file")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
            svn = bytes.fromhex(doc["tee_tcb_svn"])
            return cls(platform, svn)
        except (ValueError, KeyError, TypeError, ConfigError, RecursionError) as exc:
            raise PlatformStateError(f"{path} is corrupt: {exc}") from None

    # -- TDG.MR.REPORT ------------------------------------------------------------------------------

    def tee_tcb_info(self, version: int) -> TeeTcbInfo:
        """TEE_TCB_INFO: TDX 1.0 has valid 0x1FF and no TEE_TCB_SVN2; TDX 1.5 has 0x301FF and
        TEE_TCB_SVN2 = TEE_TCB_SVN (the module the TD runs on is the one it was launched on)."""
        v15 = version == TDX_REPORT_VERSION_15
        return TeeTcbInfo(
            valid=TEE_TCB_INFO_VALID_15 if v15 else TEE_TCB_INFO_VALID_10,
            tee_tcb_svn=self.tee_tcb_svn,
            mr_seam=self.mr_seam,
            mr_signer_seam=bytes(48),
            attributes=bytes(8),
            tee_tcb_svn2=self.tee_tcb_svn if v15 else bytes(16),
            reserved=bytes(95),
        )

    def mac(self, mac_struct: ReportMacStruct) -> bytes:
        """The MAC the simulated CPU puts in (and EVERIFYREPORT2 expects of) ``mac_struct``."""
        return hmac.new(self._mac_key, mac_struct.mac_input, hashlib.sha256).digest()

    def verify_mac(self, report: TdxReport) -> bool:
        """EVERIFYREPORT2: was ``report`` MAC'd on this platform? (constant-time)"""
        return hmac.compare_digest(self.mac(report.mac_struct), report.mac_struct.mac)

    def report(
        self,
        report_data: bytes = b"",
        td: TdIdentity | None = None,
        *,
        version: int = TDX_REPORT_VERSION_10,
    ) -> TdxReport:
        """The TDREPORT a TD with identity ``td`` gets for ``report_data`` (at most 64 bytes,
        zero-padded), in the TDX 1.0 (``version`` 0) or 1.5 (``version`` 1) layout.

        Raises:
            ParseError: report_data longer than 64 bytes or a TD field of the wrong size.
            ConfigError: an unknown report version.
        """
        if version not in (TDX_REPORT_VERSION_10, TDX_REPORT_VERSION_15):
            raise ConfigError(f"TDREPORT version must be 0 (TDX 1.0) or 1 (TDX 1.5), got {version!r}")
        if len(report_data) > 64:
            raise ParseError(
                "ReportMacStruct", 128, f"report_data must be at most 64 bytes, got {len(report_data)}"
            )
        td = td or TdIdentity()
        tcb = self.tee_tcb_info(version)
        info = td.td_info(version)
        unsigned = ReportMacStruct(
            report_type_bytes=ReportType(TDX_REPORT_TYPE, 0, version, 0).to_bytes(),
            reserved1=bytes(12),
            cpu_svn=self.platform.identity.cpusvn,
            tee_tcb_info_hash=tee_tcb_info_hash(tcb),
            tee_info_hash=tee_info_hash(info),
            report_data=report_data.ljust(64, b"\0"),
            reserved2=bytes(32),
            mac=bytes(32),
        )
        mac_struct = replace(unsigned, mac=self.mac(unsigned))
        return TdxReport(mac_struct=mac_struct, tee_tcb_info=tcb, td_info=info)


__all__ = [
    "DEFAULT_TD_ATTRIBUTES",
    "DEFAULT_XFAM",
    "SIMULATED_MR_SEAM",
    "TdIdentity",
    "TdxModule",
    "tee_info_hash",
    "tee_tcb_info_hash",
]
