"""The caching mode of the collateral service: an SQLite store of upstream answers, and the policy that
fronts an upstream PCS/PCCS with it.

- :class:`CollateralCache` keeps each answer (body, content type, Intel headers, validity) under
  its canonical path-and-query (:attr:`Resource.key`), in one SQLite file (WAL, so ``pccs refresh``
  can run beside ``pccs serve``).
- :class:`CachingSource` answers from the cache while an entry is fresh; once it is past its
  refresh point (``max_age`` after it was fetched, or ``ahead`` before its ``nextUpdate``) but still
  valid it is served at once and refreshed in the background; an expired or missing entry is fetched
  synchronously (one upstream request per key however many clients ask at once, through a rate
  limiter and a bound on concurrent upstream requests, :mod:`.limits`). When the upstream is down,
  still-valid entries keep being served. Errors, 404s and malformed answers
  (:func:`document.upstream_document` refuses them) are never stored; an answer whose signatures do
  not chain to the configured root CA (:func:`.trust.check_trusted`; Intel's by default) is served
  to the client that asked, with a warning in the log, and never stored.

TDX answers (``/tdx/certification/v4/tcb``, ``qe/identity``, ``tcbevaluationdatanumbers``) go the
same way: their key holds the ``/tdx/`` path, and :func:`document.upstream_document` also checks the
TEE (TCB Info ``id`` TDX, QE Identity ``id`` TD_QE), so an SGX document is never filed under a TDX key.

A ``pckcert`` answer is stored under the key of the request (every identity it named). With QCNL's
``qeid=...&encrypted_ppid=<real>`` form it is also filed under the QE ID alone (the key of QCNL's
all-zero-PPID form), but only when the QE ID is bound to the certificate's PPID: the first such
answer binds a QE ID to a PPID (per PCE ID), and an answer for another PPID under the same QE ID is
never filed there (so nobody can pair their PPID with a victim's QE ID and poison the victim's
entry). A later QE-ID-only request for another raw TCB is asked upstream with the encrypted PPID
the QE ID was bound with (PCS cannot find a platform by QE ID), and stored only if the answer holds
the bound PPID. The first binding of a QE ID never seen before is trusted as given (as Intel's PCCS
trusts its registrations, ``POST /platforms``).

The upstream is reached through an injected :data:`Getter` (the aiohttp client lives in ``app``), and
time through an injected clock, so all of this runs under test with a fake upstream and a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from cryptography import x509

from ..errors import CollateralError, ConfigError, ParseError, VerificationError
from ..verify.chain import TrustedRoot, sgx_extensions
from .document import Document, upstream_document
from .limits import AttemptLog, RateLimiter
from .resource import Resource, parse_query, parse_resource
from .trust import check_trusted

log = logging.getLogger("sgx_quote_helper.pccs")

API_KEY_HEADER = "Ocp-Apim-Subscription-Key"
#: where Intel publishes the root CA CRL (the root certificate's CRL distribution point)
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
INTEL_PCS_HOST = "api.trustedservices.intel.com"
#: Intel's CRL distribution points (root CA CRL; PCK CRLs on PCS and Azure's proxies)
_INTEL_CRL_URI = re.compile(
    r"https://(?:[A-Za-z0-9-]*certificates\.trustedservices\.intel\.com|certprx\.adsdcsp\.com)"
    r"/IntelSGXRootCA\.[A-Za-z]+"
    r"|https://(?:[A-Za-z0-9-]*\.?api\.trustedservices\.intel\.com|[A-Za-z0-9-]+\.az\.sgx(?:prod|np)\.adsdcsp\.com)"
    r"/sgx/certification/v[1-9][0-9]*/pckcrl\?[A-Za-z0-9=&]*"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collateral (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    next_update TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS qe_binding (
    qeid TEXT NOT NULL,
    pceid TEXT NOT NULL,
    ppid TEXT NOT NULL,
    encrypted_ppid TEXT,
    PRIMARY KEY (qeid, pceid)
);
"""


@dataclass(frozen=True)
class UpstreamReply:
    """What the getter got: HTTP status, response headers and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


#: ``await getter(url, request_headers)``; raises CollateralError when the upstream cannot be reached
Getter = Callable[[str, Mapping[str, str]], Awaitable[UpstreamReply]]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class CacheEntry:
    """A stored answer and when it was fetched."""

    key: str
    document: Document
    fetched_at: datetime


class CollateralCache:
    """SQLite store of collateral answers keyed by canonical path-and-query."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            # one event loop uses it, but that loop may run in another thread than the one that opened it
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open cache database {self.path}: {exc}") from None

    def get(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key`` (a corrupt record counts as absent)."""
        try:
            row = self._db.execute(
                "SELECT body, meta, fetched_at FROM collateral WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            log.warning("cache: cannot read %s (%s); treating it as absent", key, exc)
            return None
        if row is None:
            return None
        try:
            return CacheEntry(key, Document.from_json(bytes(row[0]), row[1]), datetime.fromisoformat(row[2]))
        except (CollateralError, ValueError):
            log.warning("cache: dropping corrupt record %s", key)
            self.delete(key)
            return None

    def put(self, key: str, document: Document, fetched_at: datetime) -> None:
        """Store (or replace) the answer under ``key``.

        Raises:
            CollateralError: the database refused the write (full disk, read-only file, locked).
        """
        row = (
            key,
            document.body,
            document.to_json(),
            fetched_at.isoformat(),
            document.next_update.isoformat(),
        )
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO collateral (key, body, meta, fetched_at, next_update) VALUES (?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.Error as exc:
            raise CollateralError(f"cache: cannot store {key}: {exc}") from None

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._db.execute("DELETE FROM collateral WHERE key = ?", (key,))

    def binding(self, qeid: str, pceid: str) -> tuple[str, str | None] | None:
        """(PPID, encrypted PPID or ``None``) the QE ID is bound to on this PCE ID, if any (hex)."""
        try:
            row = self._db.execute(
                "SELECT ppid, encrypted_ppid FROM qe_binding WHERE qeid = ? AND pceid = ?", (qeid, pceid)
            ).fetchone()
        except sqlite3.Error as exc:
            log.warning("cache: cannot read the QE ID binding (%s); treating it as absent", exc)
            return None
        return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))

    def bound_ppid(self, qeid: str, pceid: str) -> str | None:
        """The PPID (hex) the QE ID is bound to on this PCE ID, if any."""
        found = self.binding(qeid, pceid)
        return None if found is None else found[0]

    def bind(self, qeid: str, pceid: str, ppid: str, encrypted_ppid: str | None = None) -> bool:
        """Bind the QE ID to ``ppid`` (and the encrypted PPID that named it) unless it is bound
        already; ``True`` if it is now bound to ``ppid``."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO qe_binding (qeid, pceid, ppid, encrypted_ppid) VALUES (?, ?, ?, ?)",
                (qeid, pceid, ppid, encrypted_ppid),
            )
            if encrypted_ppid is not None:  # the same platform's encrypted PPID, learnt later
                self._db.execute(
                    "UPDATE qe_binding SET encrypted_ppid = ? WHERE qeid = ? AND pceid = ? AND ppid = ? "
                    "AND encrypted_ppid IS NULL",
                    (encrypted_ppid, qeid, pceid, ppid),
                )
        except sqlite3.Error as exc:
            raise CollateralError(f"cache: cannot store the QE ID binding: {exc}") from None
        return self.bound_ppid(qeid, pceid) == ppid

    def stored_keys(self) -> list[str]:
        """Every stored key, sorted."""
        return [r[0] for r in self._db.execute("SELECT key FROM collateral ORDER BY key")]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM collateral").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _ppid_of(document: Document) -> str | None:
    """The PPID (hex) in a PCK certificate answer's SGX extension."""
    try:
        return sgx_extensions(x509.load_pem_x509_certificate(document.body), 0).ppid.hex().upper()
    except (ValueError, VerificationError):
        return None


def resource_for_key(key: str) -> Resource:
    """Parse a stored key back into its :class:`Resource` (ParseError if it is not one)."""
    parts = urlsplit(key)
    resource = parse_resource(parts.path, parse_query(parts.query))
    if resource is None:
        raise ParseError("cache key", 0, f"not a collateral path: {key[:80]!r}")
    return resource


def upstream_base(url: str) -> str:
    """Normalise an upstream base URL: no trailing slash, no trailing ``/{sgx|tdx}/certification/vN``
    (each request names its own TEE and version)."""
    base = url.rstrip("/")
    for suffix in ("/sgx/certification/v4", "/sgx/certification/v3", "/tdx/certification/v4"):
        base = base.removesuffix(suffix)
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"upstream must be an http(s) URL, got {url!r}")
    return base


@dataclass(frozen=True)
class RefreshPolicy:
    """When a still-valid entry is refetched (in the background, while it keeps being served)."""

    max_age: timedelta = timedelta(hours=24)
    ahead: timedelta = timedelta(hours=24)
    #: no more than one refresh attempt per key in this interval (a failing upstream is not hammered)
    min_interval: timedelta = timedelta(minutes=1)

    def fresh(self, entry: CacheEntry, now: datetime) -> bool:
        """Serve without refreshing?"""
        return now < entry.fetched_at + self.max_age and now < entry.document.next_update - self.ahead

    def state(self, entry: CacheEntry, now: datetime) -> str:
        """``fresh`` (served as is), ``stale`` (served, refreshed behind) or ``expired`` (refetched
        before it is served)."""
        if now >= entry.document.next_update:
            return "expired"
        return "fresh" if self.fresh(entry, now) else "stale"


@dataclass(frozen=True)
class Lookup:
    """A source's answer: the document (``None``: not found) and how it was obtained."""

    document: Document | None
    outcome: str  # hit | stale | miss | refreshed | not-found | simulated


@dataclass
class CachingSource:
    """Collateral from an upstream PCS/PCCS, through a :class:`CollateralCache`."""

    cache: CollateralCache
    upstream: str
    getter: Getter
    clock: Clock
    api_key: str | None = None
    policy: RefreshPolicy = field(default_factory=RefreshPolicy)
    root_ca_crl_url: str = INTEL_ROOT_CA_CRL_URL
    #: called with (endpoint, outcome) after every upstream request: ok | not-found | error | malformed
    on_upstream: Callable[[str, str], None] | None = None
    #: upstream requests in flight at most (clients asking for many unknown FMSPCs cannot flood it)
    max_upstream_requests: int = 8
    #: the root every cached signature must chain to (Intel's SGX Root CA unless told otherwise)
    trust: TrustedRoot = field(default_factory=TrustedRoot.intel)
    #: upstream requests per second (token bucket shared by all keys)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    #: when each key was last asked upstream (bounded in size and age)
    attempts: AttemptLog = field(default_factory=AttemptLog)
    _inflight: dict[str, asyncio.Task[Document | None]] = field(default_factory=dict, init=False)
    _background: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.upstream = upstream_base(self.upstream)
        self._slots = asyncio.Semaphore(self.max_upstream_requests)
        self.attempts.clock = lambda: self.clock().timestamp()  # the source's (injected) time

    @property
    def mode(self) -> str:
        return "caching"

    def url_for(self, resource: Resource) -> str:
        """The upstream URL for ``resource`` (API v3 gets ``update`` only when it is ``early``; a
        ``pckcert`` named by its PPID goes without the QE ID)."""
        params = [
            (k, v)
            for k, v in resource.upstream_query()
            if not (k == "update" and resource.version == 3 and v == "standard")
        ]
        return self.upstream + resource.path + ("?" + urlencode(params) if params else "")

    async def get(self, resource: Resource, api_key: str | None = None) -> Lookup:
        """Answer ``resource`` from the cache or the upstream (see the module docstring).

        Raises:
            CollateralError: nothing valid is cached and the upstream failed or answered garbage.
        """
        entry = self.cache.get(resource.key)
        now = self.clock()
        if entry is not None and now < entry.document.next_update:
            if self.policy.fresh(entry, now):
                return Lookup(entry.document, "hit")
            self._refresh_in_background(resource, api_key, now)
            return Lookup(entry.document, "stale")
        document = await self.fetch(resource, api_key)
        if document is None:
            return Lookup(None, "not-found")
        return Lookup(document, "miss" if entry is None else "refreshed")

    async def fetch(self, resource: Resource, api_key: str | None = None) -> Document | None:
        """Fetch ``resource`` from the upstream now and cache a valid answer. ``None`` means the
        upstream answered 404.

        One upstream request per key at a time: concurrent callers await the same task, which runs
        on its own, so a caller that goes away (client disconnect) does not cancel it for the others.
        """
        key = resource.key
        task = self._inflight.get(key)
        if task is None:
            self.attempts.record(key)
            task = asyncio.get_running_loop().create_task(self._fetch_and_store(resource, api_key))
            self._inflight[key] = task
            task.add_done_callback(partial(self._fetched, key))
        return await asyncio.shield(task)

    def _fetched(self, key: str, task: asyncio.Task[Document | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here: callers that left must not leave it "never retrieved"

    async def _fetch_and_store(self, resource: Resource, api_key: str | None) -> Document | None:
        bound = self._bound_request(resource)
        document = await self._fetch_upstream(bound[0] if bound else resource, api_key)
        if document is None:
            return None
        if bound is not None and _ppid_of(document) != bound[1]:
            log.warning(
                "pckcert: the upstream answered another PPID for bound QE ID %s; not cached", resource.qeid
            )
            return document
        try:
            check_trusted(resource, document, self.trust)
        except CollateralError as exc:
            log.warning("%s: %s; served once, not cached", resource.key[:200], exc)
            self._report(resource, "untrusted")
            return document
        self._store(resource.key, document)
        alias = resource.by_qeid()
        if alias is not None and self._bound(alias, document, resource.encrypted_ppid):
            self._store(alias.key, document)
        return document

    def _store(self, key: str, document: Document) -> None:
        try:
            self.cache.put(key, document, self.clock())
        except CollateralError as exc:  # still a good answer: serve it uncached
            log.warning("%s", exc)

    def _bound_request(self, resource: Resource) -> tuple[Resource, str] | None:
        """For a ``pckcert`` by QE ID alone whose QE ID is bound with an encrypted PPID: the request
        asked upstream in its place (that encrypted PPID, the asked raw TCB) and the PPID its answer
        must hold. PCS cannot find a platform by QE ID; this is how a fresh node's zero-PPID
        request for a new raw TCB is answered."""
        if resource.kind != "pckcert" or resource.qeid is None or resource.by_qeid() is not None:
            return None
        found = self.cache.binding(resource.qeid, resource.pceid or "")
        if found is None or found[1] is None:
            return None
        return replace(resource, encrypted_ppid=found[1]), found[0]

    def _bound(self, alias: Resource, document: Document, encrypted_ppid: str | None) -> bool:
        """May the answer be filed under the QE ID alone? Only if the QE ID is (now) bound to the
        PPID of the certificate it holds."""
        ppid = _ppid_of(document)
        if ppid is None:
            return False
        qeid, pceid = alias.qeid or "", alias.pceid or ""
        try:
            if self.cache.bind(qeid, pceid, ppid, encrypted_ppid):
                return True
        except CollateralError as exc:
            log.warning("%s", exc)
            return False
        log.warning(
            "pckcert: QE ID %s is bound to another platform's PPID; this answer (PPID %s...) is not "
            "filed under that QE ID",
            qeid[:32],
            ppid[:8],
        )
        return False

    async def _fetch_upstream(self, resource: Resource, api_key: str | None) -> Document | None:
        key = api_key or self.api_key
        headers = {"Accept": "*/*"}
        if key:
            headers[API_KEY_HEADER] = key
        # Intel's PCS has neither /rootcacrl nor /crl: a PCCS takes those CRLs from the distribution point
        direct = {"rootcacrl": self.root_ca_crl_url, "crl": resource.uri or ""}.get(resource.kind)
        if direct is not None and resource.kind == "crl" and not self.crl_uri_allowed(direct):
            direct = None  # never fetch an arbitrary URL for a client
        reply = None
        if direct is None or urlsplit(self.upstream).hostname != INTEL_PCS_HOST:
            reply = await self._request(resource, self.url_for(resource), headers)
        if direct is not None and (reply is None or reply.status in (400, 404)):  # upstream is PCS-like
            reply = await self._request(resource, direct, {"Accept": "*/*"})
        if reply is None:
            reply = UpstreamReply(404, {}, b"")
        if reply.status == 404:
            self._report(resource, "not-found")
            return None
        if reply.status != 200:
            self._report(resource, "error")
            raise CollateralError(f"upstream answered HTTP {reply.status} for {resource.key}")
        try:
            document = upstream_document(resource, reply.headers, reply.body)
        except CollateralError:
            self._report(resource, "malformed")
            raise
        self._report(resource, "ok")
        return document

    def crl_uri_allowed(self, uri: str) -> bool:
        """May ``crl?uri=`` fetch ``uri`` itself? Only Intel's CRL distribution points (the list
        Intel's PCCS accepts) and the configured root CA CRL URL."""
        return uri == self.root_ca_crl_url or _INTEL_CRL_URI.fullmatch(uri) is not None

    async def _request(self, resource: Resource, url: str, headers: Mapping[str, str]) -> UpstreamReply:
        try:
            await self.limiter.acquire()
            async with self._slots:
                return await self.getter(url, headers)
        except CollateralError:
            self._report(resource, "error")
            raise

    def _report(self, resource: Resource, outcome: str) -> None:
        if self.on_upstream is not None:
            self.on_upstream(resource.endpoint, outcome)

    def _refresh_in_background(self, resource: Resource, api_key: str | None, now: datetime) -> None:
        since = self.attempts.since(resource.key)
        if resource.key in self._inflight or (
            since is not None and since < self.policy.min_interval.total_seconds()
        ):
            return
        task = asyncio.get_running_loop().create_task(self._quiet_refresh(resource, api_key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quiet_refresh(self, resource: Resource, api_key: str | None) -> None:
        try:
            await self.fetch(resource, api_key)
        except CollateralError as exc:
            log.warning("refresh of %s failed, still serving the cached copy: %s", resource.key, exc)

    async def drain(self) -> None:
        """Wait for the upstream fetches and background refreshes under way."""
        while self._background or self._inflight:
            await asyncio.gather(*self._background, *self._inflight.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Finish the fetches under way, close the getter (if it has ``close``) and the database."""
        await self.drain()
        close = getattr(self.getter, "close", None)
        if close is not None:
            await close()
        self.cache.close()

    async def refresh_all(self, *, due_only: bool = False) -> dict[str, str]:
        """Refetch every cached entry (or, with ``due_only``, those past their refresh point); PCK
        certificates filed under a bare QE ID are refreshed through their PPID entry.

        Returns:
            key -> ``ok`` | ``not-found`` | ``failed: <reason>`` (an entry that fails keeps its old copy).
        """
        results: dict[str, str] = {}
        now = self.clock()
        for key in self.cache.stored_keys():
            entry = self.cache.get(key)
            if entry is None or (due_only and self.policy.fresh(entry, now)):
                continue
            try:
                resource = resource_for_key(key)
                if resource.kind == "pckcert" and resource.encrypted_ppid is None and resource.ppid is None:
                    continue  # a QE-ID alias: refreshed with its PPID entry (Intel's PCS takes no bare QE ID)
                document = await self.fetch(resource)
                results[key] = "ok" if document is not None else "not-found"
            except (CollateralError, ParseError) as exc:
                results[key] = f"failed: {exc}"
        return results


__all__ = [
    "API_KEY_HEADER",
    "INTEL_ROOT_CA_CRL_URL",
    "CacheEntry",
    "CachingSource",
    "Clock",
    "CollateralCache",
    "Getter",
    "Lookup",
    "RefreshPolicy",
    "UpstreamReply",
    "resource_for_key",
    "upstream_base",
]
