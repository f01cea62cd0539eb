"""Span attributes the request path sets: cheap dict building, nothing decoded.

Everything derived from request or response *bodies* (request parameters, the input short
hand, response id/model/finish reasons, the assembled stream) is computed by the exporter
(:mod:`exporter.enrich`) from ``tfy.input`` / ``tfy.output``, off the request path.
"""

from __future__ import annotations

from typing import Any

from gateway.telemetry.spans import (
    GEN_AI_OPERATION,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_TTFC,
    SERVER_ADDRESS,
    SERVER_PORT,
    SPAN_TYPES,
    TFY_LATENCY_MS,
    TFY_SPAN_TYPE,
    TFY_TTFT_MS,
    SpanHandle,
)


def llm_request_attributes(
    endpoint: str,
    provider: str,
    request_model: str,
    *,
    stream: bool = False,
    server_address: str | None = None,
    server_port: int | None = None,
) -> dict[str, Any]:
    """GenAI request attributes for a ``chat <model>`` CLIENT span.

    ``endpoint`` is a key of :data:`SPAN_TYPES` (``chat`` | ``completions`` | ``embeddings`` |
    ``responses``); ``provider`` the ``gen_ai.provider.name`` (``openai``, ``anthropic``...).
    """
    span_type, operation = SPAN_TYPES.get(endpoint, ("ChatCompletion", "chat"))
    attrs: dict[str, Any] = {
        TFY_SPAN_TYPE: span_type,
        GEN_AI_OPERATION: operation,
        GEN_AI_PROVIDER: provider,
        GEN_AI_REQUEST_MODEL: request_model,
        GEN_AI_REQUEST_STREAM: stream,
    }
    if server_address:
        attrs[SERVER_ADDRESS] = server_address
    if server_port:
        attrs[SERVER_PORT] = server_port
    return attrs


def timing_attributes(call: SpanHandle, first_chunk_pc: int = 0) -> dict[str, Any]:
    """Latency (and, for streams, time to first token/chunk) of an upstream call span.

    ``first_chunk_pc`` is the ``perf_counter_ns()`` reading when the first chunk arrived
    (:attr:`StreamRecorder.first_chunk_pc`); 0 for non-streamed calls. Call after ``call.end()``.
    """
    attrs: dict[str, Any] = {TFY_LATENCY_MS: call.duration_ms}
    if first_chunk_pc:
        delta = first_chunk_pc - call.start_pc
        attrs[TFY_TTFT_MS] = delta / 1e6
        attrs[GEN_AI_TTFC] = delta / 1e9
    return attrs
