"""PCK certificate selection: which of a platform's PCK certificates a raw TCB gets, by Intel's rules.

Intel's PCCS answers ``pckcert?...&cpusvn=&pcesvn=`` for a platform it holds several PCK
certificates of (one per TCB level, from PCS ``pckcerts``) with the PCK Cert Selection library
(``tools/PCKCertSelection``, ``pck_sorter.cpp``). The rules, restated:

1. A TCB is 16 SGX TCB components plus the PCESVN. "A >= B" means every component and the PCESVN of
   A are >= B's; when some are lower and some higher the two are incomparable.
2. The certificates are sorted into buckets, one per TCB level of the TCB Info in its order (Intel
   lists the levels highest first) plus a last bucket for certificates below every level: each
   certificate goes to the first level its TCB is >= to. Within a bucket a certificate goes before
   the first one its TCB is >= to, so a bucket starts with its highest certificate.
3. Walking the buckets in order, the first certificate whose TCB the raw TCB is >= to is the answer;
   none: no certificate fits (the PCCS answers 404).

For TCB type 0 (every SGX TCB Info so far) the CPUSVN's 16 bytes are the 16 components. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

#: (16 TCB components, PCESVN)
Tcb = tuple[bytes, int]


def at_least(a: Tcb, b: Tcb) -> bool:
    """Is ``a`` >= ``b`` in every component and the PCESVN (rule 1)?"""
    return (
        len(a[0]) == len(b[0]) == 16 and a[1] >= b[1] and all(x >= y for x, y in zip(a[0], b[0], strict=True))
    )


def _buckets(levels: Sequence[Tcb], certs: Sequence[Tcb]) -> list[list[int]]:
    buckets: list[list[int]] = [[] for _ in range(len(levels) + 1)]
    for index, tcb in enumerate(certs):
        where = next((i for i, level in enumerate(levels) if at_least(tcb, level)), len(levels))
        bucket = buckets[where]
        spot = next((k for k, other in enumerate(bucket) if at_least(tcb, certs[other])), len(bucket))
        bucket.insert(spot, index)
    return buckets


def select_pck(raw: Tcb, levels: Sequence[Tcb], certs: Sequence[Tcb]) -> int | None:
    """The index in ``certs`` of the PCK certificate for the raw TCB ``raw`` (rules 2-3), given the
    TCB Info's levels in their published order; ``None`` when none fits."""
    for bucket in _buckets(levels, certs):
        for index in bucket:
            if at_least(raw, certs[index]):
                return index
    return None


__all__ = ["Tcb", "at_least", "select_pck"]
