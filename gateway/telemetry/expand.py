"""Trace records → OpenTelemetry spans: pure, and run by the exporter, not the request path.

The request path records one :class:`wire.TraceRecord` per request (ids, clock readings and the
bytes it already held). This module builds the spans that record stands for, with every
attribute ``shared/design.md`` lists:

    POST /v1/chat/completions   SERVER  the inbound handler; request/response, usage, cost, errors
    ├── auth                    INTERNAL  credentials, access rules and rate limits
    ├── model resolution        INTERNAL  model or virtual model → route plan
    ├── chat gpt-4o             CLIENT    one per upstream attempt (retries and fallbacks too)
    └── stream                  INTERNAL  relaying a streamed response

Only the CLIENT spans are model calls, so only they carry ``gen_ai.*`` (the attempt that
answered also its usage and time to first chunk): a backend that counts spans with GenAI
attributes counts each call once. The root carries what users filter on under ``tfy.*`` names.
Every span names its role in ``openinference.span.kind`` (``LLM`` / ``EMBEDDING`` for model
calls, ``CHAIN`` for the others).

Body-derived attributes (request parameters, input short hand, response id and finish reasons,
the assembled stream) are added after this step by ``exporter.enrich``. Ids of the INTERNAL
spans are drawn here: nothing outside the trace refers to them, while the SERVER and CLIENT
span ids were drawn by the gateway (they travel in ``traceparent`` headers).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.telemetry.spans import (
    ERROR_TYPE,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_TTFC,
    HTTP_METHOD,
    HTTP_STATUS,
    OPENINFERENCE_SPAN_KIND,
    SERVER_ADDRESS,
    SERVER_PORT,
    SPAN_TYPES,
    TFY_ATTEMPT_KIND,
    TFY_COST_USD,
    TFY_DESTINATION,
    TFY_ERROR_MESSAGE,
    TFY_INPUT,
    TFY_INPUT_TOKENS,
    TFY_LATENCY_MS,
    TFY_LB_RULE_IDS,
    TFY_METADATA,
    TFY_OUTPUT,
    TFY_OUTPUT_SSE,
    TFY_OUTPUT_TOKENS,
    TFY_PROVIDER,
    TFY_REQUEST_MODEL,
    TFY_REQUEST_STREAM,
    TFY_RL_RULE_IDS,
    TFY_SPAN_TYPE,
    TFY_SUBJECT,
    TFY_TEAMS,
    TFY_TTFT_MS,
    URL_PATH,
    new_span_id,
)
from gateway.telemetry.wire import (
    PHASE_AUTH,
    PHASE_RESOLUTION,
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    AttemptRecord,
    Span,
    SpanBatch,
    TraceBatch,
    TraceRecord,
)

__all__ = ["client_attributes", "expand_batch", "expand_trace"]

_encode_json = msgspec.json.Encoder().encode


def expand_batch(batch: TraceBatch) -> SpanBatch:
    """The spans of every record in ``batch``, under the same resource."""
    spans: list[Span] = []
    for record in batch.traces:
        spans.extend(expand_trace(record))
    return SpanBatch(SCHEMA_VERSION, batch.resource, spans)


# (target, endpoint, stream, attempt kind, status) -> the CLIENT span's attributes. They repeat
# for every call to a target, and copying a ready dict measured ~4x cheaper than ten insertions.
_client_templates: dict[tuple[Any, ...], dict[str, Any]] = {}
_TEMPLATES_MAX = 4096  # targets x endpoints x statuses stay few; bound it anyway


def client_attributes(attempt: AttemptRecord, endpoint: str, stream: bool) -> dict[str, Any]:
    """Attributes of the CLIENT span of one upstream attempt (a new dict the caller may change)."""
    if attempt.error_type:
        return _client_attributes(attempt, endpoint, stream)
    key = (attempt.target, endpoint, stream, attempt.kind, attempt.status)
    template = _client_templates.get(key)
    if template is None:
        template = _client_attributes(attempt, endpoint, stream)
        if len(_client_templates) < _TEMPLATES_MAX:
            _client_templates[key] = template
        return dict(template)
    return template.copy()


def _client_attributes(attempt: AttemptRecord, endpoint: str, stream: bool) -> dict[str, Any]:
    target = attempt.target
    span_type, operation = SPAN_TYPES.get(endpoint, ("ChatCompletion", "chat"))
    attrs: dict[str, Any] = {
        OPENINFERENCE_SPAN_KIND: "EMBEDDING" if operation == "embeddings" else "LLM",
        TFY_SPAN_TYPE: span_type,
        GEN_AI_OPERATION: operation,
        GEN_AI_PROVIDER: target.provider,
        GEN_AI_REQUEST_MODEL: target.upstream_model,
        GEN_AI_REQUEST_STREAM: stream,
    }
    if target.server_address:
        attrs[SERVER_ADDRESS] = target.server_address
    if target.server_port:
        attrs[SERVER_PORT] = target.server_port
    attrs[TFY_DESTINATION] = target.model_id  # per attempt: retries and fallbacks name their target
    if attempt.kind != "primary":
        attrs[TFY_ATTEMPT_KIND] = attempt.kind
    if attempt.status:
        attrs[HTTP_STATUS] = attempt.status
    if attempt.error_type:
        _mark_failed(attrs, attempt.error_type, attempt.error_message)
    return attrs


def _mark_failed(attrs: dict[str, Any], error_type: str, message: str) -> None:
    """The error attributes of a failed span (its status is set by the caller)."""
    attrs[ERROR_TYPE] = error_type
    if message:
        attrs[TFY_ERROR_MESSAGE] = message


def _root_attributes(t: TraceRecord) -> dict[str, Any]:
    span_type, _ = SPAN_TYPES.get(t.endpoint, ("ChatCompletion", "chat"))
    attrs: dict[str, Any] = {
        OPENINFERENCE_SPAN_KIND: "CHAIN",
        HTTP_METHOD: "POST",
        URL_PATH: t.path,
        TFY_SPAN_TYPE: span_type,
    }
    if t.model:
        attrs[TFY_INPUT] = t.request_body
        attrs[TFY_REQUEST_MODEL] = t.model
        attrs[TFY_REQUEST_STREAM] = t.stream
    if t.attempts:
        last = t.attempts[-1].target
        attrs[TFY_PROVIDER] = last.provider
        if not t.error_type:
            attrs[TFY_DESTINATION] = last.model_id
    if t.lb_rule_ids:
        attrs[TFY_LB_RULE_IDS] = list(t.lb_rule_ids)
    if t.rl_rule_ids:
        attrs[TFY_RL_RULE_IDS] = list(t.rl_rule_ids)
    if t.subject:
        attrs[TFY_SUBJECT] = t.subject
    if t.teams:
        attrs[TFY_TEAMS] = list(t.teams)
    if t.metadata:
        attrs[TFY_METADATA] = _encode_json(t.metadata).decode()
    if t.input_tokens >= 0:
        attrs[TFY_INPUT_TOKENS] = t.input_tokens
        attrs[TFY_OUTPUT_TOKENS] = t.output_tokens
    if t.response_sse:
        attrs[TFY_OUTPUT_SSE] = t.response_sse
    elif t.response_body:
        attrs[TFY_OUTPUT] = t.response_body
    if t.cost_usd is not None:
        attrs[TFY_COST_USD] = t.cost_usd
    attrs[TFY_LATENCY_MS] = (t.end_pc - t.start_pc) / 1e6
    if t.stream and t.first_chunk_pc:  # a non-streamed response has no first token of its own
        attrs[TFY_TTFT_MS] = (t.first_chunk_pc - t.start_pc) / 1e6
    attrs[HTTP_STATUS] = t.status
    return attrs


def _served(t: TraceRecord) -> AttemptRecord | None:
    """The attempt that answered: the last one that did not fail (``None`` if all failed)."""
    for attempt in reversed(t.attempts):
        if not attempt.error_type:
            return attempt
    return None


def _served_attributes(attrs: dict[str, Any], t: TraceRecord, attempt: AttemptRecord) -> None:
    """What the request learned from the answer belongs to the model call that gave it."""
    if t.input_tokens >= 0:
        attrs[GEN_AI_INPUT_TOKENS] = t.input_tokens
        attrs[GEN_AI_OUTPUT_TOKENS] = t.output_tokens
    if t.stream and t.first_chunk_pc:  # measured from this call's request, as the convention says
        attrs[GEN_AI_TTFC] = max(0, t.first_chunk_pc - attempt.start_pc) / 1e9


def expand_trace(t: TraceRecord) -> list[Span]:
    """The spans one request stands for, root first, in the order they started."""
    if t.mcp is not None:  # an MCP gateway request: its own span layout
        from gateway.telemetry.expand_mcp import expand_mcp_trace

        return expand_mcp_trace(t)
    if t.agent is not None:  # a Responses request: an AgentResponse trace
        from gateway.telemetry.expand_agent import expand_agent_trace

        return expand_agent_trace(t)
    trace_id, root_id, offset, end = t.trace_id, t.span_id, t.epoch_offset, t.end_pc
    _, operation = SPAN_TYPES.get(t.endpoint, ("ChatCompletion", "chat"))

    attrs = _root_attributes(t)
    status, message = STATUS_UNSET, ""
    if t.error_type:
        status, message = STATUS_ERROR, t.error_message
        _mark_failed(attrs, t.error_type, message)
    elif t.status >= 500:  # OTel HTTP semconv: a 4xx is the client's error, not the server's
        status = STATUS_ERROR
        attrs[ERROR_TYPE] = str(t.status)
    spans = [
        Span(
            trace_id, root_id, t.parent_id, f"POST {t.path}", SPAN_KIND_SERVER,
            t.start_pc + offset, end + offset, status, message, attrs,
        )
    ]  # fmt: skip

    def internal(
        name: str, start: int, stop: int, attributes: dict[str, Any], error_type: str = "", message: str = ""
    ) -> None:
        attributes[OPENINFERENCE_SPAN_KIND] = "CHAIN"
        if error_type:
            _mark_failed(attributes, error_type, message)
        spans.append(
            Span(
                trace_id, new_span_id(), root_id, name, SPAN_KIND_INTERNAL, start + offset,
                (stop or end) + offset, STATUS_ERROR if error_type else STATUS_UNSET, message, attributes,
            )
        )  # fmt: skip

    if t.auth_start_pc:
        if t.failed_phase == PHASE_AUTH:
            internal("auth", t.auth_start_pc, t.auth_end_pc, {}, t.error_type, t.error_message)
        else:
            internal("auth", t.auth_start_pc, t.auth_end_pc, {TFY_SUBJECT: t.subject})
    if t.resolved_pc:
        if t.failed_phase == PHASE_RESOLUTION:  # the span names the failure; the message is the root's
            internal("model resolution", t.auth_end_pc, t.resolved_pc, {}, "ModelNotFound")
        else:
            extra = {TFY_LB_RULE_IDS: list(t.lb_rule_ids)} if t.lb_rule_ids else {}
            internal("model resolution", t.auth_end_pc, t.resolved_pc, extra)
    served = _served(t)
    for attempt in t.attempts:
        attributes = client_attributes(attempt, t.endpoint, t.stream)
        if attempt is served:
            _served_attributes(attributes, t, attempt)
        spans.append(
            Span(
                trace_id, attempt.span_id, root_id, f"{operation} {attempt.target.upstream_model}",
                SPAN_KIND_CLIENT, attempt.start_pc + offset, (attempt.end_pc or end) + offset,
                STATUS_ERROR if attempt.error_type else STATUS_UNSET, attempt.error_message, attributes,
            )
        )  # fmt: skip
    if t.stream_start_pc:
        internal("stream", t.stream_start_pc, t.stream_end_pc, {})
    return spans
