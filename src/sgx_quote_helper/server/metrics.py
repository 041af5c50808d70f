"""Prometheus metrics of the quote services: cheap counters on the request path, exported at scrape.

The event loop only bumps plain ints in dicts (:class:`ServerMetrics`, ~0.3 µs a request); the
Prometheus families are built from them when scraped (a custom collector on a private registry),
and :func:`start_metrics_server` serves ``/metrics`` from a thread on ``host:port`` (loopback by
default). Exported (all prefixed ``sgx_quote_helper_``):

- ``requests_total{type,result}``: answered requests by AESM request type and result code name;
- ``quote_latency_seconds``: GetQuoteEx latency inside the daemon (request decoded -> reply written);
- ``in_flight``: engine requests queued or running; ``connections`` / ``connections_total``;
- ``refused_total{reason}``: connections or requests refused (``not_allowed``,
  ``max_connections``, ``rate``, ``peer_in_flight``, ``busy``, ``client_error``);
- ``engine_errors_total{type}``: engine requests the engine answered with an error code.

The QGS service (server/qgs.py) exports the same families under ``sgx_quote_helper_qgs_``
(:data:`QGS_PREFIX`): its request types (``GetQuote``, ``GetCollateral``, ``GetPlatformInfo``,
``RawQuote``), its result names (``SUCCESS``, ``UNEXPECTED``, ...; ``closed`` when it closed
without an answer: a raw-mode report refused), and ``quote_latency_seconds`` for GetQuote and raw
quotes. One process serving both protocols exports both sets side by side.
"""

from __future__ import annotations

import bisect
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..abi.codes import AesmStatus

PREFIX = "sgx_quote_helper_"
#: the QGS service's families
QGS_PREFIX = PREFIX + "qgs_"
#: quote latency buckets (seconds): simulated quotes take ~0.1 ms, hardware ones milliseconds
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def request_type_name(cls: type) -> str:
    """The label of a request class: ``GetQuoteExRequest`` -> ``GetQuoteEx``."""
    name = cls.__name__
    return name[: -len("Request")] if name.endswith("Request") else name


def result_name(code: int) -> str:
    """The label of an AESM result code (its name; ``UNKNOWN_0x...`` for codes we do not know)."""
    return str(AesmStatus(code).name)


class ServerMetrics:
    """Counters of one service (see the module doc). Touched only from the event loop; read by the
    scrape thread through copies (dict copies are atomic under the GIL).

    Args:
        prefix: of every family name (the QGS service: :data:`QGS_PREFIX`).
        protocol: the protocol's name in the help texts ("AESM", "QGS").
        type_name / code_name: the ``type`` and ``result`` labels of a request class and a code.
        latency_of: what ``quote_latency_seconds`` times, for its help text.
    """

    __slots__ = (
        "code_name",
        "connections_total",
        "current",
        "engine_errors",
        "latency_buckets",
        "latency_count",
        "latency_of",
        "latency_sum",
        "prefix",
        "protocol",
        "refused",
        "requests",
        "type_name",
    )

    def __init__(
        self,
        prefix: str = PREFIX,
        protocol: str = "AESM",
        type_name: Callable[[type], str] = request_type_name,
        code_name: Callable[[int], str] = result_name,
        latency_of: str = "GetQuoteEx",
    ) -> None:
        self.prefix = prefix
        self.protocol = protocol
        self.type_name = type_name
        self.code_name = code_name
        self.latency_of = latency_of
        self.requests: dict[tuple[type, int], int] = {}
        self.refused: dict[str, int] = {}
        self.engine_errors: dict[type, int] = {}
        self.connections_total = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        #: gauges read at scrape time: name -> (help, function)
        self.current: dict[str, tuple[str, Callable[[], float]]] = {}

    def answered(self, request_type: type, code: int) -> None:
        """Count one answered request."""
        k = (request_type, code)
        self.requests[k] = self.requests.get(k, 0) + 1

    def refuse(self, reason: str) -> None:
        """Count one refused connection or request."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def engine_error(self, request_type: type) -> None:
        """Count one engine request the engine answered with an error."""
        self.engine_errors[request_type] = self.engine_errors.get(request_type, 0) + 1

    def quote_latency(self, seconds: float) -> None:
        """Observe one GetQuoteEx latency."""
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def gauge(self, name: str, help_text: str, fn: Callable[[], float]) -> None:
        """Export ``fn()`` as gauge ``name`` (read at scrape time)."""
        self.current[name] = (help_text, fn)

    def total(self, request_type: type | None = None) -> int:
        """Answered requests (of one type), for tests and logs."""
        return sum(n for (t, _), n in self.requests.copy().items() if request_type in (None, t))

    # -- prometheus_client collector protocol
    def collect(self) -> Iterator[Metric]:
        """Build the metric families from the counters (called by the scrape thread)."""
        prefix, type_name = self.prefix, self.type_name
        req = CounterMetricFamily(
            prefix + "requests",
            f"Answered {self.protocol} requests by type and result code",
            labels=["type", "result"],
        )
        for (t, code), n in sorted(
            self.requests.copy().items(), key=lambda kv: (kv[0][0].__name__, kv[0][1])
        ):
            req.add_metric([type_name(t), self.code_name(code)], n)
        yield req
        ref = CounterMetricFamily(
            prefix + "refused", "Refused connections or requests by reason", labels=["reason"]
        )
        for reason, n in sorted(self.refused.copy().items()):
            ref.add_metric([reason], n)
        yield ref
        eng = CounterMetricFamily(
            prefix + "engine_errors", "Engine requests the engine answered with an error", labels=["type"]
        )
        for t, n in sorted(self.engine_errors.copy().items(), key=lambda kv: kv[0].__name__):
            eng.add_metric([type_name(t)], n)
        yield eng
        yield CounterMetricFamily(
            prefix + "connections", "Client connections accepted", value=self.connections_total
        )
        counts = list(self.latency_buckets)
        cumulative, running = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            prefix + "quote_latency_seconds",
            f"{self.latency_of} latency inside the daemon (request decoded to reply written)",
            buckets=cumulative,
            sum_value=self.latency_sum,
        )
        for name, (help_text, fn) in list(self.current.items()):
            yield GaugeMetricFamily(prefix + name, help_text, value=fn())

    def registry(self, *also: ServerMetrics) -> CollectorRegistry:
        """A private registry exporting these metrics and ``also``'s (nothing process-global)."""
        reg = CollectorRegistry(auto_describe=False)
        for m in (self, *also):
            reg.register(m)
        return reg


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    #: a successor daemon (zero-downtime restart) binds the same port while we finish
    allow_reuse_port = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class MetricsServer:
    """The ``/metrics`` HTTP endpoint in a daemon thread. ``port`` is the bound port (0 -> real)."""

    def __init__(
        self, metrics: ServerMetrics, host: str, port: int, also: tuple[ServerMetrics, ...] = ()
    ) -> None:
        self._httpd = make_server(
            host,
            port,
            make_wsgi_app(metrics.registry(*also)),
            _ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.host = host
        self.port = int(self._httpd.server_port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


def start_metrics_server(
    metrics: ServerMetrics, host: str = "127.0.0.1", port: int = 9464, also: tuple[ServerMetrics, ...] = ()
) -> MetricsServer:
    """Serve ``metrics`` (and ``also``: another service of the process) on ``http://host:port/metrics``
    (raises OSError if the port is taken)."""
    return MetricsServer(metrics, host, port, also)


__all__ = [
    "LATENCY_BUCKETS",
    "MetricsServer",
    "ServerMetrics",
    "request_type_name",
    "result_name",
    "start_metrics_server",
]
