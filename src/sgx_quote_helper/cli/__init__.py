"""The ``sgx-quote-helper`` command line.

Each subcommand lives in its own module under ``cli/`` and is imported only when it runs, so
``sgx-quote-helper --help`` and the short commands start fast and a missing optional piece
(say, the gRPC stack of the device plugin) never breaks the others.

Exit status: 0 success, 1 a check or verification failed, 2 bad input or usage.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from .. import __version__

#: subcommand name -> ("module under cli", "click command attribute", "one-line help")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "demo", "Run the whole out-of-process flow on a simulated platform and explain it."),
    "inspect": ("inspect_cmd", "inspect", "Decode a quote and print its fields (human or --json)."),
    "sim": (
        "sim",
        "sim",
        "The simulated SGX/TDX platform: init, report, td-report, quote, collateral, root-ca.",
    ),
    "serve": ("serve", "serve", "Run the AESM-compatible quote service on a Unix socket."),
    "tdx": ("tdx", "tdx", "Inside a TDX guest: get a TD quote (configfs-tsm, QGS over vsock or a socket)."),
    "qgs": ("qgs", "qgs", "The TDX Quote Generation Service (Intel QGS protocol) for TD guests."),
    "quote": ("quote", "quote", "Act as a (simulated) enclave app: get a quote from a running service."),
    "verify": ("verify", "verify", "Verify a DCAP quote against collateral (Intel's TCB rules)."),
    "pccs": ("pccs", "pccs", "PCCS-compatible collateral service (simulated or caching)."),
    "healthcheck": ("healthcheck", "healthcheck", "Exit 0 only if the quote service answers."),
    "doctor": ("doctor", "doctor", "Check and explain an app's or node's out-of-process quoting setup."),
    "device-plugin": ("device_plugin", "device_plugin", "Kubernetes SGX device plugin (EPC + devices)."),
    "webhook": ("webhook", "webhook", "Kubernetes mutating admission webhook for SGX pods."),
    "attest": (
        "attest",
        "attest",
        "Azure Attestation-compatible service (SGX/TDX tokens), its keys and a client.",
    ),
    "bench": ("bench", "bench", "Benchmarks: load a quote service, measure the verifier."),
}


def _available(name: str) -> bool:
    module = COMMANDS[name][0]
    return importlib.util.find_spec(f"{__name__}.{module}") is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if _available(n))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        mod = importlib.import_module(f"{__name__}.{module}")
        cmd = getattr(mod, attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="sgx-quote-helper")
def cli() -> None:
    """Out-of-process SGX DCAP quoting: an AESM-compatible quote service, a simulated SGX
    platform that makes real, verifiable DCAP quotes, a DCAP verifier and its collateral service.

    \b
    Start here:
      sgx-quote-helper demo                      the whole flow, explained
      sgx-quote-helper serve --engine simulated  serve quotes on /var/run/aesmd/aesm.socket
      sgx-quote-helper inspect quote.bin         what is inside a quote
      sgx-quote-helper COMMAND --help            details of one command
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="sgx-quote-helper")


__all__ = ["COMMANDS", "cli", "main"]
