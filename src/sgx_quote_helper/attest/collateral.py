"""Where the attestation service gets collateral: one fixed file, or a PCCS with a cache.

:class:`FixedCollateral` serves the collateral of ``--collateral FILE`` (the dcap-qvl JSON that
``verify --collateral`` reads) for every quote. :class:`PccsCollateral` fetches with
:class:`~sgx_quote_helper.verify.fetch.CollateralFetcher` (the code ``verify --pccs`` uses) and keeps
each platform's collateral for ``ttl`` seconds: the warm path makes no request. ``update`` /
``tcb_evaluation_data_number`` pick the TCB baseline fetched (PCS v4), for every quote. The cache key is
what the fetch depends on: TEE type and the PCK chain in the quote (or, for certification data
types 2/3, the encrypted-PPID lookup parameters); nothing the client sends picks a URL.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..abi.quote import CERT_TYPE_PCK_CHAIN, Quote
from ..errors import CollateralError, ParseError
from ..verify.collateral import Collateral
from ..verify.fetch import CollateralFetcher, Getter

Clock = Callable[[], float]


@dataclass
class _Entry:
    collateral: Collateral
    fetched: float


class FixedCollateral:
    """The same collateral for every quote (``--collateral FILE``)."""

    mode = "file"

    def __init__(self, collateral: Collateral) -> None:
        self.collateral = collateral

    def get(self, quote: Quote, now: float) -> Collateral:
        return self.collateral

    def cached(self, quote: Quote, now: float) -> Collateral | None:
        return self.collateral

    def ages(self, now: float) -> list[float]:
        return []

    def clear(self) -> None:
        pass


def cache_key(quote: Quote) -> tuple[object, ...]:
    """What the fetched collateral depends on (see the module doc)."""
    cd = quote.certification_data
    if cd.cert_type == CERT_TYPE_PCK_CHAIN:
        return (quote.is_tdx, quote.pck_chain_pem)
    try:
        p = cd.encrypted_ppid()
    except ParseError as exc:
        raise CollateralError(f"quote: cannot look up its PCK certificate: {exc}") from None
    return (quote.is_tdx, quote.header.qe_id, p.encrypted_ppid, p.cpusvn, p.pcesvn, p.pceid)


class PccsCollateral:
    """Collateral from a PCCS/PCS base URL, cached per platform for ``ttl`` seconds (LRU-bounded)."""

    mode = "pccs"

    def __init__(
        self, base_url: str, getter: Getter, *, ttl: float = 3600.0, maxsize: int = 1024,
        update: str | None = None, tcb_evaluation_data_number: int | None = None,
    ) -> None:  # fmt: skip
        self.fetcher = CollateralFetcher(
            base_url, getter, update=update, tcb_evaluation_data_number=tcb_evaluation_data_number
        )
        self.ttl = ttl
        self.maxsize = maxsize
        self._cache: OrderedDict[tuple[object, ...], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, quote: Quote, now: float) -> Collateral | None:
        """The cached collateral if it is fresh, else None (never fetches)."""
        key = cache_key(quote)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or not 0 <= now - entry.fetched < self.ttl:
                return None
            self._cache.move_to_end(key)
            return entry.collateral

    def get(self, quote: Quote, now: float) -> Collateral:
        """Cached or freshly fetched collateral (CollateralError when the PCCS fails)."""
        hit = self.cached(quote, now)
        if hit is not None:
            return hit
        collateral = self.fetcher.fetch(quote)
        collateral.tcb_info_model  # noqa: B018  (collateral that does not parse is not cached)
        collateral.qe_identity_model  # noqa: B018
        with self._lock:
            self._cache[cache_key(quote)] = _Entry(collateral, now)
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        return collateral

    def ages(self, now: float) -> list[float]:
        """Age in seconds of each cached entry (for the collateral-age metric)."""
        with self._lock:
            return [now - e.fetched for e in self._cache.values()]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


CollateralSource = FixedCollateral | PccsCollateral

__all__ = ["CollateralSource", "FixedCollateral", "PccsCollateral", "cache_key"]
