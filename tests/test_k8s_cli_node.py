"""``device-plugin`` CLI (dry run, errors) and the Node capacity patch over HTTP (k8s/node.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sgx_quote_helper.cli import cli
from sgx_quote_helper.errors import ConfigError, TransportError
from sgx_quote_helper.k8s import node, scan
from sgx_quote_helper.k8s.scan import MIB


def fake_node(tmp_path: Path, mib: int = 16) -> tuple[Path, Path]:
    sysfs = tmp_path / "sys"
    (sysfs / "devices/system/node/node0/x86").mkdir(parents=True)
    (sysfs / "devices/system/node/node0/x86/sgx_total_bytes").write_text(str(mib * MIB))
    dev = tmp_path / "dev"
    (dev / "sgx").mkdir(parents=True)
    (dev / "sgx/enclave").write_bytes(b"")
    (dev / "sgx/provision").write_bytes(b"")
    return sysfs, dev


def test_dry_run_reports_layout_and_resources(tmp_path: Path) -> None:
    sysfs, dev = fake_node(tmp_path)
    args = ["device-plugin", "--dry-run", "--sysfs-root", str(sysfs), "--dev-root", str(dev), "--intel-names"]
    result = CliRunner().invoke(cli, [*args, "--enclave-slots", "3", "--legacy-device-paths"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["epc_bytes"], report["epc_source"], report["device_layout"]) == (
        16 * MIB,
        "sysfs",
        "dcap-legacy",
    )
    by_name = {r["name"]: r for r in report["resources"]}
    assert by_name[scan.AZURE_EPC_RESOURCE]["devices"] == 16
    assert by_name[scan.INTEL_ENCLAVE_RESOURCE]["devices"] == 3
    assert {a["container_path"] for a in by_name[scan.AZURE_EPC_RESOURCE]["allocate"]} == {
        "/dev/sgx/enclave",
        "/dev/sgx_enclave",
    }
    assert by_name[scan.INTEL_PROVISION_RESOURCE]["allocate"][0]["host_path"] == "/dev/sgx/provision"
    assert all(r["healthy"] for r in report["resources"])


def test_cli_refuses_bad_names_and_empty_nodes(tmp_path: Path) -> None:
    _, dev = fake_node(tmp_path)
    bad = CliRunner().invoke(
        cli, ["device-plugin", "--dry-run", "--resource-name", "sgx_epc", "--dev-root", str(dev)]
    )
    assert bad.exit_code == 2
    assert "domain prefix" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["device-plugin", "--sysfs-root", str(empty), "--dev-root", str(empty), "--no-cpuid"]
    nothing = CliRunner().invoke(cli, [*args, "--kubelet-dir", str(empty)])
    assert nothing.exit_code == 1
    assert "no SGX on this node" in nothing.stderr


def test_help_teaches() -> None:
    result = CliRunner().invoke(cli, ["device-plugin", "--help"])
    assert result.exit_code == 0
    assert "sgx-quote-helper device-plugin --dry-run" in result.output


class _ApiServer(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]
    status = 200

    def do_PATCH(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).seen.append(
            {
                "path": self.path,
                "type": self.headers["Content-Type"],
                "auth": self.headers.get("Authorization"),
                "body": json.loads(self.rfile.read(length)),
            }
        )
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"kind":"Node"}' if type(self).status == 200 else b'{"reason":"Forbidden"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Any:
    handler = type("Handler", (_ApiServer,), {"seen": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_node_status_patch_sends_json_patch(api: Any) -> None:
    server, handler = api
    url = f"http://127.0.0.1:{server.server_address[1]}"
    node.patch_node_status(
        node.ApiServer(url, token="t0k"), "aks-dc/1", scan.node_capacity_patch("sgx.intel.com/epc", 42)
    )
    (seen,) = handler.seen
    assert seen["path"] == "/api/v1/nodes/aks-dc%2F1/status"
    assert seen["type"] == "application/json-patch+json"
    assert seen["auth"] == "Bearer t0k"
    assert seen["body"] == [{"op": "add", "path": "/status/capacity/sgx.intel.com~1epc", "value": "42"}]
    handler.status = 403
    with pytest.raises(TransportError) as info:
        node.patch_node_status(node.ApiServer(url), "n1", [])
    assert "403" in str(info.value)


def test_in_cluster_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        node.ApiServer.in_cluster(env={}, sa_dir=tmp_path)
    with pytest.raises(ConfigError):
        node.ApiServer.in_cluster(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, sa_dir=tmp_path)
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "ca.crt").write_text("x")
    api = node.ApiServer.in_cluster(
        env={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, sa_dir=tmp_path
    )
    assert api == node.ApiServer("https://[fd00::1]:6443", "abc", tmp_path / "ca.crt")
