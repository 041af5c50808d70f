"""Who this daemon is: its instance id and start time, kept in the pod's private directory.

Under Kubernetes the private directory is an emptyDir of the quote-helper pod (``serve
--private-dir``): it lives as long as the pod, survives container restarts and is seen by no other
pod. In it the daemon keeps

- ``instance.json``: ``{"instance_id": ..., "started_ns": ...}``, written by the pod's first daemon
  and read back by a restarted container, so a restart is the same instance with the same start
  time (it must not pass for a newer daemon and take the path back from its successor);
- ``aesm.socket``: the private socket (socketpath.bind_private). The probes reach this very daemon
  there, whoever serves the shared path; ``healthcheck --ready`` compares the instance answering
  on the private socket with the one answering on the shared path;
- ``qgs.socket``: the same for the QGS service (``qgs serve --private-dir``, ``qgs healthcheck``).
  An AESM and a QGS daemon sharing the directory share the instance record (one pod, one instance).

Without a private directory each process is its own instance (a fresh id, started now).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

RECORD = "instance.json"
PRIVATE_SOCKET = "aesm.socket"
#: the QGS service's private socket (``qgs serve --private-dir``, ``qgs healthcheck``)
QGS_PRIVATE_SOCKET = "qgs.socket"


@dataclass(frozen=True, slots=True)
class Instance:
    """This daemon's identity. ``restarted``: read back from a previous container of the pod."""

    instance_id: str
    started_ns: int
    restarted: bool = False


def private_socket(private_dir: Path, name: str = PRIVATE_SOCKET) -> Path:
    """The private socket's path in ``private_dir`` (``name``: :data:`QGS_PRIVATE_SOCKET` for QGS)."""
    return private_dir / name


def load_instance(private_dir: Path | None, now_ns: int | None = None) -> Instance:
    """The instance recorded in ``private_dir``, or a new one (recorded there when given).

    Raises:
        ConfigError: the directory cannot be written, or holds a record that is not ours.
    """
    now = time.time_ns() if now_ns is None else now_ns
    if private_dir is None:
        return Instance(secrets.token_hex(8), now)
    record = private_dir / RECORD
    try:
        private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = record.read_text()
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise ConfigError(f"cannot use the private directory {private_dir}: {exc}") from exc
    if text is not None:
        try:
            data = json.loads(text)
            inst = Instance(str(data["instance_id"]), int(data["started_ns"]), restarted=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{record} is not an instance record ({exc}); remove it or use an empty directory"
            ) from None
        if not inst.instance_id or inst.started_ns <= 0:
            raise ConfigError(f"{record} holds an empty instance record; remove it")
        return inst
    inst = Instance(secrets.token_hex(8), now)
    tmp = private_dir / f".{RECORD}.{secrets.token_hex(3)}"
    try:
        tmp.write_text(json.dumps({"instance_id": inst.instance_id, "started_ns": inst.started_ns}))
        os.replace(tmp, record)
    except OSError as exc:
        raise ConfigError(f"cannot write {record}: {exc}") from exc
    return inst


__all__ = ["PRIVATE_SOCKET", "QGS_PRIVATE_SOCKET", "RECORD", "Instance", "load_instance", "private_socket"]
