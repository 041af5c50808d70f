"""Microsoft's azure-security-attestation SDK (token validation on) and PyJWT against our
attestation service over TLS on loopback, with simulated SGX quotes; every claim is checked
against ``inspect --json`` of the quote."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.security.attestation import AttestationAdministrationClient, AttestationClient
from click.testing import CliRunner
from cryptography import x509

from sgx_quote_helper.attest.policy import b64url, policy_hash
from sgx_quote_helper.attest.request import open_enclave_report
from sgx_quote_helper.attest.service import DEFAULT_SGX_POLICY
from sgx_quote_helper.cli.inspect_cmd import inspect

from .attest_helpers import SimWorld, fixed, make_service, serving, sim_world, tls_files

RUNTIME = json.dumps({"keys": [{"kid": "app-key", "kty": "RSA", "n": "u1", "e": "AQAB"}]}).encode()


class Credential:
    """What the SDK needs of a credential: get_token (the service does not check it)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-bearer-token", int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return sim_world(tmp_path_factory.mktemp("sim") / "p", dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def server(world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("attest")
    cert, key = tls_files(d / "tls")
    service = make_service(d / "keys", world.root_der)
    with serving(service, fixed(world.collateral), tls=(cert, key)) as url:
        yield url, cert


def _client(server: tuple[str, Path], **kw: Any) -> AttestationClient:
    url, cert = server
    return AttestationClient(url, Credential(), connection_verify=str(cert), **kw)


def _inspect(quote: bytes, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "q.bin").write_bytes(quote)
    out = CliRunner().invoke(inspect, [str(tmp_path / "q.bin"), "--json"])
    assert out.exit_code == 0, out.output
    summary: dict[str, Any] = json.loads(out.stdout)
    return summary


def _check_sgx_claims(claims: dict[str, Any], summary: dict[str, Any], runtime: bytes) -> None:
    assert claims["x-ms-attestation-type"] == "sgx" and claims["x-ms-ver"] == "1.0"
    assert claims["x-ms-sgx-mrenclave"] == summary["mrenclave"]
    assert claims["x-ms-sgx-mrsigner"] == summary["mrsigner"]
    assert claims["x-ms-sgx-product-id"] == summary["isv_prod_id"]
    assert claims["x-ms-sgx-svn"] == summary["isv_svn"]
    assert claims["x-ms-sgx-is-debuggable"] is summary["debug"]
    assert claims["x-ms-sgx-ehd"] == b64url(runtime)
    assert bytes.fromhex(summary["report_data"])[:32] == hashlib.sha256(runtime).digest()
    assert claims["x-sgxqh-fmspc"] == summary["fmspc"].upper()
    assert claims["x-sgxqh-tcb-status"] == "UpToDate"
    assert claims["x-sgxqh-advisory-ids"] == []
    assert isinstance(claims["x-sgxqh-tcb-evaluation-data-number"], int)
    # the default policy's issuance rules: MAA's legacy claim names
    assert claims["sgx-mrenclave"] == summary["mrenclave"] and claims["sgx-mrsigner"] == summary["mrsigner"]
    assert claims["product-id"] == summary["isv_prod_id"] and claims["svn"] == summary["isv_svn"]
    assert claims["is-debuggable"] is False and claims["tee"] == "sgx"
    assert claims["x-ms-policy-hash"] == policy_hash(DEFAULT_SGX_POLICY)
    assert claims["exp"] - claims["iat"] == 8 * 3600 and claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) == 64


def test_sdk_attest_sgx_enclave_json_runtime_data(
    world: SimWorld, server: tuple[str, Path], tmp_path: Path
) -> None:
    quote = world.quote(RUNTIME)
    summary = _inspect(quote, tmp_path)
    with _client(server, validate_issuer=True, issuer=server[0]) as client:
        result, token = client.attest_sgx_enclave(quote, runtime_json=RUNTIME)
    assert result.issuer == server[0]
    assert result.verifier_type == "sgx" and result.version == "1.0"
    assert result.mr_enclave == summary["mrenclave"] and result.mr_signer == summary["mrsigner"]
    assert result.product_id == summary["isv_prod_id"] and result.svn == summary["isv_svn"]
    assert result.is_debuggable is False
    assert result.enclave_held_data == RUNTIME
    assert result.runtime_claims == json.loads(RUNTIME)
    assert result.policy_hash == base64.urlsafe_b64decode(policy_hash(DEFAULT_SGX_POLICY) + "=")
    coll = result.sgx_collateral
    assert coll["quotehash"] == hashlib.sha256(quote).hexdigest()
    assert coll["tcbinfohash"] == hashlib.sha256(world.collateral.tcb_info.encode()).hexdigest()
    assert coll["qeidhash"] == hashlib.sha256(world.collateral.qe_identity.encode()).hexdigest()
    header = token._get_header() if hasattr(token, "_get_header") else None
    claims = json.loads(base64.urlsafe_b64decode(token.to_jwt_string().split(".")[1] + "=="))
    _check_sgx_claims(claims, summary, RUNTIME)
    assert token.algorithm == "RS256" and token.key_id
    assert header is None or header.get("jku") == f"{server[0]}/certs"


def test_sdk_attest_open_enclave_binary_runtime_data(
    world: SimWorld, server: tuple[str, Path], tmp_path: Path
) -> None:
    runtime = b"\x00\xffbinary runtime data"
    quote = world.quote(runtime, isv_svn=9)
    with _client(server) as client:
        result, token = client.attest_open_enclave(open_enclave_report(quote), runtime_data=runtime)
    summary = _inspect(quote, tmp_path)
    assert result.svn == 9 == summary["isv_svn"]
    assert result.enclave_held_data == runtime and result.runtime_claims is None
    claims = json.loads(base64.urlsafe_b64decode(token.to_jwt_string().split(".")[1] + "=="))
    _check_sgx_claims(claims, summary, runtime)


def test_sdk_signing_certificates_and_openid_metadata(server: tuple[str, Path]) -> None:
    with _client(server) as client:
        signers = client.get_signing_certificates()
        meta = client.get_open_id_metadata()
    assert len(signers) == 1 and signers[0].key_id
    cert = x509.load_pem_x509_certificate(signers[0].certificates[0].encode())
    assert cert.public_key().key_size >= 2048  # type: ignore[union-attr]
    assert meta["issuer"] == server[0] and meta["jwks_uri"] == f"{server[0]}/certs"
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "x-ms-sgx-mrenclave" in meta["claims_supported"]


def test_sdk_get_policy(server: tuple[str, Path]) -> None:
    url, cert = server
    with AttestationAdministrationClient(url, Credential(), connection_verify=str(cert)) as admin:
        text, token = admin.get_policy("SgxEnclave")
    assert text == DEFAULT_SGX_POLICY
    assert token.algorithm == "RS256"


def test_sdk_draft_policy_gives_an_unsecured_token(world: SimWorld, server: tuple[str, Path]) -> None:
    draft = 'version= 1.0; authorizationrules { => permit(); }; issuancerules { => issue(type="draft", value=true); };'
    quote = world.quote(RUNTIME, debug=True)
    with _client(server) as client:
        result, token = client.attest_sgx_enclave(quote, runtime_json=RUNTIME, draft_policy=draft)
        assert token.algorithm == "none"  # never a signed token from a client's policy
        assert result.is_debuggable is True
        assert result.policy_hash == base64.urlsafe_b64decode(policy_hash(draft) + "=")
        # without the draft the default policy denies the debug enclave
        with pytest.raises(HttpResponseError) as exc:
            client.attest_sgx_enclave(quote, runtime_json=RUNTIME)
    assert exc.value.status_code == 400
    assert "(PolicyEvaluationError)" in exc.value.message


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong-runtime-data", "InvalidParameter"),
        ("tampered", "InvalidQuote"),
        ("not-a-quote", "InvalidQuote"),
    ],
)
def test_sdk_sees_maa_errors(world: SimWorld, server: tuple[str, Path], case: str, code: str) -> None:
    quote = world.quote(RUNTIME)
    runtime = RUNTIME
    if case == "wrong-runtime-data":
        runtime = RUNTIME + b" "
    elif case == "tampered":
        quote = quote[:100] + bytes([quote[100] ^ 1]) + quote[101:]  # inside the signed body
    else:
        quote = b"\x03\x00" + bytes(40)
    with _client(server) as client, pytest.raises(HttpResponseError) as exc:
        client.attest_sgx_enclave(quote, runtime_data=runtime)
    assert exc.value.status_code == 400
    assert exc.value.message.startswith(f"({code}) ")
    assert "Traceback" not in exc.value.message


def _get(
    url: str, ctx: ssl.SSLContext, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_pyjwt_validates_tokens_from_the_jwks(world: SimWorld, server: tuple[str, Path]) -> None:
    url, cert = server
    ctx = ssl.create_default_context(cafile=str(cert))
    quote = world.quote(RUNTIME)
    body = json.dumps(
        {"quote": b64url(quote), "runtimeData": {"data": b64url(RUNTIME), "dataType": "JSON"}, "nonce": "n-1"}
    )
    status, answer = _get(
        f"{url}/attest/SgxEnclave?api-version=2022-08-01",
        ctx,
        body.encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, answer
    token = answer["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT" and header["jku"] == f"{url}/certs"
    # 1. the JWKS's own JWK members
    client = jwt.PyJWKClient(f"{url}/certs", ssl_context=ctx)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], issuer=url, options={"require": ["exp", "iat", "nbf"]}
    )
    assert claims["nonce"] == "n-1" and claims["x-ms-runtime"] == json.loads(RUNTIME)
    # 2. the x5c certificate alone (what MAA's JWKS carries)
    _, jwks = _get(f"{url}/certs", ctx)
    entry = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    leaf = x509.load_der_x509_certificate(base64.b64decode(entry["x5c"][0]))
    assert jwt.decode(token, leaf.public_key(), algorithms=["RS256"], issuer=url) == claims  # type: ignore[arg-type]
    # a flipped signature byte fails
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 1
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{payload}.{b64url(bytes(raw))}", key.key, algorithms=["RS256"], issuer=url)
