"""Constants in one place each (issue 13): Intel's client addressing is defined only in abi."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sgx_quote_helper
from sgx_quote_helper.abi import aesm

SRC = Path(sgx_quote_helper.__file__).parent


@pytest.mark.parametrize(
    "literal", ['"SGX_AESM_ADDR"', '"/var/run/aesmd/aesm.socket"', '"/var/run/aesmd"', "'SGX_AESM_ADDR'"]
)
def test_addressing_literals_live_only_in_abi(literal: str) -> None:
    where = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if literal in re.sub(r"#.*", "", path.read_text())
    ]
    expected = ["abi/aesm.py"] if literal in ('"SGX_AESM_ADDR"', '"/var/run/aesmd/aesm.socket"') else []
    assert where == expected


def test_every_user_sees_the_same_objects() -> None:
    from sgx_quote_helper import client, inproc
    from sgx_quote_helper.client import mode
    from sgx_quote_helper.engine import dcap_library
    from sgx_quote_helper.k8s import webhook
    from sgx_quote_helper.server import config

    assert client.AESM_ADDR_ENV is mode.AESM_ADDR_ENV is aesm.AESM_ADDR_ENV
    assert dcap_library.AESM_ADDR_ENV is aesm.AESM_ADDR_ENV
    assert inproc.AESM_ADDR_ENV is aesm.AESM_ADDR_ENV
    assert webhook.AESM_ENV is aesm.AESM_ADDR_ENV
    assert config.DEFAULT_SOCKET_PATH is client.DEFAULT_SOCKET_PATH is aesm.DEFAULT_SOCKET_PATH
    assert str(aesm.DEFAULT_SOCKET_PATH.parent) == webhook.SOCKET_DIR
