"""The wire contract between gateway and exporter: versioned, msgpack-encoded span batches.

Both sides import this one module; the exporter imports nothing else from the gateway.
One NATS message carries one :class:`SpanBatch`. Records are ``array_like`` (positional
msgpack arrays, no field names on the wire) and ``gc=False`` (they hold no cycles), which
is what keeps recording a span in the low microseconds.

Schema evolution: fields are only ever appended, with defaults, and ``SCHEMA_VERSION`` is
bumped; a decoder rejects a batch whose version it does not know instead of guessing.

Attribute values are ``str | bytes | int | float | bool | list[str] | list[int] | list[float]``.
``bytes`` values are UTF-8 text the gateway already had as bytes (a request body): the
exporter decodes them, so the request path never does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

SCHEMA_VERSION = 1

# OTLP enum values, kept numeric so the exporter maps them 1:1.
SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2


class Span(msgspec.Struct, array_like=True, gc=False):
    """One finished span. Ids are raw bytes (16 for traces, 8 for spans)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # b"" for a root span with no remote parent
    name: str
    kind: int
    start_ns: int  # unix epoch nanoseconds
    end_ns: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: dict[str, Any] = {}


class Resource(msgspec.Struct, array_like=True, gc=False):
    """Who produced the spans: one gateway worker process."""

    service_name: str
    service_version: str
    instance_id: str
    attributes: dict[str, Any] = {}


class SpanBatch(msgspec.Struct, array_like=True, gc=False):
    """One NATS message: a resource and the spans of one or more whole traces."""

    version: int
    resource: Resource
    spans: list[Span]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpanBatch)


class WireVersionError(ValueError):
    """A batch written by a newer (or unknown) schema version."""


def encode_batch(batch: SpanBatch) -> bytes:
    """msgpack bytes for one batch."""
    return _encoder.encode(batch)


def decode_batch(data: bytes) -> SpanBatch:
    """Decode one batch; raises ``msgspec.DecodeError`` or :class:`WireVersionError`."""
    batch = _decoder.decode(data)
    if batch.version != SCHEMA_VERSION:
        raise WireVersionError(f"span batch schema version {batch.version}, expected {SCHEMA_VERSION}")
    return batch


# --- configuration shared by gateway and exporter ------------------------------------------------


class NatsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where span batches travel; absent means the embedded (in-process) exporter."""

    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "gateway"

    @property
    def spans_subject(self) -> str:
        return f"{self.subject_prefix}.spans"


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``tracing:`` section, read by both the gateway and the exporter."""

    enabled: bool = True
    service_name: str = "tfy-llm-gateway"
    ring_size: int = 65536  # finished traces held in memory before the drain task ships them
    batch_max_spans: int = 512
    flush_interval_ms: int = 200
    nats: NatsConfig | None = None


# --- ${ENV} substitution, shared by the gateway's and the exporter's config loaders ----------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a parsed YAML document.

    Runs on parsed scalars, never on YAML text, so a secret containing ``:`` or ``#`` cannot
    change the document's structure. A missing variable without a default is appended to
    ``problems`` as ``<path>: environment variable NAME is not set``.
    """
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: substitute_env(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


# --- metric bucket boundaries, shared so /metrics and the OTLP metrics stay identical ---------

# Milliseconds. Whole requests run from a few ms (cache hits, errors) to minutes (long streams).
PROCESSING_MS_BUCKETS = (
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    120000.0, 300000.0,
)  # fmt: skip
FIRST_TOKEN_MS_BUCKETS = (
    10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0,
    10000.0, 30000.0,
)  # fmt: skip
INTER_TOKEN_MS_BUCKETS = (
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0,
)  # fmt: skip
