"""The HTTP face of the collateral service: aiohttp routes for the PCS/PCCS API, health, metrics, and
the aiohttp client that reaches an upstream.

Every collateral path (see :mod:`.resource`) goes to one handler that parses the request, asks the
:class:`Source` (simulated store or caching source) and answers with the document's exact bytes and
Intel's headers. Errors are JSON ``{"error": ..., "message": ...}``: 400 bad parameters, 404 unknown
path or no such FMSPC/platform, 405 wrong method, 414 query string too long, 502 upstream failed.
``POST /sgx/certification/v{3,4}/platforms`` takes the PCK ID retrieval tool's registration
(:mod:`.registration`) and answers 200 once the platform's PCK certificate is known (simulated: the
platform exists; caching: fetched upstream and stored, binding the QE ID), else 404.
``GET /`` and ``/healthz`` answer 200 (the server only listens once its source is loaded);
``/metrics`` is Prometheus text. Every answer carries ``Request-ID``, as Intel's PCCS sets it
(``middleware/addRequestId.js``): the client's own when it sent a sane one, else a new random 32-hex
id; the access log line shows it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from ..errors import CollateralError, ParseError
from .cache import API_KEY_HEADER, CachingSource, Lookup, UpstreamReply
from .metrics import Metrics
from .registration import MAX_BODY, parse_registration
from .resource import MAX_QUERY_LENGTH, Resource, Update, parse_target

log = logging.getLogger("sgx_quote_helper.pccs")
access_log = logging.getLogger("sgx_quote_helper.pccs.access")

#: request line limit handed to aiohttp's parser: long enough that our own 414 (JSON) answers first
MAX_REQUEST_LINE = 65536
#: largest upstream body accepted (a PCK CRL with many entries is a few hundred KiB)
MAX_UPSTREAM_BODY = 8 * 1024 * 1024

SOURCE_KEY: web.AppKey[Source] = web.AppKey("source")
UPDATE_KEY: web.AppKey[Update] = web.AppKey("update")
REQUEST_IDS_KEY: web.AppKey[Callable[[], str]] = web.AppKey("request_ids")
REQUEST_ID = "Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics")
ENDPOINT_KEY: web.RequestKey[str] = web.RequestKey("endpoint", str)


class Source(Protocol):
    """Where collateral comes from: :class:`.store.SimulatedStore` or :class:`.cache.CachingSource`."""

    @property
    def mode(self) -> str: ...

    async def get(self, resource: Resource, api_key: str | None = None) -> Lookup: ...


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _label(request: web.Request) -> str:
    path = request.path
    if path in ("/", "/healthz"):
        return "health"
    if path == "/metrics":
        return "metrics"
    return "other"


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    start = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        reason = exc.reason or "error"
        response = _error(
            exc.status, reason.lower().replace(" ", "-"), f"{request.method} {request.path}: {reason}"
        )
    except Exception:
        log.exception("unexpected error answering %s", request.path_qs[:200])
        response = _error(500, "internal-error", "internal error; see the server log")
    asked = request.headers.get(REQUEST_ID, "")
    response.headers[REQUEST_ID] = asked if _SANE_ID.fullmatch(asked) else request.app[REQUEST_IDS_KEY]()
    endpoint = request.get(ENDPOINT_KEY, _label(request))
    metrics.requests.labels(endpoint, str(response.status)).inc()
    metrics.duration.labels(endpoint).observe(time.perf_counter() - start)
    return response


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "mode": request.app[SOURCE_KEY].mode})


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})


async def _collateral(request: web.Request) -> web.Response:
    # the query exactly as the client sent it (yarl would re-quote it), parsed by resource.parse_query
    raw_query = request.raw_path.partition("?")[2]
    if len(raw_query) > MAX_QUERY_LENGTH:
        return _error(414, "uri-too-long", f"query string longer than {MAX_QUERY_LENGTH} characters")
    try:
        resource = parse_target(request.path, raw_query, default_update=request.app[UPDATE_KEY])
    except ParseError as exc:
        return _error(400, "bad-request", exc.reason)
    if resource is None:
        return _error(404, "not-found", f"no such endpoint: {request.path[:200]}")
    request[ENDPOINT_KEY] = resource.endpoint
    metrics = request.app[METRICS_KEY]
    try:
        lookup = await request.app[SOURCE_KEY].get(resource, request.headers.get(API_KEY_HEADER))
    except CollateralError as exc:
        log.warning("%s: %s", resource.key[:200], exc)
        return _error(502, "upstream-unavailable", str(exc))
    metrics.lookups.labels(resource.endpoint, lookup.outcome).inc()
    document = lookup.document
    if document is None:
        return _error(404, "not-found", f"no collateral for {resource.key}")
    headers = {"Content-Type": document.content_type, **dict(document.headers)}
    return web.Response(body=document.body, headers=headers)


_PLATFORMS = re.compile(r"/sgx/certification/v([34])/platforms/?")


async def _register(request: web.Request) -> web.Response:
    m = _PLATFORMS.fullmatch(request.path)
    if m is None:
        return _error(405, "method-not-allowed", f"POST {request.path[:200]}: only /platforms takes POST")
    request[ENDPOINT_KEY] = f"sgx/v{m.group(1)}/platforms"
    if (request.content_length or 0) > MAX_BODY:
        return _error(413, "payload-too-large", f"registration body larger than {MAX_BODY} bytes")
    try:
        registration = parse_registration(await request.content.read(MAX_BODY + 1))
    except ParseError as exc:
        return _error(400, "bad-request", exc.reason)
    resource = registration.resource(int(m.group(1)))
    try:
        lookup = await request.app[SOURCE_KEY].get(resource, request.headers.get(API_KEY_HEADER))
    except CollateralError as exc:
        log.warning("registration of QE ID %s: %s", registration.qe_id[:32], exc)
        return _error(502, "upstream-unavailable", str(exc))
    if lookup.document is None:
        return _error(404, "not-found", "No cache data for this platform.")
    log.info("registered platform QE ID %s (PCE ID %s)", registration.qe_id[:32], registration.pce_id)
    return web.Response(text="Operation successful.")


def _random_request_id() -> str:
    return uuid.uuid4().hex


def make_app(
    source: Source,
    metrics: Metrics | None = None,
    default_update: Update = "standard",
    request_ids: Callable[[], str] = _random_request_id,
) -> web.Application:
    """The aiohttp application serving ``source``; ``tcb`` and ``qe/identity`` requests that name
    no ``update`` get ``default_update``; ``request_ids`` makes the ``Request-ID`` of a request that
    brought none."""
    app = web.Application(middlewares=[_json_errors], client_max_size=64 * 1024)
    app[SOURCE_KEY] = source
    app[UPDATE_KEY] = default_update
    app[REQUEST_IDS_KEY] = request_ids
    app[METRICS_KEY] = metrics or Metrics()
    app.router.add_get("/", _health)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/{tail:.*}", _collateral)
    app.router.add_post("/{tail:.*}", _register)
    app.on_cleanup.append(_close_source)
    return app


async def _close_source(app: web.Application) -> None:
    close = getattr(app[SOURCE_KEY], "aclose", None)
    if close is not None:
        await close()


def system_clock() -> datetime:
    """The real time (UTC): the clock ``pccs serve`` gives its source."""
    return datetime.now(UTC)


class HttpGetter:
    """The upstream getter of :class:`CachingSource`, on an aiohttp client session."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, headers: Mapping[str, str]) -> UpstreamReply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, headers=dict(headers)) as resp:
                body = await resp.content.read(MAX_UPSTREAM_BODY + 1)
                if len(body) > MAX_UPSTREAM_BODY:
                    raise CollateralError(f"upstream answer larger than {MAX_UPSTREAM_BODY} bytes: {url}")
                return UpstreamReply(resp.status, {k: v for k, v in resp.headers.items()}, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CollateralError(f"upstream unreachable: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """Close the client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def refresh_loop(
    source: CachingSource,
    interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every ``interval`` seconds, refresh the cached entries past their refresh point (runs until
    cancelled; a failing upstream is logged and retried next round)."""
    while True:
        await sleep(interval)
        results = await source.refresh_all(due_only=True)
        failed = [k for k, v in results.items() if v.startswith("failed")]
        if results:
            log.info("refreshed %d cached entries (%d failed)", len(results), len(failed))
        for key in failed:
            log.warning("refresh of %s: %s", key, results[key])


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path (cut to 300 characters), status, size, seconds."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        target = request.path_qs
        if len(target) > 300:
            target = target[:300] + f"...(+{len(target) - 300})"
        self.logger.info(
            '%s "%s %s" %d %d %.4fs %s',
            request.remote,
            request.method,
            target,
            response.status,
            response.body_length,
            time,
            response.headers.get(REQUEST_ID, "-"),
        )


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving ``app`` on ``host:port`` (port 0: any free port).

    Returns:
        The runner (``await runner.cleanup()`` to stop) and the base URL actually bound.
    """
    runner = web.AppRunner(
        app,
        access_log=access_log,
        access_log_class=AccessLogger,
        max_line_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return runner, f"http://{shown}:{bound[1]}"


__all__ = ["HttpGetter", "Metrics", "Source", "make_app", "refresh_loop", "start", "system_clock"]
