"""Fuzz: for any bytes, parsing returns a structure or raises ParseError, never anything else."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_quote_helper.abi.keyid import AttKeyIdList
from sgx_quote_helper.abi.pck import SgxExtensions
from sgx_quote_helper.abi.quote import parse_quote
from sgx_quote_helper.errors import ParseError

from .conftest import REAL_QUOTE_DIRS

SEEDS = [(p / "quote.bin").read_bytes() for p in REAL_QUOTE_DIRS]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_parse_error(data: bytes) -> None:
    try:
        quote = parse_quote(data)
    except ParseError:
        return
    assert quote.to_bytes() == data  # whatever we accept, we reproduce exactly


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    parse_or_parse_error(data)


@FUZZ
@given(
    st.sampled_from(SEEDS) if SEEDS else st.just(b""),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_real_quotes(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    parse_or_parse_error(bytes(data[: len(data) - (cut % (len(data) + 1))]))


@FUZZ
@given(st.binary(max_size=600))
def test_pck_extension_and_key_id_list(data: bytes) -> None:
    for parse in (SgxExtensions.from_der, AttKeyIdList.from_bytes):
        with contextlib.suppress(ParseError):
            parse(data)
