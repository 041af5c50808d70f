"""sim.platform: the state directory (create, reuse, corrupt, partial, permissions, races) and EREPORT."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.pck import SgxExtensions
from sgx_quote_helper.abi.report import Attributes, Report, TargetInfo
from sgx_quote_helper.errors import ConfigError, ParseError, PlatformStateError
from sgx_quote_helper.sim import pki
from sgx_quote_helper.sim.identity import DEFAULT_CPUSVN, DEFAULT_FMSPC, PlatformIdentity
from sgx_quote_helper.sim.platform import (
    ATTESTATION_KEY,
    MANIFEST,
    PKI_FILES,
    SECRET,
    Platform,
)
from sgx_quote_helper.sim.report_key import derive_report_key

TARGET = TargetInfo(mr_enclave=b"\x11" * 32, attributes=Attributes(0x15, 0xE7))


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("plat") / "state"
    Platform.init(d)
    return d


@pytest.fixture(scope="module")
def platform(platform_dir: Path) -> Platform:
    return Platform.open(platform_dir)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


# -- creation and reuse ---------------------------------------------------------------------------


def test_defaults_and_reuse(platform_dir: Path, platform: Platform) -> None:
    ident = platform.identity
    assert ident.fmspc == DEFAULT_FMSPC and ident.cpusvn == DEFAULT_CPUSVN
    assert ident.ca == "processor" and ident.sgx_type == 0 and ident.platform_instance_id is None
    again = Platform.open(platform_dir, create=True)
    assert again.identity == ident
    assert again.certs["root"] == platform.certs["root"]
    assert again.keys["pck"].private_numbers() == platform.keys["pck"].private_numbers()


def test_permissions(platform_dir: Path) -> None:
    assert stat.S_IMODE(platform_dir.stat().st_mode) == 0o700
    private = [SECRET, "pce-encryption.key.pem", *(k for _, k in PKI_FILES.values())]
    for name in private:
        assert stat.S_IMODE((platform_dir / name).stat().st_mode) == 0o600, name
    manifest = json.loads((platform_dir / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["fmspc"] == DEFAULT_FMSPC.hex()


def test_pck_leaf_matches_identity(platform: Platform) -> None:
    ext = platform.certs["pck"].extensions.get_extension_for_oid(pki.SGX_EXTENSION_OID).value
    decoded = SgxExtensions.from_der(ext.value)  # type: ignore[attr-defined]
    ident = platform.identity
    assert decoded.ppid == ident.ppid and decoded.fmspc == ident.fmspc and decoded.cpusvn == ident.cpusvn
    assert decoded.tcb_components == tuple(ident.cpusvn) and decoded.pcesvn == ident.pcesvn
    assert decoded.platform_instance_id is None and decoded.configuration is None


def test_platform_ca(tmp_path: Path) -> None:
    p = Platform.init(tmp_path / "p", ca="platform", fmspc=bytes.fromhex("00606A000000"), pcesvn=11, qe_svn=3)
    assert p.identity.sgx_type == 1 and p.identity.platform_instance_id is not None
    ext = p.certs["pck"].extensions.get_extension_for_oid(pki.SGX_EXTENSION_OID).value
    decoded = SgxExtensions.from_der(ext.value)  # type: ignore[attr-defined]
    assert decoded.platform_instance_id == p.identity.platform_instance_id
    assert decoded.configuration is not None and decoded.configuration.dynamic_platform is True
    assert "Platform CA" in p.certs["pck_ca"].subject.rfc4514_string()
    reopened = Platform.open(tmp_path / "p")
    assert reopened.identity == p.identity and reopened.identity.pcesvn == 11


def test_init_refuses_existing_unless_force(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "copy")
    with pytest.raises(PlatformStateError, match="already holds a platform"):
        Platform.init(d)
    old = Platform.open(d)
    new = Platform.init(d, force=True, qe_svn=2)
    assert new.identity.ppid != old.identity.ppid and new.identity.qe_svn == 2
    assert Platform.open(d).identity == new.identity


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"fmspc": b"\0" * 5}, "FMSPC"),
        ({"cpusvn": b"\0" * 15}, "CPUSVN"),
        ({"pcesvn": 70000}, "PCESVN"),
        ({"qe_svn": -1}, "QE SVN"),
        ({"ca": "root"}, "CA"),
        ({"cert_data": "pem"}, "certification"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, object], what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        Platform.init(tmp_path / "x", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


# -- broken state directories ---------------------------------------------------------------------


def test_missing_platform_without_create(tmp_path: Path) -> None:
    with pytest.raises(PlatformStateError, match="sim init"):
        Platform.open(tmp_path / "none")


def test_partial_dir_is_not_replaced(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "partial")
    (d / MANIFEST).unlink()
    before = sorted(p.name for p in d.iterdir())
    for create in (False, True):
        with pytest.raises(PlatformStateError, match="partial"):
            Platform.open(d, create=create)
    assert sorted(p.name for p in d.iterdir()) == before


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        (MANIFEST, b"{not json", "manifest.json is corrupt"),
        (MANIFEST, b'{"format": "other"}', "manifest.json is corrupt"),
        (SECRET, b"short", "platform-secret.bin is corrupt"),
        (
            "pck.key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "pck.key.pem is corrupt",
        ),
        ("root-ca.pem", b"garbage", "root-ca.pem is corrupt"),
    ],
)
def test_corrupt_file_named(
    platform_dir: Path, tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    d = _copy(platform_dir, tmp_path / "c")
    (d / name).write_bytes(content)
    with pytest.raises(PlatformStateError, match=re.escape(match)):
        Platform.open(d, create=True)
    assert (d / name).read_bytes() == content  # never silently replaced


def test_missing_file_named(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "m")
    (d / "tcb-signing.pem").unlink()
    with pytest.raises(PlatformStateError, match=re.escape("tcb-signing.pem is missing")):
        Platform.open(d)


def test_manifest_bad_field_and_version(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "v")
    manifest = json.loads((d / MANIFEST).read_text())
    (d / MANIFEST).write_text(json.dumps({**manifest, "cpusvn": "00"}))
    with pytest.raises(PlatformStateError, match="bad field"):
        Platform.open(d)
    (d / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(PlatformStateError, match="format version 99"):
        Platform.open(d)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fmspc": "zz"}, "fmspc"),
        ({"ppid": 7}, "ppid"),
        ({"qe_id": None}, "qe_id"),
        ({"pcesvn": 70000}, "pcesvn"),
        ({"qe_svn": True}, "qe_svn"),
        ({"ca": "bogus"}, "ca or cert_data"),
        ({"platform_instance_id": "not hex"}, "platform_instance_id"),
    ],
)
def test_identity_fields_are_checked_in_the_error_tree(
    platform_dir: Path, change: dict[str, object], named: str
) -> None:
    manifest = json.loads((platform_dir / MANIFEST).read_text())
    with pytest.raises(PlatformStateError, match=re.escape(named)):
        PlatformIdentity.from_json({**manifest, **change})
    with pytest.raises(PlatformStateError, match="not a JSON object"):
        PlatformIdentity.from_json([manifest])


def test_mismatched_key_and_certificate(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "k")
    (d / "pck.key.pem").write_bytes((d / "root-ca.key.pem").read_bytes())
    with pytest.raises(PlatformStateError, match="does not match"):
        Platform.open(d)


def _open_and_report(path: str) -> str:
    return Platform.open(Path(path), create=True).identity.ppid.hex()


@pytest.mark.slow
def test_concurrent_creation_yields_one_platform(tmp_path: Path) -> None:
    d = tmp_path / "race"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        ppids = pool.map(_open_and_report, [str(d)] * 4)
    assert len(set(ppids)) == 1
    assert Platform.open(d).identity.ppid.hex() == ppids[0]


# -- attestation key --------------------------------------------------------------------------------


def test_attestation_key_persists(platform_dir: Path, tmp_path: Path) -> None:
    d = _copy(platform_dir, tmp_path / "ak")
    p = Platform.open(d)
    assert p.attestation_key() is None
    key = p.ensure_attestation_key()
    assert stat.S_IMODE((d / ATTESTATION_KEY).stat().st_mode) == 0o600
    again = Platform.open(d).attestation_key()
    assert again is not None and again.private_numbers() == key.private_numbers()
    assert p.ensure_attestation_key().private_numbers() == key.private_numbers()


# -- EREPORT ------------------------------------------------------------------------------------------


def test_report_fields(platform: Platform) -> None:
    r = platform.ereport(
        TARGET, b"abc", mr_enclave=b"\x01" * 32, mr_signer=b"\x02" * 32, isv_prod_id=7, isv_svn=9, debug=True
    )
    b = r.body
    assert b.report_data == b"abc" + bytes(61)
    assert (b.mr_enclave, b.mr_signer, b.isv_prod_id, b.isv_svn) == (b"\x01" * 32, b"\x02" * 32, 7, 9)
    assert b.debug and b.cpu_svn == platform.identity.cpusvn
    assert Report.from_bytes(r.to_bytes()) == r


def test_report_mac_verifies_only_for_its_target(platform: Platform) -> None:
    r = platform.ereport(TARGET, b"x")
    assert platform.verify_report_mac(r, TARGET)
    others = [
        dataclasses.replace(TARGET, mr_enclave=b"\x12" * 32),
        dataclasses.replace(TARGET, attributes=Attributes(0x17, 0xE7)),
        dataclasses.replace(TARGET, misc_select=1),
        dataclasses.replace(TARGET, config_svn=1),
        dataclasses.replace(TARGET, config_id=b"\x01" * 64),
        TargetInfo(),
    ]
    for other in others:
        assert not platform.verify_report_mac(r, other)


def test_report_mac_covers_body_key_id_and_platform(platform: Platform, tmp_path: Path) -> None:
    r = platform.ereport(TARGET, b"x")
    tampered_body = Report(dataclasses.replace(r.body, isv_svn=1), r.key_id, r.mac)
    assert not platform.verify_report_mac(tampered_body, TARGET)
    tampered_kid = Report(r.body, bytes(32), r.mac)
    assert not platform.verify_report_mac(tampered_kid, TARGET)
    other_platform = Platform.init(tmp_path / "other")
    assert not other_platform.verify_report_mac(r, TARGET)


def test_key_id_injectable_and_the_platforms_cr_report_keyid_by_default(
    platform: Platform, tmp_path: Path
) -> None:
    a = platform.ereport(TARGET, b"x", key_id=b"\x05" * 32)
    b = platform.ereport(TARGET, b"x", key_id=b"\x05" * 32)
    assert a == b and a.key_id == b"\x05" * 32
    # as on hardware, every report of one boot carries CR_REPORT_KEYID
    c, d = platform.ereport(TARGET, b"x"), platform.ereport(TARGET, b"y")
    assert c.key_id == d.key_id == platform.report_key_id and len(c.key_id) == 32
    assert c.key_id != a.key_id and c.mac != a.mac
    assert Platform.open(platform.state.path).report_key_id == platform.report_key_id  # per platform
    assert Platform.init(tmp_path / "other").report_key_id != platform.report_key_id


def test_report_key_derivation_inputs() -> None:
    secret, cpusvn = b"\x01" * 16, b"\x02" * 16
    base = derive_report_key(secret, cpusvn, TARGET, b"\x03" * 32)
    assert len(base) == 16
    assert derive_report_key(secret, b"\x00" * 16, TARGET, b"\x03" * 32) != base
    assert derive_report_key(b"\x09" * 16, cpusvn, TARGET, b"\x03" * 32) != base
    with pytest.raises(PlatformStateError):
        derive_report_key(b"short", cpusvn, TARGET, b"\x03" * 32)


def test_report_data_too_long(platform: Platform) -> None:
    with pytest.raises(ParseError):
        platform.ereport(TARGET, bytes(65))


# -- fuzz: a manifest from outside is parsed or refused with PlatformStateError, nothing else ----------

_FIELDS = ["fmspc", "cpusvn", "pcesvn", "pce_id", "qe_svn", "sgx_type", "ca", "cert_data", "ppid", "qe_id"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def fuzz_dir(platform_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy(platform_dir, tmp_path_factory.mktemp("fuzz") / "state")


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.dictionaries(
        st.sampled_from([*_FIELDS, "format", "format_version"]), _json_values, max_size=4
    ),
    drop=st.lists(st.sampled_from(_FIELDS), max_size=2),
)
def test_fuzz_manifest(
    platform_dir: Path, fuzz_dir: Path, mutations: dict[str, object], drop: list[str]
) -> None:
    manifest = json.loads((platform_dir / MANIFEST).read_text())
    manifest.update(mutations)
    for name in drop:
        manifest.pop(name, None)
    (fuzz_dir / MANIFEST).write_text(json.dumps(manifest))
    try:
        loaded = Platform.open(fuzz_dir)
    except PlatformStateError:
        return
    assert len(loaded.identity.cpusvn) == 16 and len(loaded.identity.fmspc) == 6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
def test_fuzz_manifest_bytes(
    platform_dir: Path, tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    d = tmp_path_factory.mktemp("fz")
    (d / MANIFEST).write_bytes(content)
    with pytest.raises(PlatformStateError):
        Platform.open(d)


@pytest.mark.slow
def test_shared_pki(platform_dir: Path, platform: Platform, tmp_path: Path) -> None:
    same = Platform.init(tmp_path / "same", pki_from=platform_dir, cpusvn=bytes(16))
    for role in ("root", "tcb_signing", "pck_ca"):
        assert same.certs[role] == platform.certs[role]
    assert same.certs["pck"] != platform.certs["pck"] and same.identity.ppid != platform.identity.ppid
    same.certs["pck"].verify_directly_issued_by(platform.certs["pck_ca"])
    other_ca = Platform.init(tmp_path / "other", pki_from=platform_dir, ca="platform")
    assert other_ca.certs["root"] == platform.certs["root"]
    assert other_ca.certs["pck_ca"] != platform.certs["pck_ca"]
    other_ca.certs["pck_ca"].verify_directly_issued_by(platform.certs["root"])
    assert Platform.open(tmp_path / "same").certs["root"] == platform.certs["root"]
    with pytest.raises(ConfigError):
        Platform.init(platform_dir, pki_from=platform_dir, force=True)
    with pytest.raises(PlatformStateError):
        Platform.init(tmp_path / "x", pki_from=tmp_path / "missing")


def test_force_never_deletes_foreign_files(tmp_path: Path) -> None:
    d = tmp_path / "home"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(PlatformStateError, match="not part of a platform" if force else "already holds"):
            Platform.init(d, force=force)
    assert (d / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in d.iterdir() if p.name != ".lock") == ["notes.txt"]


def test_deeply_nested_manifest(tmp_path: Path) -> None:
    d = tmp_path / "deep"
    d.mkdir()
    (d / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PlatformStateError, match="corrupt"):
        Platform.open(d)
