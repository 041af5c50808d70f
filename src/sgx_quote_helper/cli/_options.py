"""The options both quote services take (``serve`` for AESM, ``qgs serve`` for QGS), defined once.

Each function returns a click decorator; ``busy`` is what that service answers a refused request
with, for the help texts ("BUSY (18)" for AESM, "0x12001" for QGS). The value parsers
(:func:`parse_mode`, :func:`parse_group`, :func:`parse_rate`) raise ``click.BadParameter``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def parse_mode(value: str) -> int:
    """--socket-mode 0660 -> 0o660."""
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(
            f"socket mode must be octal digits like 0777 or 0660, got {value!r}"
        ) from None
    if not 0 <= mode <= 0o7777:
        raise click.BadParameter(f"socket mode {value} is out of range")
    return mode


def parse_group(value: str | None) -> int | None:
    """--socket-group NAME|GID -> gid."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import grp

    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group named {value!r} (give a name or a numeric gid)") from None


def parse_rate(value: str) -> float:
    """--rate-limit N or N/s -> requests per second (0 = off)."""
    text = value.strip().lower().removesuffix("/s")
    try:
        rate = float(text)
    except ValueError:
        raise click.BadParameter(f"rate must look like 50/s (requests per second), got {value!r}") from None
    if rate < 0:
        raise click.BadParameter("rate must not be negative")
    return rate


def _chain(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def idle_timeout_option(what: str) -> Callable[[F], F]:
    return click.option(
        "--idle-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help=what,
    )


def allow_options() -> Callable[[F], F]:
    """--allow-uid, --allow-gid."""
    return _chain(
        click.option(
            "--allow-uid",
            "allow_uids",
            type=click.IntRange(min=0),
            multiple=True,
            metavar="UID",
            help="Only peers with this uid (SO_PEERCRED) may connect; repeatable. With --allow-gid: either matches.",
        ),
        click.option(
            "--allow-gid",
            "allow_gids",
            multiple=True,
            metavar="NAME|GID",
            help="Only peers whose primary gid is this may connect; repeatable.",
        ),
    )


def peer_limit_options(busy: str, quotes: str = "Quote requests") -> Callable[[F], F]:
    """--rate-limit, --rate-burst, --max-in-flight-per-peer, --limit-by."""
    return _chain(
        click.option(
            "--rate-limit",
            default="0",
            show_default=True,
            metavar="N/s",
            help=f"Requests per second per peer (uid, or pid with --limit-by pid); past it {busy}. 0 = off.",
        ),
        click.option(
            "--rate-burst",
            type=click.IntRange(min=0),
            default=0,
            help="Requests a peer may send at once before --rate-limit applies [default: the rate, >= 1].",
        ),
        click.option(
            "--max-in-flight-per-peer",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help=f"{quotes} of one peer queued or running before its next ones get {busy}. 0 = off.",
        ),
        click.option(
            "--limit-by",
            type=click.Choice(["uid", "pid"]),
            default="uid",
            show_default=True,
            help="What a peer is for the per-peer limits.",
        ),
    )


def connection_limit_options() -> Callable[[F], F]:
    """--max-connections, --max-connections-per-uid."""
    return _chain(
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=2048,
            show_default=True,
            help="Open client connections; a new one past this is closed (and logged).",
        ),
        click.option(
            "--max-connections-per-uid",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Open connections of one peer uid (SO_PEERCRED); a new one past this is closed (and "
            "logged), so one user cannot take every --max-connections slot. 0: no per-uid cap.",
        ),
    )


def reply_buffer_option(busy: str, requests: str, big: str) -> Callable[[F], F]:
    """--max-reply-buffer (MiB)."""
    return click.option(
        "--max-reply-buffer",
        "max_reply_mib",
        type=click.FloatRange(min=0),
        default=64.0,
        show_default=True,
        help="MiB of replies buffered for clients that have not read them yet (all connections); "
        f"past it new {requests} are answered {busy}{big}. 0: no cap.",
    )


def metrics_options() -> Callable[[F], F]:
    """--metrics-port, --metrics-host."""
    return _chain(
        click.option(
            "--metrics-port",
            type=click.IntRange(min=0, max=65535),
            default=None,
            help="Serve Prometheus metrics on http://HOST:PORT/metrics (off unless given).",
        ),
        click.option(
            "--metrics-host",
            default="127.0.0.1",
            show_default=True,
            help="Address of the metrics endpoint (0.0.0.0 to be scraped from outside the pod/host).",
        ),
    )


#: what each `qgs serve --engine` is (also `serve --qgs-engine`)
QGS_ENGINES_HELP = (
    "simulated: the TDX side of the simulated platform in --state-dir (its TDQE quotes TDREPORTs "
    "of that platform's simulated TDX module; SIMULATED Intel root). tdx: Intel's TDX quote library "
    "(libsgx_tdx_logic.so.1, the TDQE on this TDX host), one library context per {workers} thread, "
    "quoting in parallel. auto: tdx when /dev/sgx_enclave, /dev/sgx_provision and the library are "
    "present, otherwise exit 2 naming what is missing (never falls back to simulated)."
)


def tdx_engine_options(when: str, workers: str = "--workers") -> Callable[[F], F]:
    """--tdx-library, --tdqe-path and the QGS's worker count (``workers``: ``--workers`` for
    ``qgs serve``, ``--qgs-workers`` for ``serve``): what the TDX engine of ``when`` needs."""
    return _chain(
        click.option(
            "--tdx-library",
            default=None,
            metavar="PATH",
            help=f"With {when}: Intel's TDX quote library [default: libsgx_tdx_logic.so.1 from the "
            "loader path].",
        ),
        click.option(
            "--tdqe-path",
            default=None,
            metavar="PATH",
            help=f"With {when}: the TDQE enclave file [default: libsgx_tdqe.signed.so.1 next to "
            "the library].",
        ),
        click.option(
            workers,
            type=click.IntRange(1, 256),
            default=4,
            show_default=True,
            help="QGS quoting threads (with the tdx engine: one TDX library context, i.e. TDQE key, each).",
        ),
    )


def device_root_option(when: str) -> Callable[[F], F]:
    """--device-root: where the SGX devices are."""
    return click.option(
        "--device-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/dev"),
        show_default=True,
        help=f"With {when}: where sgx_enclave and sgx_provision are (a container may mount them elsewhere).",
    )


def log_format_option() -> Callable[[F], F]:
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object per line (with -vv: one line per request: type, result, "
        "duration, peer pid/uid; never payloads).",
    )


def handover_options(probe: str) -> Callable[[F], F]:
    """--private-dir, --handover-window; ``probe``: the healthcheck command that uses the directory."""
    return _chain(
        click.option(
            "--private-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="This daemon's private directory (Kubernetes: an emptyDir of the pod): its instance record "
            "(id and start time, kept across container restarts) and a private socket that "
            f"`{probe}` uses to reach this very daemon.",
        ),
        click.option(
            "--handover-window",
            type=click.FloatRange(min=0),
            default=5.0,
            show_default=True,
            help="On SIGTERM while no successor has taken the socket path over: keep serving it this many "
            "seconds for one to do so, then remove the socket and exit (keep it below the pod's "
            "terminationGracePeriodSeconds). 0 = stop at once.",
        ),
    )


__all__ = [
    "QGS_ENGINES_HELP",
    "allow_options",
    "connection_limit_options",
    "device_root_option",
    "handover_options",
    "idle_timeout_option",
    "log_format_option",
    "metrics_options",
    "parse_group",
    "parse_mode",
    "parse_rate",
    "peer_limit_options",
    "reply_buffer_option",
    "tdx_engine_options",
]
