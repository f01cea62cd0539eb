"""Span attributes derived from the request and response bodies a span carries.

The gateway records ``tfy.input`` (the request body) and ``tfy.output`` (the response body,
or for streams the raw SSE events under ``tfy.output.sse``) as bytes and nothing more; this
module derives the rest here, in the exporter, off the request path: on the root
``tfy.input_short_hand`` and the assembled ``tfy.output`` of a stream; on the model-call
(CLIENT) spans the ``gen_ai.request.*`` parameters, the GenAI content attributes
(:mod:`gateway.telemetry.genai`), ``gen_ai.response.*`` and the usage details (cached and
reasoning tokens). Nothing here raises on malformed input. :func:`enrich_batch` runs once per
batch, before a destination's *exclude request data* switch strips the content.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.telemetry import genai
from gateway.telemetry.genai import chat_view
from gateway.telemetry.genai.common import DECODE_ERRORS, decode_object
from gateway.telemetry.genai.openai import assemble_chat_stream
from gateway.telemetry.spans import (
    GEN_AI_CONTENT,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER,
    LOGFIRE_JSON_SCHEMA,
    TFY_INPUT,
    TFY_INPUT_SHORT_HAND,
    TFY_INPUT_TOKENS,
    TFY_OUTPUT,
    TFY_OUTPUT_SSE,
    TFY_OUTPUT_TOKENS,
    TFY_SPAN_TYPE,
    URL_PATH,
)
from gateway.telemetry.wire import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, STATUS_ERROR, Span, SpanBatch

log = logging.getLogger("exporter")

SHORT_HAND_MAX_CHARS = 200

# --- request ------------------------------------------------------------------------------------


class _Format(msgspec.Struct, gc=False):
    type: str | None = None


class _Text(msgspec.Struct, gc=False):  # Responses: {"text": {"format": {...}}}
    format: _Format | None = None


class RequestParams(msgspec.Struct, gc=False):
    """The sampling parameters of a request, for every API's spelling (a view: others ignored)."""

    model: str | None = None
    stream: bool | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None  # Responses
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_sequences: list[str] | None = None  # Anthropic
    n: int | None = None
    response_format: _Format | None = None
    text: _Text | None = None
    dimensions: int | None = None  # embeddings
    encoding_format: str | None = None
    service_tier: str | None = None  # OpenAI


_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}


_params_decoder = msgspec.json.Decoder(RequestParams)


def decode_request_params(body: bytes) -> RequestParams | None:
    """The request parameters, or ``None`` if the body is not a JSON object of that shape."""
    try:
        return _params_decoder.decode(body)
    except DECODE_ERRORS:
        return None


def request_param_attributes(p: RequestParams) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes for the parameters that were set."""
    attrs: dict[str, Any] = {}
    if p.temperature is not None:
        attrs["gen_ai.request.temperature"] = p.temperature
    max_tokens = next(
        (v for v in (p.max_completion_tokens, p.max_tokens, p.max_output_tokens) if v is not None), None
    )
    if max_tokens is not None:
        attrs["gen_ai.request.max_tokens"] = max_tokens
    if p.top_p is not None:
        attrs["gen_ai.request.top_p"] = p.top_p
    if p.top_k is not None:
        attrs["gen_ai.request.top_k"] = p.top_k
    if p.frequency_penalty is not None:
        attrs["gen_ai.request.frequency_penalty"] = p.frequency_penalty
    if p.presence_penalty is not None:
        attrs["gen_ai.request.presence_penalty"] = p.presence_penalty
    if p.seed is not None:
        attrs["gen_ai.request.seed"] = p.seed
    if p.stop is not None:
        attrs["gen_ai.request.stop_sequences"] = [p.stop] if isinstance(p.stop, str) else p.stop
    elif p.stop_sequences is not None:
        attrs["gen_ai.request.stop_sequences"] = p.stop_sequences
    if p.n is not None and p.n != 1:
        attrs["gen_ai.request.choice.count"] = p.n
    fmt = p.response_format or (p.text.format if p.text is not None else None)
    if fmt is not None and fmt.type in _OUTPUT_TYPES:
        attrs["gen_ai.output.type"] = _OUTPUT_TYPES[fmt.type]
    if p.dimensions is not None:
        attrs["gen_ai.embeddings.dimension.count"] = p.dimensions
    if p.encoding_format is not None:
        attrs["gen_ai.request.encoding_formats"] = [p.encoding_format]
    return attrs


# --- tfy.input_short_hand ----------------------------------------------------------------------


class _Part(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    content: str | list[_Part] | None = None


class _InputView(msgspec.Struct, gc=False):
    messages: list[_Message] | None = None
    prompt: str | list[Any] | None = None  # completions
    input: str | list[Any] | None = None  # embeddings


_input_decoder = msgspec.json.Decoder(_InputView)
_json_encode = msgspec.json.Encoder().encode


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def input_short_hand(body: bytes, limit: int = SHORT_HAND_MAX_CHARS) -> str:
    """``tfy.input_short_hand``: a JSON string summarising the request.

    ``{"role", "content", "messages", "has_file", "has_image", "has_audio"}`` where ``content``
    is the last user message's text (else the last message's, or the prompt / embedding
    input) truncated to ``limit`` characters; the flags cover every message's content parts
    (``file``, ``image_url``, ``input_audio``).
    """
    try:
        view = _input_decoder.decode(body)
    except DECODE_ERRORS:
        return _json_encode(
            {"content": "", "has_file": False, "has_image": False, "has_audio": False}
        ).decode()
    has_file = has_image = has_audio = False
    role, text, count = "", "", 0
    if view.messages:
        count = len(view.messages)
        chosen: _Message | None = None
        for msg in view.messages:
            if isinstance(msg.content, list):
                for part in msg.content:
                    t = part.type
                    if t == "image_url" or t == "image":
                        has_image = True
                    elif t == "input_audio" or t == "audio":
                        has_audio = True
                    elif t == "file":
                        has_file = True
            if msg.role == "user":
                chosen = msg
        chosen = chosen or view.messages[-1]
        role = chosen.role
        if isinstance(chosen.content, str):
            text = chosen.content
        elif chosen.content:
            text = " ".join(p.text for p in chosen.content if p.text)
    else:
        raw = view.prompt if view.prompt is not None else view.input
        if isinstance(raw, str):
            text = raw
        elif raw:
            last = raw[-1]
            text = last if isinstance(last, str) else f"[{len(raw)} items]"
    out: dict[str, Any] = {"content": _truncate(text, limit)}
    if role:
        out = {"role": role, **out, "messages": count}
    out.update(has_file=has_file, has_image=has_image, has_audio=has_audio)
    return _json_encode(out).decode()


# --- responses ---------------------------------------------------------------------------------

# The response views live in gateway.telemetry.genai, shared with the other surfaces' spans.
ResponseSummary = genai.ResponseInfo
response_attributes = genai.response_attributes


def response_summary(body: bytes) -> ResponseSummary:
    """Id, model, finish reasons and token usage of a non-streamed chat/completion response."""
    return genai.response_info("chat", decode_object(body))


def assemble_stream(
    chunks: Iterable[bytes], usage: tuple[int | None, int | None] | None = None
) -> tuple[bytes, ResponseSummary]:
    """Assemble OpenAI SSE chunks into the JSON body a non-streamed call would have returned.

    See :func:`gateway.telemetry.genai.openai.assemble_chat_stream`; returns ``(json_bytes,
    summary)``."""
    doc = assemble_chat_stream(chunks, usage)
    return _json_encode(doc), genai.response_info("chat", doc)


# --- the batch ---------------------------------------------------------------------------------


_OPENAI_API_TYPES = {"chat": "chat_completions", "responses": "responses"}


def _openai_attributes(api: str, info: genai.ResponseInfo, request_tier: str | None) -> dict[str, Any]:
    """The convention's ``openai.*`` attributes, for spans whose provider is OpenAI."""
    attrs: dict[str, Any] = {}
    if api in _OPENAI_API_TYPES:
        attrs["openai.api.type"] = _OPENAI_API_TYPES[api]
    if request_tier and request_tier != "auto":
        attrs["openai.request.service_tier"] = request_tier
    if info.service_tier:
        attrs["openai.response.service_tier"] = info.service_tier
    if info.system_fingerprint:
        attrs["openai.response.system_fingerprint"] = info.system_fingerprint
    return attrs


def _json_schema(attrs: dict[str, Any]) -> None:
    keys = tuple(k for k in GEN_AI_CONTENT if k in attrs)
    if keys:
        attrs[LOGFIRE_JSON_SCHEMA] = genai.json_schema(keys)


def _enrich_trace(root: Span, clients: list[Span], content: bool) -> None:
    attrs = root.attributes
    body = attrs.get(TFY_INPUT)
    sse = attrs.pop(TFY_OUTPUT_SSE, None)
    if body is None and sse is None:
        return
    path = attrs.get(URL_PATH)
    api = genai.API_BY_PATH.get(path, "chat") if isinstance(path, str) else "chat"
    raw = body.encode() if isinstance(body, str) else body
    request_attrs: dict[str, Any] = {}
    input_attrs: dict[str, str] = {}
    request_tier: str | None = None
    if isinstance(raw, bytes):
        params = decode_request_params(raw)
        if params is not None:
            request_attrs = request_param_attributes(params)
            request_tier = params.service_tier
        if clients and content:
            input_attrs = genai.content_attributes(genai.request_content(api, raw))
        attrs[TFY_INPUT_SHORT_HAND] = input_short_hand(raw)
    response: dict[str, Any] | None = None
    mapped: tuple[list[genai.OutputMessage] | None, genai.ResponseInfo] | None = None
    if isinstance(sse, bytes):
        usage = (attrs.get(TFY_INPUT_TOKENS), attrs.get(TFY_OUTPUT_TOKENS))
        response = genai.assemble(api, sse, usage if usage != (None, None) else None)
        if response is not None:
            attrs[TFY_OUTPUT] = _json_encode(response)
    else:
        out = attrs.get(TFY_OUTPUT)
        if isinstance(out, bytes | str):
            if api == "chat":  # the common answer in one typed decode, else the general mapping
                mapped = chat_view.chat_response(out)
            if mapped is None:
                response = decode_object(out)
    served = next((c for c in reversed(clients) if c.status_code != STATUS_ERROR), None)
    for span in clients:
        span.attributes.update(request_attrs)
        span.attributes.update(input_attrs)
        if span is served and (mapped is not None or response is not None):
            if mapped is None:
                output = genai.output_messages(api, response) if content else None
                info = genai.response_info(api, response)
            else:
                output, info = mapped
            if output and content:
                span.attributes[GEN_AI_OUTPUT_MESSAGES] = genai.encode(output)
            for key, value in genai.response_attributes(info).items():
                span.attributes.setdefault(key, value)  # the gateway's own usage count wins
            if span.attributes.get(GEN_AI_PROVIDER) == "openai":
                span.attributes.update(_openai_attributes(api, info, request_tier))
        _json_schema(span.attributes)


def enrich_batch(batch: SpanBatch, content: bool = True) -> None:
    """Derive body-based attributes in place, once per batch (see the module docstring).

    The root span of a trace carries the bodies and keeps the ``tfy.*`` ones (short hand,
    assembled output); request parameters and input content go on every CLIENT span (each
    attempt sent them), the output content and response attributes on the one that answered.
    ``content=False`` (every destination excludes request data) skips the content attributes.
    """
    by_trace: dict[bytes, list[Span]] = {}
    for span in batch.spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    for spans in by_trace.values():
        clients = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
        for root in spans:
            if root.kind == SPAN_KIND_SERVER:
                # An AgentResponse trace's model calls each carry their own content (expand_agent).
                agent = root.attributes.get(TFY_SPAN_TYPE) == "AgentResponse"
                try:
                    _enrich_trace(root, [] if agent else clients, content)
                except Exception:  # one odd trace costs its own body attributes, not the batch
                    genai.COUNTERS["exception"] += 1
                    if genai.COUNTERS["exception"] == 1:
                        log.exception(
                            "exporter: deriving body attributes of a trace failed (counted from now on)"
                        )
