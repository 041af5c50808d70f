"""Instructions per quote of the daemon's own per-connection code, without sockets or event loop.

Drives :class:`~sgx_quote_helper.server.connection.AesmConnection` over a fake transport the way an
Intel-pattern client uses a real one (connection made, one GetQuoteEx frame, end of file, connection
lost) ``N`` times, in-process, on the simulated engine; ``--layer service`` times only
``AesmService.handle`` of the decoded request (the engine and the crypto). Run it under callgrind
twice and subtract, which cancels start-up::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/a.cg .venv/bin/python bench/callgrind_connection.py -n 500
    valgrind --tool=callgrind --callgrind-out-file=/tmp/b.cg .venv/bin/python bench/callgrind_connection.py -n 2500

or let it do that itself: ``.venv/bin/python bench/callgrind_connection.py --callgrind``. Asserts
nothing (it checks that every reply is a successful quote, so a broken path cannot look fast).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.unix import AesmServer
from sgx_quote_helper.service import AesmService
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.sim.qe import QE_TARGET_INFO
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import encode_frame


class FakeLoop:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class FakeTransport:
    """What the connection uses of an asyncio transport; write() keeps the last frame."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.closing = False
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--layer", choices=("connection", "service"), default="connection")
    ap.add_argument("--callgrind", action="store_true", help="run itself under callgrind at 500 and 500+n")
    ap.add_argument("--state-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.callgrind:
        counts = []
        with tempfile.TemporaryDirectory(prefix="sqcc", dir="/tmp") as tmp:
            Platform.init(Path(tmp) / "plat")
            for n in (500, 500 + args.n):
                out = Path(tmp) / f"cg.{n}"
                subprocess.run(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                     "-n", str(n), "--layer", args.layer, "--state-dir", str(Path(tmp) / "plat")],
                    check=True, capture_output=True,
                )  # fmt: skip
                text = out.read_text()
                counts.append(int(re.search(r"(?:totals|summary):\s+(\d+)", text).group(1)))  # type: ignore[union-attr]
        print(f"{args.layer}: {(counts[1] - counts[0]) / args.n:,.0f} instructions per quote")
        return
    tmp = None
    if args.state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sqcc", dir="/tmp")
        args.state_dir = Path(tmp.name) / "plat"
        Platform.init(args.state_dir)
    platform = Platform.open(args.state_dir)
    engine = SimulatedEngine(platform)
    service = AesmService(engine)
    key = engine.supported_key_ids()[0]
    engine.init_quote(key, True)
    size = engine.quote_size(key)
    raw = platform.ereport(QE_TARGET_INFO, bytes(64), mr_enclave=b"\x42" * 32).to_bytes()
    request = m.GetQuoteExRequest(raw, key.to_bytes(), None, size, 15000)
    frame = encode_frame(m.encode_request(request))
    server = AesmServer(service, ServerConfig(socket_path=args.state_dir / "unused.socket"))
    server.loop = FakeLoop()  # type: ignore[assignment]
    ok = 0
    if args.layer == "service":
        for _ in range(args.n):
            r = service.handle(request)
            ok += r.error_code == 0  # type: ignore[union-attr]
    else:
        for _ in range(args.n):
            conn = server.new_connection()
            t = FakeTransport(conn)
            conn.connection_made(t)
            conn.data_received(frame)
            if not conn.eof_received():
                t.close()
            conn.connection_lost(None)
            ok += len(t.written) == 1 and len(t.written[0]) > size
    if ok != args.n:
        sys.exit(f"only {ok} of {args.n} quotes succeeded")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
