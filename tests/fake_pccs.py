"""The fake PCCS on loopback HTTP (127.0.0.1, port 0), for the one caller that cannot take a getter:
the ``verify --pccs URL`` CLI. It serves from a :class:`~sgx_quote_helper.testing.fakes.FakePccs`
(the dict getter every other test injects into the fetcher), so there is one fake PCCS."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from sgx_quote_helper.testing.fakes import FakePccs


class LoopbackPccs:
    """``with LoopbackPccs(FakePccs(routes)) as http: http.url``; requests land in ``fake.requests``."""

    def __init__(self, fake: FakePccs) -> None:
        self.fake = fake

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                resp = fake(f"http://loopback{self.path}")
                self.send_response(resp.status)
                for name, value in resp.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LoopbackPccs:
        self.thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
