"""Credentials in URLs (``scheme://user:password@host``) never leave the process in text.

A provider ``base_url``, a NATS URL or an exporter endpoint may carry userinfo. Error messages
name only :func:`origin` (no userinfo, no path or query); every log record's text, traceback
included, goes through :func:`redact_text` (:func:`install_log_redaction`, once per process),
so a library that prints a URL cannot leak it either.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["install_log_redaction", "origin", "redact_text", "redact_url"]

REDACTED = "***"
# scheme://userinfo@ : the userinfo runs to the last "@" before the path, query or fragment.
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s\"'<>]*@")


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    if "@" not in text:  # the common case costs one scan
        return text
    return _USERINFO.sub(r"\1" + REDACTED + "@", text)


def redact_url(url: str) -> str:
    """``url`` without credentials: ``http://u:p@h/v1`` → ``http://***@h/v1``."""
    return redact_text(url)


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: what errors may name (userinfo, paths and queries may
    carry keys, so none of them is kept)."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{authority.rpartition('@')[2]}"


class _RedactingRecord(logging.LogRecord):
    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return redact_text(super().getMessage())


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _RedactingRecord(*args, **kwargs)
    if record.exc_info and record.exc_info[0] is not None:
        # Formatters reuse a set exc_text: render the traceback once, redacted.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_redaction() -> None:
    """Make every log record of this process redact URL userinfo (idempotent)."""
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)
