"""A simulated SGX platform: its identity, secrets and SIMULATED Intel PKI, kept in a state directory.

A platform holds what a real machine holds in fuses, in the PCE and at Intel: the 16-byte root
secret for report keys, PPID, FMSPC, CPUSVN (16 components), PCESVN, PCE-ID, QE SVN, SGX type, the
PCK key and certificate chain, the TCB signing key, the PCE's RSA-3072 PPID encryption key, and
(once InitQuoteEx has run) the QE's attestation key, kept like QE3's sealed key blob so a restarted
service keeps quoting without a new InitQuoteEx.

State directory layout (format version 1; ``manifest.json`` is written last)::

    manifest.json            identity fields and the format version
    platform-secret.bin      0600  16-byte root secret (stands in for the fuse key)
    root-ca.pem / .key.pem   SIMULATED Intel SGX Root CA (key 0600)
    pck-ca.pem / .key.pem    SIMULATED Intel SGX PCK Processor|Platform CA
    pck.pem / .key.pem       SIMULATED Intel SGX PCK Certificate (key = the PCE's signing key)
    tcb-signing.pem / .key.pem   SIMULATED Intel SGX TCB Signing
    pce-encryption.key.pem   0600  RSA-3072 key the PPID is encrypted to (cert type 3)
    attestation.key.pem      0600  ECDSA P-256 attestation key (after the first InitQuoteEx)
    tdx.json                 the simulated TDX module's TCB (``sim.tdx_module``; optional)

A partial or corrupt directory raises :class:`PlatformStateError` naming the file; it is never
silently replaced (``init(force=True)`` replaces it on purpose).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..abi.report import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT, Attributes, Report, ReportBody, TargetInfo
from ..errors import ConfigError, ParseError, PlatformStateError
from . import pki, report_key
from .identity import (
    CA_TYPES,
    CERT_DATA_KINDS,
    DEFAULT_CPUSVN,
    DEFAULT_FMSPC,
    DEFAULT_PCESVN,
    DEFAULT_QE_SVN,
    PCE_ID,
    CertDataKind,
    PlatformIdentity,
)
from .state_dir import StateDir

FORMAT = "sgx-quote-helper simulated SGX platform"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SECRET = "platform-secret.bin"
ATTESTATION_KEY = "attestation.key.pem"
PCE_ENCRYPTION_KEY = "pce-encryption.key.pem"
#: the TDX side of the platform (written by ``sim.tdx_module``; absent = its defaults)
TDX_STATE = "tdx.json"
#: (certificate file, key file) per PKI role
PKI_FILES = {
    "root": ("root-ca.pem", "root-ca.key.pem"),
    "pck_ca": ("pck-ca.pem", "pck-ca.key.pem"),
    "pck": ("pck.pem", "pck.key.pem"),
    "tcb_signing": ("tcb-signing.pem", "tcb-signing.key.pem"),
}
#: every file a platform directory may hold (``--force`` deletes only these)
OWN_FILES = frozenset(
    {
        MANIFEST,
        SECRET,
        ATTESTATION_KEY,
        PCE_ENCRYPTION_KEY,
        TDX_STATE,
        *(f for pair in PKI_FILES.values() for f in pair),
    }
)


def _now(now: dt.datetime | None) -> dt.datetime:
    # the single place the engine layer may fall back to the clock: platform creation time
    return pki.whole_seconds(now if now is not None else dt.datetime.now(dt.UTC))


def _check_int(name: str, value: int, hi: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= hi:
        raise ConfigError(f"{name} must be an integer 0..{hi}, got {value!r}")


class Platform:
    """A loaded simulated platform. Create with :meth:`init` or :meth:`open`, never directly."""

    def __init__(
        self,
        state: StateDir,
        identity: PlatformIdentity,
        secret: bytes,
        keys: dict[str, ec.EllipticCurvePrivateKey],
        certs: dict[str, x509.Certificate],
        pce_encryption_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.state = state
        self.identity = identity
        self._secret = secret
        self.keys = keys
        self.certs = certs
        self._pce_key = pce_encryption_key

    @property
    def pce_encryption_key(self) -> rsa.RSAPrivateKey:
        """The PCE's RSA-3072 PPID encryption key (loaded on first use: RSA loading is slow)."""
        if self._pce_key is None:
            pce = self.state.read_private_key(PCE_ENCRYPTION_KEY)
            if not isinstance(pce, rsa.RSAPrivateKey) or pce.key_size != 3072:
                raise PlatformStateError(f"{self.state.file(PCE_ENCRYPTION_KEY)} is not an RSA-3072 key")
            self._pce_key = pce
        return self._pce_key

    # -- creation and loading ------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        state_dir: Path,
        *,
        fmspc: bytes = DEFAULT_FMSPC,
        cpusvn: bytes = DEFAULT_CPUSVN,
        pcesvn: int = DEFAULT_PCESVN,
        qe_svn: int = DEFAULT_QE_SVN,
        ca: pki.CaType = "processor",
        cert_data: CertDataKind = "pck-chain",
        force: bool = False,
        now: dt.datetime | None = None,
        pki_from: Path | None = None,
    ) -> Platform:
        """Create a new platform in ``state_dir`` (which must be empty or absent unless ``force``).

        With ``pki_from`` (another platform's state directory) the new platform joins that
        platform's SIMULATED PKI: same root CA and TCB signing certificate, and the same PCK CA when
        both use the same CA type (else a new PCK CA under the shared root). Verifiers and one
        collateral service then trust several simulated machines through one root, as with Intel's.

        Raises:
            ConfigError: a parameter is out of range.
            PlatformStateError: the directory already holds a platform (or files) and ``force`` is
                false, or it cannot be written.
        """
        if len(fmspc) != 6:
            raise ConfigError(f"FMSPC must be 6 bytes, got {len(fmspc)}")
        if len(cpusvn) != 16:
            raise ConfigError(f"CPUSVN must be 16 bytes, got {len(cpusvn)}")
        _check_int("PCESVN", pcesvn, 0xFFFF)
        _check_int("QE SVN", qe_svn, 0xFFFF)
        if ca not in CA_TYPES:
            raise ConfigError(f"CA must be one of {', '.join(CA_TYPES)}, got {ca!r}")
        if cert_data not in CERT_DATA_KINDS:
            raise ConfigError(
                f"certification data must be one of {', '.join(CERT_DATA_KINDS)}, got {cert_data!r}"
            )
        state = StateDir(state_dir)
        shared = None
        if pki_from is not None:
            if Path(pki_from).resolve() == state.path.resolve():
                raise ConfigError("--pki-from must name another platform's state directory")
            shared = cls.open(pki_from)
        with state.lock():
            existing = state.contents()
            if existing and not force:
                what = "a platform" if MANIFEST in existing else f"files ({', '.join(existing[:3])})"
                raise PlatformStateError(
                    f"state directory {state.path} already holds {what}; use --force to replace it"
                )
            foreign = [name for name in existing if name not in OWN_FILES]
            if foreign:
                raise PlatformStateError(
                    f"state directory {state.path} holds files that are not part of a platform "
                    f"({', '.join(foreign[:3])}); refusing to replace it, choose an empty directory"
                )
            state.remove(existing)
            return cls._create(state, fmspc, cpusvn, pcesvn, qe_svn, ca, cert_data, _now(now), shared)

    @classmethod
    def _create(
        cls,
        state: StateDir,
        fmspc: bytes,
        cpusvn: bytes,
        pcesvn: int,
        qe_svn: int,
        ca: pki.CaType,
        cert_data: CertDataKind,
        now: dt.datetime,
        shared: Platform | None = None,
    ) -> Platform:
        identity = PlatformIdentity(
            fmspc=fmspc,
            cpusvn=cpusvn,
            pcesvn=pcesvn,
            pce_id=PCE_ID,
            qe_svn=qe_svn,
            sgx_type=1 if ca == "platform" else 0,  # multi-package platforms are Scalable
            ca=ca,
            cert_data=cert_data,
            ppid=os.urandom(16),
            qe_id=os.urandom(16),
            platform_instance_id=os.urandom(16) if ca == "platform" else None,
        )
        keys = {role: ec.generate_private_key(ec.SECP256R1()) for role in PKI_FILES}
        serial = x509.random_serial_number
        certs: dict[str, x509.Certificate] = {}
        if shared is not None:
            reused = (
                ("root", "tcb_signing", "pck_ca") if shared.identity.ca == ca else ("root", "tcb_signing")
            )
            for role in reused:
                keys[role], certs[role] = shared.keys[role], shared.certs[role]
        root = certs.get("root") or pki.make_root_ca(keys["root"], now=now, serial=serial())
        pck_ca = certs.get("pck_ca") or pki.make_pck_ca(
            ca, keys["pck_ca"], keys["root"], root, now=now, serial=serial()
        )
        certs = {
            "root": root,
            "pck_ca": pck_ca,
            "tcb_signing": certs.get("tcb_signing")
            or pki.make_tcb_signing(keys["tcb_signing"], keys["root"], root, now=now, serial=serial()),
            "pck": pki.make_pck_leaf(
                keys["pck"].public_key(),
                ca,
                keys["pck_ca"],
                pck_ca,
                identity.sgx_extensions().to_der(),
                now=now,
                serial=serial(),
            ),
        }
        pce_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        secret = os.urandom(16)
        state.write(SECRET, secret, private=True)
        state.write_private_key(PCE_ENCRYPTION_KEY, pce_key)
        for role, (cert_file, key_file) in PKI_FILES.items():
            state.write_private_key(key_file, keys[role])
            state.write(cert_file, certs[role].public_bytes(serialization.Encoding.PEM))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": now.isoformat(),
            **identity.to_json(),
        }
        state.write(MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        return cls(state, identity, secret, keys, certs, pce_key)

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = False, now: dt.datetime | None = None) -> Platform:
        """Load the platform in ``state_dir``; with ``create`` make a default one if the directory is
        empty or absent. Safe when several processes do this at once (they share one platform).

        Raises:
            PlatformStateError: no platform (and not ``create``), or a partial/corrupt directory.
        """
        state = StateDir(state_dir)
        if state.file(MANIFEST).exists():
            return cls._load(state)
        if not create:
            if state.contents():
                raise cls._partial(state)
            raise PlatformStateError(
                f"no simulated platform in {state.path}; create one with: sgx-quote-helper sim init "
                f"--state-dir {state.path}"
            )
        with state.lock():
            if state.file(MANIFEST).exists():  # another process created it while we waited
                return cls._load(state)
            if state.contents():
                raise cls._partial(state)
            return cls._create(
                state,
                DEFAULT_FMSPC,
                DEFAULT_CPUSVN,
                DEFAULT_PCESVN,
                DEFAULT_QE_SVN,
                "processor",
                "pck-chain",
                _now(now),
            )

    @staticmethod
    def _partial(state: StateDir) -> PlatformStateError:
        return PlatformStateError(
            f"state directory {state.path} is partial or not a platform: it has files but no {MANIFEST}; "
            "remove it or run `sgx-quote-helper sim init --force`"
        )

    @classmethod
    def _load(cls, state: StateDir) -> Platform:
        raw = state.read(MANIFEST)
        try:
            manifest = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # json's own signals
            raise PlatformStateError(f"{state.file(MANIFEST)} is corrupt: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise PlatformStateError(f"{state.file(MANIFEST)} is corrupt: not a platform manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise PlatformStateError(
                f"{state.file(MANIFEST)} has format version {manifest.get('format_version')!r}; "
                f"this sgx-quote-helper reads version {FORMAT_VERSION}"
            )
        try:
            identity = PlatformIdentity.from_json(manifest)
        except PlatformStateError as exc:
            raise PlatformStateError(f"{state.file(MANIFEST)} is corrupt: bad field: {exc}") from None
        secret = state.read(SECRET)
        if len(secret) != 16:
            raise PlatformStateError(f"{state.file(SECRET)} is corrupt: expected 16 bytes, got {len(secret)}")
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        certs: dict[str, x509.Certificate] = {}
        for role, (cert_file, key_file) in PKI_FILES.items():
            keys[role] = state.read_ec_key(key_file)
            try:
                certs[role] = x509.load_pem_x509_certificate(state.read(cert_file))
            except ValueError:
                raise PlatformStateError(
                    f"{state.file(cert_file)} is corrupt: not a PEM certificate"
                ) from None
            if certs[role].public_key() != keys[role].public_key():
                raise PlatformStateError(f"{state.file(cert_file)} does not match the key in {key_file}")
        if not state.file(PCE_ENCRYPTION_KEY).is_file():
            state.read(PCE_ENCRYPTION_KEY)  # raises the "missing" error
        return cls(state, identity, secret, keys, certs)

    # -- attestation key (QE3's sealed key blob) --------------------------------------------------

    def attestation_key(self) -> ec.EllipticCurvePrivateKey | None:
        """The stored attestation key, or ``None`` if InitQuoteEx never ran on this platform."""
        if not self.state.file(ATTESTATION_KEY).exists():
            return None
        return self.state.read_ec_key(ATTESTATION_KEY)

    def ensure_attestation_key(self) -> ec.EllipticCurvePrivateKey:
        """Load the attestation key, or generate and store it (0600) if there is none."""
        with self.state.lock():
            key = self.attestation_key()
            if key is None:
                key = ec.generate_private_key(ec.SECP256R1())
                self.state.write_private_key(ATTESTATION_KEY, key)
            return key

    # -- PKI views ----------------------------------------------------------------------------------

    def pck_chain_pem(self) -> bytes:
        """PEM: PCK leaf, PCK CA, root (the order of certification data type 5)."""
        return b"".join(
            self.certs[r].public_bytes(serialization.Encoding.PEM) for r in ("pck", "pck_ca", "root")
        )

    def tcb_signing_chain_pem(self) -> bytes:
        """PEM: TCB signing certificate then root (the TCB-Info-Issuer-Chain header value)."""
        return b"".join(
            self.certs[r].public_bytes(serialization.Encoding.PEM) for r in ("tcb_signing", "root")
        )

    def pck_ca_chain_pem(self) -> bytes:
        """PEM: PCK CA then root (the SGX-PCK-CRL-Issuer-Chain header value)."""
        return b"".join(self.certs[r].public_bytes(serialization.Encoding.PEM) for r in ("pck_ca", "root"))

    # -- EREPORT ------------------------------------------------------------------------------------

    def ereport(
        self,
        target_info: TargetInfo,
        report_data: bytes = b"",
        *,
        mr_enclave: bytes = bytes(32),
        mr_signer: bytes = bytes(32),
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        debug: bool = False,
        attributes: Attributes | None = None,
        misc_select: int = 0,
        cpu_svn: bytes | None = None,
        key_id: bytes | None = None,
    ) -> Report:
        """Simulated EREPORT by an enclave with the given identity, MAC'd for ``target_info``.

        ``report_data`` (at most 64 bytes) is zero-padded; ``attributes`` defaults to INIT|MODE64BIT
        (plus DEBUG when ``debug``) with XFRM 3; ``key_id`` defaults to the platform's
        :attr:`report_key_id` (as EREPORT copies CR_REPORT_KEYID into every report).

        Raises:
            ParseError: report_data longer than 64 bytes or a field of the wrong size.
        """
        if len(report_data) > 64:
            raise ParseError(
                "ReportBody", 320, f"report_data must be at most 64 bytes, got {len(report_data)}"
            )
        if attributes is None:
            attributes = Attributes(FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0), 0x3)
        body = ReportBody(
            cpu_svn=self.identity.cpusvn if cpu_svn is None else cpu_svn,
            misc_select=misc_select,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            report_data=report_data.ljust(64, b"\0"),
        )
        return self.report_for(target_info, body, key_id)

    def report_for(self, target_info: TargetInfo, body: ReportBody, key_id: bytes | None = None) -> Report:
        """MAC an already built report body for ``target_info`` (EREPORT's last step)."""
        kid = self.report_key_id if key_id is None else key_id
        return report_key.make_report(self._secret, self.identity.cpusvn, target_info, body, kid)

    @property
    def report_key_id(self) -> bytes:
        """The 32-byte KEYID every report of this platform carries: the simulated CR_REPORT_KEYID.

        On hardware EREPORT copies CR_REPORT_KEYID into each REPORT; the CPU fills that register
        with a statistically unique value at boot (key wear-out protection, SDM vol. 3D
        "EREPORT"), so every report of one boot has the same KEYID. Ours is derived from the
        platform secret and CPUSVN: fixed per platform, new after a TCB recovery (which on a
        real node means a reboot).
        """
        return self.derived_key(b"SIMULATED-CR_REPORT_KEYID")

    def derived_key(self, label: bytes) -> bytes:
        """A 32-byte key for ``label`` derived from the platform's root secret and CPUSVN
        (HMAC-SHA-256): how other simulated hardware keys (the TDX module's report MAC key) are
        bound to this platform without another secret file."""
        return hmac.new(self._secret, label + self.identity.cpusvn, hashlib.sha256).digest()

    def report_verifier(self, as_target: TargetInfo) -> report_key.ReportVerifier:
        """A :class:`~.report_key.ReportVerifier` for reports made for ``as_target`` on this
        platform (what :meth:`verify_report_mac` does, set up once for many reports)."""
        return report_key.ReportVerifier(self._secret, self.identity.cpusvn, as_target)

    def verify_report_mac(self, report: Report, as_target: TargetInfo) -> bool:
        """Would the enclave described by ``as_target`` accept ``report``'s MAC? (constant-time)"""
        return report_key.verify_report(self._secret, self.identity.cpusvn, report, as_target)


__all__ = [
    "CA_TYPES",
    "CERT_DATA_KINDS",
    "DEFAULT_CPUSVN",
    "DEFAULT_FMSPC",
    "DEFAULT_PCESVN",
    "DEFAULT_QE_SVN",
    "FORMAT_VERSION",
    "CertDataKind",
    "Platform",
    "PlatformIdentity",
]
