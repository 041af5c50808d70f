"""The upstream proxy: byte-transparent forwarding, SERVICE_UNAVAILABLE (30) when upstream is down."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_quote_helper.abi.codes import AesmStatus
from sgx_quote_helper.abi.keyid import AttKeyId, AttKeyIdList, QeReportInfo
from sgx_quote_helper.abi.quote import Quote
from sgx_quote_helper.abi.report import Report, ReportBody, TargetInfo
from sgx_quote_helper.client import QuoteClient
from sgx_quote_helper.engine.dcap import DcapEngine
from sgx_quote_helper.engine.simulated import SimulatedEngine
from sgx_quote_helper.errors import AesmError, ConfigError
from sgx_quote_helper.server.config import ServerConfig
from sgx_quote_helper.server.proxy import ProxyServer, Upstream, error_reply
from sgx_quote_helper.service import IMPLEMENTATION, AesmService
from sgx_quote_helper.sim.platform import Platform
from sgx_quote_helper.wire import messages as m
from sgx_quote_helper.wire.framing import HEADER, encode_frame
from tests.daemon_thread import running, running_daemon
from tests.fake_dcap import FakeDcap, fake_dcap  # noqa: F401  (fixture)

KEY = AttKeyId.ecdsa_p256_qe3().to_bytes()
TMS = 15000


def raw_exchange(path: Path, body: bytes, timeout: float = 20.0) -> bytes | None:
    """Send one frame; the reply body, or None when the peer closed without a reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(encode_frame(body))
        data = b""
        while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack(data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                assert data == b"", f"truncated reply: {data!r}"
                return None
            data += chunk
        return data[HEADER.size :]


def proxy(upstream: Path, sock: Path, **kwargs: object) -> ProxyServer:
    config = ServerConfig(socket_path=sock, use_uvloop=False, **kwargs)  # type: ignore[arg-type]
    return ProxyServer(Upstream(upstream, timeout=5.0), config, instance_id="proxy-1", pid=4242)


def requests(report: bytes, info: bytes, size: int) -> list[bytes]:
    """Every quote-ex request type, in an order that works, plus refusals and a legacy request."""
    other_key = AttKeyId(algorithm_id=3).to_bytes()
    reqs: list[m.Request] = [
        m.GetSupportedAttKeyIDNumRequest(TMS),
        m.GetSupportedAttKeyIDsRequest(256, TMS),
        m.GetSupportedAttKeyIDsRequest(512, TMS),  # wrong size: 3
        m.SelectAttKeyIDRequest(None, TMS),
        m.SelectAttKeyIDRequest(AttKeyIdList((AttKeyId.ecdsa_p256_qe3(),)).to_bytes(), TMS),
        m.InitQuoteExRequest(KEY, False, 140393291379042, TMS),  # size query, garbage buf_size
        m.InitQuoteExRequest(KEY, True, 32, TMS),
        m.InitQuoteExRequest(other_key, True, 32, TMS),  # 38
        m.GetQuoteSizeExRequest(KEY, TMS),
        m.GetQuoteExRequest(report, KEY, info, size + 64, TMS),
        m.GetQuoteExRequest(report, KEY, None, size, TMS),
        m.GetQuoteExRequest(report[:100], KEY, None, size, TMS),  # 3
        m.LegacyRequest(m.F_GET_QUOTE, b""),
    ]
    return [m.encode_request(r) for r in reqs]


@pytest.fixture
def dcap_upstream(fake_dcap: FakeDcap, tmp_path: Path) -> Iterator[tuple[FakeDcap, Path]]:  # noqa: F811
    fake_dcap.reset()
    engine = DcapEngine(library=str(fake_dcap.qe3), pce_library=None, device_root=fake_dcap.device_root)
    sock = tmp_path / "upstream.socket"
    with running_daemon(AesmService(engine, instance_id="upstream-1"), sock):
        yield fake_dcap, sock
    engine.close()
    fake_dcap.reset()


def test_byte_identical_through_the_proxy(dcap_upstream: tuple[FakeDcap, Path], tmp_path: Path) -> None:
    fake, upstream = dcap_upstream
    sock = tmp_path / "proxy.socket"
    report = Report(ReportBody(report_data=b"\x42" * 64)).to_bytes()
    info = QeReportInfo(b"\x03" * 16, TargetInfo(mr_enclave=b"\x44" * 32)).to_bytes()
    with running(proxy(upstream, sock)) as srv:
        for body in requests(report, info, len(fake.quote)):
            direct = raw_exchange(upstream, body)
            via = raw_exchange(sock, body)
            assert direct is not None
            assert via == direct, m.decode_request(body)
        # and the quote really went through: the real quote, padded as aesmd pads it
        quote_req = m.encode_request(m.GetQuoteExRequest(report, KEY, None, len(fake.quote) + 8, TMS))
        reply = m.decode_response(raw_exchange(sock, quote_req) or b"")
        assert isinstance(reply, m.GetQuoteExResponse)
        assert reply.quote == fake.quote + bytes(8)
        assert isinstance(srv, ProxyServer)
        assert srv.proxy_stats.forwarded >= 14
        assert srv.proxy_stats.upstream_failures == 0


def test_simulated_upstream_quotes_through_the_proxy(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path / "platform", create=True)
    upstream, sock = tmp_path / "upstream.socket", tmp_path / "proxy.socket"
    with (
        running_daemon(AesmService(SimulatedEngine(platform), instance_id="upstream-1"), upstream),
        running(proxy(upstream, sock)),
    ):
        for body in requests(bytes(432), bytes(960), 8000)[:9]:  # everything before the quotes
            assert raw_exchange(sock, body) == raw_exchange(upstream, body)
        with QuoteClient(sock, retry_deadline=0) as client:
            target = client.init_quote_ex().target_info
            report = platform.ereport(target, b"through the proxy")
            quote = Quote.from_bytes(client.get_quote_ex(report).trimmed())
            assert quote.body == report.body
            assert quote.pck_chain_pem == platform.pck_chain_pem()
            sig = quote.signature_data
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
            r, s = int.from_bytes(sig.signature[:32], "big"), int.from_bytes(sig.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), quote.signed_bytes, ec.ECDSA(hashes.SHA256()))
            # the probe asks who serves *this* socket: the proxy answers for itself
            probe = client.probe()
            assert (probe.implementation, probe.instance_id, probe.pid) == (IMPLEMENTATION, "proxy-1", 4242)


# -- a scripted upstream, for what no real daemon does -------------------------------------------


class ScriptedUpstream:
    """A Unix-socket peer that reads one frame per connection and answers ``script(body)``.

    ``script`` returns the raw bytes to write (framing included) or None to close at once.
    """

    def __init__(self, path: Path, script: Callable[[bytes], bytes | None]) -> None:
        self.path = path
        self.script = script
        self.received: list[bytes] = []
        self.release = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while len(data) < 4 or len(data) < 4 + HEADER.unpack(data[:4])[0]:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            body = data[4:]
            self.received.append(body)
            out = self.script(body)
            if out is not None:
                conn.sendall(out)

    def close(self) -> None:
        self.release.set()
        self._sock.close()


Script = Callable[[bytes], bytes | None]
MakeUpstream = Callable[[Script], ScriptedUpstream]


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[MakeUpstream]:
    made: list[ScriptedUpstream] = []

    def make(script: Script) -> ScriptedUpstream:
        up = ScriptedUpstream(tmp_path / f"scripted{len(made)}.socket", script)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


#: bodies we do not parse (unknown field, several fields, not protobuf at all, empty)
OPAQUE_BODIES = [
    b"\xba\x01\x03\x08\x07\x10",  # field 23
    b"\x7a\x00\x82\x01\x00",  # fields 15 and 16 at once
    b"\xff\xfe\xfd not protobuf",
    b"",
]


def test_requests_we_do_not_parse_are_forwarded_byte_for_byte(scripted: MakeUpstream, tmp_path: Path) -> None:
    up = scripted(lambda body: encode_frame(b"\x8a\x01\x00echo:" + body))
    sock = tmp_path / "proxy.socket"
    with running(proxy(up.path, sock)):
        for body in OPAQUE_BODIES:
            assert raw_exchange(sock, body) == b"\x8a\x01\x00echo:" + body
    assert up.received == OPAQUE_BODIES


def test_upstream_closing_unanswered_closes_the_client(scripted: MakeUpstream, tmp_path: Path) -> None:
    up = scripted(lambda body: None)
    sock = tmp_path / "proxy.socket"
    with running(proxy(up.path, sock)) as srv:
        assert raw_exchange(sock, m.encode_request(m.GetQuoteSizeExRequest(KEY, TMS))) is None
        assert isinstance(srv, ProxyServer)
        assert srv.proxy_stats.upstream_closed == 1


def typed_requests() -> list[m.Request]:
    info = QeReportInfo(b"\x05" * 16, TargetInfo()).to_bytes()
    return [
        m.GetSupportedAttKeyIDNumRequest(TMS),
        m.GetSupportedAttKeyIDsRequest(256, TMS),
        m.SelectAttKeyIDRequest(None, TMS),
        m.InitQuoteExRequest(KEY, False, None, TMS),
        m.InitQuoteExRequest(KEY, True, 32, TMS),
        m.GetQuoteSizeExRequest(KEY, TMS),
        m.GetQuoteExRequest(bytes(432), KEY, info, 5000, TMS),
        m.LegacyRequest(m.F_GET_LAUNCH_TOKEN, b""),
    ]


def check_unavailable(request: m.Request, body: bytes | None, status: int = 30) -> None:
    assert body is not None
    reply = m.decode_response(body)
    assert m.response_field(reply) == m.request_field(request)
    assert reply.error_code == status  # type: ignore[union-attr]
    if isinstance(request, m.InitQuoteExRequest):
        assert isinstance(reply, m.InitQuoteExResponse) and reply.pub_key_id_size == 32
    if isinstance(request, m.GetQuoteExRequest):
        assert isinstance(reply, m.GetQuoteExResponse)
        assert reply.qe_report_info == request.qe_report_info and reply.quote is None


def test_upstream_down_answers_service_unavailable_with_the_request_field(tmp_path: Path) -> None:
    sock = tmp_path / "proxy.socket"
    with running(proxy(tmp_path / "nobody-here.socket", sock)) as srv:
        for request in typed_requests():
            check_unavailable(request, raw_exchange(sock, m.encode_request(request)))
        # a type we do not parse but whose field number is clear: {23: {errorCode: 30}}
        assert raw_exchange(sock, b"\xba\x01\x03\x08\x07\x10") == b"\xba\x01\x02\x08\x1e"
        # field number unknowable: no reply, the connection is closed
        for body in OPAQUE_BODIES[1:]:
            assert raw_exchange(sock, body) is None
        with QuoteClient(sock, retry_deadline=0) as client, pytest.raises(AesmError) as err:
            client.get_quote_size_ex()
        assert err.value.status == AesmStatus.SERVICE_UNAVAILABLE  # Intel's client: 0x4001
        assert isinstance(srv, ProxyServer)
        assert srv.proxy_stats.upstream_failures >= len(typed_requests())


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(lambda body: HEADER.pack(100) + b"short", id="truncated reply"),
        pytest.param(lambda body: HEADER.pack(1 << 30), id="oversized reply"),
    ],
)
def test_broken_upstream_replies_are_service_unavailable(
    scripted: MakeUpstream, tmp_path: Path, script: Script
) -> None:
    up = scripted(script)
    sock = tmp_path / "proxy.socket"
    request = m.GetQuoteSizeExRequest(KEY, TMS)
    with running(proxy(up.path, sock)):
        check_unavailable(request, raw_exchange(sock, m.encode_request(request)))


def test_hanging_upstream_times_out_to_service_unavailable(scripted: MakeUpstream, tmp_path: Path) -> None:
    def hang(body: bytes) -> None:
        up.release.wait(30)  # never answers while the proxy waits

    up = scripted(hang)
    sock = tmp_path / "proxy.socket"
    config = ServerConfig(socket_path=sock, use_uvloop=False)
    server = ProxyServer(Upstream(up.path, timeout=0.3), config)
    request = m.InitQuoteExRequest(KEY, True, 32, TMS)
    with running(server):
        check_unavailable(request, raw_exchange(sock, m.encode_request(request)))
    up.release.set()


def test_busy_past_max_in_flight(scripted: MakeUpstream, tmp_path: Path) -> None:
    arrived = threading.Event()

    def hold(body: bytes) -> bytes | None:
        arrived.set()
        up.release.wait(30)
        return encode_frame(b"\x82\x01\x02\x08\x00")

    up = scripted(hold)
    sock = tmp_path / "proxy.socket"
    request = m.encode_request(m.GetQuoteSizeExRequest(KEY, TMS))
    with running(proxy(up.path, sock, max_in_flight=1)):
        first: list[bytes | None] = []
        t = threading.Thread(target=lambda: first.append(raw_exchange(sock, request)))
        t.start()
        assert arrived.wait(20)
        check_unavailable(m.GetQuoteSizeExRequest(KEY, TMS), raw_exchange(sock, request), AesmStatus.BUSY)
        up.release.set()
        t.join(20)
    assert first == [b"\x82\x01\x02\x08\x00"]


def test_the_proxy_refuses_to_be_its_own_upstream(tmp_path: Path) -> None:
    sock = tmp_path / "aesm.socket"
    with pytest.raises(ConfigError, match="is the socket we serve"):
        ProxyServer(Upstream(sock), ServerConfig(socket_path=sock))
    with pytest.raises(ConfigError):
        Upstream(sock, timeout=0)


def test_error_reply_unknowable_field() -> None:
    assert error_reply(b"", AesmStatus.SERVICE_UNAVAILABLE) is None
    assert error_reply(b"\xff\xff", AesmStatus.SERVICE_UNAVAILABLE) is None


def test_serve_engine_proxy_command(tmp_path: Path) -> None:
    platform = Platform.open(tmp_path / "platform", create=True)
    upstream, sock = tmp_path / "upstream.socket", tmp_path / "proxy.socket"
    with running_daemon(AesmService(SimulatedEngine(platform), instance_id="upstream-1"), upstream):
        cmd = [sys.executable, "-c", "from sgx_quote_helper.cli import main; main()", "serve"]
        cmd += ["--engine", "proxy", "--upstream-socket", str(upstream), "--socket", str(sock), "-q"]
        cmd += ["--handover-window", "0"]  # no successor is coming: stop at once
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not sock.exists():  # a subprocess offers no event to wait on: poll its socket
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the proxy did not create its socket"
                time.sleep(0.02)
            with QuoteClient(sock, retry_deadline=5) as client:
                assert client.probe().instance_id != "upstream-1"  # the proxy answers for itself
                assert client.get_supported_att_key_ids() == [AttKeyId.ecdsa_p256_qe3()]
                assert client.init_quote_ex().target_info.mr_enclave != bytes(32)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    assert not sock.exists()
