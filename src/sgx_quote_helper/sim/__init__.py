"""The simulated Intel world: everything a real SGX platform and Intel's services would hold.

A SIMULATED Intel PKI (:mod:`.pki`), the platform's state directory and identity (:mod:`.state_dir`,
:mod:`.identity`, :mod:`.platform`), the report key that MACs EREPORTs (:mod:`.report_key`), the
software QE3/PCE (:mod:`.qe`), and the TCB history and collateral Intel would publish for it
(:mod:`.tcb_history`, :mod:`.collateral`). Real cryptography throughout; every key and root says
SIMULATED and is never trusted unless the user passes it.

The simulated *quoting engine* that serves requests from this world lives in
:mod:`sgx_quote_helper.engine.simulated`; the simulated PCCS in :mod:`sgx_quote_helper.pccs`.
"""
