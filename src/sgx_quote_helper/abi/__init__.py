"""Bytes <-> frozen structures for SGX and DCAP: reports, target info, key ids, quotes.

Pure: no cryptography, no I/O. Every structure has ``SIZE`` (when fixed), ``from_bytes`` and
``to_bytes``, and refuses wrong lengths with :class:`~sgx_quote_helper.errors.ParseError`.
"""

from .codes import AesmStatus, QuoteLibStatus
from .keyid import AttKeyId, AttKeyIdList, QeReportInfo
from .pck import PlatformConfiguration, SgxExtensions
from .quote import (
    CertificationData,
    EcdsaSigData,
    EncryptedPpid,
    QeReportCertData,
    Quote,
    QuoteHeader,
    parse_quote,
)
from .report import Attributes, Report, ReportBody, TargetInfo
from .tdreport import TdReport10, TdReport15

__all__ = [
    "AesmStatus",
    "AttKeyId",
    "AttKeyIdList",
    "Attributes",
    "CertificationData",
    "EcdsaSigData",
    "EncryptedPpid",
    "PlatformConfiguration",
    "QeReportCertData",
    "QeReportInfo",
    "Quote",
    "QuoteHeader",
    "QuoteLibStatus",
    "Report",
    "ReportBody",
    "SgxExtensions",
    "TargetInfo",
    "TdReport10",
    "TdReport15",
    "parse_quote",
]
