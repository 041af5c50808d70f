"""The trust anchor: Intel's production SGX Root CA, embedded as DER.

The certificate was taken from the PCK chain of a real quote (``shared/testdata/real``) and is the
same one dcap-qvl compiles in. Its SHA-256 is checked at import time, so a corrupted constant can
never be trusted silently. Another root is trusted only when a caller passes it explicitly.
"""

from __future__ import annotations

import base64
import hashlib

from ..errors import ConfigError

#: SHA-256 of the DER encoding of Intel's SGX Root CA (subject CN=Intel SGX Root CA, 2018-2049)
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

INTEL_SGX_ROOT_CA_DER: bytes = base64.b64decode(
    "MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIwaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJv"
    "b3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ"
    "BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0Ex"
    "GjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT"
    "AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL"
    "0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOBuzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ"
    "MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50ZWwuY29tL0ludGVsU0dYUm9vdENBLmRl"
    "cjAdBgNVHQ4EFgQUImUM1lqdNInzg7SVUr9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI"
    "KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwgAiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZ"
    "UGOdRQ7cvqRXaqI="
)

if hashlib.sha256(INTEL_SGX_ROOT_CA_DER).hexdigest() != INTEL_SGX_ROOT_CA_SHA256:  # pragma: no cover
    raise ConfigError("embedded Intel SGX Root CA does not match its pinned SHA-256 (a damaged install)")

__all__ = ["INTEL_SGX_ROOT_CA_DER", "INTEL_SGX_ROOT_CA_SHA256"]
