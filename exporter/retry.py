"""Retry policy of the OTLP exporters: pure functions, no I/O.

Beyond the Python SDK's exporter (which retries neither 429 nor honours ``Retry-After``), per
the OTLP spec: HTTP 429/502/503/504 are retried, waiting what ``Retry-After`` asks when present;
the gRPC codes the spec lists as retryable are retried, ``RESOURCE_EXHAUSTED`` only when the
server sent a ``RetryInfo`` (otherwise it is a permanent quota error), and a ``RetryInfo``
delay wins over our own backoff. Everything else, 400 included, is final.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Iterable
from typing import Final

import grpc

__all__ = [
    "RETRYABLE_GRPC",
    "RETRYABLE_HTTP",
    "backoff_delay",
    "grpc_retry_delay",
    "grpc_retryable",
    "parse_retry_after",
]

RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})
RETRYABLE_GRPC: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
_RETRY_INFO_TYPE: Final = "type.googleapis.com/google.rpc.RetryInfo"


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff for retry number ``attempt`` (0-based).

    "Equal jitter": half the exponential step is fixed so retries never bunch up at zero,
    the other half random so replicas that failed together do not retry together.
    """
    step = min(max_s, initial_s * (2**attempt))
    return step / 2 + (rng or random).uniform(0, step / 2)  # noqa: S311 - jitter, not crypto


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: the header value, or None when absent.
        now: the current unix time (for HTTP dates).

    Returns:
        A non-negative delay, or None when the header is absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; be lenient with senders that omit it
        return None
    return max(0.0, when.timestamp() - now)


def grpc_retry_delay(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The ``RetryInfo.retry_delay`` a server put in ``grpc-status-details-bin``, in seconds."""
    if not trailing_metadata:
        return None
    # Imported lazily: googleapis-common-protos comes with the gRPC exporter dependency.
    from google.rpc import error_details_pb2, status_pb2

    for key, value in trailing_metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed detail must not break the export loop
            return None
        for detail in status.details:
            if detail.type_url == _RETRY_INFO_TYPE:
                info = error_details_pb2.RetryInfo.FromString(detail.value)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def grpc_retryable(code: grpc.StatusCode, retry_delay: float | None) -> bool:
    """Whether a failed gRPC export may be retried (OTLP spec table)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return retry_delay is not None
    return code in RETRYABLE_GRPC
