"""The chart's optional attestation service: off by default; on, a Deployment of N replicas sharing
the signing keys from a Secret, a Service, probes on /readyz and /healthz (HTTPS with TLS), every
object valid for several Kubernetes versions, and args our CLI parses."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "sgx_quote_helper_deploy_render_attest", ROOT / "deploy" / "render.py"
)
assert _spec is not None and _spec.loader is not None
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

KEYS = {"existingSecret": "attest-keys"}
ON: dict[str, Any] = {
    "attest": {"enabled": True, "keys": KEYS, "tls": {"existingSecret": "attest-tls"}, "replicas": 3},
    "pccs": {"enabled": True},
}
SIMULATED: dict[str, Any] = {
    "attest": {"enabled": True, "keys": KEYS, "trustSimulatedPki": True, "pccsUrl": "http://pccs.example:8081",
               "policy": {"existingConfigMap": "attest-policy"}, "issuer": "https://attest.example"},
    "quoteHelper": {"engine": "simulated"},
    "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
}  # fmt: skip


def objects(values: dict[str, Any], namespace: str = "attest") -> list[dict[str, Any]]:
    out = []
    for text in render.render(copy.deepcopy(values), namespace).values():
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def attest_objects(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {
        o["kind"]: o
        for o in objects(values)
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "attest"
    }
    return found


def test_off_by_default() -> None:
    assert attest_objects({}) == {}


@pytest.mark.parametrize("values", [ON, SIMULATED], ids=["tls-chart-pccs", "simulated-http"])
@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_objects_validate(values: dict[str, Any], version: str) -> None:
    for obj in attest_objects(values).values():
        kubernetes_validate.validate(obj, version, strict=True)


def _serve_context(args: list[str]) -> click.Context:
    from sgx_quote_helper.cli.attest import attest

    assert args[:2] == ["attest", "serve"]
    command = attest.get_command(click.Context(attest), "serve")
    assert command is not None
    return command.make_context("serve", list(args[2:]))


def test_deployment_shares_keys_and_probes_readiness() -> None:
    objs = attest_objects(ON)
    dep, svc = objs["Deployment"], objs["Service"]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ctx = _serve_context(c["args"])
    assert ctx.params["pccs"] == "http://sgx-quote-helper-pccs:8081"
    assert str(ctx.params["key_dir"]) == "/etc/sgx-quote-helper/attest-keys"
    assert ctx.params["root_ca"] is None  # Intel's root unless told otherwise
    keys = next(v for v in pod["volumes"] if v["name"] == "keys")
    assert keys["secret"]["secretName"] == "attest-keys"
    assert {"name": "keys", "mountPath": "/etc/sgx-quote-helper/attest-keys", "readOnly": True} in c[
        "volumeMounts"
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "https"


def test_simulated_root_policy_and_plain_http() -> None:
    (c,) = attest_objects(SIMULATED)["Deployment"]["spec"]["template"]["spec"]["containers"]
    ctx = _serve_context(c["args"])
    assert str(ctx.params["root_ca"]).endswith("/root-ca.pem")
    assert ctx.params["insecure_http"] and ctx.params["tls_cert"] is None
    assert ctx.params["policies"] == ("/etc/sgx-quote-helper/attest-policy/policy.txt",)
    assert ctx.params["issuer"] == "https://attest.example"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"attest": {"enabled": True}, "pccs": {"enabled": True}}, "attest keys rotate"),
        ({"attest": {"enabled": True, "keys": KEYS}}, "attest.pccsUrl"),
        (
            {"attest": {"enabled": True, "keys": KEYS, "pccsUrl": "http://p", "trustSimulatedPki": True}},
            "simulatedPki.existingSecret",
        ),
    ],
)
def test_incomplete_values_fail_with_a_fix(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as info:
        render.render(copy.deepcopy(values))
    assert message in str(info.value)
