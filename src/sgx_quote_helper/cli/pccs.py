"""``sgx-quote-helper pccs``: the PCCS-compatible collateral service (``serve``) and its cache
maintenance (``refresh``). Bad input exits 2 with one ``error:`` line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from ..errors import CollateralError, ConfigError, PlatformStateError
from ._common import default_state_dir, fail

_ERRORS = (ConfigError, PlatformStateError, CollateralError)
log = logging.getLogger("sgx_quote_helper.pccs")


def default_db() -> Path:
    """``$XDG_CACHE_HOME/sgx-quote-helper/pccs.sqlite`` (``~/.cache/...``)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sgx-quote-helper" / "pccs.sqlite"


def _open_cache(db: Path | None) -> Any:
    from ..pccs.cache import CollateralCache

    path = db or default_db()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {path.parent}: {exc.strerror}")
    try:
        return CollateralCache(path)
    except ConfigError as exc:
        fail(str(exc))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when installed (about 2x the requests/s of asyncio's), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def pccs() -> None:
    """PCCS-compatible collateral service: Intel's PCS/PCCS API (v3 and v4, SGX and TDX paths) for
    DCAP verifiers and quote providers (dcap-qvl's get_collateral, Intel's QCNL with pccs_url, our
    `verify --pccs`).

    \b
    Two modes:
      --simulated     serve the SIMULATED collateral of local platforms (sim init), re-signed as
                      time passes; answers pckcert for encrypted-PPID (type 3) platforms
      --upstream URL  cache Intel's PCS (or another PCCS) in SQLite and serve from the cache
    """


@pccs.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8081, show_default=True, help="Port (0: any free port)."
)
@click.option("--simulated", is_flag=True, help="Serve the simulated platforms' collateral.")
@click.option(
    "--state-dir",
    "state_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Simulated platform state directory (repeatable; they must share one SIMULATED PKI) "
    "[default: $SGX_QUOTE_HELPER_STATE or the XDG state dir].",
)
@click.option(
    "--upstream", metavar="URL", help="Cache this PCS/PCCS (e.g. https://api.trustedservices.intel.com)."
)
@click.option(
    "--api-key",
    envvar="PCCS_API_KEY",
    metavar="KEY",
    help="Ocp-Apim-Subscription-Key sent upstream when the client sends none [env PCCS_API_KEY].",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite cache file [~/.cache/sgx-quote-helper/pccs.sqlite].",
)
@click.option(
    "--root-ca-crl-url",
    metavar="URL",
    help="Where to get the root CA CRL when the upstream has no /rootcacrl [Intel's distribution point].",
)
@click.option(
    "--root-ca",
    "root_ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Caching mode: cache only collateral whose signatures chain to this root CA (PEM or DER) "
    "[Intel's SGX Root CA]. Pass the SIMULATED root (sim root-ca) to cache a simulated PCCS.",
)
@click.option(
    "--update",
    "default_update",
    type=click.Choice(["standard", "early"]),
    default="standard",
    show_default=True,
    help="TCB baseline for tcb and qe/identity requests that name no update= "
    "(Intel's early or standard TCB evaluation; tcbEvaluationDataNumber=N picks a number).",
)
@click.option(
    "--upstream-rate",
    type=click.FloatRange(min=0.1),
    default=20,
    show_default=True,
    metavar="PER_SECOND",
    help="Caching mode: upstream requests per second at most (bursts of twice that).",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds between background refreshes of cached entries near expiry.",
)
@click.option(
    "--refresh-after",
    type=click.FloatRange(min=0.01),
    default=24,
    show_default=True,
    metavar="HOURS",
    help="Refetch a cached entry once it is this old, even if still valid (served meanwhile).",
)
@click.option(
    "--refresh-ahead",
    type=click.FloatRange(min=0),
    default=24,
    show_default=True,
    metavar="HOURS",
    help="Refetch a cached entry this long before its nextUpdate (served meanwhile).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    host: str,
    port: int,
    simulated: bool,
    state_dirs: tuple[Path, ...],
    upstream: str | None,
    api_key: str | None,
    db: Path | None,
    root_ca_crl_url: str | None,
    root_ca: Path | None,
    default_update: str,
    upstream_rate: float,
    refresh_interval: float,
    refresh_after: float,
    refresh_ahead: float,
    log_level: str,
) -> None:
    """Serve collateral over HTTP until SIGINT/SIGTERM.

    Prints one line `pccs ready at http://HOST:PORT (MODE)` on stdout once it answers (with --port 0,
    the port actually bound). Access log and errors go to stderr; Prometheus metrics at /metrics;
    GET / and /healthz answer 200.

    \b
    Examples:
      # one simulated platform whose quotes carry an encrypted PPID (type 3)
      sgx-quote-helper sim init --state-dir /tmp/p1 --cert-data encrypted-ppid
      sgx-quote-helper pccs serve --simulated --state-dir /tmp/p1 --port 8081 &
      curl 'http://127.0.0.1:8081/sgx/certification/v4/tcb?fmspc=00A0A5510000'
      sgx-quote-helper sim quote --state-dir /tmp/p1 --out q.bin
      sgx-quote-helper sim root-ca --state-dir /tmp/p1 --der --out root.der
      sgx-quote-helper verify q.bin --pccs http://127.0.0.1:8081 --root-ca root.der
    \b
      # the same platform's TD quote: TDX collateral from /tdx/certification/v4/ (with
      # --update early: evaluation 18, in which today's simulated TCB is OutOfDate)
      sgx-quote-helper sim quote --tee tdx --state-dir /tmp/p1 --out td.bin
      sgx-quote-helper verify td.bin --pccs http://127.0.0.1:8081 --root-ca root.der
    \b
      # two platforms under one SIMULATED root, one service
      sgx-quote-helper sim init --state-dir /tmp/p2 --fmspc 00906ED50000 --pki-from /tmp/p1
      sgx-quote-helper pccs serve --simulated --state-dir /tmp/p1 --state-dir /tmp/p2
    \b
      # a caching PCCS in front of Intel's PCS (Intel's QCNL: "pccs_url":
      # "http://HOST:8081/sgx/certification/v4/")
      sgx-quote-helper pccs serve --upstream https://api.trustedservices.intel.com \\
          --api-key "$PCS_KEY" --db /var/cache/pccs.sqlite --host 0.0.0.0
    \b
      # a caching PCCS in front of the simulated one (its root must be named to be cached)
      sgx-quote-helper pccs serve --upstream http://127.0.0.1:8081 --root-ca root.der --port 8082
    """
    if simulated == (upstream is not None):
        fail("give exactly one of --simulated or --upstream URL")
    if simulated and (db is not None or root_ca_crl_url is not None or root_ca is not None):
        fail("--db, --root-ca and --root-ca-crl-url apply to caching mode (--upstream) only")
    if upstream is not None and state_dirs:
        fail("--state-dir applies to --simulated only")
    _logging(log_level)
    from ..pccs.cache import RefreshPolicy

    policy = RefreshPolicy(max_age=timedelta(hours=refresh_after), ahead=timedelta(hours=refresh_ahead))
    try:
        if upstream is None:
            source, metrics = _simulated(state_dirs or (default_state_dir(),))
        else:
            source, metrics = _caching(upstream, api_key, db, root_ca_crl_url, policy, root_ca, upstream_rate)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(host, port, source, metrics, refresh_interval, default_update))
    except _ERRORS as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _simulated(state_dirs: tuple[Path, ...]) -> tuple[Any, Any]:
    from ..pccs.app import system_clock
    from ..pccs.metrics import Metrics
    from ..pccs.store import SimulatedStore
    from ..sim.platform import Platform

    platforms = [Platform.open(d) for d in state_dirs]
    store = SimulatedStore(platforms, system_clock)
    for p in platforms:
        ident = p.identity
        log.info(
            "platform %s: FMSPC %s, %s CA, certification data %s",
            p.state.path,
            ident.fmspc.hex().upper(),
            ident.ca,
            ident.cert_data,
        )
    return store, Metrics()


def _trust(root_ca: Path | None) -> Any:
    from ..verify.chain import TrustedRoot

    if root_ca is None:
        return TrustedRoot.intel()
    try:
        return TrustedRoot.load(root_ca.read_bytes())
    except OSError as exc:
        fail(f"cannot read {root_ca}: {exc.strerror}")


def _caching(
    upstream: str,
    api_key: str | None,
    db: Path | None,
    crl_url: str | None,
    policy: Any,
    root_ca: Path | None = None,
    upstream_rate: float = 20.0,
) -> tuple[Any, Any]:
    from ..pccs.app import HttpGetter, system_clock
    from ..pccs.cache import INTEL_ROOT_CA_CRL_URL, CachingSource
    from ..pccs.limits import RateLimiter
    from ..pccs.metrics import Metrics

    trust = _trust(root_ca)
    metrics = Metrics()
    cache = _open_cache(db)
    source = CachingSource(
        cache,
        upstream,
        HttpGetter(),
        system_clock,
        api_key=api_key,
        policy=policy,
        root_ca_crl_url=crl_url or INTEL_ROOT_CA_CRL_URL,
        on_upstream=metrics.upstream_outcome,
        trust=trust,
        limiter=RateLimiter(rate=upstream_rate, burst=max(1, int(upstream_rate * 2))),
    )
    metrics.track_cache_size(cache.__len__)
    if root_ca is not None:
        log.info(
            "caching only collateral that chains to %s (%s)", root_ca, trust.cert.subject.rfc4514_string()
        )
    log.info(
        "caching %s in %s (%d entries)%s",
        source.upstream,
        cache.path,
        len(cache),
        " with an API key" if api_key else "",
    )
    return source, metrics


async def _serve(
    host: str, port: int, source: Any, metrics: Any, refresh_interval: float, default_update: Any = "standard"
) -> None:
    from ..pccs.app import make_app, refresh_loop, start
    from ..pccs.cache import CachingSource

    runner, url = await start(make_app(source, metrics, default_update), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    refresher = None
    if isinstance(source, CachingSource):
        refresher = asyncio.create_task(refresh_loop(source, refresh_interval))
    click.echo(f"pccs ready at {url} ({source.mode})")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        if refresher is not None:
            refresher.cancel()
        await runner.cleanup()  # closes the source (and its upstream client and database)


@pccs.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite cache file [~/.cache/sgx-quote-helper/pccs.sqlite].",
)
@click.option("--upstream", metavar="URL", required=True, help="The PCS/PCCS to refetch from.")
@click.option(
    "--api-key", envvar="PCCS_API_KEY", metavar="KEY", help="Ocp-Apim-Subscription-Key [env PCCS_API_KEY]."
)
@click.option(
    "--root-ca-crl-url", metavar="URL", help="Root CA CRL location if the upstream has no /rootcacrl."
)
@click.option(
    "--root-ca",
    "root_ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Store only collateral that chains to this root CA [Intel's SGX Root CA].",
)
@click.option(
    "--due-only",
    is_flag=True,
    help="Only entries past their refresh point (24 h old or 24 h from nextUpdate).",
)
def refresh(
    db: Path | None,
    upstream: str,
    api_key: str | None,
    root_ca_crl_url: str | None,
    root_ca: Path | None,
    due_only: bool,
) -> None:
    """Refetch everything in the cache from the upstream now (a failed entry keeps its old copy).

    Prints one line per entry; exits 1 if any entry failed. Safe to run beside a running
    `pccs serve` on the same --db (cron it, as Intel's PCCS refreshes daily).

    \b
    Example:
      sgx-quote-helper pccs refresh --db /var/cache/pccs.sqlite \\
          --upstream https://api.trustedservices.intel.com --api-key "$PCS_KEY"
    """
    try:
        results = asyncio.run(_refresh(db, upstream, api_key, root_ca_crl_url, due_only, _trust(root_ca)))
    except _ERRORS as exc:
        fail(str(exc))
    if not results:
        click.echo("nothing due for refresh" if due_only else "nothing cached yet")
    for key, outcome in results.items():
        click.echo(
            f"{outcome:>9}  {key}" if not outcome.startswith("failed") else f"failed     {key}: {outcome[8:]}"
        )
    if any(v.startswith("failed") for v in results.values()):
        sys.exit(1)


async def _refresh(
    db: Path | None, upstream: str, api_key: str | None, crl_url: str | None, due_only: bool, trust: Any
) -> dict[str, str]:
    from ..pccs.app import HttpGetter, system_clock
    from ..pccs.cache import INTEL_ROOT_CA_CRL_URL, CachingSource

    getter = HttpGetter()
    cache = _open_cache(db)
    try:
        source = CachingSource(
            cache,
            upstream,
            getter,
            system_clock,
            api_key=api_key,
            root_ca_crl_url=crl_url or INTEL_ROOT_CA_CRL_URL,
            trust=trust,
        )
        return await source.refresh_all(due_only=due_only)
    finally:
        await getter.close()
        cache.close()


@pccs.command("list")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite cache file [~/.cache/sgx-quote-helper/pccs.sqlite].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
def list_cmd(db: Path | None, as_json: bool) -> None:
    """Show what the cache holds: each entry's path and query, when it was fetched, its nextUpdate
    and its state (fresh: served as is; stale: served and refreshed behind; expired: refetched
    before it is served).

    \b
    Example:
      sgx-quote-helper pccs list --db /var/cache/pccs.sqlite
    """
    import json

    from ..pccs.app import system_clock
    from ..pccs.cache import RefreshPolicy

    path = db or default_db()
    if not path.is_file():
        fail(f"no cache database at {path}")
    cache = _open_cache(path)
    now, policy = system_clock(), RefreshPolicy()
    rows = []
    try:
        for key in cache.stored_keys():
            entry = cache.get(key)
            if entry is not None:
                rows.append(
                    {
                        "key": key,
                        "fetched_at": entry.fetched_at.isoformat(),
                        "next_update": entry.document.next_update.isoformat(),
                        "state": policy.state(entry, now),
                    }
                )
    finally:
        cache.close()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo(f"{path}: empty")
    for row in rows:
        click.echo(f"{row['state']:8s} next update {row['next_update']}  {row['key']}")


__all__ = ["pccs"]
