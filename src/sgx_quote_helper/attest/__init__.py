"""An attestation service in Azure Attestation's (MAA's) API: SGX and TDX quotes verified with
:mod:`sgx_quote_helper.verify`, policies in MAA's text format, RS256 tokens with MAA's claims, so
that Microsoft's own client SDK works against it unchanged.

Modules: ``request`` (MAA request bodies, base64url, Open Enclave reports), ``claims`` (verdict ->
claims), ``policy`` (MAA policy text: lexer, parser, evaluator, policy hash), ``token`` (RS256
JWS sign / verify), ``keys`` (key directory, rotation, JWKS), ``collateral`` (file or cached PCCS),
``service`` (the steps of one attestation), ``app`` (aiohttp routes), ``metrics``.
"""
