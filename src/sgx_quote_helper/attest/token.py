"""Compact JWS tokens, RS256 (RFC 7515 / 7518 §3.3: RSASSA-PKCS1-v1_5 with SHA-256), as MAA signs
them: header ``{"alg": "RS256", "jku": "{issuer}/certs", "kid": ..., "typ": "JWT"}``.

A JWT is small enough to sign with ``cryptography`` directly (no JOSE library at run time); tests
check the result with PyJWT and Microsoft's SDK. :func:`verify_token` is the relying party's side
(used by ``attest QUOTE`` and the demo): pick the JWKS key by ``kid``, check the RS256 signature
with the public key of ``x5c[0]``, then ``nbf`` / ``exp`` against ``now``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import AttestationError
from .policy import b64url

#: clock skew tolerated on nbf/exp when verifying (seconds)
LEEWAY = 60
#: largest token verify_token reads
MAX_TOKEN = 256 * 1024


#: compact JSON (the separators of every token part); one encoder, not one per call
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def _json_part(obj: dict[str, Any]) -> str:
    return b64url(_COMPACT.encode(obj).encode("utf-8"))


class Signer:
    """RS256 with one key and one header: the header segment is encoded once, each token then
    costs its claims' JSON, base64url and the signature."""

    def __init__(self, header: dict[str, Any], key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.header = {"alg": "RS256", **header}
        self._prefix = _json_part(self.header) + "."

    def sign(self, claims: dict[str, Any]) -> str:
        """``header.claims.signature`` for these claims."""
        signing_input = self._prefix + _json_part(claims)
        sig = self.key.sign(signing_input.encode("ascii"), _PADDING, _SHA256)
        return f"{signing_input}.{b64url(sig)}"


def sign(header: dict[str, Any], claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """``header.claims.signature``, RS256 (``header`` gets ``alg: RS256``)."""
    return Signer(header, key).sign(claims)


def unsecured(claims: dict[str, Any]) -> str:
    """An unsecured JWS (``alg: none``, empty signature), as MAA stores unsigned policies."""
    return f"{_json_part({'alg': 'none'})}.{_json_part(claims)}."


def _unb64(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AttestationError("InvalidToken", f"token {what} is not base64url") from None


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Split a compact JWS: (header, claims, signing input, signature); nothing is checked."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise AttestationError("InvalidToken", "not a token (or too long)")
    parts = token.split(".")
    if len(parts) != 3:
        raise AttestationError("InvalidToken", "a compact JWS has three dot-separated parts")
    out: list[dict[str, Any]] = []
    for part, what in zip(parts[:2], ("header", "claims"), strict=True):
        try:
            obj = json.loads(_unb64(part, what))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise AttestationError("InvalidToken", f"token {what} is not JSON") from None
        if not isinstance(obj, dict):
            raise AttestationError("InvalidToken", f"token {what} is not a JSON object")
        out.append(obj)
    return out[0], out[1], f"{parts[0]}.{parts[1]}".encode("ascii"), _unb64(parts[2], "signature")


def jwks_key(jwks: dict[str, Any], kid: Any) -> rsa.RSAPublicKey:
    """The RSA public key of the JWKS entry with this ``kid`` (from its ``x5c[0]`` certificate)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise AttestationError("InvalidToken", "the JWKS has no keys list")
    for entry in keys:
        if isinstance(entry, dict) and entry.get("kid") == kid:
            chain = entry.get("x5c")
            if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
                raise AttestationError("InvalidToken", f"JWKS key {kid!r} has no x5c certificate")
            try:
                cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
            except (binascii.Error, ValueError):
                raise AttestationError(
                    "InvalidToken", f"JWKS key {kid!r}: x5c[0] is not a certificate"
                ) from None
            pub = cert.public_key()
            if not isinstance(pub, rsa.RSAPublicKey):
                raise AttestationError("InvalidToken", f"JWKS key {kid!r} is not an RSA key")
            return pub
    raise AttestationError("InvalidToken", f"no key with kid {kid!r} in the JWKS")


def verify_token(
    token: str, jwks: dict[str, Any], now: float, *, issuer: str | None = None
) -> dict[str, Any]:
    """Check an RS256 token against a JWKS at ``now`` (Unix seconds); return its claims.

    AttestationError("InvalidToken", ...) for a wrong algorithm, unknown kid, bad signature,
    a token outside its nbf/exp window (``LEEWAY`` seconds of skew), or a different issuer.
    """
    header, claims, signing_input, sig = decode(token)
    if header.get("alg") != "RS256":
        raise AttestationError("InvalidToken", f"algorithm {header.get('alg')!r}: only RS256 is accepted")
    key = jwks_key(jwks, header.get("kid"))
    try:
        key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise AttestationError("InvalidToken", "bad token signature") from None
    for name in ("exp", "nbf", "iat"):
        if name in claims and (not isinstance(claims[name], (int, float)) or isinstance(claims[name], bool)):
            raise AttestationError("InvalidToken", f"{name} is not a number")
    if "exp" in claims and now > claims["exp"] + LEEWAY:
        raise AttestationError("InvalidToken", "the token has expired")
    if "nbf" in claims and now < claims["nbf"] - LEEWAY:
        raise AttestationError("InvalidToken", "the token is not valid yet")
    if issuer is not None and claims.get("iss") != issuer:
        raise AttestationError("InvalidToken", f"issuer {claims.get('iss')!r}, expected {issuer!r}")
    return claims


__all__ = ["LEEWAY", "Signer", "decode", "jwks_key", "sign", "unsecured", "verify_token"]
