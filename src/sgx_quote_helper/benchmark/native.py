"""The native Intel-pattern load generator (``bench quote --client intel --loadgen native``).

The Python generator's Intel-style calls (:mod:`.intel`, driven by :mod:`.worker`) cost about
120 µs of CPU each, so one load core tops out near 8,000 calls/s: below what one daemon core
serves. ``intel_client.c`` (next to this file) makes every call the same way, system call for
system call (a new connection per call, blocking ``connect``, the length and the body in two
writes, the reply read length-first in reads of at most 512 bytes, its own epoll fd and cancel
pipe, closed in Intel's order), and multiplexes the clients in one process the same way, for a
fraction of the CPU.

This module compiles it on demand with ``cc -O2`` (``$CC`` if set) into a cache directory
(``$XDG_CACHE_HOME/sgx-quote-helper``, else ``~/.cache/sgx-quote-helper``; the file name carries
a hash of the source and the compiler, so an edit rebuilds it) and runs it. The protocol stays
here: Python writes the request bodies (the workload's sequence) and, for each call, what a
correct reply is: its exact length and its first bytes up to and including the errorCode
(and the length of the field after it), taken from a reply the service gave and the workload's
judge accepted. Any other reply (another code, another size) is a ``bad_response``; the first one
is kept and judged here, so the result says what it was (e.g. ``BUSY(18)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SgxQuoteHelperError
from ..wire.framing import HEADER_SIZE, encode_frame
from . import intel
from .spec import LoadSpec
from .timing import LatencySummary
from .workload import OK

SOURCE = Path(__file__).with_name("intel_client.c")
#: replies longer than this are counted as ``bad_length`` (the C program's ``MAX_REPLY``)
MAX_REPLY = 1 << 20
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra")


class NativeUnavailable(SgxQuoteHelperError):
    """The native load generator cannot be built here (no C compiler, or it failed)."""


def compiler() -> str:
    """The C compiler's path (``$CC``, else ``cc``). Raises NativeUnavailable when absent."""
    name = os.environ.get("CC") or "cc"
    path = shutil.which(name)
    if path is None:
        raise NativeUnavailable(
            f"the native load generator needs a C compiler: `{name}` was not found on PATH "
            "(install gcc or clang, or set CC; or use --loadgen python)"
        )
    return path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgx-quote-helper"


def build(out_dir: Path | None = None) -> Path:
    """The compiled generator, built if missing (atomically: concurrent builds do not collide)."""
    cc = compiler()
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + b"\0" + cc.encode() + b"\0" + " ".join(CFLAGS).encode()).hexdigest()[:16]
    directory = out_dir or cache_dir()
    exe = directory / f"intel_client-{tag}"
    if exe.exists():
        return exe
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=exe.name + ".", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False, timeout=120
        )
        if proc.returncode != 0:
            raise NativeUnavailable(f"`{cc}` could not build {SOURCE.name}: {proc.stderr.strip()[:2000]}")
        os.replace(tmp, exe)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return exe


def reply_check(reply: bytes) -> tuple[int, bytes]:
    """What every correct reply like ``reply`` (a reply body) must be: its length, and its first
    bytes: the envelope's tag and length, the errorCode field (field 1, a varint: our encoder and
    Intel's both write it first), and the tag and length of the field after it when that one is
    length-delimited (the quote's length, for GetQuoteEx).

    Raises:
        ConfigError: ``reply`` is not shaped so (then the native generator cannot judge replies).
    """

    def varint(i: int) -> int:
        for j in range(i, min(i + 10, len(reply))):
            if reply[j] < 0x80:
                return j + 1
        raise ConfigError(f"not an AESM reply (a truncated varint at {i}): {reply[:32].hex()}")

    try:
        i = varint(0)  # the envelope's field tag
        if reply[0] & 7 != 2:
            raise ConfigError(f"not an AESM reply envelope: {reply[:32].hex()}")
        i = varint(i)  # its length
        if reply[i] != 0x08:
            raise ConfigError(f"the reply does not start with its errorCode: {reply[:32].hex()}")
        end = varint(i + 1)
        if end < len(reply) and reply[end] & 7 == 2:  # a length-delimited field next: its length too
            end = varint(varint(end))
    except IndexError:
        raise ConfigError(f"a truncated AESM reply: {reply[:32].hex()}") from None
    return len(reply), reply[:end]


def calls_file(spec: LoadSpec) -> bytes:
    """The calls file of ``spec``'s workload: each call's body and its reply check, each reply
    check taken from a real reply (one Intel-style call now) that the workload's judge accepts.

    Raises:
        ConfigError: a call's reply is not accepted (the service refuses the set-up).
        intel.IntelCallError: the service cannot be reached.
    """
    workload = spec.workload
    sequence: list[tuple[bytes, Callable[[bytes], str]]] = [
        *workload.prelude,
        (workload.body, workload.judge),
    ]
    out = [struct.pack(">I", len(sequence))]
    for body, judge in sequence:
        reply = intel.call_blocking(spec.socket_path, body)
        verdict = judge(reply)
        if verdict != OK:
            raise ConfigError(f"the service's reply to a set-up call is not a correct one: {verdict}")
        length, prefix = reply_check(reply)
        if length > MAX_REPLY:
            raise ConfigError(f"a reply of {length} bytes: the native generator takes at most {MAX_REPLY}")
        out += [
            encode_frame(body)[:HEADER_SIZE],
            struct.pack(">I", len(body)),
            body,
            struct.pack(">II", length, len(prefix)),
            prefix,
        ]
    return b"".join(out)


def run_native(spec: LoadSpec, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``spec`` (style ``intel``) with the native generator; its JSON result, plus
    ``first_bad_response`` (the judge's label of the first wrong reply) when there was one.

    Raises:
        NativeUnavailable: no C compiler, or the build failed.
        ConfigError: the spec is not one the native generator runs.
        RuntimeError: the generator failed.
    """
    if spec.style != "intel":
        raise ConfigError("the native load generator makes Intel-pattern calls only (--client intel)")
    if len(os.fsencode(spec.socket_path)) > 107:
        raise ConfigError(f"socket path too long for AF_UNIX: {spec.socket_path}")
    exe = build()
    try:
        calls = calls_file(spec)
    except intel.IntelCallError as exc:
        raise RuntimeError(f"the set-up call failed: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="sqh-native-") as tmp:
        calls_path = Path(tmp) / "calls.bin"
        calls_path.write_bytes(calls)
        bad_path = Path(tmp) / "bad.bin"
        argv = [
            str(exe), spec.socket_path, str(calls_path), str(spec.clients), repr(spec.duration),
            repr(spec.warmup), repr(spec.grace), str(spec.total_requests or 0), str(bad_path),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if spec.cpu_affinity and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(proc.pid, spec.cpu_affinity)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            result: dict[str, Any] | None = None
            for raw in proc.stdout:
                line = raw.decode("ascii", "replace").strip()
                if line.startswith("progress "):
                    _, ok, errors = line.split()
                    if on_progress is not None:
                        on_progress(int(ok), int(errors))
                elif line.startswith("{"):
                    result = json.loads(line)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if rc != 0 or result is None:
            raise RuntimeError(f"the native load generator failed (exit {rc}): {stderr.strip()[:500]}")
        if result.get("bad_reply_dumped") and bad_path.exists():
            dump = bad_path.read_bytes()  # the call's index in the sequence (u32), then the reply body
            judges = [*spec.workload.prelude, (spec.workload.body, spec.workload.judge)]
            (step,) = struct.unpack(">I", dump[:4])
            if step < len(judges):
                result["first_bad_response"] = judges[step][1](dump[4:])
    return result


def latency_summary(result: dict[str, Any]) -> LatencySummary:
    """The C program's histogram percentiles as a :class:`LatencySummary` (µs)."""
    lat = result["latency_ns"]
    return LatencySummary(
        count=int(lat["count"]),
        min_us=lat["min"] / 1e3,
        mean_us=lat["mean"] / 1e3,
        p50_us=lat["p50"] / 1e3,
        p90_us=lat["p90"] / 1e3,
        p99_us=lat["p99"] / 1e3,
        max_us=lat["max"] / 1e3,
    )


def counts(result: dict[str, Any]) -> Counter[str]:
    return Counter({str(k): int(v) for k, v in result["counts"].items()})


__all__ = [
    "MAX_REPLY",
    "NativeUnavailable",
    "build",
    "calls_file",
    "compiler",
    "counts",
    "latency_summary",
    "reply_check",
    "run_native",
]
