"""Helpers of the attestation-service tests: simulated quotes with chosen report data, a
self-signed TLS certificate for 127.0.0.1, and the service running on loopback in a thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgx_quote_helper.abi.keyid import AttKeyId
from sgx_quote_helper.attest.app import make_app, start
from sgx_quote_helper.attest.collateral import FixedCollateral
from sgx_quote_helper.attest.keys import KeyDir
from sgx_quote_helper.attest.service import AttestationService
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.sim import collateral as sim_collateral
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.verify.collateral import Collateral, load_dcap_qvl_json
from sgx_quote_helper.verify.verifier import Verifier

KEY_ID = AttKeyId.ecdsa_p256_qe3()
MRENCLAVE = bytes(range(32))
MRSIGNER = bytes(range(32, 64))


@dataclass
class SimWorld:
    """A simulated platform, its collateral and root, and a quote maker."""

    platform: Platform
    engine: SimulatedEngine
    collateral: Collateral
    root_der: bytes

    def quote(self, runtime_data: bytes = b"", *, report_data: bytes | None = None, **identity: Any) -> bytes:
        """A quote whose report_data is SHA-256(runtime_data) (or ``report_data``)."""
        rd = hashlib.sha256(runtime_data).digest() if report_data is None else report_data
        identity = {
            "mr_enclave": MRENCLAVE,
            "mr_signer": MRSIGNER,
            "isv_prod_id": 4660,
            "isv_svn": 3,
        } | identity
        report = self.platform.ereport(QE_TARGET_INFO, rd, **identity)
        return bytes(self.engine.get_quote(report, KEY_ID).quote)


def sim_world(path: Path, now: dt.datetime) -> SimWorld:
    platform = Platform.init(path, now=now)
    engine = SimulatedEngine(platform)
    engine.init_quote(KEY_ID, True)
    coll = load_dcap_qvl_json(json.dumps(sim_collateral.quote_collateral(platform, now)))
    return SimWorld(platform, engine, coll, sim_collateral.root_ca_der(platform))


def tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1 / localhost (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attest test server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def make_service(
    keydir: Path,
    root_der: bytes,
    *,
    issuer: str = "https://pending",
    now: dt.datetime | None = None,
    **kw: Any,
) -> AttestationService:
    service = AttestationService(verifier=Verifier(root_der), keys=KeyDir(keydir), issuer=issuer, **kw)
    service.load_keys(now or dt.datetime.now(dt.UTC))
    return service


@contextmanager
def serving(
    service: AttestationService,
    source: Any,
    *,
    tls: tuple[Path, Path] | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    max_body: int = 1024 * 1024,
) -> Iterator[str]:
    """Run the app on 127.0.0.1 (any port) in a thread; yield its base URL (also the issuer)."""
    import ssl

    ctx = None
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*tls)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"max_body": max_body, "key_reload_interval": 0}
    if clock is not None:
        kwargs["clock"] = clock

    async def main() -> None:
        runner, url = await start(make_app(service, source, **kwargs), "127.0.0.1", 0, ctx)
        service.issuer = url
        box["url"], box["stop"] = url, asyncio.Event()
        ready.set()
        await box["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "attestation server did not start"
    try:
        yield box["url"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        loop.close()


def fixed(coll: Collateral) -> FixedCollateral:
    return FixedCollateral(coll)


__all__ = ["MRENCLAVE", "MRSIGNER", "SimWorld", "fixed", "make_service", "serving", "sim_world", "tls_files"]
