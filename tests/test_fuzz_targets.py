"""A short slice of every fuzz target in ``fuzz/`` (the long runs are ``python -m fuzz``), the
runner's exit codes, and regressions for what the targets found."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography import x509

from fuzz.registry import TARGETS
from fuzz.run import main, run_hypothesis, run_random
from fuzz.t_pki import pem, real_chain
from fuzz.t_wire import chunks, decode_frames_input
from fuzz.target import Target
from sgx_quote_helper.cli.inspect_cmd import pck_fields
from sgx_quote_helper.errors import CollateralError, ParseError, VerificationError
from sgx_quote_helper.k8s.webhook import parse_review
from sgx_quote_helper.verify.chain import TrustedRoot, sgx_extensions
from sgx_quote_helper.verify.fetch import _fmspc_and_ca
from sgx_quote_helper.verify.roots import INTEL_SGX_ROOT_CA_DER

from .conftest import REAL, ROOT

EXPECTED = {
    "frames",
    "requests",
    "abi",
    "quote",
    "pck",
    "pki",
    "collateral",
    "pccs",
    "pccs_target",
    "pccs_upstream",
    "pccs_registration",
    "admission",
    "qcnl",
    "tdreport",
    "connection",
    "qgs",
    "qgs-probe",
    "tdx-attest-conf",
    "qemu",
}
EXPECTED |= {"maa-policy", "maa-request"}  # the attestation service


def test_every_parser_of_outside_bytes_has_a_target() -> None:
    assert set(TARGETS) == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_target_short_run(name: str) -> None:
    target = TARGETS[name]
    for seed in target.seeds():  # every seed is a valid input of its own target
        target.run_bytes(seed)
    assert run_hypothesis(target, 200, None) >= 200
    assert run_random(target, 300, 1, None) >= 300


@pytest.mark.skipif(not REAL.is_dir(), reason="real vectors not present")
def test_real_vectors_seed_the_targets() -> None:
    for name in ("quote", "pck", "pki", "collateral"):
        assert len(TARGETS[name].seeds()) >= 2, name


def test_frame_input_decoding() -> None:
    stream, cuts = decode_frames_input(b"\x02\x05\x00\x01\x00" + b"abcdefgh")
    assert stream == b"abcdefgh" and cuts == (5, 1)
    assert chunks(stream, cuts) == [b"a", b"bcde", b"fgh"]
    assert b"".join(chunks(b"xyz", (100, 2, 2))) == b"xyz"


def _broken(data: bytes) -> int:
    if len(data) > 3:
        raise KeyError("not one of ours")
    return 1


BROKEN = Target("broken", "a parser that raises KeyError", _broken, lambda: [b"abcd"])


def test_the_harness_reports_a_broken_invariant(tmp_path: object) -> None:
    with pytest.raises(KeyError):
        run_random(BROKEN, 50, 0, None)
    with pytest.raises(KeyError):
        run_hypothesis(BROKEN, 50, None)


@pytest.mark.slow
def test_runner_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert "frames" in capsys.readouterr().out
    assert main(["--target", "nope"]) == 2
    assert main(["--target", "pccs", "--examples", "30", "--engine", "random"]) == 0
    assert "pccs" in capsys.readouterr().out
    # also as a script from anywhere (not only ``python -m fuzz`` in the project root)
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "--target", "abi", "--examples", "20"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "abi" in out.stdout and "ok" in out.stdout


# ---------------------------------------------------------------- regressions found by the targets


def test_trusted_root_with_unknown_key_algorithm_is_a_collateral_error() -> None:
    """fuzz pki: TrustedRoot.load let cryptography's UnsupportedAlgorithm escape."""
    ec_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
    assert INTEL_SGX_ROOT_CA_DER.count(ec_oid) == 1
    bad = INTEL_SGX_ROOT_CA_DER.replace(ec_oid, bytes.fromhex("06070a8648ce3d0201"))
    with pytest.raises(CollateralError, match="root CA"):
        TrustedRoot.load(bad)


def test_trusted_root_with_invalid_version_is_a_collateral_error() -> None:
    """fuzz pki: TrustedRoot.load let x509.InvalidVersion (not a ValueError) escape, DER and PEM."""
    version = bytes.fromhex("a003020102")  # [0] INTEGER 2 (v3)
    assert INTEL_SGX_ROOT_CA_DER.count(version) == 1
    bad = INTEL_SGX_ROOT_CA_DER.replace(version, bytes.fromhex("a003020122"))
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(bad)
    with pytest.raises(CollateralError, match="root CA"):
        TrustedRoot.load(bad)
    import base64

    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad) + b"-----END CERTIFICATE-----\n"
    with pytest.raises(CollateralError, match="root CA"):
        TrustedRoot.load(pem)


def test_admission_review_nested_too_deeply_is_a_parse_error() -> None:
    """fuzz admission: parse_review let json's RecursionError escape (a 500 instead of a 400)."""
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_review(b"[" * 100_000)
    with pytest.raises(ParseError):
        parse_review(b'{"a":' * 100_000)


def _leaf_with_duplicate_extension() -> tuple[bytes, bytes]:
    """(leaf DER whose authorityKeyIdentifier is re-labelled subjectKeyIdentifier, chain PEM)."""
    chain = real_chain()
    if not chain:
        pytest.skip("real vectors not present")
    aki, ski = bytes.fromhex("0603551d23"), bytes.fromhex("0603551d0e")
    assert chain[0].count(aki) == 1
    leaf = chain[0].replace(aki, ski)
    return leaf, b"".join(pem(d) for d in (leaf, *chain[1:]))


def test_duplicate_extension_in_a_pck_leaf_is_our_error() -> None:
    """fuzz pki: cryptography's DuplicateExtension (not a ValueError) escaped sgx_extensions (so
    ``verify --pccs`` crashed on such a quote before any signature check) and ``inspect``."""
    leaf_der, chain_pem = _leaf_with_duplicate_extension()
    leaf = x509.load_der_x509_certificate(leaf_der)
    with pytest.raises(VerificationError) as info:
        sgx_extensions(leaf, 3)
    assert info.value.reason == "pck-cert-malformed"
    with pytest.raises(CollateralError, match="PCK chain"):
        _fmspc_and_ca(chain_pem)
    with pytest.raises(ParseError, match="malformed PCK certificate"):
        pck_fields(chain_pem)


def test_inspect_pck_fields_with_invalid_version_is_a_parse_error() -> None:
    """fuzz pki: x509.InvalidVersion escaped ``inspect``'s PCK decoder."""
    chain = real_chain()
    if not chain:
        pytest.skip("real vectors not present")
    leaf = chain[0].replace(bytes.fromhex("a003020102"), bytes.fromhex("a003020122"), 1)
    with pytest.raises(ParseError):
        pck_fields(b"".join(pem(d) for d in (leaf, *chain[1:])))
