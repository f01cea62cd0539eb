"""Recording the spans of one request: ids, W3C trace context, span handles, attribute names.

Everything here is pure and cheap: the request handler records a whole trace (4-5 spans) in a
few microseconds. Timestamps come from one ``time.time_ns()`` per trace plus
``perf_counter_ns()`` per span edge (monotonic, and cheaper than building datetimes); span ids
come from a private PRNG seeded from ``os.urandom`` (re-seeded after ``fork``), because ids need
to be unique, not secret. Finishing a trace yields plain :class:`gateway.telemetry.wire.Span`
records, ready for :class:`gateway.telemetry.ring.TraceRing`.

Typical use from a request handler::

    trace = RequestTrace.start("POST", "/v1/chat/completions", headers.get("traceparent"))
    auth = trace.child("auth"); ...; auth.end()
    call = trace.child("chat gpt-4o", SPAN_KIND_CLIENT)
    upstream_headers["traceparent"] = trace.traceparent_for(call)
    ...
    ring.push(trace.finish(200))

Payload helpers (:func:`input_short_hand`, :func:`response_summary`, :func:`assemble_stream`)
live in :mod:`gateway.telemetry.payloads`.
"""

from __future__ import annotations

import os
import random
import re
from time import perf_counter_ns, time_ns
from typing import Any, Final

import msgspec

from gateway.telemetry.wire import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    Span,
)

__all__ = [
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "NullTrace",
    "RequestTrace",
    "SpanHandle",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
]

# --- attribute names (exact, see shared/design.md) ----------------------------------------------

TFY_SPAN_TYPE: Final = "tfy.span_type"
TFY_INPUT: Final = "tfy.input"
TFY_OUTPUT: Final = "tfy.output"
TFY_INPUT_SHORT_HAND: Final = "tfy.input_short_hand"
TFY_DESTINATION: Final = "tfy.data_routing.destination"
TFY_SUBJECT: Final = "tfy.request.created_by_subject"
TFY_METADATA: Final = "tfy.request.metadata"
TFY_TTFT_MS: Final = "tfy.model.metric.time_to_first_token_in_ms"
TFY_LATENCY_MS: Final = "tfy.model.metric.latency_in_ms"
TFY_LB_RULE_IDS: Final = "applied_loadbalance_rule_ids"
TFY_RL_RULE_IDS: Final = "applied_ratelimit_rule_ids"
TFY_ERROR_MESSAGE: Final = "tfy.error_message"

GEN_AI_OPERATION: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_TTFC: Final = "gen_ai.response.time_to_first_chunk"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_METHOD: Final = "http.request.method"
URL_PATH: Final = "url.path"
HTTP_STATUS: Final = "http.response.status_code"

# endpoint kind (as gateway.app.LLM_ROUTES names it) -> (tfy.span_type, gen_ai.operation.name)
SPAN_TYPES: Final[dict[str, tuple[str, str]]] = {
    "chat": ("ChatCompletion", "chat"),
    "completions": ("Completion", "text_completion"),
    "embeddings": ("Embedding", "embeddings"),
    "responses": ("AgentResponse", "chat"),
}

# --- ids --------------------------------------------------------------------------------------

# A private generator: nobody else's ``random.seed()`` can make our ids repeat, and
# ``getrandbits`` + ``to_bytes`` measures ~3x faster than ``os.urandom`` (a syscall per id).
_rng = random.Random(os.urandom(32))  # noqa: S311  (ids must be unique, not unpredictable)
_getrandbits = _rng.getrandbits
# After fork every worker would otherwise produce the same id sequence as its siblings.
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def new_trace_id() -> bytes:
    """16 random bytes, never all zero (W3C: an all-zero trace id is invalid)."""
    return (_getrandbits(128) or 1).to_bytes(16, "big")


def new_span_id() -> bytes:
    """8 random bytes, never all zero."""
    return (_getrandbits(64) or 1).to_bytes(8, "big")


# --- W3C trace context --------------------------------------------------------------------------

# version-traceid-parentid-flags; future versions may append "-..." fields, which we ignore.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_V00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | bytes | None) -> tuple[bytes, bytes, int] | None:
    """Parse a W3C ``traceparent`` header into ``(trace_id, parent_span_id, flags)``.

    Returns ``None`` for anything invalid (missing, garbage, version ``ff``, all-zero ids,
    version 00 with trailing data): the caller then starts a fresh trace; it is never an error.
    """
    if not value:
        return None
    if value.__class__ is str and len(value) == 55 and _V00.fullmatch(value) is not None:
        # The common case (version 00, no whitespace) without group captures.
        t, p = value[3:35], value[36:52]
        if t == _ZERO_TRACE or p == _ZERO_SPAN:
            return None
        return bytes.fromhex(t), bytes.fromhex(p), int(value[53:], 16)
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()
    if len(value) > 512:  # no honest traceparent is this long; don't regex-scan junk
        return None
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace_hex, parent_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_hex == _ZERO_TRACE or parent_hex == _ZERO_SPAN:
        return None
    return bytes.fromhex(trace_hex), bytes.fromhex(parent_hex), int(flags_hex, 16)


def format_traceparent(trace_id: bytes, span_id: bytes, flags: int = 1) -> str:
    """The ``traceparent`` header value for a span (version 00)."""
    return f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}"


# --- spans --------------------------------------------------------------------------------------


class SpanHandle(msgspec.Struct, gc=False):
    """A span being recorded; becomes a :class:`wire.Span` when the trace finishes.

    ``set`` stores one attribute; ``end`` stamps the end time (idempotent: the first call wins,
    so an error path and a ``finally`` can both call it). A span never ended is ended by
    :meth:`RequestTrace.finish`. A msgspec Struct (not a slotted class) because its C
    constructor is ~3x cheaper, and it holds no reference cycles (``gc=False``).
    """

    name: str
    kind: int
    span_id: bytes
    parent_id: bytes
    start_pc: int  # perf_counter_ns()
    end_pc: int = 0
    status: int = STATUS_UNSET
    status_message: str = ""
    attributes: dict[str, Any] = {}  # msgspec gives each instance its own dict

    def set(self, key: str, value: Any) -> None:
        """Set one attribute (``str | bytes | int | float | bool`` or a list of one of those)."""
        if value is not None:
            self.attributes[key] = value

    def update(self, attributes: dict[str, Any]) -> None:
        """Set several attributes at once (values must not be ``None``; the builders never are)."""
        self.attributes.update(attributes)

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the span failed: status ERROR, ``error.type`` and ``tfy.error_message``."""
        self.status = STATUS_ERROR
        self.status_message = message
        self.attributes[ERROR_TYPE] = error_type
        if message:
            self.attributes[TFY_ERROR_MESSAGE] = message

    def end(self, status: int | None = None, message: str = "") -> None:
        """Stamp the end time; optionally set the status (``STATUS_OK`` / ``STATUS_ERROR``)."""
        if status is not None:
            self.status = status
            if message:
                self.status_message = message
        if not self.end_pc:
            self.end_pc = perf_counter_ns()

    @property
    def duration_ms(self) -> float:
        """Milliseconds from start to end (or to now, if not ended yet)."""
        return ((self.end_pc or perf_counter_ns()) - self.start_pc) / 1e6


class RequestTrace(msgspec.Struct, gc=False):
    """All spans of one inbound request; the root is the SERVER span of the HTTP handler."""

    trace_id: bytes
    root: SpanHandle
    flags: int
    epoch_offset: int  # time_ns() - perf_counter_ns() at start: maps span clocks to epoch ns
    spans: list[SpanHandle]

    @classmethod
    def start(cls, method: str, path: str, traceparent: str | bytes | None = None) -> RequestTrace:
        """Begin a trace for one request; an incoming valid ``traceparent`` becomes the parent."""
        pc = perf_counter_ns()
        offset = time_ns() - pc
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            trace_id, parent_id, flags = new_trace_id(), b"", 1
        else:
            trace_id, parent_id, flags = parent
        root = SpanHandle(
            f"{method} {path}",
            SPAN_KIND_SERVER,
            new_span_id(),
            parent_id,
            pc,
            attributes={HTTP_METHOD: method, URL_PATH: path},
        )
        return cls(trace_id, root, flags, offset, [root])

    def child(
        self, name: str, kind: int = SPAN_KIND_INTERNAL, parent: SpanHandle | None = None
    ) -> SpanHandle:
        """Start a child span (of ``parent``, default the root)."""
        span = SpanHandle(name, kind, new_span_id(), (parent or self.root).span_id, perf_counter_ns())
        self.spans.append(span)
        return span

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 hex digits (for an ``x-request-id``-style response header)."""
        return self.trace_id.hex()

    @property
    def remote_parent_id(self) -> bytes:
        """The caller's span id from ``traceparent`` (``b""`` when the trace started here)."""
        return self.root.parent_id

    def traceparent_for(self, span: SpanHandle | None = None) -> str:
        """``traceparent`` naming ``span`` (default the root) as parent: forward it upstream."""
        return format_traceparent(self.trace_id, (span or self.root).span_id, self.flags)

    def elapsed_ms(self) -> float:
        """Milliseconds since the trace started."""
        return (perf_counter_ns() - self.root.start_pc) / 1e6

    def finish(self, status_code: int, error_type: str | None = None, message: str = "") -> list[Span]:
        """End the root (and any span left open) and return the spans as wire records.

        ``status_code`` is the HTTP status sent to the client. A 5xx, or an explicit
        ``error_type``, marks the root ERROR (OTel HTTP semconv: 4xx is not a server error).
        """
        root = self.root
        root.attributes[HTTP_STATUS] = status_code
        if error_type is not None:
            root.fail(error_type, message)
        elif status_code >= 500 and root.status != STATUS_ERROR:
            root.status = STATUS_ERROR
            root.attributes.setdefault(ERROR_TYPE, str(status_code))
        end = perf_counter_ns()
        if not root.end_pc:
            root.end_pc = end
        offset = self.epoch_offset
        trace_id = self.trace_id
        return [
            Span(
                trace_id,
                s.span_id,
                s.parent_id,
                s.name,
                s.kind,
                s.start_pc + offset,
                (s.end_pc or end) + offset,
                s.status,
                s.status_message,
                s.attributes,
            )
            for s in self.spans
        ]


class _NullSpan:
    """A span that records nothing (tracing disabled): every method is a no-op."""

    __slots__ = ()
    span_id = b"\x00" * 8
    start_pc = 0
    attributes: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        pass

    def update(self, attributes: dict[str, Any]) -> None:
        pass

    def fail(self, error_type: str, message: str = "") -> None:
        pass

    def end(self, status: int | None = None, message: str = "") -> None:
        pass


_NULL_SPAN = _NullSpan()


class NullTrace:
    """Stand-in for :class:`RequestTrace` when ``tracing.enabled`` is false.

    Keeps what clients and providers see (a trace id for ``x-request-id``, an outgoing
    ``traceparent`` continuing the caller's trace) and records no span at all.
    """

    __slots__ = ("trace_id", "flags", "start_pc", "root")

    def __init__(self, trace_id: bytes, flags: int) -> None:
        self.trace_id = trace_id
        self.flags = flags
        self.start_pc = perf_counter_ns()
        self.root = _NULL_SPAN

    @classmethod
    def start(cls, method: str, path: str, traceparent: str | bytes | None = None) -> NullTrace:
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            return cls(new_trace_id(), 1)
        return cls(parent[0], parent[2])

    def child(self, name: str, kind: int = SPAN_KIND_INTERNAL, parent: Any = None) -> Any:
        return _NULL_SPAN

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    def traceparent_for(self, span: Any = None) -> str:
        return format_traceparent(self.trace_id, new_span_id(), self.flags)

    def elapsed_ms(self) -> float:
        return (perf_counter_ns() - self.start_pc) / 1e6
