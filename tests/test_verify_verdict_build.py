"""verdict.build_verdict (the verifier's per-quote constructor) makes what Verdict(...) makes."""

from __future__ import annotations

import dataclasses

import pytest

from sgx_quote_helper.verify.collateral import load_dcap_qvl_json
from sgx_quote_helper.verify.verdict import Verdict, build_verdict
from sgx_quote_helper.verify.verifier import Verifier

from .conftest import real_dir


def test_verifier_verdict_equals_the_constructed_one() -> None:
    d = real_dir("phala-sgx-v3-processor")
    collateral = load_dcap_qvl_json((d / "collateral-2025-06.dcap-qvl.json").read_text())
    verdict = Verifier().verify((d / "quote.bin").read_bytes(), collateral, 1750334400)
    values = {f.name: getattr(verdict, f.name) for f in dataclasses.fields(Verdict)}
    assert set(vars(verdict)) == set(values)  # every field, nothing else
    rebuilt = Verdict(**values)
    assert verdict == rebuilt and hash(verdict) == hash(rebuilt)
    assert verdict.to_dict() == rebuilt.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = verdict.status  # type: ignore[misc]


def test_build_verdict_needs_every_field_and_no_other() -> None:
    d = real_dir("phala-sgx-v3-processor")
    collateral = load_dcap_qvl_json((d / "collateral-2025-06.dcap-qvl.json").read_text())
    verdict = Verifier().verify((d / "quote.bin").read_bytes(), collateral, 1750334400)
    values = dict(vars(verdict))
    assert build_verdict(dict(values)) == verdict
    missing = dict(values)
    del missing["warnings"]
    with pytest.raises(TypeError, match="warnings"):
        build_verdict(missing)
    with pytest.raises(TypeError, match="extra"):
        build_verdict({**values, "extra": 1})
