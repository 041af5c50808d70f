"""The verification steps, numbered in the order they run, and the error that names one."""

from __future__ import annotations

from enum import IntEnum

from ..errors import VerificationError


class Step(IntEnum):
    """The verification steps, in the order they run."""

    QUOTE_FORMAT = 1  # version / TEE type / attestation key type / QE vendor
    ROOT_CA = 2  # every chain ends at the pinned (or explicitly passed) root
    PCK_CHAIN = 3  # PCK leaf <- PCK CA <- root: signatures, roles, validity windows
    CRL = 4  # root CA CRL and PCK CRL: issuer, signature, window; revocation of the chain
    TCB_INFO = 5  # TCB signing chain, signature over the exact text, issueDate/nextUpdate
    QE_IDENTITY = 6  # the same for the QE Identity
    PLATFORM_MATCH = 7  # FMSPC and PCE-ID of the PCK cert vs TCB Info; TCB Info id vs TEE type
    QE_REPORT_SIGNATURE = 8  # QE report signed by the PCK key
    QE_REPORT_DATA = 9  # QE REPORTDATA[0:32] == SHA-256(attestation key || QE auth data)
    QE_IDENTITY_MATCH = 10  # QE report vs QE Identity (masked MISCSELECT/ATTRIBUTES, MRSIGNER...)
    ISV_SIGNATURE = 11  # header || body signed by the attestation key
    TCB_LEVEL = 12  # platform TCB level match (no level = rejection)
    TDX_MODULE = 13  # TDX module identity (MRSIGNERSEAM, SEAM attributes, module TCB level)
    POLICY = 14  # the relying party's policy (not authenticity)

    @property
    def label(self) -> str:
        """Lower-case name used in JSON output (``"pck_chain"``, ``"policy"``...)."""
        return self.name.lower()


def fail(step: Step, reason: str, detail: str = "") -> VerificationError:
    """Build the VerificationError for ``step``."""
    return VerificationError(step, reason, detail)


__all__ = ["Step", "fail"]
