"""Publishing EPC as Node capacity through the Kubernetes API server (Intel's ``sgx.intel.com/epc``).

Intel's design counts EPC in bytes as a node-level extended resource, not as device-plugin devices:
``sgx_epchook -register`` JSON-patches ``/status/capacity`` of its own Node. This module does the
same with the standard library: the in-cluster service account (token + CA) and one PATCH of
``/api/v1/nodes/<name>/status``. The pod needs RBAC ``patch`` on ``nodes/status``.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, TransportError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ApiServer:
    """Where and how to reach the API server."""

    url: str
    token: str | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(
        cls, env: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> ApiServer:
        """The API server as seen from a pod (``KUBERNETES_SERVICE_HOST``/``_PORT`` + service account).

        Raises:
            ConfigError: not running in a pod, or no service account token mounted.
        """
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("KUBERNETES_SERVICE_HOST is not set: not running inside a pod")
        token_file = sa_dir / "token"
        if not token_file.is_file():
            raise ConfigError(f"no service account token at {token_file} (automountServiceAccountToken off?)")
        ca = sa_dir / "ca.crt"
        netloc = f"[{host}]" if ":" in host else host
        return cls(f"https://{netloc}:{port}", token_file.read_text().strip(), ca if ca.is_file() else None)


def patch_node_status(
    api: ApiServer, node_name: str, patch: list[dict[str, object]], timeout: float = 10.0
) -> None:
    """Apply an RFC 6902 JSON patch to ``/api/v1/nodes/<node_name>/status``.

    Raises:
        TransportError: the API server could not be reached or refused the patch (status + reason).
    """
    url = f"{api.url.rstrip('/')}/api/v1/nodes/{urllib.parse.quote(node_name, safe='')}/status"
    request = urllib.request.Request(url, data=json.dumps(patch).encode(), method="PATCH")
    request.add_header("Content-Type", "application/json-patch+json")
    request.add_header("Accept", "application/json")
    if api.token:
        request.add_header("Authorization", f"Bearer {api.token}")
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(api.ca_file) if api.ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace")
        raise TransportError(f"PATCH {url}: HTTP {exc.code} {exc.reason}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"PATCH {url}: {exc}") from None


__all__ = ["SERVICE_ACCOUNT_DIR", "ApiServer", "patch_node_status"]
