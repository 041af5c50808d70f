"""The on-disk state directory of a simulated platform: atomic files, a lock, and clear errors.

Rules:
- every file is written to a temporary name in the same directory, fsynced, then renamed, so a
  reader sees the old file or the new one, never half of one;
- private material is created with mode 0600 (and the directory with 0700);
- the manifest is written last: a directory with files but no manifest is *partial*;
- ``remove()`` deletes only the names it is given (never a whole directory);
- ``lock()`` takes an exclusive ``fcntl.flock`` on ``DIR/.lock`` so two processes creating the
  same platform at once serialise instead of interleaving;
- any unreadable, missing or malformed file raises :class:`PlatformStateError` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import PlatformStateError

LOCK_NAME = ".lock"
_TMP_PREFIX = ".tmp-"


class StateDir:
    """A platform state directory at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the directory."""
        return self.path / name

    def ensure(self) -> None:
        """Create the directory (mode 0700) if missing."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PlatformStateError(f"cannot create state directory {self.path}: {exc.strerror}") from exc
        if not self.path.is_dir():
            raise PlatformStateError(f"state directory {self.path} is not a directory")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (blocks until other holders release it)."""
        self.ensure()
        try:
            fd = os.open(self.file(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PlatformStateError(f"cannot open lock file {self.file(LOCK_NAME)}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def contents(self) -> list[str]:
        """Names in the directory, except the lock file and leftover temporary files."""
        if not self.path.is_dir():
            return []
        return sorted(
            p.name for p in self.path.iterdir() if p.name != LOCK_NAME and not p.name.startswith(_TMP_PREFIX)
        )

    def write(self, name: str, data: bytes, *, private: bool = False) -> None:
        """Atomically replace ``name`` with ``data`` (mode 0600 if ``private``, else 0644)."""
        target = self.file(name)
        tmp = self.file(f"{_TMP_PREFIX}{name}.{os.getpid()}")
        mode = 0o600 if private else 0o644
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.fchmod(fd, mode)  # the umask must not widen or narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise PlatformStateError(f"cannot write {target}: {exc.strerror}") from exc

    def read(self, name: str) -> bytes:
        """The bytes of ``name``; a missing or unreadable file is a :class:`PlatformStateError`."""
        target = self.file(name)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise PlatformStateError(
                f"state directory {self.path} is incomplete: {name} is missing"
            ) from None
        except OSError as exc:
            raise PlatformStateError(f"cannot read {target}: {exc.strerror}") from exc

    def write_private_key(self, name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        """Store ``key`` as unencrypted PKCS#8 PEM, mode 0600 (the directory itself is 0700)."""
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.write(name, pem, private=True)

    def read_private_key(self, name: str) -> Any:
        """Load the PEM private key ``name``; a malformed one is a :class:`PlatformStateError`."""
        try:
            return serialization.load_pem_private_key(self.read(name), password=None)
        except (ValueError, TypeError):
            raise PlatformStateError(
                f"{self.file(name)} is corrupt: not an unencrypted PEM private key"
            ) from None

    def read_ec_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        """Load the ECDSA P-256 private key ``name``."""
        key = self.read_private_key(name)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise PlatformStateError(f"{self.file(name)} is not an ECDSA P-256 key")
        return key

    def remove(self, names: list[str]) -> None:
        """Delete the named files (used by ``--force``; the caller names only files it owns)."""
        for name in names:
            try:
                self.file(name).unlink(missing_ok=True)
            except OSError as exc:
                raise PlatformStateError(f"cannot remove {self.file(name)}: {exc.strerror}") from exc


__all__ = ["LOCK_NAME", "StateDir"]
