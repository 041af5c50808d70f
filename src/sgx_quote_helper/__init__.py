"""sgx-quote-helper: out-of-process SGX DCAP quoting, a simulated SGX platform and a DCAP verifier.

The package is layered one way (see README "Code layout"): ``abi`` (bytes <-> structures) and
``errors`` at the bottom; ``wire`` (sans-I/O AESM protocol), ``engine`` (quoting engines) and
``verify`` (DCAP verification) above them; ``service``/``client``; ``server``; ``pccs``/``k8s``;
``cli`` on top.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
