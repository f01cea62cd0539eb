"""The ``exporter:`` section: where spans (and metrics) go, plus the standard OTLP env vars.

```yaml
exporter:
  traces:
    - name: signoz
      protocol: http                 # http | grpc
      endpoint: https://ingest.in2.signoz.cloud:443/v1/traces   # used as given
      encoding: proto                # proto | json (http only)
      headers: {signoz-ingestion-key: "${SIGNOZ_INGESTION_KEY}"}
      exclude_request_data: false
      resource_attributes: {deployment.environment: prod}
      compression: gzip              # gzip | none
      timeout_ms: 10000
      sampling_ratio: 1.0
      max_attribute_chars: 65536     # default: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, else no limit
```

Structural errors (unknown keys, wrong types) are caught by msgspec when the file is decoded;
:func:`check_exporter` reports the semantic ones as ``path: message`` lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec

__all__ = [
    "Destination",
    "ExporterConfig",
    "MetricsDestination",
    "check_exporter",
    "env_destination",
    "with_attribute_limit",
]

AttributeValue = str | int | float | bool


class Destination(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One OTLP trace backend."""

    name: str
    endpoint: str  # the full URL, used as given (no path is appended)
    protocol: Literal["http", "grpc"] = "http"
    encoding: Literal["proto", "json"] = "proto"  # http only; gRPC is always protobuf
    headers: dict[str, str] = {}
    exclude_request_data: bool = False
    resource_attributes: dict[str, AttributeValue] = {}
    # The OTLP spec's default is no compression; remote SaaS backends are usually worth gzip.
    compression: Literal["gzip", "none"] = "none"
    timeout_ms: int = 10_000  # the whole export of one batch, retries included
    sampling_ratio: float = 1.0
    queue_size: int = 256  # batches waiting for this destination; beyond it they are dropped
    max_retries: int = 5
    # Longest attribute value sent, in characters; JSON values are cut inside so they stay valid
    # (exporter.truncate). None: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT if set, else no limit; 0: none.
    max_attribute_chars: int | None = None


class MetricsDestination(Destination, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One OTLP metrics backend (the same knobs, plus the export period and temporality)."""

    interval_s: float = 60.0
    temporality: Literal["cumulative", "delta"] = "cumulative"


class ExporterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where spans and metrics go."""

    traces: list[Destination] = []
    metrics: list[MetricsDestination] = []


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_destination(d: Destination, at: str, seen: set[str]) -> Iterator[str]:
    if not d.name:
        yield f"{at}.name: must be non-empty"
    elif d.name in seen:
        yield f"{at}.name: duplicate destination name {d.name!r}"
    seen.add(d.name)
    if not _is_url(d.endpoint):
        yield f"{at}.endpoint: expected a URL (http:// or https://)"
    if d.protocol == "grpc" and d.encoding == "json":
        yield f"{at}.encoding: json is only available with protocol http"
    if not 0.0 <= d.sampling_ratio <= 1.0:
        yield f"{at}.sampling_ratio: must be within [0, 1]"
    if d.timeout_ms <= 0:
        yield f"{at}.timeout_ms: must be > 0"
    if d.queue_size < 1:
        yield f"{at}.queue_size: must be >= 1"
    if d.max_retries < 0:
        yield f"{at}.max_retries: must be >= 0"
    if d.max_attribute_chars is not None and d.max_attribute_chars < 0:
        yield f"{at}.max_attribute_chars: must be >= 0 (0: no limit)"
    for key, value in d.headers.items():
        if not key or any(c in key for c in " :\r\n"):
            yield f"{at}.headers: invalid header name {key!r}"
        if "\r" in value or "\n" in value:
            yield f"{at}.headers.{key}: value must not contain a line break"


def check_exporter(cfg: Any) -> Iterator[str]:
    """Semantic checks of the ``exporter:`` section.

    Args:
        cfg: an :class:`ExporterConfig`, or any config object with an ``exporter`` attribute
            holding one (the gateway's top-level config).

    Yields:
        ``path: message`` lines, e.g. ``exporter.traces[0].endpoint: expected a URL ...``.
    """
    exp: ExporterConfig = getattr(cfg, "exporter", cfg)
    seen: set[str] = set()
    for i, d in enumerate(exp.traces):
        yield from _check_destination(d, f"exporter.traces[{i}]", seen)
    seen_metrics: set[str] = set()
    for i, m in enumerate(exp.metrics):
        at = f"exporter.metrics[{i}]"
        yield from _check_destination(m, at, seen_metrics)
        if m.interval_s <= 0:
            yield f"{at}.interval_s: must be > 0"


# --- OTEL_EXPORTER_OTLP_* environment variables ---------------------------------------------------

_PROTOCOLS: dict[str, tuple[Literal["http", "grpc"], Literal["proto", "json"]]] = {
    "http/protobuf": ("http", "proto"),
    "http/json": ("http", "json"),
    "grpc": ("grpc", "proto"),
}


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The signal-specific variable wins over the generic one (OTLP exporter spec)."""
    for key in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(key, "").strip()
        if value:
            return value
    return None


def parse_headers(text: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (W3C baggage-like, values percent-decoded) into a dict.

    Malformed entries (no ``=``, empty key) are skipped, as the spec allows.
    """
    headers: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if sep and key:
            headers[key] = unquote(value).strip()
    return headers


def with_attribute_limit(d: Destination, env: Mapping[str, str]) -> Destination:
    """``d`` with ``max_attribute_chars`` from ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` when unset.

    The SDK environment variable's meaning: a positive integer; anything else is ignored."""
    if d.max_attribute_chars is not None:
        return d
    try:
        limit = int(env.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "").strip())
    except ValueError:
        return d
    return msgspec.structs.replace(d, max_attribute_chars=limit) if limit > 0 else d


def env_destination(env: Mapping[str, str]) -> Destination | None:
    """One more destination from the standard ``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables.

    Returns ``None`` when neither ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` nor
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Path rules follow the spec: the signal-specific
    endpoint is used as is; the generic one is a base URL to which ``v1/traces`` is appended
    for OTLP/HTTP (gRPC uses it unchanged). An unknown protocol falls back to the spec's
    default, ``http/protobuf``; the caller's :func:`check_exporter` still validates the URL.
    """
    protocol, encoding = _PROTOCOLS.get((_env(env, "PROTOCOL") or "http/protobuf").lower(), ("http", "proto"))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        endpoint = base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"
    compression: Literal["gzip", "none"] = (
        "gzip" if (_env(env, "COMPRESSION") or "").lower() == "gzip" else "none"
    )
    timeout_ms = 10_000
    raw_timeout = _env(env, "TIMEOUT")
    if raw_timeout:
        try:
            timeout_ms = max(1, int(float(raw_timeout)))
        except ValueError:
            pass  # the spec says invalid values are ignored in favour of the default
    return Destination(
        name="otel-env",
        protocol=protocol,
        endpoint=endpoint,
        encoding=encoding,
        headers=parse_headers(_env(env, "HEADERS") or ""),
        compression=compression,
        timeout_ms=timeout_ms,
    )
