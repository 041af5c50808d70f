"""Fuzz targets for every parser of outside bytes in sgx-quote-helper.

Run them with ``python -m fuzz --target NAME|all --examples N`` from the project root (see
``python -m fuzz --help`` and ``run.py``). Each target checks one invariant: the parser returns a
value or raises one of our errors (:class:`sgx_quote_helper.errors.SgxQuoteHelperError`), never
anything else; the daemon-facing targets also check that the quote service answers every decoded
request with a valid response. Targets run under hypothesis (always installed with ``[test]``),
a fast seeded random mutator (for the million-frame runs), or atheris when it is importable.
"""
