"""Test helpers for the collateral service: a fake Intel PCS serving REAL Intel collateral (read in
place from shared/testdata/real), a settable clock, and servers on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_quote_helper.pccs.app import start

from .conftest import REAL

PHALA = REAL / "phala-sgx-v3-processor"
PHALA_FMSPC = "00A067110000"
PHALA_TDX = REAL / "tdx" / "phala-tdx-v4"
PHALA_TDX_FMSPC = "B0C06F000000"
#: the `now` of the phala vector's 2025-06 collateral (expected.json)
PHALA_NOW = datetime(2025, 6, 19, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A settable clock (``clock()`` returns the current fake time)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def phala_collateral() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PHALA / "collateral-2025-06.dcap-qvl.json").read_text())
    return data


class FakePcs:
    """Intel's PCS (plus PCCS's /rootcacrl) serving real collateral: the phala SGX platform (FMSPC
    00A067110000, processor CA) on the SGX paths and the phala TDX platform (FMSPC B0C06F000000,
    platform CA) on the TDX paths.

    ``mode`` breaks it on purpose: ``ok``, ``500``, ``garbage``, ``short-signature``, ``no-chain``,
    ``wrong-fmspc``, ``bad-crl``, ``no-rootcacrl`` (404 there; the CRL is at /IntelSGXRootCA.der).
    """

    def __init__(self) -> None:
        self.c = phala_collateral()
        self.tdx = json.loads((PHALA_TDX / "collateral-2025-06.dcap-qvl.json").read_text())
        self.hits: list[str] = []
        self.api_keys: list[str | None] = []
        self.mode = "ok"

    def body(self, member: str, text: str, signature: str) -> bytes:
        return ('{"' + member + '":' + text + ',"signature":"' + signature + '"}').encode()

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        self.api_keys.append(request.headers.get("Ocp-Apim-Subscription-Key"))
        mode, path = self.mode, request.path
        tdx = path.startswith("/tdx/")
        c = self.tdx if tdx or request.query.get("ca") == "platform" else self.c
        if mode == "500":
            return web.Response(status=500, text="upstream broke")
        chain = quote(c["tcb_info_issuer_chain"], safe="")
        if path.endswith("/tcb"):
            if request.query.get("fmspc", "").upper() != (PHALA_TDX_FMSPC if tdx else PHALA_FMSPC):
                return web.Response(status=404)
            sig = c["tcb_info_signature"][:10] if mode == "short-signature" else c["tcb_info_signature"]
            text = (
                c["tcb_info"].replace(PHALA_FMSPC, "00606A000000") if mode == "wrong-fmspc" else c["tcb_info"]
            )
            body = b'{"tcbInfo":{"id":' if mode == "garbage" else self.body("tcbInfo", text, sig)
            headers = {} if mode == "no-chain" else {"TCB-Info-Issuer-Chain": chain}
            return web.Response(body=body, headers=headers, content_type="application/json")
        if path.endswith("/qe/identity"):
            body = self.body("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"])
            return web.Response(
                body=body,
                headers={"SGX-Enclave-Identity-Issuer-Chain": quote(c["qe_identity_issuer_chain"], safe="")},
                content_type="application/json",
            )
        if path.endswith("/pckcrl"):
            if request.query.get("ca") not in ("processor", "platform"):
                return web.Response(status=404)
            der = bytes.fromhex(c["pck_crl"])
            if mode == "bad-crl":
                der = der[:40]
            crl_body = der if request.query.get("encoding") == "der" else _pem_crl(der)
            return web.Response(
                body=crl_body, headers={"SGX-PCK-CRL-Issuer-Chain": quote(c["pck_crl_issuer_chain"], safe="")}
            )
        if path.endswith("/rootcacrl") and mode != "no-rootcacrl":
            return web.Response(text=c["root_ca_crl"], content_type="application/pkix-crl")
        if path == "/IntelSGXRootCA.der":
            return web.Response(body=bytes.fromhex(c["root_ca_crl"]), content_type="application/pkix-crl")
        return web.Response(status=404)


def _pem_crl(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1, any port; yield its base URL."""
    runner, url = await start(app, "127.0.0.1", 0)
    try:
        yield url
    finally:
        await runner.cleanup()


def fake_pcs_app(pcs: FakePcs) -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", pcs.handle)
    return app


@contextmanager
def fake_pcs_in_thread() -> Iterator[tuple[FakePcs, str]]:
    """A FakePcs on its own event loop in a thread (for CLI subprocess tests)."""
    pcs = FakePcs()
    with app_in_thread(fake_pcs_app(pcs)) as url:
        yield pcs, url


@contextmanager
def app_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` (127.0.0.1, any port) on an event loop in a background thread; yield its URL.

    Lets synchronous clients (urllib, click's CliRunner) and ``asyncio.run`` in the test thread
    talk to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, url = asyncio.run_coroutine_threadsafe(start(app, "127.0.0.1", 0), loop).result(timeout=10)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
