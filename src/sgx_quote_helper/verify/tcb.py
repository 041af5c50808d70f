"""TCB level matching (Intel QVL's TcbLevelCheck) for SGX and TDX, and the QE ISVSVN level.

- Platform: walk the TCB Info levels from the highest (they are sorted descending); select the
  first level where every PCK-certificate component SVN is >= the level's and the PCK PCESVN is
  >= the level's; for TDX also TEE_TCB_SVN >= ``tdxtcbcomponents`` (bytes 0-1 skipped when
  TEE_TCB_SVN[1] > 0: the module version is judged by the TDX module identity instead).
- QE: the first level (descending ISVSVN) whose ISVSVN <= the QE report's ISVSVN.
- TDX module: the identity ``TDX_<major as two hex digits>`` (TEE_TCB_SVN[1]), level by
  TEE_TCB_SVN[0]; it can only make the platform status worse (QVL's module convergence).

No matching level returns ``None``; the caller turns that into a rejection.
"""

from __future__ import annotations

from ..errors import VerificationError
from .qeidentity import QeIdentity, QeTcbLevel
from .status import TcbStatus, qe_level_result
from .step import Step
from .tcbinfo import ModuleTcbLevel, TcbInfo, TcbLevel, TdxModuleIdentity

S = TcbStatus


def _ge(have: tuple[int, ...] | bytes, need: tuple[int, ...], skip: int = 0) -> bool:
    return all(have[i] >= need[i] for i in range(skip, len(need)))


def match_platform_level(
    tcb_info: TcbInfo,
    cpu_components: tuple[int, ...],
    pcesvn: int,
    tee_tcb_svn: bytes | None = None,
) -> TcbLevel | None:
    """The highest level the platform meets (PCK cert components and PCESVN; TEE_TCB_SVN for TDX)."""
    skip = 2 if tee_tcb_svn is not None and tee_tcb_svn[1] > 0 else 0
    for level in tcb_info.levels:
        if not _ge(cpu_components, level.sgx_components) or pcesvn < level.pcesvn:
            continue
        if tee_tcb_svn is not None and (
            level.tdx_components is None or not _ge(tee_tcb_svn, level.tdx_components, skip)
        ):
            continue
        return level
    return None


def match_sgx_level(tcb_info: TcbInfo, cpu_components: tuple[int, ...], pcesvn: int) -> TcbLevel | None:
    """The highest level met by the SGX components and PCESVN alone (QVL's "SGX TCB level")."""
    return match_platform_level(tcb_info, cpu_components, pcesvn)


_NEEDS_CONFIG = frozenset(
    {
        S.CONFIGURATION_NEEDED,
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        S.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    }
)
_SGX_FINE = frozenset(
    {S.UP_TO_DATE, S.SW_HARDENING_NEEDED, S.CONFIGURATION_NEEDED, S.CONFIGURATION_AND_SW_HARDENING_NEEDED}
)


def relaunch_status(
    tee_tcb_svn2: bytes,
    tcb_info: TcbInfo,
    sgx_status: TcbStatus,
    tdx_status: TcbStatus,
    module_status: TcbStatus | None,
    qe_status: TcbStatus,
) -> TcbStatus:
    """QVL's TD relaunch check for TD report 1.5 quotes (dcap-quote.md §1.5).

    When the QE is up to date, the SGX level is not out of date, but the TD's TCB (converged with
    the TDX module) is out of date only because the module the TD was launched on is old, and
    TEE_TCB_SVN2 (the module now loaded) meets the latest TCB level (and the latest level of its
    module identity), relaunching the TD would fix it: TDRelaunchAdvised (or ...ConfigurationNeeded
    when the SGX or TDX status needs configuration). Otherwise ``tdx_status`` is returned as is.
    A TEE_TCB_SVN2 naming a module identity that is unknown or has no levels fails step 13.
    """
    if qe_level_result(qe_status) is not S.UP_TO_DATE or sgx_status not in _SGX_FINE:
        return tdx_status
    if (
        tdx_status not in (S.OUT_OF_DATE, S.OUT_OF_DATE_CONFIGURATION_NEEDED)
        or module_status is not S.OUT_OF_DATE
    ):
        return tdx_status
    latest = tcb_info.levels[0]
    comps = latest.tdx_components or (0,) * 16
    if tee_tcb_svn2[1] == 0:
        fixed = tee_tcb_svn2[0] >= comps[0] and tee_tcb_svn2[2] >= comps[2]
    else:
        ident = find_module_identity(tcb_info, tee_tcb_svn2)
        if ident is None or not ident.levels:
            raise VerificationError(
                Step.TDX_MODULE,
                "tdx-module-unknown",
                f"no TDX module identity with levels for TEE_TCB_SVN2 module {tee_tcb_svn2[1]}",
            )
        fixed = tee_tcb_svn2[0] >= ident.levels[0].isvsvn and tee_tcb_svn2[2] >= comps[2]
    if not fixed:
        return tdx_status
    if sgx_status in _NEEDS_CONFIG or tdx_status in _NEEDS_CONFIG:
        return S.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED
    return S.TD_RELAUNCH_ADVISED


def match_qe_level(identity: QeIdentity, isvsvn: int) -> QeTcbLevel | None:
    """The highest QE Identity level with ISVSVN <= the QE's ISVSVN."""
    for level in identity.levels:
        if isvsvn >= level.isvsvn:
            return level
    return None


def find_module_identity(tcb_info: TcbInfo, tee_tcb_svn: bytes) -> TdxModuleIdentity | None:
    """The TDX module identity a TD report's TEE_TCB_SVN points at (``tdxModule`` for major 0)."""
    major = tee_tcb_svn[1]
    if major == 0:
        return tcb_info.tdx_module
    want = f"TDX_{major:02X}"
    for ident in tcb_info.tdx_module_identities:
        if ident.id is not None and ident.id.upper() == want:
            return ident
    return None


def match_module_level(identity: TdxModuleIdentity, tee_tcb_svn: bytes) -> ModuleTcbLevel | None:
    """The highest module level with ISVSVN <= TEE_TCB_SVN[0]."""
    for level in identity.levels:
        if tee_tcb_svn[0] >= level.isvsvn:
            return level
    return None


def converge_module(module: TcbStatus, platform: TcbStatus) -> TcbStatus:
    """QVL's convergence of the TDX module status into the platform status."""
    if module is S.REVOKED:
        return S.REVOKED
    if module is S.OUT_OF_DATE:
        if platform in (S.UP_TO_DATE, S.SW_HARDENING_NEEDED):
            return S.OUT_OF_DATE
        if platform in (S.CONFIGURATION_NEEDED, S.CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return S.OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


__all__ = [
    "converge_module",
    "find_module_identity",
    "match_module_level",
    "match_platform_level",
    "match_qe_level",
    "match_sgx_level",
    "relaunch_status",
]
