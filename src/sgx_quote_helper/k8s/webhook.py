"""The mutating admission webhook that wires pods to the node's quote service.

For a pod that opts in (label or annotation ``sgx-quote-helper.io/inject: "true"``) or that requests
an EPC resource, it adds what the out-of-process mode needs and users forget: the env
``SGX_AESM_ADDR=1`` and the host's ``/var/run/aesmd`` (hostPath volume + a ``readOnly`` mount:
connecting to a Unix socket needs no write access to its directory, and write access would let an
app replace the quote helper's socket with its own listener). Nothing is added
twice: a pod that already has the variable, a volume for that host path or a mount at that path
keeps it, and running the webhook again on its own output changes nothing. ``"false"`` opts out.

Pure part: :func:`pod_patch` (RFC 6902 operations) and :func:`review_response` (AdmissionReview v1
in, AdmissionReview v1 out). I/O part: :func:`build_app`, an aiohttp application served over TLS
by ``sgx-quote-helper webhook``. It never denies a pod: anything unexpected is allowed unchanged.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..abi.aesm import AESM_ADDR_ENV, DEFAULT_SOCKET_PATH
from ..errors import ParseError
from .scan import AZURE_EPC_RESOURCE, INTEL_EPC_RESOURCE

log = logging.getLogger(__name__)

OPT_IN_KEY = "sgx-quote-helper.io/inject"
INJECTED_ANNOTATION = "sgx-quote-helper.io/injected"
AESM_ENV = AESM_ADDR_ENV
SOCKET_DIR = str(DEFAULT_SOCKET_PATH.parent)
MAX_BODY = 4 * 1024 * 1024  # an AdmissionReview carries a whole Pod; the API server caps at 3 MiB

JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True)
class InjectionPolicy:
    """Which pods get the quote-service wiring, and what it looks like."""

    opt_in_key: str = OPT_IN_KEY
    epc_resources: tuple[str, ...] = (AZURE_EPC_RESOURCE, INTEL_EPC_RESOURCE)
    socket_dir: str = SOCKET_DIR
    volume_name: str = "sgx-aesmd-socket"


def _map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else {} (the webhook never trusts shapes)."""
    return value if isinstance(value, dict) else {}


def _maps(value: Any) -> list[Mapping[str, Any]]:
    """The JSON objects in a list ([] when ``value`` is not a list)."""
    return [v if isinstance(v, dict) else {} for v in value] if isinstance(value, list) else []


def _pointer(*parts: str | int) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _path(value: Any) -> str | None:
    return value.rstrip("/") or "/" if isinstance(value, str) else None


def _requests_epc(container: Mapping[str, Any], policy: InjectionPolicy) -> bool:
    resources = _map(container.get("resources"))
    return any(
        name in _map(resources.get(part)) for part in ("limits", "requests") for name in policy.epc_resources
    )


def _opt_in(pod: Mapping[str, Any], policy: InjectionPolicy) -> bool | None:
    """True/False when the pod says so (label first, then annotation), else None."""
    meta = _map(pod.get("metadata"))
    for source in ("labels", "annotations"):
        value = _map(meta.get(source)).get(policy.opt_in_key)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    return None


def pod_patch(pod: Mapping[str, Any], policy: InjectionPolicy | None = None) -> JsonPatch:
    """JSON patch operations that wire ``pod`` to the quote service ([] when nothing to do).

    Opted-in pods: every container. Otherwise: the containers (and init containers) that request
    an EPC resource. Explicit opt-out ("false") wins over an EPC request.
    """
    policy = policy or InjectionPolicy()
    spec = _map(pod.get("spec"))
    opt = _opt_in(pod, policy)
    if opt is False:
        return []
    targets: list[tuple[str, int, Mapping[str, Any]]] = []
    for kind in ("initContainers", "containers"):
        listed = spec.get(kind)
        for i, container in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(container, dict):
                continue
            if (opt and kind == "containers") or _requests_epc(container, policy):
                targets.append((kind, i, container))
    if not targets:
        return []
    ops: JsonPatch = []
    volumes = _maps(spec.get("volumes"))
    volume = next(
        (v for v in volumes if _path(_map(v.get("hostPath")).get("path")) == policy.socket_dir), None
    )
    if volume is not None and isinstance(volume.get("name"), str):
        volume_name = volume["name"]
    else:
        taken = {v.get("name") for v in volumes}
        volume_name, n = policy.volume_name, 1
        while volume_name in taken:
            volume_name, n = f"{policy.volume_name}-{n}", n + 1
        new = {"name": volume_name, "hostPath": {"path": policy.socket_dir, "type": "DirectoryOrCreate"}}
        ops.append(
            {"op": "add", "path": "/spec/volumes/-", "value": new}
            if isinstance(spec.get("volumes"), list)
            else {"op": "add", "path": "/spec/volumes", "value": [new]}
        )
    for kind, i, container in targets:
        env = container.get("env")
        if not any(e.get("name") == AESM_ENV for e in _maps(env)):
            var = {"name": AESM_ENV, "value": "1"}
            ops.append(
                {"op": "add", "path": _pointer("spec", kind, i, "env", "-"), "value": var}
                if isinstance(env, list)
                else {"op": "add", "path": _pointer("spec", kind, i, "env"), "value": [var]}
            )
        mounts = container.get("volumeMounts")
        if not any(_path(m.get("mountPath")) == policy.socket_dir for m in _maps(mounts)):
            mount = {"name": volume_name, "mountPath": policy.socket_dir, "readOnly": True}
            ops.append(
                {"op": "add", "path": _pointer("spec", kind, i, "volumeMounts", "-"), "value": mount}
                if isinstance(mounts, list)
                else {"op": "add", "path": _pointer("spec", kind, i, "volumeMounts"), "value": [mount]}
            )
    if ops and isinstance(pod.get("metadata"), dict):
        annotations = pod["metadata"].get("annotations")
        if not isinstance(annotations, dict):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: "true"}})
        elif annotations.get(INJECTED_ANNOTATION) != "true":
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("metadata", "annotations", INJECTED_ANNOTATION),
                    "value": "true",
                }
            )
    return ops


def review_response(review: Any, policy: InjectionPolicy | None = None) -> dict[str, Any]:
    """Answer an AdmissionReview v1: always allowed, with a JSON patch when the pod needs one.

    Raises:
        ParseError: ``review`` is not an AdmissionReview v1 request (no ``request.uid``).
    """
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ParseError("AdmissionReview", 0, "not an AdmissionReview object")
    if review.get("apiVersion") != "admission.k8s.io/v1":
        raise ParseError(
            "AdmissionReview", 0, f"apiVersion {review.get('apiVersion')!r}; only admission.k8s.io/v1"
        )
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise ParseError("AdmissionReview", 0, "request.uid missing")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    kind = _map(request.get("kind"))
    pod = request.get("object")
    if kind.get("kind") == "Pod" and kind.get("group", "") == "" and isinstance(pod, dict):
        ops = pod_patch(pod, policy)
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()
            meta = _map(pod.get("metadata"))
            log.info(
                "injected quote-service wiring into pod %s/%s (%d ops)",
                request.get("namespace", ""),
                meta.get("name") or meta.get("generateName", "?"),
                len(ops),
            )
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def parse_review(body: bytes) -> Any:
    """Decode a request body as JSON.

    Raises:
        ParseError: not UTF-8 JSON (``offset`` is where decoding stopped).
    """
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise ParseError("AdmissionReview", exc.start, "not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ParseError("AdmissionReview", exc.pos, exc.msg) from None
    except RecursionError:  # nesting deeper than the JSON decoder's stack (found by fuzz/ admission)
        raise ParseError("AdmissionReview", 0, "JSON nested too deeply") from None


def build_app(policy: InjectionPolicy | None = None) -> web.Application:
    """The webhook's HTTP application: ``POST /mutate`` and ``GET /healthz``."""
    policy = policy or InjectionPolicy()

    async def mutate(request: web.Request) -> web.Response:
        try:
            answer = review_response(parse_review(await request.read()), policy)
        except ParseError as exc:
            log.warning("bad admission request: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(answer)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.2+ server context from PEM files (the API server requires HTTPS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


__all__ = [
    "AESM_ENV",
    "INJECTED_ANNOTATION",
    "OPT_IN_KEY",
    "SOCKET_DIR",
    "InjectionPolicy",
    "build_app",
    "parse_review",
    "pod_patch",
    "review_response",
    "server_ssl_context",
]
