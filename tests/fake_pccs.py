"""A tiny loopback PCCS stand-in (http.server on 127.0.0.1, port 0) for fetch/CLI tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class FakePccs:
    """Serves ``routes`` (path?query -> (status, body, headers)); a key ``"pckcert"`` answers any
    ``/sgx/certification/v4/pckcert?...`` request. Records every requested path in ``requests``."""

    def __init__(self, routes: dict[str, tuple[int, bytes, dict[str, str]]]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                key = "pckcert" if self.path.startswith("/sgx/certification/v4/pckcert?") else self.path
                status, body, headers = outer.routes.get(key, (404, b"not found", {}))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakePccs:
        self.thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
