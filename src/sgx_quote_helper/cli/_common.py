"""Options and helpers shared by the CLI modules (state dir, hex parsing, error exits)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..abi.aesm import DEFAULT_SOCKET_PATH

F = TypeVar("F", bound=Callable[..., Any])

STATE_ENV = "SGX_QUOTE_HELPER_STATE"


def default_state_dir() -> Path:
    """``$SGX_QUOTE_HELPER_STATE``, else ``$XDG_STATE_HOME/sgx-quote-helper/platform``
    (``~/.local/state/sgx-quote-helper/platform``)."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "sgx-quote-helper" / "platform"


def state_dir_option(f: F) -> F:
    """``--state-dir DIR``: the simulated platform's state directory."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Simulated platform state directory [default: ${STATE_ENV}, else the XDG state dir "
        "~/.local/state/sgx-quote-helper/platform].",
    )(f)


DEFAULT_SOCKET = str(DEFAULT_SOCKET_PATH)


def socket_option(help: str = "The quote service's socket.") -> Callable[[F], F]:
    """``--socket PATH`` (parameter ``socket_path``), defaulting to aesmd's fixed path."""

    def decorate(f: F) -> F:
        return click.option(
            "--socket",
            "socket_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=DEFAULT_SOCKET,
            show_default=True,
            help=help,
        )(f)

    return decorate


def resolve_state_dir(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def parse_hex(
    value: str | None, name: str, max_len: int | None = None, exact: int | None = None
) -> bytes | None:
    """Parse a hex option value; raise click.BadParameter with a clear message."""
    if value is None:
        return None
    text = value.strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"{name} must be hex digits, got {value!r}") from None
    if exact is not None and len(raw) != exact:
        raise click.BadParameter(
            f"{name} must be exactly {exact} bytes ({2 * exact} hex digits), got {len(raw)}"
        )
    if max_len is not None and len(raw) > max_len:
        raise click.BadParameter(f"{name} must be at most {max_len} bytes, got {len(raw)}")
    return raw


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line on stderr and exit with ``code`` (2 = bad input, 1 = check failed)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


__all__ = [
    "DEFAULT_SOCKET",
    "STATE_ENV",
    "default_state_dir",
    "fail",
    "parse_hex",
    "resolve_state_dir",
    "socket_option",
    "state_dir_option",
]
