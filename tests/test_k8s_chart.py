"""The Helm chart: renders for several values sets (helm-python-sdk, Helm v4 SDK, no helm binary),
every object validates strictly against the Kubernetes schemas of several versions
(kubernetes-validate), the invariants that matter hold, and deploy/manifests/ is in sync."""

from __future__ import annotations

import base64
import copy
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "sgx_quote_helper_deploy_render", ROOT / "deploy" / "render.py"
)
assert _spec is not None and _spec.loader is not None
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

KUBE_VERSIONS = ["1.30.0", "1.33.0", "1.37.0"]
EPC = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
PROV = "sgx.intel.com/provision"
SOCKET = "/var/run/aesmd/aesm.socket"
PRIVATE = "/run/sgx-quote-helper"
READY = ["sgx-quote-helper", "healthcheck", "--ready", "--socket", SOCKET, "--private-dir", PRIVATE]
QUOTE = ["sgx-quote-helper", "healthcheck", "--quote", "--private-dir", PRIVATE]

PKI_DIR = "/etc/sgx-quote-helper/simulated-pki"
STATE = "/var/lib/sgx-quote-helper"
ALL_ON: dict[str, Any] = {
    "pccs": {"enabled": True, "apiKey": {"existingSecret": "pcs-api-key"}},
    "webhook": {"enabled": True},
    "devicePlugin": {"intelNames": True, "publishEpcCapacity": True, "legacyDevicePaths": True},
    "quoteHelper": {"extraEnv": [{"name": "LOG_FORMAT", "value": "json"}]},
    "imagePullSecrets": [{"name": "regcred"}],
}
VALUE_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("kube-system", {}),
    "all-on": ("sgx", ALL_ON),
    "simulated-upstream-pccs-nometrics": (
        "attest",
        {
            "quoteHelper": {"engine": "simulated", "metrics": {"enabled": False}},
            "pccs": {"enabled": True, "mode": "upstream"},
            "sgx": {"epcResource": "alibabacloud.com/sgx_epc_MiB"},
            "sgxNodeSelector": {"intel.feature.node.kubernetes.io/sgx": "true"},
        },
    ),
    "simulated-cluster": (
        "sgx-test",
        {
            "quoteHelper": {"engine": "simulated"},
            "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
            "pccs": {"enabled": True, "mode": "simulated", "replicas": 2},
        },
    ),
    "tdx-host": (
        "kube-system",
        {
            "qgs": {
                "enabled": True,
                "socketGid": 107,
                "allow": ["get-quote"],
                "allowRaw": False,
                "tdxLabel": "intel.feature.node.kubernetes.io/tdx",
                "nodeSelector": {"example.com/tdx-pool": "a"},
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "katacontainers.io/kata-runtime",
                                            "operator": "In",
                                            "values": ["true"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            },
            "sgxNodeSelector": {"sgx.intel.com/capable": "true"},
            "sampleJob": {"enabled": False},
        },
    ),
    "tdx-vsock-simulated-pki": (
        "tdx",
        {
            "qgs": {
                "enabled": True,
                "engine": "simulated",
                "vsock": {"port": 4050, "seccompLocalhostProfile": "profiles/qgs-vsock.json"},
            },
            "quoteHelper": {"enabled": False},
            "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
        },
    ),
    # one DaemonSet for both personalities: serve --qgs-socket (qgs.mode=combined)
    "tdx-combined": (
        "kube-system",
        {
            "qgs": {
                "enabled": True,
                "mode": "combined",
                "engine": "auto",
                "socketGid": 107,
                "workers": 6,
                "tdxLabel": "intel.feature.node.kubernetes.io/tdx",
                "nodeSelector": {"example.com/tdx-pool": "a"},
                "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            },
            "sgxNodeSelector": {"sgx.intel.com/capable": "true"},
            "sampleJob": {"enabled": False},
        },
    ),
    "tdx-combined-simulated": (
        "tdx",
        {
            "quoteHelper": {"engine": "simulated", "metrics": {"enabled": False}},
            "qgs": {"enabled": True, "mode": "combined", "engine": "simulated"},
            "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
        },
    ),
    "webhook-own-cert": (
        "kube-system",
        {
            "webhook": {
                "enabled": True,
                "tls": {
                    "existingSecret": "my-tls",
                    "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                },
            },
            "sampleJob": {"enabled": False},
        },
    ),
}


def objects(values: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    out = []
    for text in render.render(values, namespace).values():
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    namespace, values = VALUE_SETS[request.param]
    return namespace, values, objects(values, namespace)


def combined(values: dict[str, Any]) -> bool:
    """qgs.mode=combined: the QGS in the quote helper's process (serve --qgs-socket)."""
    q = values.get("qgs", {})
    return bool(q.get("enabled")) and q.get("mode", "separate") == "combined"


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (found,) = [
        o for o in by_kind(objs, kind) if o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = obj["spec"]["template"]["spec"] if obj["kind"] != "Pod" else obj["spec"]
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def test_lint_is_clean() -> None:
    report = helm.lint(str(render.CHART), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_validates_strictly(rendered: Any, version: str) -> None:
    _, _, objs = rendered
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def test_quote_helper_daemonset(rendered: Any) -> None:
    namespace, values, objs = rendered
    epc = values.get("sgx", {}).get("epcResource", EPC)
    if not values.get("quoteHelper", {}).get("enabled", True):
        assert [
            o for o in objs if o["metadata"]["labels"]["app.kubernetes.io/component"] == "quote-helper"
        ] == []
        return
    ds = one(objs, "DaemonSet", "quote-helper")
    assert ds["metadata"]["namespace"] == namespace
    spec = ds["spec"]
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["args"][:3] == ["serve", f"--socket={SOCKET}", "--engine=$(SGX_QUOTE_HELPER_ENGINE)"]
    env = {e["name"]: e for e in c["env"]}
    cm_name = env["SGX_QUOTE_HELPER_ENGINE"]["valueFrom"]["configMapKeyRef"]["name"]
    cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == cm_name)
    assert cm["data"]["engine"] == values.get("quoteHelper", {}).get("engine", "dcap")
    qcnl = json.loads(cm["data"]["sgx_default_qcnl.conf"])
    assert qcnl["pccs_url"].startswith("https://")
    also_qgs = ["--qgs-socket", QGS_SOCKET] if combined(values) else []
    assert c["readinessProbe"]["exec"]["command"][:-2] == READY + also_qgs
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["exec"]["command"][:-2] == QUOTE + also_qgs
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        timeout = c[probe]["exec"]["command"][-2:]
        assert timeout[0] == "--timeout" and int(timeout[1]) < c[probe]["timeoutSeconds"]
    # readiness gates the rollout: a few seconds, not the default 10
    assert c["readinessProbe"]["periodSeconds"] <= 2
    # a slow first QE load gets minutes before liveness counts
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert f"--private-dir={PRIVATE}" in c["args"]
    window = [float(a.split("=", 1)[1]) for a in c["args"] if a.startswith("--handover-window=")]
    assert window and 0 < window[0] < pod["terminationGracePeriodSeconds"]
    for res in ("requests", "limits"):  # combined: QE3/PCE and the TDQE, one provision slot
        assert c["resources"][res][epc] == ("3" if combined(values) else "1")
        assert c["resources"][res][PROV] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert ("qgs-socket" in volumes) == ("qgs-socket" in mounts) == combined(values)
    assert volumes["aesmd-socket"]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
    assert mounts["aesmd-socket"]["mountPath"] == "/var/run/aesmd"
    assert mounts["config"]["mountPath"] == "/etc/sgx_default_qcnl.conf"
    assert mounts["private"]["mountPath"] == PRIVATE
    assert "emptyDir" in volumes["private"]  # this pod's alone: never shared with the next pod
    metrics_on = values.get("quoteHelper", {}).get("metrics", {}).get("enabled", True)
    assert ("--metrics-port=9464" in c["args"]) == metrics_on
    assert [p["name"] for p in c.get("ports", [])] == (["metrics"] if metrics_on else [])


def test_two_helper_pods_fit_on_a_node(rendered: Any) -> None:
    _, _, objs = rendered
    for obj in objs:
        if obj["kind"] in ("DaemonSet", "Deployment", "Job"):
            for c in containers(obj):
                assert all("hostPort" not in p for p in c.get("ports", [])), obj["metadata"]["name"]
    plugin = one(objs, "DaemonSet", "device-plugin")
    (c,) = plugin["spec"]["template"]["spec"]["containers"]
    slots = [int(a.split("=", 1)[1]) for a in c["args"] if a.startswith("--provision-slots=")]
    assert slots and slots[0] > 1
    # two slots (old and new pod during a rollout) for every DaemonSet that holds one
    holders = [
        ds
        for ds in by_kind(objs, "DaemonSet")
        if any(PROV in c.get("resources", {}).get("limits", {}) for c in containers(ds))
    ]
    assert holders and slots[0] >= 2 * len(holders)


def test_provision_only_for_the_quote_helper(rendered: Any) -> None:
    _, _, objs = rendered
    for obj in objs:
        if obj["kind"] not in ("DaemonSet", "Deployment", "Job"):
            continue
        for c in containers(obj):
            wanted = {k for part in c.get("resources", {}).values() for k in part}
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            is_helper = (component, c["name"]) in {  # not their init containers
                ("quote-helper", "quote-helper"),
                ("qgs", "qgs"),
            }
            assert (PROV in wanted) == is_helper, obj["metadata"]["name"]


def test_locked_down_security(rendered: Any) -> None:
    _, _, objs = rendered
    for obj in objs:
        if obj["kind"] not in ("DaemonSet", "Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        vsock = any(a.startswith("--vsock-port=") for c in pod["containers"] for a in c.get("args", []))
        profile = pod["securityContext"]["seccompProfile"]
        if vsock:  # RuntimeDefault refuses socket(AF_VSOCK): a named profile, never Unconfined
            assert profile["type"] == "Localhost" and profile["localhostProfile"]
        else:
            assert profile == {"type": "RuntimeDefault"}
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
        for c in containers(obj):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            if obj["kind"] != "DaemonSet":  # only the node agents write root-owned host dirs
                assert sc["runAsNonRoot"] is True


def test_sgx_nodes_selected_and_tolerated(rendered: Any) -> None:
    _, values, objs = rendered
    selector = {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **values.get("sgxNodeSelector", {}),
    }
    for ds in by_kind(objs, "DaemonSet") + by_kind(objs, "Job"):
        pod = ds["spec"]["template"]["spec"]
        component = ds["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "qgs" or (component == "quote-helper" and combined(values)):
            q = values["qgs"]
            label = q.get("tdxLabel", "feature.node.kubernetes.io/cpu-security.tdx.enabled")
            tdx = {**q.get("nodeSelector", {}), label: "true"}
            assert pod["nodeSelector"] == {**selector, **tdx}  # TDX hosts among the SGX nodes
            assert pod.get("affinity", {}) == values["qgs"].get("affinity", {})
        else:
            assert pod["nodeSelector"] == selector
        assert any(t["key"] == EPC and t["effect"] == "NoSchedule" for t in pod["tolerations"])


def test_device_plugin_daemonset(rendered: Any) -> None:
    _, values, objs = rendered
    ds = one(objs, "DaemonSet", "device-plugin")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][0] == "device-plugin"
    epc = values.get("sgx", {}).get("epcResource", EPC)
    assert f"--resource-name={epc}" in c["args"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert volumes["device-plugins"] == "/var/lib/kubelet/device-plugins"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["host-dev"]["readOnly"] and mounts["host-sys-node"]["readOnly"]
    publish = values.get("devicePlugin", {}).get("publishEpcCapacity", False)
    assert pod["automountServiceAccountToken"] is publish
    assert bool(by_kind(objs, "ClusterRole")) is publish


def test_sample_job(rendered: Any) -> None:
    _, values, objs = rendered
    jobs = by_kind(objs, "Job")
    if not values.get("sampleJob", {}).get("enabled", True):
        assert jobs == []
        return
    (job,) = jobs
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {"name": "SGX_AESM_ADDR", "value": "1"} in c["env"]
    epc = values.get("sgx", {}).get("epcResource", EPC)
    assert c["resources"]["limits"] == {epc: "10"}
    (vol,) = pod["volumes"]
    (mount,) = c["volumeMounts"]
    assert vol["hostPath"]["path"] == "/var/run/aesmd"
    assert (mount["name"], mount["mountPath"], mount["readOnly"]) == (vol["name"], "/var/run/aesmd", True)


def test_every_app_facing_socket_mount_is_read_only(rendered: Any) -> None:
    """Only the quote helper itself mounts the socket directory writable (it publishes there)."""
    _, _, objs = rendered
    seen = 0
    for obj in objs:
        if obj["kind"] not in ("DaemonSet", "Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        socket_vols = {
            v["name"] for v in pod.get("volumes", []) if v.get("hostPath", {}).get("path") == "/var/run/aesmd"
        }
        for c in containers(obj):
            for mount in c.get("volumeMounts", []):
                if mount["name"] in socket_vols:
                    helper = c["name"] == "quote-helper"
                    assert mount.get("readOnly", False) is not helper, (obj["metadata"]["name"], c["name"])
                    seen += 1
    assert seen >= 1


def test_notes_tell_apps_to_mount_read_only() -> None:
    import helm_python

    chart = helm_python.Chart.load(str(render.CHART))
    out = chart.render({}, name="sgx-quote-helper", namespace="kube-system", is_install=True)
    (notes,) = [text for path, text in out.items() if path.endswith("NOTES.txt")]
    assert "readOnly: true" in notes


def test_handover_window_must_fit_the_grace_period() -> None:
    with pytest.raises(helm.HelmError, match="handoverWindowSeconds"):
        render.render({"quoteHelper": {"handoverWindowSeconds": 30, "terminationGracePeriodSeconds": 30}})


def test_webhook_objects(rendered: Any) -> None:
    namespace, values, objs = rendered
    configs = by_kind(objs, "MutatingWebhookConfiguration")
    if not values.get("webhook", {}).get("enabled", False):
        assert configs == []
        return
    (config,) = configs
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    excluded = [
        v
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
        for v in e["values"]
    ]
    assert "kube-system" in excluded and namespace in excluded
    assert {"key": "sgx-quote-helper.io/inject", "operator": "NotIn", "values": ["false"]} in hook[
        "objectSelector"
    ]["matchExpressions"]
    service = hook["clientConfig"]["service"]
    svc = next(o for o in by_kind(objs, "Service") if o["metadata"]["name"] == service["name"])
    assert svc["metadata"]["namespace"] == namespace == service["namespace"]
    ca_pem = base64.b64decode(hook["clientConfig"]["caBundle"])
    assert ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    dep = one(objs, "Deployment", "webhook")
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][0] == "webhook"
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert dep["spec"]["template"]["metadata"]["labels"]["sgx-quote-helper.io/inject"] == "false"
    secrets = by_kind(objs, "Secret")
    if values["webhook"].get("tls", {}).get("existingSecret"):
        assert secrets == []
        return
    _check_generated_cert(secrets[0], ca_pem, f"{service['name']}.{namespace}.svc")


def _check_generated_cert(secret: dict[str, Any], ca_pem: bytes, dns: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import padding

    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca.public_key().verify(  # type: ignore[union-attr,call-arg]
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert dns in names


def _accepts(module: str, attr: str, args: list[str]) -> None:
    """The rendered args parse with our own CLI (flags cannot drift from the chart)."""
    command = getattr(importlib.import_module(f"sgx_quote_helper.cli.{module}"), attr)
    assert isinstance(command, click.Command)
    command.make_context(command.name or attr, list(args), resilient_parsing=False)


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    for name, value in env.items():
        args = [a.replace(f"$({name})", value) for a in args]
    return args


def _option_names(module: str, attr: str) -> set[str]:
    command = getattr(importlib.import_module(f"sgx_quote_helper.cli.{module}"), attr)
    return {name for p in command.params for name in getattr(p, "opts", [])}


@pytest.mark.parametrize(
    ("component", "kind", "module", "attr"),
    [
        ("device-plugin", "DaemonSet", "device_plugin", "device_plugin"),
        ("webhook", "Deployment", "webhook", "webhook"),
        ("quote-helper", "DaemonSet", "serve", "serve"),
    ],
)
def test_rendered_args_parse_with_our_cli(
    component: str, kind: str, module: str, attr: str, tmp_path: Path
) -> None:
    objs = objects(ALL_ON, "sgx")
    (c,) = one(objs, kind, component)["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == component.replace("quote-helper", "serve")
    engine = next(o for o in by_kind(objs, "ConfigMap") if "engine" in o["data"])["data"]["engine"]
    args = _expand(c["args"][1:], {"SGX_QUOTE_HELPER_ENGINE": engine})
    if module == "webhook":  # the Secret's files, as mounted in the pod
        (tmp_path / "tls.crt").write_text("cert")
        (tmp_path / "tls.key").write_text("key")
        args = [a.replace("=/tls/", f"={tmp_path}/") for a in args]
    _accepts(module, attr, args)


def test_serve_has_the_metrics_port_the_chart_uses() -> None:
    """The chart's metrics flags are serve's own, and the port it passes is the container port."""
    names = _option_names("serve", "serve")
    assert {"--metrics-port", "--metrics-host", "--private-dir", "--handover-window"} <= names
    objs = objects({"quoteHelper": {"metrics": {"port": 9999}}}, "kube-system")
    (c,) = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9999" in c["args"] and "--metrics-host=0.0.0.0" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9999, "protocol": "TCP"}]
    ctx = serve_command().make_context("serve", _expand(c["args"][1:], {"SGX_QUOTE_HELPER_ENGINE": "dcap"}))
    assert (ctx.params["metrics_port"], ctx.params["metrics_host"]) == (9999, "0.0.0.0")
    assert ctx.params["private_dir"] == Path(PRIVATE)


def serve_command() -> click.Command:
    command = importlib.import_module("sgx_quote_helper.cli.serve").serve
    assert isinstance(command, click.Command)
    return command


def test_pccs_args_parse_with_our_cli() -> None:
    group = importlib.import_module("sgx_quote_helper.cli.pccs").pccs
    for mode in ("simulated", "upstream"):
        values = {"pccs": {"enabled": True, "mode": mode}, **SIMULATED_PKI}
        objs = objects(values, "sgx")
        (c,) = one(objs, "Deployment", "pccs")["spec"]["template"]["spec"]["containers"]
        assert c["args"][:2] == ["pccs", "serve"]
        command = group.get_command(click.Context(group), "serve")
        assert command is not None
        command.make_context("serve", list(c["args"][2:]))


SIMULATED_PKI: dict[str, Any] = {
    "quoteHelper": {"engine": "simulated"},
    "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
}


def test_join_pki_args_parse_with_our_cli() -> None:
    objs = objects({**SIMULATED_PKI, "pccs": {"enabled": True, "mode": "simulated"}}, "sgx")
    (init,) = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][:2] == ["sim", "init"]
    group = importlib.import_module("sgx_quote_helper.cli.sim").sim
    command = group.get_command(click.Context(group), "init")
    assert command is not None
    command.make_context("init", list(init["args"][2:]))


def test_probes_parse_with_healthcheck() -> None:
    (c,) = one(objects({}, "kube-system"), "DaemonSet", "quote-helper")["spec"]["template"]["spec"][
        "containers"
    ]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:2] == ["sgx-quote-helper", "healthcheck"]
        _accepts("healthcheck", "healthcheck", command[2:])


def test_sample_job_command_parses_with_our_cli() -> None:
    (job,) = by_kind(objects({}, "default"), "Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["sgx-quote-helper", "doctor"]
    _accepts("doctor", "doctor", c["command"][2:])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pccs": {"enabled": True, "mode": "simulated"}}, "sim init --state-dir ./sim-pki"),
        (
            {
                "pccs": {"enabled": True, "mode": "simulated"},
                "simulatedPki": {"existingSecret": "sgx-simulated-pki"},
            },
            "quoteHelper.engine=dcap makes hardware quotes",
        ),
    ],
)
def test_simulated_pccs_refused_without_a_shared_pki(values: dict[str, Any], message: str) -> None:
    """A simulated PCCS needs the one SIMULATED PKI every node joined, and simulated quotes."""
    with pytest.raises(helm.HelmError, match=r"pccs\.mode=simulated") as info:
        render.render(copy.deepcopy(values))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "values",
    [
        {"pccs": {"enabled": True, "mode": "bogus"}},
        {"webhook": {"enabled": True, "tls": {"existingSecret": "x"}}},
        {"sgx": {"epcResource": "sgx.intel.com/epc"}},
    ],
)
def test_bad_values_fail_to_render(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render.render(copy.deepcopy(values))


def test_plain_manifests_are_in_sync() -> None:
    for file, (namespace, values) in render.MANIFEST_SETS.items():
        path = render.MANIFESTS / file
        assert path.read_text() == render.manifest_text(namespace, values), (
            f"run: python deploy/render.py ({file})"
        )


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_plain_manifests_validate(version: str) -> None:
    for file in render.MANIFEST_SETS:
        for obj in yaml.safe_load_all((render.MANIFESTS / file).read_text()):
            if obj:
                kubernetes_validate.validate(obj, version, strict=True)


def _labels(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The object's labels and, for workloads, its pod template's."""
    out = [obj["metadata"].get("labels", {})]
    if "template" in obj.get("spec", {}):
        out.append(obj["spec"]["template"]["metadata"]["labels"])
    return out


def test_simulated_platforms_share_one_pki(rendered: Any) -> None:
    """engine=simulated + simulatedPki: every node's platform joins the Secret's PKI in the very
    state dir the quote helper serves from, and the simulated PCCS serves that same PKI."""
    _, values, objs = rendered
    secret = values.get("simulatedPki", {}).get("existingSecret", "")
    engine = values.get("quoteHelper", {}).get("engine", "dcap")
    if not values.get("quoteHelper", {}).get("enabled", True):
        return  # the QGS's platform: test_qgs_daemonset
    ds_pod = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]
    if not (secret and engine == "simulated"):
        assert "initContainers" not in ds_pod
        return
    (init,) = ds_pod["initContainers"]
    (helper,) = ds_pod["containers"]
    assert init["args"] == ["sim", "init", f"--state-dir={STATE}", f"--pki-from={PKI_DIR}", "--keep-existing"]
    assert {"name": "SGX_QUOTE_HELPER_STATE", "value": STATE} in helper["env"]
    helper_mounts = {m["mountPath"]: m["name"] for m in helper["volumeMounts"]}
    init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert init_mounts[STATE]["name"] == helper_mounts[STATE] == "state"  # the same hostPath
    assert init_mounts[PKI_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in ds_pod["volumes"]}
    assert volumes["state"]["hostPath"]["path"] == values.get("quoteHelper", {}).get("stateHostPath", STATE)
    assert volumes[init_mounts[PKI_DIR]["name"]]["secret"]["secretName"] == secret
    assert init["securityContext"]["runAsUser"] == 0  # root-owned hostPath, like the helper
    if values.get("pccs", {}).get("mode") == "simulated":
        pod = one(objs, "Deployment", "pccs")["spec"]["template"]["spec"]
        (pccs,) = pod["containers"]
        assert pccs["args"][4:] == ["--simulated", f"--state-dir={PKI_DIR}"]
        (mount,) = [m for m in pccs["volumeMounts"] if m["mountPath"] == PKI_DIR]
        assert mount["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == secret
        # the non-root PCCS reads the keys through its group
        assert volume["secret"]["defaultMode"] & 0o040
        assert pod["securityContext"]["fsGroup"] == pccs["securityContext"]["runAsGroup"]


def test_pccs_deployment(rendered: Any) -> None:
    _, values, objs = rendered
    p = values.get("pccs", {})
    if not p.get("enabled"):
        assert [o for o in objs if o["kind"] == "Deployment" and "pccs" in o["metadata"]["name"]] == []
        return
    (c,) = one(objs, "Deployment", "pccs")["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert [port["name"] for port in c["ports"]] == ["http"]
    env = {e["name"]: e for e in c.get("env", [])}
    key_secret = p.get("apiKey", {}).get("existingSecret")
    if p.get("mode", "upstream") == "upstream":
        assert any(a.startswith("--upstream=https://") for a in c["args"])
        assert not any(a.startswith("--api-key") for a in c["args"])  # never the key itself in args
    if key_secret:
        ref = env["PCCS_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": key_secret, "key": "api-key"}
    else:
        assert "PCCS_API_KEY" not in env


def test_pccs_api_key_env_is_the_cli_option() -> None:
    """PCCS_API_KEY is what `pccs serve --api-key` reads, so the Secret reaches the upstream."""
    group = importlib.import_module("sgx_quote_helper.cli.pccs").pccs
    command = group.get_command(click.Context(group), "serve")
    assert command is not None
    (option,) = [p for p in command.params if "--api-key" in getattr(p, "opts", [])]
    assert option.envvar == "PCCS_API_KEY"


def test_quote_helper_image_matches_engine(rendered: Any) -> None:
    """dcap/auto need Intel's libraries: the DCAP image (deploy/Dockerfile.dcap); the rest, the plain one."""
    _, values, objs = rendered
    engine = values.get("quoteHelper", {}).get("engine", "dcap")
    qgs_engine = values.get("qgs", {}).get("engine", "tdx")
    for obj in objs:
        if obj["kind"] not in ("DaemonSet", "Deployment", "Job"):
            continue
        qgs = obj["metadata"]["labels"]["app.kubernetes.io/component"] == "qgs"
        # combined: the quote helper's container loads the QGS's library too
        qgs = qgs or (
            obj["metadata"]["labels"]["app.kubernetes.io/component"] == "quote-helper" and combined(values)
        )
        for c in containers(obj):
            # the QGS's tdx/auto engines load libsgx_tdx_logic: the DCAP image, its init container too
            dcap = (c["name"] == "quote-helper" and engine in ("dcap", "auto")) or (
                qgs and qgs_engine in ("tdx", "auto")
            )
            assert c["image"] == ("sgx-quote-helper:0.1.0-dcap" if dcap else "sgx-quote-helper:0.1.0")


def test_managed_by_label() -> None:
    """Helm installs say Helm; the plain manifests (kubectl apply) say kubectl."""
    for obj in objects({}, "kube-system"):
        for labels in _labels(obj):
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
    seen = 0
    for file in render.MANIFEST_SETS:
        for obj in yaml.safe_load_all((render.MANIFESTS / file).read_text()):
            if obj:
                for labels in _labels(obj):
                    assert labels["app.kubernetes.io/managed-by"] == "kubectl", (file, obj["kind"])
                    seen += 1
    assert seen > 5


@pytest.mark.slow
def test_simulated_cluster_end_to_end(tmp_path: Path) -> None:
    """The rendered init container and PCCS args, run with their volumes as temp dirs: two nodes'
    platforms join the Secret's PKI, the PCCS serves it from a read-only copy, and quotes from both
    nodes verify against its collateral and the one SIMULATED root."""
    import os
    import re
    import stat
    import subprocess
    import sys

    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    def run(args: list[str]) -> str:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return result.output

    namespace, values = VALUE_SETS["simulated-cluster"]
    objs = objects(values, namespace)
    (init,) = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]["initContainers"]
    (pccs,) = one(objs, "Deployment", "pccs")["spec"]["template"]["spec"]["containers"]
    pki = tmp_path / "pki"
    run(["sim", "init", "--state-dir", str(pki)])  # what deploy/README.md tells the user to do
    nodes = [tmp_path / "node-a", tmp_path / "node-b"]
    for node in nodes:
        args = [a.replace(PKI_DIR, str(pki)).replace(STATE, str(node)) for a in init["args"]]
        assert "created" in run(args)
        assert "kept" in run(args)  # the next pod start
    for f in pki.iterdir():  # a Secret volume is read-only
        f.chmod(stat.S_IRUSR | stat.S_IRGRP)
    pki.chmod(stat.S_IRUSR | stat.S_IXUSR)
    args = [a.replace(PKI_DIR, str(pki)) for a in pccs["args"]]
    args = [{"--host=0.0.0.0": "--host=127.0.0.1"}.get(a, a) for a in args]
    args = [re.sub(r"^--port=\d+$", "--port=0", a) for a in args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgx_quote_helper", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = re.match(r"pccs ready at (http://\S+) \(simulated\)", proc.stdout.readline())
        assert ready, "the PCCS did not start"
        root = tmp_path / "root.der"
        run(["sim", "root-ca", "--state-dir", str(pki), "--der", "--out", str(root)])
        for node in nodes:
            quote = tmp_path / f"{node.name}.bin"
            run(["sim", "quote", "--state-dir", str(node), "--out", str(quote)])
            out = run(["verify", str(quote), "--pccs", ready.group(1), "--root-ca", str(root)])
            assert out.startswith("OK: SGX quote v3 accepted: UpToDate")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        pki.chmod(stat.S_IRWXU)


QGS_SOCKET = "/var/run/tdx-qgs/qgs.socket"
QGS_PRIVATE = "/run/sgx-quote-helper-qgs"
#: the probe interface of `qgs healthcheck` (exactly these commands)
QGS_READY = [
    "sgx-quote-helper",
    "qgs",
    "healthcheck",
    "--socket",
    QGS_SOCKET,
    "--ready",
    "--private-dir",
    QGS_PRIVATE,
]
QGS_QUOTE = [
    "sgx-quote-helper",
    "qgs",
    "healthcheck",
    "--socket",
    QGS_SOCKET,
    "--quote",
    "--private-dir",
    QGS_PRIVATE,
]


def _qgs_group() -> click.Group:
    group = importlib.import_module("sgx_quote_helper.cli.qgs").qgs
    assert isinstance(group, click.Group)
    return group


def _qgs_command(name: str) -> click.Command | None:
    group = _qgs_group()
    return group.get_command(click.Context(group), name)


def test_qgs_daemonset(rendered: Any) -> None:
    namespace, values, objs = rendered
    q = values.get("qgs", {})
    found = [o for o in objs if o["metadata"]["labels"]["app.kubernetes.io/component"] == "qgs"]
    if not q.get("enabled", False) or combined(values):
        assert found == []  # off by default; combined: in the quote helper's DaemonSet
        return
    assert sorted(o["kind"] for o in found) == ["ConfigMap", "DaemonSet"]
    ds = one(objs, "DaemonSet", "qgs")
    assert ds["metadata"]["namespace"] == namespace
    assert ds["metadata"]["name"] == "sgx-quote-helper-qgs"
    vsock = q.get("vsock", {}).get("port", 0)
    strategy = ds["spec"]["updateStrategy"]["rollingUpdate"]
    # a vsock port cannot be bound twice: no surge then; a Unix socket is taken over (--replace)
    assert strategy == (
        {"maxSurge": 0, "maxUnavailable": 1} if vsock else {"maxSurge": 1, "maxUnavailable": 0}
    )
    pod = ds["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    gid = q.get("socketGid", 0)
    args = c["args"]
    assert args[:2] == ["qgs", "serve"]
    engine = q.get("engine", "tdx")
    for arg in (
        f"--engine={engine}",
        "--state-dir=/var/lib/sgx-quote-helper",
        f"--socket={QGS_SOCKET}",
        "--socket-mode=0660",
        f"--socket-group={gid}",
        f"--private-dir={QGS_PRIVATE}",
        "--replace",
    ):
        assert arg in args, arg
    assert (f"--vsock-port={vsock}" in args) == bool(vsock)
    assert [a for a in args if a.startswith("--allow=")] == [f"--allow={a}" for a in q.get("allow", [])]
    assert ("--no-raw" in args) == (not q.get("allowRaw", True))
    # the pod is in the socket's group (no CAP_CHOWN: a dropped-caps root may chgrp only to its groups)
    assert pod["securityContext"].get("supplementalGroups", [0]) == [gid]
    # the exact probe interface
    assert c["readinessProbe"]["exec"]["command"] == QGS_READY
    assert c["livenessProbe"]["exec"]["command"] == QGS_QUOTE
    assert c["startupProbe"]["exec"]["command"] == QGS_QUOTE
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):  # healthcheck's 5 s decides
        assert c[probe]["timeoutSeconds"] > 5
    assert {"name": "SGX_QUOTE_HELPER_STATE", "value": STATE} in c["env"]  # serve and the probes
    window = [float(a.split("=", 1)[1]) for a in args if a.startswith("--handover-window=")]
    assert window and 0 < window[0] < pod["terminationGracePeriodSeconds"]
    assert c["readinessProbe"]["periodSeconds"] <= 2
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    epc = values.get("sgx", {}).get("epcResource", EPC)
    for res in ("requests", "limits"):  # the TDQE's devices from the device plugin
        assert c["resources"][res][epc] == "2"
        assert c["resources"][res][PROV] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["qgs-socket"]["hostPath"] == {"path": "/var/run/tdx-qgs", "type": "DirectoryOrCreate"}
    assert mounts["qgs-socket"]["mountPath"] == "/var/run/tdx-qgs" and not mounts["qgs-socket"].get(
        "readOnly"
    )
    assert "emptyDir" in volumes["private"] and mounts["private"]["mountPath"] == QGS_PRIVATE
    # its own platform state, never the AESM quote helper's
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/sgx-quote-helper-qgs"
    assert volumes["state"]["hostPath"]["path"] != values.get("quoteHelper", {}).get("stateHostPath", STATE)
    # tdx/auto: Intel's TDX quote library from the DCAP image; simulated: the plain image
    assert c["image"] == (
        "sgx-quote-helper:0.1.0" if engine == "simulated" else "sgx-quote-helper:0.1.0-dcap"
    )
    # the quote provider library: its configuration and a writable PCK cache (read-only rootfs)
    assert mounts["config"]["mountPath"] == "/etc/sgx_default_qcnl.conf" and mounts["config"]["readOnly"]
    cm = next(
        o
        for o in by_kind(objs, "ConfigMap")
        if o["metadata"]["name"] == volumes["config"]["configMap"]["name"]
    )
    qcnl = json.loads(cm["data"]["sgx_default_qcnl.conf"])
    assert qcnl["pccs_url"] == values.get("quoteHelper", {}).get("qcnl", {}).get(
        "pccsUrl", "https://global.acccache.azure.net/sgx/certification/v4/"
    )
    assert {"name": "XDG_CACHE_HOME", "value": "/run/dcap/cache"} in c["env"]
    assert mounts["qpl-cache"]["mountPath"] == "/run/dcap/cache" and "emptyDir" in volumes["qpl-cache"]
    secret = values.get("simulatedPki", {}).get("existingSecret")
    if secret:
        (init,) = pod["initContainers"]
        assert init["args"] == [
            "sim",
            "init",
            f"--state-dir={STATE}",
            f"--pki-from={PKI_DIR}",
            "--keep-existing",
        ]
        assert volumes["simulated-pki"]["secret"]["secretName"] == secret
    else:
        assert "initContainers" not in pod


def test_qgs_defaults_select_tdx_hosts() -> None:
    ds = one(objects({"qgs": {"enabled": True}}, "kube-system"), "DaemonSet", "qgs")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["feature.node.kubernetes.io/cpu-security.tdx.enabled"] == "true"
    assert "affinity" not in pod
    ds = one(objects({"qgs": {"enabled": True, "tdxLabel": ""}}, "kube-system"), "DaemonSet", "qgs")
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }


def test_qgs_provision_slots_double() -> None:
    """The QGS holds a provision slot too: the plugin offers 2 per holder (old + new pod)."""

    def slots(values: dict[str, Any]) -> int:
        (c,) = one(objects(values, "kube-system"), "DaemonSet", "device-plugin")["spec"]["template"]["spec"][
            "containers"
        ]
        (n,) = [int(a.split("=", 1)[1]) for a in c["args"] if a.startswith("--provision-slots=")]
        return n

    assert slots({}) == 2
    assert slots({"qgs": {"enabled": True}}) == 4
    assert slots({"qgs": {"enabled": True}, "quoteHelper": {"enabled": False}}) == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qgs": {"enabled": True, "vsock": {"port": 4050}}}, "seccompLocalhostProfile"),
        ({"qgs": {"enabled": True, "engine": "bogus"}}, "qgs.engine"),
    ],
)
def test_bad_qgs_values_fail_to_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render.render(copy.deepcopy(values))


def test_qgs_flags_are_qgs_serves_own() -> None:
    """Every flag the chart passes is an option of `qgs serve` (names cannot drift), and they parse."""
    qgs = {
        "enabled": True,
        "socketGid": 107,
        "allow": ["get-quote"],
        "allowRaw": False,
        "vsock": {"port": 4050, "seccompLocalhostProfile": "profiles/qgs-vsock.json"},
    }
    (c,) = one(objects({"qgs": qgs}, "kube-system"), "DaemonSet", "qgs")["spec"]["template"]["spec"][
        "containers"
    ]
    command = _qgs_command("serve")
    assert command is not None
    names = {name for p in command.params for name in getattr(p, "opts", [])}
    args = list(c["args"][2:])
    used = {a.split("=", 1)[0] for a in args}
    assert used >= {"--socket", "--socket-group", "--vsock-port", "--allow", "--no-raw", "--replace"}
    pending = used - names == {"--private-dir"}
    if pending:  # the rest must parse meanwhile
        args = [a for a in args if not a.startswith("--private-dir=")]
    else:
        assert used <= names
    ctx = command.make_context("serve", args)
    assert ctx.params["engine"] == "tdx"
    assert ctx.params["socket_group"] == "107" and ctx.params["vsock_port"] == 4050
    assert ctx.params["allow"] == ("get-quote",) and ctx.params["no_raw"] is True
    assert ctx.params["socket_path"] == QGS_SOCKET and ctx.params["replace"] is True
    if pending:
        pytest.skip("qgs serve --private-dir is not on this branch yet (the qgs-ops helper adds it)")


def test_qgs_probes_parse_with_qgs_healthcheck() -> None:
    command = _qgs_command("healthcheck")
    if command is None:
        pytest.skip("qgs healthcheck is not on this branch yet (the qgs-ops helper adds it)")
    for argv in (QGS_READY, QGS_QUOTE):
        command.make_context("healthcheck", list(argv[3:]))


def test_notes_tell_how_to_point_qemu_at_the_qgs() -> None:
    import helm_python

    chart = helm_python.Chart.load(str(render.CHART))
    for engine, simulated in (("tdx", False), ("simulated", True)):
        values = {"qgs": {"enabled": True, "socketGid": 107, "engine": engine}}
        out = chart.render(values, name="sgx-quote-helper", namespace="kube-system", is_install=True)
        (notes,) = [text for path, text in out.items() if path.endswith("NOTES.txt")]
        assert '"quote-generation-socket":{"type":"unix","path":"/var/run/tdx-qgs/qgs.socket"}' in notes
        assert "gid 107" in notes and f"engine: {engine}" in notes
        assert ("SIMULATED" in notes) is simulated
        assert "ds/sgx-quote-helper-qgs" in notes


def test_dcap_image_has_the_tdx_engines_library() -> None:
    """qgs.engine tdx/auto runs the DCAP image: it installs the library the tdx engine loads and
    the TDQE enclave next to it."""
    from sgx_quote_helper.engine import tdx_library

    text = (ROOT / "deploy" / "Dockerfile.dcap").read_text()
    run = next(
        part for part in text.split("\nRUN ") if "libsgx-dcap-ql" in part and "apt-get install" in part
    )
    words = run.replace("\\\n", " ").split()
    assert {"libsgx-tdx-logic", "libsgx-ae-tdqe"} <= set(words)
    assert tdx_library.TDX_LOGIC_LIBRARY == "libsgx_tdx_logic.so.1"
    assert "libsgx-tdx-logic" in tdx_library.INSTALL_TDX_LIBRARY_HINT


def _combined_pod(values: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    objs = objects(values, "kube-system")
    pod = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return objs, pod, c


COMBINED: dict[str, Any] = {"qgs": {"enabled": True, "mode": "combined", "socketGid": 107, "workers": 6}}


def test_qgs_combined_runs_in_the_quote_helpers_process() -> None:
    """qgs.mode=combined: no QGS DaemonSet; the quote helper's container runs `serve --qgs-socket`
    with the hostPath, the socket group, the QGS engine from the ConfigMap, and probes of both."""
    objs, pod, c = _combined_pod(COMBINED)
    assert [o for o in objs if o["metadata"]["labels"]["app.kubernetes.io/component"] == "qgs"] == []
    args = c["args"]
    for arg in (
        f"--qgs-socket={QGS_SOCKET}",
        "--qgs-socket-group=107",
        "--qgs-engine=$(SGX_QUOTE_HELPER_QGS_ENGINE)",
        "--qgs-workers=6",
    ):
        assert arg in args, arg
    assert "--replace" not in args  # never the AESM path from a host aesmd
    env = {e["name"]: e for e in c["env"]}
    ref = env["SGX_QUOTE_HELPER_QGS_ENGINE"]["valueFrom"]["configMapKeyRef"]
    cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == ref["name"])
    assert cm["data"][ref["key"]] == "tdx" and cm["data"]["engine"] == "dcap"
    assert env["XDG_CACHE_HOME"]["value"] == "/run/dcap/cache"
    # the rendered args are serve's own and mean what the chart says
    expanded = _expand(args[1:], {"SGX_QUOTE_HELPER_ENGINE": "dcap", "SGX_QUOTE_HELPER_QGS_ENGINE": "tdx"})
    ctx = serve_command().make_context("serve", expanded)
    assert ctx.params["qgs_socket"] == Path(QGS_SOCKET) and ctx.params["qgs_engine"] == "tdx"
    assert ctx.params["qgs_socket_group"] == "107" and ctx.params["qgs_workers"] == 6
    assert ctx.params["private_dir"] == Path(PRIVATE)
    # both personalities in every probe, through the one private directory
    assert c["readinessProbe"]["exec"]["command"][:-2] == [*READY, "--qgs-socket", QGS_SOCKET]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:2] == ["sgx-quote-helper", "healthcheck"]
        _accepts("healthcheck", "healthcheck", command[2:])
    assert c["livenessProbe"]["exec"]["command"][:-2] == [*QUOTE, "--qgs-socket", QGS_SOCKET]
    # the socket directory, writable; the socket's group; the TDQE's EPC beside QE3/PCE
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["qgs-socket"]["hostPath"] == {"path": "/var/run/tdx-qgs", "type": "DirectoryOrCreate"}
    assert mounts["qgs-socket"]["mountPath"] == "/var/run/tdx-qgs" and not mounts["qgs-socket"].get(
        "readOnly"
    )
    assert mounts["qpl-cache"]["mountPath"] == "/run/dcap/cache" and "emptyDir" in volumes["qpl-cache"]
    assert pod["securityContext"]["supplementalGroups"] == [107]
    assert c["resources"]["limits"][EPC] == "3" and c["resources"]["limits"][PROV] == "1"
    assert pod["nodeSelector"]["feature.node.kubernetes.io/cpu-security.tdx.enabled"] == "true"
    assert c["image"] == "sgx-quote-helper:0.1.0-dcap"
    # one provision slot holder, as without the QGS
    (plugin,) = one(objs, "DaemonSet", "device-plugin")["spec"]["template"]["spec"]["containers"]
    assert "--provision-slots=2" in plugin["args"]


def test_qgs_combined_image_and_config_follow_the_qgs_engine() -> None:
    """The QGS's tdx engine needs the DCAP image even under a simulated AESM engine; a change of
    qgs.engine rolls the pods (checksum/config), as a change of the engine does."""
    values = {"quoteHelper": {"engine": "simulated"}, "qgs": {**COMBINED["qgs"], "engine": "tdx"}}
    _, _, c = _combined_pod(values)
    assert c["image"] == "sgx-quote-helper:0.1.0-dcap"
    values["qgs"]["engine"] = "simulated"
    objs, _, c = _combined_pod(values)
    assert c["image"] == "sgx-quote-helper:0.1.0"
    assert (
        next(o for o in by_kind(objs, "ConfigMap") if "qgsEngine" in o["data"])["data"]["qgsEngine"]
        == "simulated"
    )

    def checksum(engine: str) -> str:
        ds = one(
            objects({"qgs": {**COMBINED["qgs"], "engine": engine}}, "kube-system"),
            "DaemonSet",
            "quote-helper",
        )
        return str(ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum("tdx") != checksum("auto")


def test_qgs_separate_is_the_default_and_unchanged() -> None:
    """qgs.mode defaults to separate: the QGS's own DaemonSet, the quote helper without --qgs-*."""
    objs = objects({"qgs": {"enabled": True}}, "kube-system")
    assert one(objs, "DaemonSet", "qgs")["metadata"]["name"] == "sgx-quote-helper-qgs"
    (c,) = one(objs, "DaemonSet", "quote-helper")["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--qgs") for a in c["args"])
    assert objects({"qgs": {"enabled": True, "mode": "separate"}}, "kube-system") == objs


def test_qgs_combined_notes_name_the_one_daemonset() -> None:
    import helm_python

    chart = helm_python.Chart.load(str(render.CHART))
    out = chart.render(COMBINED, name="sgx-quote-helper", namespace="kube-system", is_install=True)
    (notes,) = [text for path, text in out.items() if path.endswith("NOTES.txt")]
    assert "in the quote service's process (serve --qgs-socket)" in notes
    assert "ds/sgx-quote-helper-qgs" not in notes and "rollout status ds/sgx-quote-helper\n" in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qgs": {"enabled": True, "mode": "bogus"}}, "qgs.mode"),
        (
            {"qgs": {"enabled": True, "mode": "combined"}, "quoteHelper": {"enabled": False}},
            "quoteHelper.enabled",
        ),
        ({"qgs": {"enabled": True, "mode": "combined"}, "quoteHelper": {"engine": "proxy"}}, "proxy"),
        (
            {
                "qgs": {
                    "enabled": True,
                    "mode": "combined",
                    "vsock": {"port": 4050, "seccompLocalhostProfile": "p.json"},
                }
            },
            "qgs.vsock.port needs qgs.mode=separate",
        ),
        ({"qgs": {"enabled": True, "mode": "combined", "allow": ["get-quote"]}}, "need qgs.mode=separate"),
        ({"qgs": {"enabled": True, "mode": "combined", "allowRaw": False}}, "need qgs.mode=separate"),
        ({"qgs": {"enabled": True, "mode": "combined", "socketMode": "0666"}}, "need qgs.mode=separate"),
        ({"qgs": {"enabled": True, "mode": "combined", "engine": "dcap"}}, "qgs.engine"),
    ],
)
def test_bad_combined_values_fail_to_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render.render(copy.deepcopy(values))
