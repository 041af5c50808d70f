"""DCAP quote verification: quote bytes + collateral + trusted root + ``now`` -> Verdict.

Pure (no clock, no network) except :mod:`.fetch`. Start with :func:`verify` or :class:`Verifier`::

    from sgx_quote_helper.verify import Verifier, load_dcap_qvl_json
    verdict = Verifier().verify(quote_bytes, load_dcap_qvl_json(text), now=1750334400)

Modules: ``collateral`` (model + loaders), ``tcbinfo`` / ``qeidentity`` (signed JSON models),
``chain`` (X.509, CRLs, pinned root), ``step`` (the numbered steps), ``steps`` (one check each), ``tcb`` / ``status``
(TCB matching, Intel's convergence), ``verdict``, ``policy``, ``cache``, ``verifier``, ``fetch``.
"""

from __future__ import annotations

from .chain import TrustedRoot
from .collateral import Collateral, from_pcs_responses, load_dcap_qvl_json
from .policy import DEFAULT_POLICY, Policy
from .status import TcbStatus
from .step import Step
from .verdict import Rejection, Verdict
from .verifier import Verifier, verify

__all__ = [
    "DEFAULT_POLICY",
    "Collateral",
    "Policy",
    "Rejection",
    "Step",
    "TcbStatus",
    "TrustedRoot",
    "Verdict",
    "Verifier",
    "from_pcs_responses",
    "load_dcap_qvl_json",
    "verify",
]
