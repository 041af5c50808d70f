"""Per-request CPU of the daemon's protocol handling, in process (no socket, no engine).

One GetQuoteEx frame in (Intel's two writes: the 4-byte prefix, then the body), one 4,734-byte
GetQuoteEx reply out, as the daemon's connection does it. On a tree with ``wire/connection.py`` it
times the sans-I/O core (``ServerConnection``: receive_data, next_event, send) and, for comparison,
the framing + messages calls the daemon made before it (``FrameDecoder.feed``, ``decode_request``,
``encode_response``, ``encode_frame``); on an older tree only the latter. Min of 7 repeats of
20,000, timed by process CPU time (other processes on the machine do not count).

    PYTHONPATH=src python bench/protocol_core.py
"""

from __future__ import annotations

import importlib.util
import time
import timeit

from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import FrameDecoder, encode_frame

REQ = m.GetQuoteExRequest(bytes(432), bytes(256), None, 4734, 15000)
RES = m.GetQuoteExResponse(0, b"q" * 4734, None)
FRAME = encode_frame(m.encode_request(REQ))
PREFIX, BODY = FRAME[:4], FRAME[4:]


def old_path() -> None:
    dec = FrameDecoder()
    dec.feed(PREFIX)
    (body,) = dec.feed(BODY)
    request = m.decode_request(body)
    assert type(request) is m.GetQuoteExRequest
    encode_frame(m.encode_response(RES))


def main() -> None:
    paths = {"framing+messages (before)": old_path}
    if importlib.util.find_spec("sgx_quote_helper.wire.connection") is not None:
        from sgx_quote_helper.wire.connection import ServerConnection

        def core_path() -> None:
            conn = ServerConnection(frame_timeout=15.0, idle_timeout=30.0, now=1.0)
            conn.receive_data(PREFIX, 1.0)
            conn.receive_data(BODY, 1.0)
            request = conn.next_event()
            assert type(request) is m.GetQuoteExRequest
            conn.send(RES, 1.0)

        paths["wire.connection core (after)"] = core_path
    for name, fn in paths.items():
        best = min(timeit.repeat(fn, number=20_000, repeat=7, timer=time.process_time)) / 20_000
        print(f"{name:32s} {best * 1e6:6.2f} µs per request")


if __name__ == "__main__":
    main()
