"""Token signing keys in a key directory: generation, rotation, the JWKS.

Layout: ``signing-NNNN.key`` (RSA private key, PKCS#8 PEM) and ``signing-NNNN.crt`` (its
self-signed certificate, PEM, the JWKS ``x5c``), every file mode 0600, the directory 0700. The
newest key signs once it has been published for :data:`PUBLISH_AHEAD`; an older key stays in the JWKS until every token it may have signed has
expired: until the next key took over plus the token lifetime (and :data:`GRACE`).
Replicas share the directory (a Kubernetes Secret): nothing but ``create`` and ``rotate`` writes.
``kid`` is the base64url SHA-256 of the certificate (RFC 7517's ``x5t#S256`` value).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ..errors import ConfigError
from .policy import b64url

MIN_BITS = 2048
#: extra time an old key stays published after its last token expired (clock skew)
GRACE = dt.timedelta(minutes=5)
CERT_VALIDITY = dt.timedelta(days=5 * 365)
#: a new key is published this long before it signs (a Secret update reaches pods within about a
#: minute, and replicas look at the key directory every 30 s)
PUBLISH_AHEAD = dt.timedelta(minutes=5)
_NAME = re.compile(r"signing-(\d{4,})\.key")


@dataclass(frozen=True)
class SigningKey:
    """One key: its number, private key, certificate and kid."""

    number: int
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @functools.cached_property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @functools.cached_property
    def kid(self) -> str:
        # computed once per key (every token's header names it)
        return b64url(hashlib.sha256(self.der).digest())

    @property
    def created(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    def jwk(self) -> dict[str, Any]:
        """The JWKS entry: MAA's ``kid`` + ``x5c`` (standard base64 DER), plus ``kty``, ``alg``,
        ``use``, ``n``, ``e`` so that JOSE libraries need not parse the certificate."""
        pub = self.key.public_key().public_numbers()

        def num(v: int) -> str:
            return b64url(v.to_bytes((v.bit_length() + 7) // 8, "big"))

        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": num(pub.n),
            "e": num(pub.e),
            "x5c": [base64.b64encode(self.der).decode("ascii")],
        }


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_key(number: int, now: dt.datetime, bits: int = MIN_BITS) -> SigningKey:
    """A new RSA key with a self-signed certificate valid from ``now``."""
    if bits < MIN_BITS:
        raise ConfigError(f"signing keys must be RSA {MIN_BITS} bits or larger")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name(
        [
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"sgx-quote-helper attestation token signing key {number}"
            ),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgx-quote-helper"),
        ]
    )
    start = now.replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return SigningKey(number, key, cert)


class KeyDir:
    """The key directory (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[SigningKey]:
        """Every key, oldest first (ConfigError for unreadable or mismatched files)."""
        if not self.path.is_dir():
            return []
        out: list[SigningKey] = []
        for entry in sorted(self.path.iterdir()):
            m = _NAME.fullmatch(entry.name)
            if m is None:
                continue
            crt = entry.with_suffix(".crt")
            try:
                key = serialization.load_pem_private_key(entry.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(crt.read_bytes())
            except OSError as exc:
                raise ConfigError(
                    f"key directory {self.path}: cannot read {exc.filename}: {exc.strerror}"
                ) from None
            except (ValueError, TypeError):
                raise ConfigError(
                    f"key directory {self.path}: {entry.name} or {crt.name} is not PEM"
                ) from None
            if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_BITS:
                raise ConfigError(f"{entry}: not an RSA key of {MIN_BITS} bits or more")
            if cert.public_key() != key.public_key():
                raise ConfigError(f"{crt} does not certify the key in {entry.name}")
            out.append(SigningKey(int(m.group(1)), key, cert))
        return sorted(out, key=lambda k: k.number)

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and mtimes of the key files (to notice a rotated Secret)."""
        if not self.path.is_dir():
            return ()
        out = []
        for entry in sorted(self.path.iterdir()):
            if _NAME.fullmatch(entry.name) or entry.suffix == ".crt":
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    out.append((entry.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def add(self, now: dt.datetime, bits: int = MIN_BITS) -> SigningKey:
        """Generate the next key and write it (mode 0600, directory 0700)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = self.load()
        new = make_key((keys[-1].number + 1) if keys else 1, now, bits)
        stem = self.path / f"signing-{new.number:04d}"
        pem = new.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(stem.with_suffix(".crt"), new.cert.public_bytes(serialization.Encoding.PEM))
        _write_private(stem.with_suffix(".key"), pem)
        return new

    def ensure(self, now: dt.datetime, bits: int = MIN_BITS) -> list[SigningKey]:
        """The keys, generating the first one when there is none."""
        keys = self.load()
        if keys:
            return keys
        try:
            self.add(now, bits)
        except OSError as exc:
            raise ConfigError(
                f"key directory {self.path} has no keys and is not writable: {exc.strerror}"
            ) from None
        return self.load()

    def prune(self, now: dt.datetime, lifetime: dt.timedelta) -> list[int]:
        """Delete keys that no unexpired token can need; return their numbers."""
        gone = []
        for k in retired(self.load(), now, lifetime):
            for suffix in (".key", ".crt"):
                (self.path / f"signing-{k.number:04d}{suffix}").unlink(missing_ok=True)
            gone.append(k.number)
        return gone


def published(keys: list[SigningKey], now: dt.datetime, lifetime: dt.timedelta) -> list[SigningKey]:
    """The keys the JWKS lists at ``now``: the active one and those whose tokens may be alive."""
    dead = {k.number for k in retired(keys, now, lifetime)}
    return [k for k in keys if k.number not in dead]


def retired(keys: list[SigningKey], now: dt.datetime, lifetime: dt.timedelta) -> list[SigningKey]:
    """Keys that stopped signing (their successor took over :data:`PUBLISH_AHEAD` after its
    creation) longer than ``lifetime + GRACE`` ago; the newest key is never retired."""
    out = []
    for old, new in itertools.pairwise(keys):
        if now > new.created + PUBLISH_AHEAD + lifetime + GRACE:
            out.append(old)
    return out


def active(keys: list[SigningKey], now: dt.datetime) -> SigningKey:
    """The key that signs at ``now``: the newest one published for at least :data:`PUBLISH_AHEAD`
    (so that every replica's JWKS lists a key before any replica signs with it), or, on first
    start, the only key there is."""
    if not keys:
        raise ConfigError("no signing keys")
    ready = [k for k in keys if k.created <= now - PUBLISH_AHEAD]
    return ready[-1] if ready else keys[0]


__all__ = [
    "GRACE",
    "MIN_BITS",
    "PUBLISH_AHEAD",
    "KeyDir",
    "SigningKey",
    "active",
    "make_key",
    "published",
    "retired",
]
