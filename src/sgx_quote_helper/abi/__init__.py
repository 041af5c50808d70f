"""Bytes <-> frozen structures for SGX and DCAP: reports, target info, key ids, quotes.

Pure: no cryptography, no I/O. Every structure has ``SIZE`` (when fixed), ``from_bytes`` and
``to_bytes``, and refuses wrong lengths with :class:`~sgx_quote_helper.errors.ParseError`.
"""

from .codes import AesmStatus, QuoteLibStatus
from .keyid import AttKeyId, AttKeyIdList, QeReportInfo
from .report import Attributes, Report, ReportBody, TargetInfo

__all__ = [
    "AesmStatus",
    "AttKeyId",
    "AttKeyIdList",
    "Attributes",
    "QeReportInfo",
    "QuoteLibStatus",
    "Report",
    "ReportBody",
    "TargetInfo",
]
