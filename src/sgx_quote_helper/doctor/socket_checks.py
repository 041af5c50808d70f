"""The daemon side of the doctor: SGX_AESM_ADDR, the socket file, connecting, who answers, key ids
and a test quote (see the package doc for when each applies)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..abi.codes import AesmStatus
from ..abi.keyid import ALG_ECDSA_P256, AttKeyId
from ..abi.report import Report
from ..client import AESM_ADDR_ENV, QuoteClient
from ..errors import AesmError, BadResponseError, LocalProtocolError, TransportError
from ..sim.qe import SIMULATED_QE_MRENCLAVE
from .explain import explain
from .model import Check, DoctorOptions, Facts, Probes, Status

TYPO_NAME = "aesm.sock"
SOCKET_NAMES = ("socket-path", "socket-connect", "daemon", "key-ids", "test-quote")
_MOUNT_FIX = (
    "mount the host directory /var/run/aesmd into the pod at /var/run/aesmd (a hostPath volume of "
    "the directory, not of the socket file), and check that the quote helper DaemonSet runs on this "
    "node: kubectl get pods -A -o wide | grep -i -e quote -e aesm"
)


def check_env(options: DoctorOptions) -> Check:
    """``SGX_AESM_ADDR``: set (any value) selects out-of-process quoting in Intel's library."""
    env = options.environ
    if AESM_ADDR_ENV not in env:
        return Check(
            "aesm-addr-env",
            Status.WARN,
            f"{AESM_ADDR_ENV} is not set: Intel's libsgx_dcap_ql in this environment quotes in-process "
            "(it loads the quoting enclave itself and needs /dev/sgx_provision). Fine on a node or for "
            "an app that quotes in-process; wrong for an app that should use the quote helper.",
            f"for out-of-process quoting set {AESM_ADDR_ENV}=1 in the app container's environment",
        )
    value = env[AESM_ADDR_ENV]
    if "/" in value and Path(value) != options.default_socket:
        return Check(
            "aesm-addr-env",
            Status.WARN,
            f"{AESM_ADDR_ENV}={value!r} selects out-of-process quoting, but its value is never used as "
            f"an address: Intel's client always connects to {options.default_socket}",
            f"mount the service's socket at {options.default_socket}; {AESM_ADDR_ENV}=1 says the same",
        )
    shown = repr(value) if value else "the empty string"
    return Check(
        "aesm-addr-env",
        Status.PASS,
        f"{AESM_ADDR_ENV} is set (to {shown}; only its presence matters): apps quote through the AESM "
        f"socket {options.default_socket}",
    )


def _skip_all(reason: str) -> list[Check]:
    return [Check(name, Status.SKIP, reason) for name in SOCKET_NAMES]


def _describe(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid} gid {st.st_gid}"


def check_socket_path(path: Path, default: Path) -> Check:
    """The path exists, is a socket, and is not the ``aesm.sock`` typo."""
    directory = path.parent
    if path.name == TYPO_NAME:
        other = directory / default.name
        seen = f"; {other} exists" if other.is_socket() else ""
        return Check(
            "socket-path",
            Status.FAIL,
            f"{path} is named {TYPO_NAME}: the AESM socket is {default.name} (a common typo){seen}",
            f"use {directory / default.name} (Intel's client only ever connects to {default})",
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        if not directory.is_dir():
            return Check(
                "socket-path",
                Status.FAIL,
                f"{directory} does not exist here: the socket directory is not mounted",
                _MOUNT_FIX,
            )
        try:
            sockets = sorted(p.name for p in directory.iterdir() if p.is_socket())
        except OSError:
            sockets = []
        if sockets:
            return Check(
                "socket-path",
                Status.FAIL,
                f"{path} does not exist, but {directory} holds a differently named socket: "
                + ", ".join(sockets),
                f"serve (and mount) the socket as {default.name}: Intel's client only connects to {default}",
            )
        return Check(
            "socket-path",
            Status.FAIL,
            f"{path} does not exist and {directory} holds no socket: the quote helper is not running "
            "on this node, or the mount shows another (empty) directory",
            _MOUNT_FIX,
        )
    except OSError as exc:
        return Check(
            "socket-path",
            Status.FAIL,
            f"cannot look at {path}: {exc.strerror or exc}",
            f"make {directory} searchable (x permission) for this user",
        )
    if stat.S_ISDIR(st.st_mode):
        return Check(
            "socket-path",
            Status.FAIL,
            f"{path} is a directory: a hostPath volume of the socket file made it because the socket "
            "did not exist yet when the pod started",
            _MOUNT_FIX,
        )
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
        if stat.S_ISLNK(st.st_mode) and path.is_socket():
            return Check("socket-path", Status.PASS, f"{path} links to a socket")
        return Check(
            "socket-path",
            Status.FAIL,
            f"{path} exists but is {kind} ({_describe(st)}, {st.st_size} bytes)",
            f"remove it and let the quote helper create its socket there; {_MOUNT_FIX}",
        )
    note = ""
    if path != default:
        note = f" (note: Intel's libsgx_quote_ex only ever connects to {default})"
    return Check("socket-path", Status.PASS, f"{path} is a socket, {_describe(st)}{note}")


def _identity() -> str:
    groups = sorted(set(os.getgroups()) | {os.getgid()})
    return f"this process runs as uid {os.getuid()} with groups {groups}"


def check_connect(path: Path, probes: Probes, timeout: float) -> Check:
    """Connecting works; EACCES and ECONNREFUSED are explained."""
    try:
        probes.connect(str(path), timeout)
    except OSError as exc:
        try:
            mode = _describe(path.stat())
        except OSError:
            mode = "mode unknown"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return Check(
                "socket-connect",
                Status.FAIL,
                f"permission denied connecting to {path} (socket {mode}; {_identity()}): connecting needs "
                "write permission on the socket and search permission on its directories",
                "serve the socket with mode 0777 as aesmd does (sgx-quote-helper serve --socket-mode 0777), "
                "or 0660 with the app in the socket's group (Kubernetes: securityContext."
                "supplementalGroups: [<gid>]); a hostPath mount shows the host's modes and owners",
            )
        if exc.errno == errno.ECONNREFUSED:
            return Check(
                "socket-connect",
                Status.FAIL,
                f"nothing listens on {path} (connection refused): a stale socket left by a daemon that stopped",
                "restart the quote helper on this node (kubectl -n kube-system rollout restart daemonset "
                "<quote helper>); sgx-quote-helper serve replaces a stale socket",
            )
        return Check(
            "socket-connect",
            Status.FAIL,
            f"cannot connect to {path}: {exc.strerror or exc}",
            "check that the quote helper runs on this node and its socket is mounted here",
        )
    return Check("socket-connect", Status.PASS, f"connected to {path}")


def _who(path: Path | None, probes: Probes | None, timeout: float) -> str:
    if path is None or probes is None:
        return ""
    listener = probes.listener(path, timeout)
    return f"; it listens as {listener}" if listener is not None else ""


def _not_helper(path: Path | None, probes: Probes | None, timeout: float, what: str) -> Check:
    """An AESM that is not sgx-quote-helper: Intel's aesm_service is expected; anything else is a
    foreign server (perhaps one that replaced the quote helper's socket)."""
    if path is None or probes is None:
        return Check("daemon", Status.PASS, what)
    listener = probes.listener(path, timeout)
    if listener is not None and "aesm_service" in listener.command:
        return Check("daemon", Status.PASS, f"{what}; it is Intel's aesm_service ({listener})")
    who = f"{listener}" if listener is not None else "a process this namespace cannot see"
    return Check(
        "daemon",
        Status.WARN,
        f"{what}; a foreign server serves {path}: {who}, neither sgx-quote-helper nor Intel's aesm_service",
        "if you did not put it there, it may be an impostor that replaced the quote helper's socket: "
        "check that process; the quote helper puts its socket back and logs an ALERT when it sees this",
    )


def check_daemon(
    client: QuoteClient,
    facts: Facts,
    path: Path | None = None,
    probes: Probes | None = None,
    timeout: float = 2.0,
) -> Check:
    """Who answers: sgx-quote-helper answers our probe; Intel's aesmd closes the connection on it.
    With ``path`` and ``probes``, a server that is neither is named (SO_PEERCRED of its listener)."""
    try:
        probe = client.probe()
    except TransportError as exc:
        if isinstance(exc.__cause__, TimeoutError):
            return Check(
                "daemon",
                Status.FAIL,
                f"the daemon accepted the connection but did not answer: {exc}",
                "the daemon hangs or is overloaded; restart it",
            )
        if exc.__cause__ is None:
            return _not_helper(
                path,
                probes,
                timeout,
                "an AESM that is not sgx-quote-helper serves the socket (it closed the connection on our "
                "probe, as Intel's aesmd does with requests it does not know); the next checks show "
                "whether it quotes",
            )
        return Check("daemon", Status.FAIL, str(exc), "restart the quote helper on this node")
    except AesmError as exc:
        return _not_helper(path, probes, timeout, f"an AESM answered our probe with an error ({exc})")
    except (BadResponseError, LocalProtocolError) as exc:
        return Check(
            "daemon",
            Status.FAIL,
            f"something answers on the socket but not in the AESM protocol: {exc}"
            f"{_who(path, probes, timeout)}",
            "make sure the path belongs to the quote helper (aesmd or sgx-quote-helper serve)",
        )
    return Check(
        "daemon",
        Status.PASS,
        f"{probe.implementation or 'sgx-quote-helper'} {probe.version} answers (pid {probe.pid}, "
        f"instance {probe.instance_id})",
    )


def _aesm_fail(name: str, what: str, exc: Exception) -> Check:
    if isinstance(exc, AesmError):
        meaning, fix = explain(int(exc.status))
        return Check(name, Status.FAIL, f"{what}: {meaning}", fix)
    return Check(name, Status.FAIL, f"{what}: {exc}", "restart the quote helper; if it persists, report it")


_CLIENT_ERRORS = (AesmError, TransportError, BadResponseError, LocalProtocolError)


def check_key_ids(client: QuoteClient) -> Check:
    """GetSupportedAttKeyIDNum/IDs; the ECDSA P-256 QE3 key id must be there."""
    try:
        ids = client.get_supported_att_key_ids()
    except _CLIENT_ERRORS as exc:
        return _aesm_fail("key-ids", "GetSupportedAttKeyIDs failed", exc)
    qe3 = AttKeyId.ecdsa_p256_qe3().base
    if any(k.base == qe3 for k in ids):
        return Check(
            "key-ids", Status.PASS, f"{len(ids)} key id(s), including Intel's ECDSA P-256 QE3 key id"
        )
    if any(k.algorithm_id == ALG_ECDSA_P256 for k in ids):
        return Check(
            "key-ids",
            Status.WARN,
            f"{len(ids)} key id(s) with ECDSA P-256, but not Intel's QE3 one (another quoting enclave)",
            "Intel's libsgx_dcap_ql asks for the QE3 key id; check the daemon's configuration",
        )
    return Check(
        "key-ids",
        Status.FAIL,
        f"{len(ids)} key id(s), none of them ECDSA P-256 (an EPID-only AESM?)",
        "install the ECDSA plugin of aesmd (libsgx-aesm-ecdsa-plugin) or use sgx-quote-helper serve",
    )


def check_test_quote(client: QuoteClient, facts: Facts) -> Check:
    """InitQuoteEx, then GetQuoteEx of an all-zero report: a live path answers INVALID_REPORT (47)."""
    try:
        init = client.init_quote_ex()
        facts.simulated_engine = init.target_info.mr_enclave == SIMULATED_QE_MRENCLAVE
        size = client.get_quote_size_ex()
        client.get_quote_ex(bytes(Report.SIZE), buf_size=size)
    except AesmError as exc:
        if exc.status == AesmStatus.INVALID_REPORT:
            engine = "the simulated engine" if facts.simulated_engine else "its quoting enclave"
            return Check(
                "test-quote",
                Status.PASS,
                f"the quoting path is live: after InitQuoteEx, GetQuoteEx of a dummy all-zero report was "
                f"refused with INVALID_REPORT (47) by {engine}, as a real QE does (an app's enclave makes "
                f"the real report; quote size {size} bytes)",
            )
        return _aesm_fail("test-quote", f"{exc.request or 'the quote path'} failed", exc)
    except (TransportError, BadResponseError, LocalProtocolError) as exc:
        return _aesm_fail("test-quote", "the quote path failed", exc)
    return Check(
        "test-quote",
        Status.WARN,
        "the daemon quoted an all-zero report that no enclave made: it does not check report MACs "
        "(a test double?)",
        "use a real quoting engine (a real QE refuses reports not made for it)",
    )


def socket_checks(options: DoctorOptions, probes: Probes, facts: Facts) -> list[Check]:
    """The five daemon checks, each skipped when the one before it failed."""
    facts.out_of_process_app = AESM_ADDR_ENV in options.environ
    path = options.socket_path
    if path is None:
        if facts.out_of_process_app or os.path.lexists(options.default_socket):
            path = options.default_socket
        else:
            return _skip_all(
                f"{AESM_ADDR_ENV} is unset, no --socket given and {options.default_socket} does not "
                "exist: nothing here quotes out-of-process"
            )
    checks: list[Check] = []

    def failed(check: Check) -> bool:
        checks.append(check)
        return check.status is Status.FAIL

    def skip_rest(after: str) -> list[Check]:
        done = len(checks)
        return [*checks, *(Check(n, Status.SKIP, f"not run: {after} failed") for n in SOCKET_NAMES[done:])]

    if failed(check_socket_path(path, options.default_socket)):
        return skip_rest("socket-path")
    if failed(check_connect(path, probes, options.timeout)):
        return skip_rest("socket-connect")
    client = probes.client_factory(path, options.timeout)
    try:
        if failed(check_daemon(client, facts, path, probes, options.timeout)):
            return skip_rest("daemon")
        if failed(check_key_ids(client)):
            return skip_rest("key-ids")
        checks.append(check_test_quote(client, facts))
    finally:
        client.close()
    return checks


__all__ = ["SOCKET_NAMES", "check_env", "socket_checks"]
