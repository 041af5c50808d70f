"""Render the Helm chart into plain manifests under deploy/manifests/ (for ``kubectl apply -f``).

Rendering uses helm-python-sdk (PyPI ``helm-python-sdk``, in the project's ``test`` extra): it
embeds Helm's v4 Go SDK as a shared library, so no ``helm`` binary and no cluster are needed.
With the helm CLI instead, the same files come from, e.g.::

    helm template sgx-quote-helper deploy/helm/sgx-quote-helper -n kube-system --set sampleJob.enabled=false

Usage::

    python deploy/render.py           # rewrite deploy/manifests/*.yaml
    python deploy/render.py --check   # exit 1 when a file is out of date (tests/test_k8s_chart.py does this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "sgx-quote-helper"
MANIFESTS = DEPLOY / "manifests"
RELEASE = "sgx-quote-helper"

_OFF = {
    "devicePlugin": {"enabled": False},
    "quoteHelper": {"enabled": False},
    "sampleJob": {"enabled": False},
}

#: manifest file -> (namespace, values): what each plain manifest holds
MANIFEST_SETS: dict[str, tuple[str, dict[str, Any]]] = {
    # the device plugin and the quote helper, as AKS runs them, in kube-system
    "sgx-quote-helper.yaml": ("kube-system", {"sampleJob": {"enabled": False}}),
    # the same on clusters with TDX hosts, plus the QGS on them (apply instead of the file above)
    "sgx-quote-helper-tdx.yaml": ("kube-system", {"sampleJob": {"enabled": False}, "qgs": {"enabled": True}}),
    # a cluster whose SGX nodes are all TDX hosts: ONE DaemonSet (on the TDX hosts) serves both, the
    # AESM socket and the QGS socket from one process (qgs.mode=combined; apply instead of the above)
    "sgx-quote-helper-tdx-combined.yaml": (
        "kube-system",
        {"sampleJob": {"enabled": False}, "qgs": {"enabled": True, "mode": "combined"}},
    ),
    # optional collateral service (a caching PCCS in front of Intel's PCS)
    "pccs.yaml": ("kube-system", {**_OFF, "pccs": {"enabled": True}}),
    # the sample app Job (out-of-process quoting from an ordinary pod)
    "sample-job.yaml": ("default", {**_OFF, "sampleJob": {"enabled": True}}),
}

#: set for every plain manifest: they are applied with kubectl, not managed by Helm
PLAIN_VALUES: dict[str, Any] = {"managedBy": "kubectl"}

HEADER = "# Generated from deploy/helm/sgx-quote-helper by deploy/render.py ({values}); do not edit.\n"


def render(values: dict[str, Any], namespace: str = "kube-system", name: str = RELEASE) -> dict[str, str]:
    """Render the chart: template path -> YAML text (NOTES.txt left out)."""
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name=name, namespace=namespace, is_install=True)
    return {path: text for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")}


def manifest_text(namespace: str, values: dict[str, Any]) -> str:
    """One plain multi-document YAML file for a values set (labelled managed-by kubectl)."""
    values = {**PLAIN_VALUES, **values}
    docs: list[str] = []
    for path, text in render(values, namespace).items():
        for doc in text.split("\n---\n"):
            body = "\n".join(line.rstrip() for line in doc.strip("\n").splitlines() if line.strip())
            if body and any(not line.lstrip().startswith("#") for line in body.splitlines()):
                docs.append(f"# Source: {path}\n{body}\n")
    label = f"namespace {namespace}, values {json.dumps(values, sort_keys=True)}"
    return HEADER.format(values=label) + "---\n".join(docs)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    MANIFESTS.mkdir(exist_ok=True)
    for file, (namespace, values) in MANIFEST_SETS.items():
        text = manifest_text(namespace, values)
        path = MANIFESTS / file
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(file)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python deploy/render.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
