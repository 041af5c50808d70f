"""The HTTP face of the attestation service: aiohttp routes in MAA's API.

- ``POST /attest/SgxEnclave``, ``/attest/OpenEnclave``, ``/attest/TdxVm`` ``?api-version=...``
  -> 200 ``{"token": JWT}``;
- ``GET /certs`` (JWKS), ``GET /.well-known/openid-configuration``, ``GET /policies/{type}``
  -> ``{"token": JWT}`` with the policy in ``x-ms-policy``;
- ``GET /healthz`` (alive), ``GET /readyz`` (keys loaded), ``GET /metrics`` (Prometheus).

Every error is MAA's shape, ``{"error": {"code": ..., "message": ...}}``: 400 for a bad request,
quote, runtime data or api-version, 404 unknown path or attestation type, 405 wrong method, 413
body larger than ``max_body``, 503 collateral unavailable, 500 (logged, never a stack trace in the
answer) for a bug. Logs name the route, result, TCB status and time, never quotes or runtime data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import AttestationError, CollateralError
from .collateral import CollateralSource
from .metrics import Metrics
from .request import Route, check_api_version
from .service import AttestationService

log = logging.getLogger("sgx_quote_helper.attest")
access_log = logging.getLogger("sgx_quote_helper.attest.access")

#: default largest request body: a quote is a few KiB; runtime data may be larger
MAX_BODY = 1024 * 1024
KEY_RELOAD_INTERVAL = 30.0

Clock = Callable[[], dt.datetime]

SERVICE_KEY: web.AppKey[AttestationService] = web.AppKey("service", AttestationService)
SOURCE_KEY: web.AppKey[CollateralSource] = web.AppKey("collateral", object)  # type: ignore[arg-type]
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("clock", object)  # type: ignore[arg-type]
ENDPOINT_KEY: web.RequestKey[str] = web.RequestKey("endpoint", str)
MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body", int)
RELOAD_KEY: web.AppKey[float] = web.AppKey("key_reload_interval", float)
TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("key_task", asyncio.Task)


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    start = time.perf_counter()
    try:
        response = await handler(request)
    except AttestationError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status, (exc.reason or "Error").replace(" ", ""))
        response = error_response(exc.status, code, f"{request.method} {request.path[:200]}: {exc.reason}")
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        response = error_response(500, "InternalServerError", "internal error; see the server log")
    metrics.answered(request.get(ENDPOINT_KEY, "other"), response.status, time.perf_counter() - start)
    return response


def token_response(token: str) -> web.Response:
    """``{"token": JWT}``: the bytes ``web.json_response`` makes (a compact JWS needs no JSON
    escaping: base64url and dots), without encoding JSON for one string."""
    return web.Response(
        body=b'{"token": "' + token.encode("ascii") + b'"}', content_type="application/json", charset="utf-8"
    )


def _attest_handler(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    endpoint = f"attest/{route}"

    async def handle(request: web.Request) -> web.Response:
        request[ENDPOINT_KEY] = endpoint
        app = request.app
        service, metrics, source = app[SERVICE_KEY], app[METRICS_KEY], app[SOURCE_KEY]
        start = time.perf_counter()
        result, status = "bad-request", ""
        try:
            check_api_version(request.query.get("api-version"))
            limit = request.app[MAX_BODY_KEY]
            if request.content_length is not None and request.content_length > limit:
                raise AttestationError(
                    "RequestEntityTooLarge", f"request body larger than {limit} bytes", 413
                )
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise AttestationError(
                    "RequestEntityTooLarge", f"request body larger than {limit} bytes", 413
                ) from None
            req, quote = service.parse(route, body)
            now = app[CLOCK_KEY]()
            ts = now.timestamp()
            collateral = source.cached(quote, ts)
            if collateral is None:
                try:
                    collateral = await asyncio.to_thread(source.get, quote, ts)
                except CollateralError as exc:
                    metrics.collateral_fetch("error")
                    result = "collateral-unavailable"
                    log.warning("collateral for a %s quote: %s", route, exc)
                    raise AttestationError(
                        "CollateralUnavailable", f"collateral could not be fetched: {exc}", 503
                    ) from None
                metrics.collateral_fetch("ok")
            try:
                outcome = service.attest(req, quote, collateral, now)
            except AttestationError as exc:
                result = {"InvalidQuote": "invalid-quote", "PolicyEvaluationError": "denied"}.get(
                    exc.code, "bad-request"
                )
                raise
            result, status = ("draft" if outcome.draft else "issued"), outcome.tcb_status
            return token_response(outcome.token)
        finally:
            metrics.verdict(route, result, status)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "attest %s: %s", route, result,
                    extra={"route": route, "result": result, "tcb_status": status,
                           "duration_ms": round((time.perf_counter() - start) * 1000, 3)},
                )  # fmt: skip

    return handle


async def _certs(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "certs"
    service = request.app[SERVICE_KEY]
    jwks = service.jwks(request.app[CLOCK_KEY]())
    request.app[METRICS_KEY].keys.set(len(jwks["keys"]))
    return web.json_response(jwks, headers={"Cache-Control": "max-age=300"})


async def _openid(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "openid-configuration"
    return web.json_response(request.app[SERVICE_KEY].openid_configuration())


async def _policy(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "policies"
    version = request.query.get("api-version")
    if version is not None:
        check_api_version(version)
    service = request.app[SERVICE_KEY]
    token = service.policy_token(request.match_info["type"], request.app[CLOCK_KEY]())
    return token_response(token)


async def _health(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "health"
    return web.json_response({"status": "ok", "collateral": request.app[SOURCE_KEY].mode})


async def _ready(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "health"
    service = request.app[SERVICE_KEY]
    try:
        service.jwks(request.app[CLOCK_KEY]())
    except Exception:  # keys unusable: not ready
        return error_response(503, "NotReady", "no usable signing key")
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    request[ENDPOINT_KEY] = "metrics"
    metrics = request.app[METRICS_KEY]
    now = request.app[CLOCK_KEY]().timestamp()
    body = metrics.render(lambda: request.app[SOURCE_KEY].ages(now))
    return web.Response(body=body, headers={"Content-Type": metrics.content_type})


async def _key_reloader(app: web.Application) -> None:
    service = app[SERVICE_KEY]
    while True:
        await asyncio.sleep(app[RELOAD_KEY])
        try:
            if service.reload_keys_if_changed(app[CLOCK_KEY]()):
                log.info("signing keys reloaded from %s", service.keydir.path)
        except Exception:
            log.exception("reloading signing keys")


async def _start_background(app: web.Application) -> None:
    if app[RELOAD_KEY] > 0:
        app[TASK_KEY] = asyncio.create_task(_key_reloader(app))


async def _stop_background(app: web.Application) -> None:
    task = app.get(TASK_KEY)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_app(
    service: AttestationService,
    source: CollateralSource,
    *,
    clock: Clock = system_clock,
    metrics: Metrics | None = None,
    max_body: int = MAX_BODY,
    key_reload_interval: float = KEY_RELOAD_INTERVAL,
) -> web.Application:
    """The aiohttp application (``service`` must have its keys loaded)."""
    # client_max_size above max_body: our own 413 (MAA's error shape) answers first
    app = web.Application(middlewares=[_errors], client_max_size=max_body + 1)
    app[SERVICE_KEY] = service
    app[SOURCE_KEY] = source
    app[METRICS_KEY] = metrics or Metrics()
    app[CLOCK_KEY] = clock
    app[MAX_BODY_KEY] = max_body
    app[RELOAD_KEY] = key_reload_interval
    for route in ("SgxEnclave", "OpenEnclave", "TdxVm"):
        app.router.add_post(f"/attest/{route}", _attest_handler(route))
    app.router.add_get("/certs", _certs)
    app.router.add_get("/.well-known/openid-configuration", _openid)
    app.router.add_get("/policies/{type}", _policy)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    app.on_startup.append(_start_background)
    app.on_cleanup.append(_stop_background)
    return app


async def start(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: any free port); the runner and the base URL bound."""
    runner = web.AppRunner(app, access_log=access_log)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://{shown}:{bound[1]}"


__all__ = ["MAX_BODY", "Metrics", "error_response", "make_app", "start", "system_clock"]
