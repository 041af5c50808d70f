"""k8s/webhook.py: AdmissionReview v1 documents in, JSON patches out; the HTTPS server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_quote_helper.errors import ParseError
from sgx_quote_helper.k8s import webhook
from sgx_quote_helper.k8s.webhook import InjectionPolicy, pod_patch, review_response

EPC = "kubernetes.azure.com/sgx_epc_mem_in_MiB"


def admission_review(
    pod: dict[str, Any], uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002"
) -> dict[str, Any]:
    """An AdmissionReview v1 as the API server sends it for a pod CREATE."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:job-controller",
                "uid": "0c1a7a3c-4f2f-4f1e-9d7e-4a6b1f0a2b3c",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def pod(
    containers: list[dict[str, Any]],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "attest-", "namespace": "apps"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers, **spec}}


def container(name: str, epc: str | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "registry.example/app:1", **extra}
    if epc is not None:
        c["resources"] = {"limits": {EPC: epc}}
    return c


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 "add" (the only op the webhook emits), strictly: the parent must exist."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if isinstance(parent, list):
            assert last == "-"
            parent.append(copy.deepcopy(op["value"]))
        else:
            assert isinstance(parent, dict)
            parent[last] = copy.deepcopy(op["value"])
    return doc


def mutate(review: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    answer = review_response(review)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    if "patch" not in response:
        assert "patchType" not in response
        return response, []
    assert response["patchType"] == "JSONPatch"
    return response, json.loads(base64.b64decode(response["patch"]))


def wired(c: dict[str, Any], volume: str) -> bool:
    return {"name": "SGX_AESM_ADDR", "value": "1"} in c.get("env", []) and {
        "name": volume,
        "mountPath": "/var/run/aesmd",
        "readOnly": True,
    } in c.get("volumeMounts", [])


def test_opt_in_pod_gets_env_volume_and_mount_in_every_container() -> None:
    original = pod(
        [container("app"), container("sidecar", env=[{"name": "X", "value": "y"}])],
        labels={webhook.OPT_IN_KEY: "true"},
    )
    _, ops = mutate(admission_review(original))
    patched = apply_patch(original, ops)
    assert patched["spec"]["volumes"] == [
        {"name": "sgx-aesmd-socket", "hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}}
    ]
    assert all(wired(c, "sgx-aesmd-socket") for c in patched["spec"]["containers"])
    assert patched["spec"]["containers"][1]["env"][0] == {"name": "X", "value": "y"}  # kept, appended after
    assert patched["metadata"]["annotations"] == {webhook.INJECTED_ANNOTATION: "true"}
    assert pod_patch(patched) == []  # never twice


def test_epc_pod_only_its_sgx_containers() -> None:
    original = pod(
        [container("enclave-app", epc="10"), container("log-shipper")],
        initContainers=[container("provision-check", epc="1")],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    _, ops = mutate(admission_review(original))
    patched = apply_patch(original, ops)
    assert wired(patched["spec"]["containers"][0], "sgx-aesmd-socket")
    assert wired(patched["spec"]["initContainers"][0], "sgx-aesmd-socket")
    assert patched["spec"]["containers"][1] == original["spec"]["containers"][1]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "sgx-aesmd-socket"]
    assert review_response(admission_review(patched))["response"].get("patch") is None


def test_intel_epc_request_also_triggers() -> None:
    c = container("app")
    c["resources"] = {"requests": {"sgx.intel.com/epc": "512Ki"}, "limits": {"sgx.intel.com/epc": "512Ki"}}
    assert pod_patch(pod([c]))


def test_unrelated_pod_is_untouched() -> None:
    plain = pod([container("web", resources={"limits": {"cpu": "1"}})], labels={"app": "web"})
    response, ops = mutate(admission_review(plain))
    assert ops == []
    assert set(response) == {"uid", "allowed"}


def test_opt_out_wins_and_existing_wiring_is_reused() -> None:
    assert pod_patch(pod([container("a", epc="4")], annotations={webhook.OPT_IN_KEY: "false"})) == []
    mine = container(
        "a",
        epc="4",
        env=[{"name": "SGX_AESM_ADDR", "value": "yes"}],
        volumeMounts=[{"name": "aesmd", "mountPath": "/var/run/aesmd/"}],
    )
    other = container("b", epc="2")
    original = pod([mine, other], volumes=[{"name": "aesmd", "hostPath": {"path": "/var/run/aesmd"}}])
    ops = pod_patch(original)
    patched = apply_patch(original, ops)
    assert patched["spec"]["volumes"] == original["spec"]["volumes"]  # no second volume
    assert patched["spec"]["containers"][0]["env"] == [{"name": "SGX_AESM_ADDR", "value": "yes"}]
    assert wired(patched["spec"]["containers"][1], "aesmd")
    assert pod_patch(patched) == []


def test_volume_name_collision_and_escaped_annotation_pointer() -> None:
    original = pod(
        [container("a", epc="1")],
        annotations={"team": "x"},
        volumes=[{"name": "sgx-aesmd-socket", "configMap": {"name": "c"}}],
    )
    ops = pod_patch(original)
    patched = apply_patch(original, ops)
    assert patched["spec"]["volumes"][1]["name"] == "sgx-aesmd-socket-1"
    assert wired(patched["spec"]["containers"][0], "sgx-aesmd-socket-1")
    assert {
        "op": "add",
        "path": "/metadata/annotations/sgx-quote-helper.io~1injected",
        "value": "true",
    } in ops
    assert patched["metadata"]["annotations"] == {"team": "x", webhook.INJECTED_ANNOTATION: "true"}


def test_patched_pods_still_validate_strictly() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    original = pod([container("app", epc="10"), container("side")], labels={webhook.OPT_IN_KEY: "true"})
    patched = apply_patch(original, pod_patch(original))
    patched["metadata"]["name"] = "attest-x"
    kubernetes_validate.validate(patched, "1.33.0", strict=True)


def test_custom_policy() -> None:
    policy = InjectionPolicy(
        opt_in_key="example.com/sgx", epc_resources=("alibabacloud.com/sgx_epc_MiB",), socket_dir="/run/aesm"
    )
    c = container("a")
    c["resources"] = {"limits": {"alibabacloud.com/sgx_epc_MiB": "8"}}
    patched = apply_patch(pod([c]), pod_patch(pod([c]), policy))
    assert patched["spec"]["volumes"][0]["hostPath"]["path"] == "/run/aesm"
    assert pod_patch(pod([container("a", epc="1")]), policy) == []  # the Azure name is not in this policy


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"},
        {"kind": "Pod", "apiVersion": "v1"},
    ],
)
def test_malformed_reviews_raise_parse_error(bad: Any) -> None:
    with pytest.raises(ParseError):
        review_response(bad)


def test_non_pod_requests_are_allowed_unchanged() -> None:
    review = admission_review({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    review["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert review_response(review)["response"] == {"uid": review["request"]["uid"], "allowed": True}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
pod_like = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {}, optional={"labels": json_values, "annotations": json_values, "name": json_values}
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "resources": st.fixed_dictionaries(
                                {}, optional={"limits": st.just({EPC: "1"}) | json_values}
                            ),
                            "env": json_values,
                            "volumeMounts": json_values,
                        },
                    )
                    | json_values,
                    max_size=3,
                ),
                "volumes": json_values,
            },
        ),
    },
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_bodies_parse_or_raise_our_error(body: bytes) -> None:
    with contextlib.suppress(ParseError):
        review_response(webhook.parse_review(body))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(obj=pod_like, labels=st.sampled_from([None, {webhook.OPT_IN_KEY: "true"}]))
def test_fuzz_pods_never_crash_and_are_idempotent(obj: dict[str, Any], labels: dict[str, str] | None) -> None:
    if labels and isinstance(obj.get("metadata"), dict):
        obj["metadata"]["labels"] = labels
    review = admission_review(obj)
    response = review_response(review)["response"]
    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    if ops and isinstance(obj.get("metadata"), dict):
        assert pod_patch(apply_patch(obj, ops)) == []


# -- the HTTPS server --------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sgx-quote-helper-webhook.test.svc")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_https_server_answers_reviews(tmp_path: Path) -> None:
    from aiohttp import web

    cert_file, key_file = self_signed(tmp_path)

    async def main() -> None:
        runner = web.AppRunner(webhook.build_app())
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", 0, ssl_context=webhook.server_ssl_context(str(cert_file), str(key_file))
        )
        await site.start()
        port = runner.addresses[0][1]
        client_ctx = ssl.create_default_context(cafile=str(cert_file))
        client_ctx.check_hostname = False  # the cert names localhost; we dial 127.0.0.1
        try:
            async with aiohttp.ClientSession() as session:
                base = f"https://127.0.0.1:{port}"
                review = admission_review(pod([container("app", epc="10")]))
                async with session.post(f"{base}/mutate", json=review, ssl=client_ctx) as resp:
                    assert resp.status == 200
                    answer = await resp.json()
                assert answer["response"]["patchType"] == "JSONPatch"
                async with session.post(f"{base}/mutate", data=b"{not json", ssl=client_ctx) as resp:
                    assert resp.status == 400
                async with session.get(f"{base}/healthz", ssl=client_ctx) as resp:
                    assert (resp.status, await resp.text()) == (200, "ok\n")
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_cli_help_and_bad_tls(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgx_quote_helper.cli import cli

    assert "sgx-quote-helper webhook --tls-cert" in CliRunner().invoke(cli, ["webhook", "--help"]).output
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    result = CliRunner().invoke(cli, ["webhook", "--tls-cert", str(junk), "--tls-key", str(junk)])
    assert result.exit_code == 2
    assert "TLS certificate" in result.stderr
