"""Simulated EGETKEY(REPORT_KEY) and the EREPORT MAC.

On real hardware the REPORT key is derived inside the CPU from the fused root key and the
identity of the *target* enclave (the one that will verify the report), so only that enclave can
check the MAC. Ours does the same with a per-platform 16-byte secret in place of the fuse key:

    report_key = AES-128-CMAC(platform_secret,
                              "SIMULATED-EGETKEY" || u16 key_name=REPORT (4) || platform CPUSVN (16)
                              || target MRENCLAVE (32) || target ATTRIBUTES (16)
                              || target MISCSELECT (u32) || target CONFIGSVN (u16)
                              || target CONFIGID (64) || report KEYID (32))

This is the shape of SGX's own key derivation (a CMAC-based KDF over a key request built from the
enclave identity, SDM vol. 3D "EGETKEY"; the KEYID is what EREPORT copies from CR_REPORT_KEYID,
a value the CPU makes statistically unique at each boot, so the reports of one boot share it).
The MAC is AES-128-CMAC(report_key, the 384-byte report body), as on hardware
(``sgx_verify_report``: ``shared/specs/aesm-protocol.md`` §6).

Pure functions; the platform secret, key id and target are parameters.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from ..abi.report import Report, ReportBody, TargetInfo
from ..errors import PlatformStateError

#: EGETKEY key names (sgx_key.h): REPORT = 4
KEY_NAME_REPORT = 4
_LABEL = b"SIMULATED-EGETKEY"


def _cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def _key_request_prefix(cpu_svn: bytes, target: TargetInfo) -> bytes:
    """The key request up to (not including) the report's KEYID: fixed per platform and target."""
    return b"".join(
        (
            _LABEL,
            struct.pack("<H", KEY_NAME_REPORT),
            cpu_svn,
            target.mr_enclave,
            target.attributes.to_bytes(),
            struct.pack("<IH", target.misc_select, target.config_svn),
            target.config_id,
        )
    )


def derive_report_key(platform_secret: bytes, cpu_svn: bytes, target: TargetInfo, key_id: bytes) -> bytes:
    """The 16-byte REPORT key for reports targeted at ``target`` with this ``key_id``.

    Args:
        platform_secret: the platform's 16-byte root secret (stands in for the fuse key).
        cpu_svn: the platform's 16-byte CPUSVN (a TCB recovery changes every derived key).
        target: the enclave the report is made for (only its identity fields are used).
        key_id: the report's 32-byte KEYID.
    """
    if len(platform_secret) != 16 or len(cpu_svn) != 16 or len(key_id) != 32:
        raise PlatformStateError("platform_secret and cpu_svn must be 16 bytes, key_id 32 bytes")
    return _cmac(platform_secret, _key_request_prefix(cpu_svn, target) + key_id)


class ReportVerifier:
    """``sgx_verify_report`` for one enclave (``as_target``) on one platform, for many reports.

    Same results as :func:`verify_report`; the part of the key derivation that does not depend on
    the report (the CMAC of the key request up to the KEYID) is absorbed once. The REPORT key of
    the last KEYID seen is kept, keyed into a CMAC ready for a body: the reports of one boot all
    carry the same KEYID (CR_REPORT_KEYID), so a report then costs a copy of that state and the
    MAC of its body; a report with another KEYID costs the derivation too. Not thread-safe: callers
    serialise (the simulated engine holds its lock).
    """

    __slots__ = ("_kdf", "_key_id", "_mac")

    def __init__(self, platform_secret: bytes, cpu_svn: bytes, as_target: TargetInfo) -> None:
        if len(platform_secret) != 16 or len(cpu_svn) != 16:
            raise PlatformStateError("platform_secret and cpu_svn must be 16 bytes")
        self._kdf = cmac.CMAC(algorithms.AES(platform_secret))
        self._kdf.update(_key_request_prefix(cpu_svn, as_target))
        self._key_id: bytes | None = None  # the KEYID whose REPORT key ``_mac`` is keyed with
        self._mac: cmac.CMAC | None = None

    def report_key(self, key_id: bytes) -> bytes:
        """:func:`derive_report_key` for this platform and target."""
        if len(key_id) != 32:
            raise PlatformStateError("key_id must be 32 bytes")
        kdf = self._kdf.copy()
        kdf.update(key_id)
        return kdf.finalize()

    def verify(self, body: bytes, key_id: bytes, mac: bytes) -> bool:
        """Does ``mac`` match the 384-byte report ``body`` made with ``key_id``? (constant time)"""
        if key_id != self._key_id or self._mac is None:
            keyed = cmac.CMAC(algorithms.AES(self.report_key(key_id)))
            self._key_id, self._mac = key_id, keyed
        ctx = self._mac.copy()
        ctx.update(body)
        return hmac.compare_digest(ctx.finalize(), mac)


def report_mac(report_key: bytes, body: ReportBody) -> bytes:
    """AES-128-CMAC over the 384-byte report body."""
    return _cmac(report_key, body.to_bytes())


def make_report(
    platform_secret: bytes, cpu_svn: bytes, target: TargetInfo, body: ReportBody, key_id: bytes
) -> Report:
    """EREPORT: ``body`` MAC'd with the REPORT key of ``target``."""
    key = derive_report_key(platform_secret, cpu_svn, target, key_id)
    return Report(body, key_id, report_mac(key, body))


def verify_report(platform_secret: bytes, cpu_svn: bytes, report: Report, as_target: TargetInfo) -> bool:
    """``sgx_verify_report`` run by the enclave ``as_target``: recompute the MAC, compare in constant time."""
    key = derive_report_key(platform_secret, cpu_svn, as_target, report.key_id)
    return hmac.compare_digest(report_mac(key, report.body), report.mac)


__all__ = [
    "KEY_NAME_REPORT",
    "ReportVerifier",
    "derive_report_key",
    "make_report",
    "report_mac",
    "verify_report",
]
