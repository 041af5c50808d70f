"""The PCCS-compatible collateral service (``sgx-quote-helper pccs serve``).

- :mod:`.resource` — the PCS/PCCS paths and query parameters a client may ask for (pure parsing);
- :mod:`.document` — an answer as served (exact bytes, Intel's headers, validity) and the checks an
  upstream answer must pass;
- :mod:`.store` — simulated mode: collateral of simulated platforms, re-signed as time passes;
- :mod:`.cache` — caching mode: SQLite store and refresh policy in front of Intel's PCS or a PCCS;
- :mod:`.app` — the aiohttp routes, health, metrics and the upstream HTTP client;
- :mod:`.metrics` — the Prometheus registry.
"""
