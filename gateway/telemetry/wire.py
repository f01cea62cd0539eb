"""The wire contract between gateway and exporter: versioned, msgpack-encoded trace batches.

Both sides import this module (and :mod:`gateway.telemetry.expand`, which turns records into
spans); the exporter imports nothing else from the gateway. One NATS message carries one
:class:`TraceBatch`. Records are ``array_like`` (positional msgpack arrays, no field names on the
wire) and ``gc=False`` (they hold no cycles).

What travels is one compact :class:`TraceRecord` per request: ids, clock readings, the request
and response bytes and the few values the request path already held, and no attribute names.
The OpenTelemetry spans (SERVER root, ``auth``, ``model resolution``, one CLIENT span per
upstream attempt, ``stream``) and their attributes are built from it by the exporter
(:func:`gateway.telemetry.expand.expand_batch`), off the request path and, with NATS, in another
process: recording a request costs one constructor call, and encoding it a few hundred bytes of
mostly verbatim payload.

Schema evolution: fields are only ever appended, with defaults, and ``SCHEMA_VERSION`` is
bumped; a decoder rejects a batch whose version it does not know instead of guessing.

Span attribute values are ``str | bytes | int | float | bool | list[str] | list[int] |
list[float]``. ``bytes`` values are UTF-8 text the gateway already had as bytes (a request
body): the exporter decodes them, so the request path never does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

SCHEMA_VERSION = 3

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
    """A resource and the spans of one or more whole traces (what the exporter pipeline takes)."""

    version: int
    resource: Resource
    spans: list[Span]


# --- what the request path records -------------------------------------------------------------
# Clock readings are ``perf_counter_ns()`` values; ``epoch_offset`` (``time_ns() -
# perf_counter_ns()`` at the start of the request) maps them to Unix epoch nanoseconds. A
# reading of 0 means "never reached" (the phase, and its span, did not happen).

# TraceRecord.failed_phase: which internal span carries the request's error
PHASE_NONE = 0
PHASE_AUTH = 1
PHASE_RESOLUTION = 2


class TargetInfo(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The constant facts of one upstream target, built once per config (see ``runtime``)."""

    model_id: str  # "<provider>/<model>" as the gateway names it
    provider: str  # gen_ai.provider.name: openai, anthropic, ...
    upstream_model: str  # the model name sent to the provider
    server_address: str
    server_port: int


class AttemptRecord(msgspec.Struct, array_like=True, gc=False):
    """One upstream attempt (a CLIENT span). ``span_id`` is the one forwarded in ``traceparent``."""

    span_id: bytes
    target: TargetInfo
    kind: str  # primary | retry | fallback
    start_pc: int
    end_pc: int
    status: int  # 200; the provider's error status; 502/504 for unreachable/timed out; 0: none
    error_type: str = ""
    error_message: str = ""


class McpCallRecord(msgspec.Struct, array_like=True, gc=False):
    """One JSON-RPC message the MCP gateway sent upstream (a CLIENT span, see ``expand_mcp``)."""

    span_id: bytes  # the one forwarded in ``traceparent`` and ``params._meta.traceparent``
    server: str  # the upstream server (a composite's member)
    method: str  # mcp.method.name
    target: str  # the tool or prompt name upstream ("" when the method has none)
    request_id: str  # jsonrpc.request.id ("" for a notification)
    start_pc: int
    end_pc: int
    status: int  # the upstream's HTTP status; 0: no answer
    error_type: str = ""  # JSON-RPC error code, "tool_error" (result isError) or a transport code
    error_message: str = ""
    arguments: bytes = b""  # tools/call arguments (JSON), content
    result: bytes = b""  # tools/call result (JSON), content
    server_address: str = ""
    server_port: int = 0


class McpRecord(msgspec.Struct, array_like=True, gc=False):
    """What an MCP request (``/mcp/{server}``) adds to its :class:`TraceRecord`."""

    server: str  # as the client addressed it (plain or composite)
    http_method: str  # POST | GET | DELETE
    method: str  # the client's JSON-RPC method ("" for GET/DELETE or a response)
    target: str  # the tool or prompt name the client asked for
    request_id: str
    session_id: str  # the gateway session id ("" for the stateless revision)
    protocol_version: str
    calls: tuple[McpCallRecord, ...] = ()


class ModelCallRecord(msgspec.Struct, array_like=True, gc=False):
    """One model call of a Responses request (``AgentResponse`` traces, see ``expand_agent``)."""

    attempts: tuple[AttemptRecord, ...]  # its CLIENT spans: retries and fallbacks included
    api: str  # openai.api.type as sent to the target that answered: responses | chat_completions
    request_body: bytes  # the Responses request of this call (b"": the root's request body)
    response_body: bytes  # the Response object it produced (b"": the root's response body)
    input_tokens: int = -1
    output_tokens: int = -1


class ToolCallRecord(msgspec.Struct, array_like=True, gc=False):
    """One MCP tool call the gateway ran in an agent loop (an ``execute_tool`` span)."""

    span_id: bytes  # parent of the upstream JSON-RPC CLIENT spans (``calls``)
    server: str
    tool: str
    call_id: str  # the mcp_call item id
    start_pc: int
    end_pc: int
    arguments: bytes
    result: bytes = b""
    error_type: str = ""
    error_message: str = ""
    calls: tuple[McpCallRecord, ...] = ()


class AgentRecord(msgspec.Struct, array_like=True, gc=False):
    """What a Responses request adds to its :class:`TraceRecord`: the ``invoke_agent`` span and,
    under it, its model calls and tool calls (``TraceRecord.attempts`` stays empty)."""

    span_id: bytes
    response_id: str
    conversation_id: str  # the first response id of the previous_response_id chain
    start_pc: int
    end_pc: int
    model_calls: tuple[ModelCallRecord, ...] = ()
    tool_calls: tuple[ToolCallRecord, ...] = ()
    list_calls: tuple[McpCallRecord, ...] = ()  # tools/list (and session set-up) messages
    dropped_tools: tuple[str, ...] = ()  # built-in tools dropped for a translated target

    @property
    def span_count(self) -> int:
        return (
            1
            + sum(len(m.attempts) for m in self.model_calls)
            + sum(1 + len(c.calls) for c in self.tool_calls)
            + len(self.list_calls)
        )


class TraceRecord(msgspec.Struct, array_like=True, gc=False):
    """Everything one request's spans are built from; made once, when the request ends."""

    trace_id: bytes
    span_id: bytes  # the SERVER span
    parent_id: bytes  # the caller's span from ``traceparent`` (b"" when the trace starts here)
    epoch_offset: int
    start_pc: int
    end_pc: int
    path: str
    endpoint: str  # the kind of call: chat | completions | embeddings | responses | count_tokens
    status: int  # HTTP status sent to the client
    error_type: str  # "" on success
    error_message: str
    failed_phase: int  # PHASE_*
    model: str  # the model the client asked for ("" if the body was not readable)
    stream: bool
    request_body: bytes
    auth_start_pc: int
    auth_end_pc: int
    resolved_pc: int
    subject: str
    metadata: dict[str, str]
    # Tuples, not lists: the garbage collector stops tracking a tuple of atoms or of these
    # gc=False records, so traces waiting in the ring cost the collector nothing.
    lb_rule_ids: tuple[str, ...]
    rl_rule_ids: tuple[str, ...]
    attempts: tuple[AttemptRecord, ...]
    first_chunk_pc: int
    stream_start_pc: int
    stream_end_pc: int
    input_tokens: int  # -1: no usage known
    output_tokens: int
    cost_usd: float | None
    response_body: bytes  # the JSON response (non-streamed)
    response_sse: bytes  # the SSE events as sent (streamed)
    # The inbound API (gateway.surfaces): the shape of request_body and response_*; "" in
    # records from before schema 3, which were all in the shape their endpoint names.
    surface: str = ""
    mcp: McpRecord | None = None  # set on MCP gateway requests (endpoint "mcp")
    agent: AgentRecord | None = None  # set on Responses requests (endpoint "responses")
    teams: tuple[str, ...] = ()  # the caller's teams (the trace store filters and groups by them)

    @property
    def nested_bytes(self) -> int:
        """Bytes held by the MCP or agent parts (tool arguments and results, model-call bodies)."""
        n = 0
        if self.mcp is not None:
            n += sum(len(c.arguments) + len(c.result) for c in self.mcp.calls)
        if self.agent is not None:
            for m in self.agent.model_calls:
                n += len(m.request_body) + len(m.response_body)
            for t in self.agent.tool_calls:
                n += len(t.arguments) + len(t.result) + sum(len(c.arguments) + len(c.result) for c in t.calls)
            n += sum(len(c.arguments) + len(c.result) for c in self.agent.list_calls)
        return n

    @property
    def span_count(self) -> int:
        """How many spans the exporter builds from this record (what the gateway's counters count):
        the root, ``auth`` and ``model resolution`` when reached, one per attempt, ``stream``."""
        return (
            1
            + (self.auth_start_pc != 0)
            + (self.resolved_pc != 0)
            + len(self.attempts)
            + (self.stream_start_pc != 0)
            + (len(self.mcp.calls) if self.mcp is not None else 0)
            + (self.agent.span_count if self.agent is not None else 0)
        )


class TraceBatch(msgspec.Struct, array_like=True, gc=False):
    """One NATS message: a resource and the records of one or more requests."""

    version: int
    resource: Resource
    traces: list[TraceRecord]

    @property
    def span_count(self) -> int:
        """Spans these records stand for."""
        return sum(t.span_count for t in self.traces)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TraceBatch)


class WireVersionError(ValueError):
    """A batch written by a newer (or unknown) schema version."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"trace batch schema version {version}, expected {SCHEMA_VERSION}")


def encode_batch(batch: TraceBatch) -> bytes:
    """msgpack bytes for one batch."""
    return _encoder.encode(batch)


def decode_batch(data: bytes) -> TraceBatch:
    """Decode one batch; raises ``msgspec.DecodeError`` or :class:`WireVersionError`.

    The version is checked before the records are decoded, so a batch from a newer gateway is
    reported as such rather than as a shape mismatch."""
    try:
        version = _version_decoder.decode(data)[0]
    except (msgspec.DecodeError, IndexError, TypeError):
        version = None
    if version != SCHEMA_VERSION:
        if isinstance(version, int):
            raise WireVersionError(version)
    return _decoder.decode(data)


_version_decoder = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw, msgspec.Raw])


# --- configuration shared by gateway and exporter ------------------------------------------------

MIB = 1024 * 1024


class StreamConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The JetStream stream holding span batches until an exporter has delivered them.

    Created (or updated to these limits) by every gateway and exporter when it connects. Work-queue
    retention: a batch leaves the stream when an exporter acks it, so the limits are headroom for
    a backlog (an exporter outage, a slow backend), not a replay window. When ``max_bytes`` is
    reached the stream refuses new batches (discard ``new``): gateways keep them in their ring
    and count what a full ring drops. A batch older than ``max_age_s`` is removed by the server.
    """

    name: str = ""  # default: <SUBJECT_PREFIX>_SPANS (GATEWAY_SPANS), so two prefixes never share one
    max_bytes: Annotated[int, msgspec.Meta(ge=MIB)] = 1024**3  # 1 GiB of batches on the servers' disks
    max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1  # 3 on a 3-node cluster (the k8s base)
    # A re-sent batch (same Nats-Msg-Id) within this window is stored once.
    duplicate_window_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0


class ConsumerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The exporters' durable pull consumer, shared by every exporter replica."""

    durable: str = "exporters"
    # Unacked this long (the exporter holding it died): redelivered to another replica.
    ack_wait_s: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    # Batches delivered and not yet acked, over all replicas.
    max_ack_pending: Annotated[int, msgspec.Meta(ge=1)] = 1024
    fetch_batch: Annotated[int, msgspec.Meta(ge=1)] = 16  # messages asked for per pull request
    # An exporter stops pulling while it holds this many bytes of batches (as received; decoded,
    # enriched and encoded they take about three times as much: measured 4 MiB -> +12 MiB RSS).
    max_in_flight_bytes: Annotated[int, msgspec.Meta(ge=MIB)] = 64 * MIB
    # Redelivery delay of a batch a backend failed to take, doubling per delivery up to the max.
    retry_backoff_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    retry_backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class NatsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where span batches travel; absent means the embedded (in-process) exporter."""

    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "gateway"
    stream: StreamConfig = StreamConfig()
    consumer: ConsumerConfig = ConsumerConfig()
    publish_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0  # wait for the stream's ack of one batch

    @property
    def spans_subject(self) -> str:
        return f"{self.subject_prefix}.spans"

    @property
    def stream_name(self) -> str:
        """``stream.name``, or one derived from the subject prefix (JetStream allows no dots)."""
        return self.stream.name or re.sub(r"[^A-Za-z0-9_-]", "_", self.subject_prefix).upper() + "_SPANS"


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``tracing:`` section, read by both the gateway and the exporter."""

    enabled: bool = True
    service_name: str = "tfy-llm-gateway"
    ring_size: int = 65536  # finished traces held in memory before the drain task ships them
    # Bytes of trace data a worker holds (ring, plus the export queues in embedded mode); sized
    # for a 1 GiB pod. Beyond it new traces are dropped and counted (``ring_full``/``queue_full``).
    max_buffer_bytes: Annotated[int, msgspec.Meta(ge=MIB)] = 256 * MIB
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
