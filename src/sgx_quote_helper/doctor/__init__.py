"""``doctor``: check and explain an app container's or a node's out-of-process quoting setup.

:func:`run_checks` runs every check in a fixed order and returns a :class:`DoctorReport`; each
:class:`Check` is ``pass``, ``fail``, ``warn`` or ``skip`` with a one-paragraph ``detail`` and, when
it did not pass, a ``fix``. ``ok`` is true when no applicable check failed (warnings and skips do not
fail). The checks and when they apply (also in ``sgx-quote-helper doctor --help``):

====================  ==========================================================================
check                 applies when
====================  ==========================================================================
``aesm-addr-env``     always (``SGX_AESM_ADDR`` unset is a warning: this process would quote
                      in-process)
``socket-path``,      ``SGX_AESM_ADDR`` is set, or ``--socket`` was given, or the default socket
``socket-connect``,   ``/var/run/aesmd/aesm.socket`` exists; each needs the one before it to pass
``daemon``,
``key-ids``,
``test-quote``
``sgx-devices``       SGX device nodes exist, or this is an out-of-process app (it needs
                      ``/dev/sgx_enclave`` for its own enclave); skipped when the daemon serves the
                      simulated engine and no device exists
``epc-size``          SGX device nodes exist or sysfs reports EPC
``quote-provider``    the library is found, or quotes are made here on hardware (devices present
                      and not an out-of-process app)
``pccs``              a PCCS URL was given (``--pccs-url``) or is configured in the QCNL file
``tdx-configfs``,     this looks like a TD guest (``/dev/tdx_guest`` or ``/etc/tdx-attest.conf``
``tdx-guest-device``, exists, or configfs-tsm's provider is ``tdx_guest``)
``tdx-attest-conf``,
``tdx-quote-path``
``tdx-host``,         a TDX host: ``--qgs-socket`` given, ``/var/run/tdx-qgs/qgs.socket`` exists or
``qgs-socket``,       ``kvm_intel``'s ``tdx`` parameter is ``Y``; ``qgs-answers`` and ``qgs-access``
``qgs-answers``,      need ``qgs-socket`` to pass
``qgs-access``,
``qgs-tdqe-devices``
====================  ==========================================================================

All I/O goes through :class:`Probes` (connect, HTTP GET, access test, client factory) so tests
inject failures that root would otherwise bypass. Submodules: ``socket_checks`` (the daemon side),
``host_checks`` (devices, EPC, quote provider, PCCS), ``tdx_checks`` (TD guest paths, the QGS),
``explain`` (AESM codes in plain words),
``qcnl`` (the quote provider's configuration file).
"""

from __future__ import annotations

from .model import (
    DEFAULT_LIB_DIRS,
    DEFAULT_QGS_SOCKET,
    Check,
    DoctorOptions,
    DoctorReport,
    Facts,
    Probes,
    Status,
)


def run_checks(options: DoctorOptions, probes: Probes | None = None) -> DoctorReport:
    """Run every check in order (see the module doc) and return the report."""
    from .host_checks import check_devices, check_epc, check_pccs, check_quote_provider
    from .socket_checks import check_env, socket_checks
    from .tdx_checks import guest_checks, host_checks

    probes = probes or Probes.real()
    facts = Facts()
    checks: list[Check] = [check_env(options)]
    checks += socket_checks(options, probes, facts)
    devices = check_devices(options, probes, facts)
    checks.append(devices)
    checks.append(check_epc(options, facts))
    checks.append(check_quote_provider(options, facts))
    checks.append(check_pccs(options, probes))
    checks += guest_checks(options, probes)
    checks += host_checks(options, probes)
    return DoctorReport(tuple(checks))


__all__ = [
    "DEFAULT_LIB_DIRS",
    "DEFAULT_QGS_SOCKET",
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "Probes",
    "Status",
    "run_checks",
]
