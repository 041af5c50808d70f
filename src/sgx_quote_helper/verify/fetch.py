"""Collateral fetcher: PCS v4 / PCCS paths over an injected HTTP getter (the only network code
in ``verify/``).

The transport is a parameter: any ``Getter`` (a callable taking a URL and returning a
:class:`HttpResponse`) works; :func:`urllib_getter` is the stdlib default used by the CLI. Paths
and headers follow ``shared/specs/dcap-quote.md`` §3.4 and §C (as dcap-qvl requests them):

1. certification data types 2/3: ``GET sgx/certification/v4/pckcert?qeid=&encrypted_ppid=&cpusvn=
   &pcesvn=&pceid=`` (upper-case hex; PCESVN and PCE-ID little-endian) with the issuer chain in
   ``SGX-PCK-Certificate-Issuer-Chain`` and the matched TCB in ``SGX-TCBm``;
2. ``GET sgx/certification/v4/pckcrl?ca=processor|platform&encoding=der`` (``SGX-PCK-CRL-Issuer-Chain``);
3. ``GET {sgx|tdx}/certification/v4/tcb?fmspc=`` (``TCB-Info-Issuer-Chain`` or ``SGX-TCB-Info-Issuer-Chain``);
4. ``GET {sgx|tdx}/certification/v4/qe/identity`` (``SGX-Enclave-Identity-Issuer-Chain``);
   both with PCS v4's optional ``update=early|standard`` (which TCB baseline: Intel's early
   release or the standard one) or ``tcbEvaluationDataNumber=N`` (one specific baseline);
5. ``GET sgx/certification/v4/rootcacrl`` (PCCS: hex text; DER accepted too).

Fetching verifies nothing: the result goes through the normal verification steps.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from ..abi.quote import CERT_TYPE_PCK_CHAIN, Quote
from ..errors import CollateralError, ParseError, VerificationError
from . import chain as ch
from .collateral import Collateral, crl_to_der, decode_issuer_chain, from_pcs_responses

_SUFFIXES = ("/sgx/certification/v4", "/tdx/certification/v4", "/sgx/certification/v3")


@dataclass(frozen=True)
class HttpResponse:
    """What a getter returns: status code, body, headers (looked up case-insensitively)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, *names: str) -> str | None:
        lower = {k.lower(): v for k, v in self.headers.items()}
        for name in names:
            if name.lower() in lower:
                return lower[name.lower()]
        return None


Getter = Callable[[str], HttpResponse]


def urllib_getter(timeout: float = 10.0) -> Getter:
    """A stdlib HTTP(S) getter (``Accept: */*``, no API key), for the CLI."""

    def get(url: str) -> HttpResponse:
        req = urllib.request.Request(url, headers={"Accept": "*/*"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpResponse(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            try:  # an error answer holds its connection open until read and closed
                return HttpResponse(exc.code, exc.read() or b"", dict(exc.headers.items()))
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CollateralError(f"could not fetch {url}: {exc}") from None

    return get


def normalise_base(url: str) -> str:
    """Strip a trailing slash and a trailing ``/sgx/certification/v4`` (as dcap-qvl does)."""
    base = url.rstrip("/")
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


class CollateralFetcher:
    """Fetch everything :class:`Collateral` needs for one quote from a PCS/PCCS base URL.

    Example::

        fetcher = CollateralFetcher("http://127.0.0.1:8081", urllib_getter())
        collateral = fetcher.fetch(quote)
    """

    def __init__(
        self,
        base_url: str,
        getter: Getter,
        *,
        update: str | None = None,
        tcb_evaluation_data_number: int | None = None,
    ) -> None:
        if update not in (None, "early", "standard"):
            raise CollateralError(f"update must be 'early' or 'standard', got {update!r}")
        if update is not None and tcb_evaluation_data_number is not None:
            raise CollateralError("give update or tcbEvaluationDataNumber, not both (PCS v4 takes one)")
        self.base = normalise_base(base_url)
        self.getter = getter
        self.update = update
        self.tcb_evaluation_data_number = tcb_evaluation_data_number

    def _baseline(self) -> dict[str, str]:
        """The PCS v4 query parameters that pick the TCB baseline of ``tcb`` and ``qe/identity``."""
        if self.update is not None:
            return {"update": self.update}
        if self.tcb_evaluation_data_number is not None:
            return {"tcbEvaluationDataNumber": str(self.tcb_evaluation_data_number)}
        return {}

    def _get(self, path: str, params: dict[str, str] | None = None) -> HttpResponse:
        url = f"{self.base}/{path}" + (f"?{urlencode(params)}" if params else "")
        resp = self.getter(url)
        if not 200 <= resp.status < 300:
            raise CollateralError(f"GET {url}: HTTP {resp.status}")
        return resp

    def fetch_pck_chain(self, quote: Quote) -> str:
        """Certification data types 1-3: the PCK leaf and its issuer chain from ``pckcert``."""
        try:
            ppid = quote.certification_data.encrypted_ppid()
        except ParseError as exc:
            raise CollateralError(f"quote: cannot look up its PCK certificate: {exc}") from None
        params = {
            "qeid": quote.header.qe_id.hex().upper(),
            "encrypted_ppid": ppid.encrypted_ppid.hex().upper(),
            "cpusvn": ppid.cpusvn.hex().upper(),
            "pcesvn": ppid.pcesvn.to_bytes(2, "little").hex().upper(),
            "pceid": ppid.pceid.to_bytes(2, "little").hex().upper(),
        }
        resp = self._get("sgx/certification/v4/pckcert", params)
        chain_hdr = resp.header("SGX-PCK-Certificate-Issuer-Chain")
        if chain_hdr is None:
            raise CollateralError("pckcert: no SGX-PCK-Certificate-Issuer-Chain header")
        leaf_pem = resp.body.decode("latin-1")
        tcbm = resp.header("SGX-TCBm")
        if tcbm is not None:
            _check_tcbm(leaf_pem, tcbm)
        return leaf_pem.rstrip("\n") + "\n" + decode_issuer_chain(chain_hdr)

    def fetch(self, quote: Quote) -> Collateral:
        """All collateral for ``quote`` (and the PCK chain for certification data types 1-3)."""
        pck_chain: str | None = None
        in_quote = quote.pck_chain_pem if quote.certification_data.cert_type == CERT_TYPE_PCK_CHAIN else None
        if in_quote is None:
            pck_chain = self.fetch_pck_chain(quote)
            chain_pem = pck_chain.encode("latin-1")
        else:
            chain_pem = in_quote
        fmspc, ca = _fmspc_and_ca(chain_pem)
        tee = "tdx" if quote.is_tdx else "sgx"
        crl = self._get("sgx/certification/v4/pckcrl", {"ca": ca, "encoding": "der"})
        tcb = self._get(f"{tee}/certification/v4/tcb", {"fmspc": fmspc.hex().upper(), **self._baseline()})
        qe = self._get(f"{tee}/certification/v4/qe/identity", self._baseline())
        root_crl = self._get("sgx/certification/v4/rootcacrl")
        tcb_chain = tcb.header("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
        qe_chain = qe.header("SGX-Enclave-Identity-Issuer-Chain")
        crl_chain = crl.header("SGX-PCK-CRL-Issuer-Chain")
        if tcb_chain is None or qe_chain is None:
            raise CollateralError("PCCS answer lacks an issuer-chain header")
        return from_pcs_responses(
            tcb_info_response=tcb.body,
            tcb_info_issuer_chain=tcb_chain,
            qe_identity_response=qe.body,
            qe_identity_issuer_chain=qe_chain,
            pck_crl=crl_to_der(crl.body, "PCK CRL"),
            pck_crl_issuer_chain=crl_chain,
            root_ca_crl=crl_to_der(root_crl.body, "root CA CRL"),
            pck_certificate_chain=pck_chain,
        )


def _fmspc_and_ca(chain_pem: bytes) -> tuple[bytes, str]:
    try:
        certs = ch.load_pem_chain(chain_pem, 0, "pck-chain")
        ext = ch.sgx_extensions(certs[0], 0)
    except VerificationError as exc:
        raise CollateralError(f"PCK chain: {exc.reason}") from None
    issuer = certs[1] if len(certs) > 1 else None
    cn = ch.common_name(issuer) if issuer is not None else ""
    return ext.fmspc, "platform" if "Platform" in cn else "processor"


def _check_tcbm(leaf_pem: str, tcbm: str) -> None:
    try:
        raw = bytes.fromhex(tcbm.strip())
        certs = ch.load_pem_chain(leaf_pem, 0, "pck-cert")
        ext = ch.sgx_extensions(certs[0], 0)
    except (ValueError, VerificationError):
        raise CollateralError("pckcert: unreadable PCK certificate or SGX-TCBm header") from None
    if len(raw) != 18 or raw[:16] != ext.cpusvn or int.from_bytes(raw[16:], "little") != ext.pcesvn:
        raise CollateralError("pckcert: SGX-TCBm does not match the returned PCK certificate")


__all__ = ["CollateralFetcher", "Getter", "HttpResponse", "normalise_base", "urllib_getter"]
