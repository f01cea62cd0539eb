"""GenAI semantic-convention content of a model call, from the bytes the gateway recorded.

Pure functions, run by the exporter (never on the request path), for every API the gateway
speaks: ``chat`` (OpenAI chat completions), ``completions`` (legacy), ``embeddings``,
``messages`` (Anthropic Messages) and ``responses`` (OpenAI Responses). Any surface that builds
a model-call span calls them the same way::

    from gateway.telemetry import genai

    attrs = genai.model_call_attributes("messages", request_body, response_body=body)
    attrs = genai.model_call_attributes("responses", request_body, sse=events)
    span.attributes.update(attrs)

which gives ``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions`` (only for APIs that carry it apart: Anthropic ``system``,
Responses ``instructions``), ``gen_ai.tool.definitions`` (JSON strings in the parts format of
semconv v1.41.1), ``logfire.json_schema`` naming them as arrays, and the response's
``gen_ai.response.*`` / ``gen_ai.usage.*`` (cache and reasoning tokens included). The steps are
public too (:func:`request_content`, :func:`assemble`, :func:`output_messages`,
:func:`response_info`, :func:`content_attributes`, :func:`response_attributes`).

Nothing here raises on malformed input: an unreadable part becomes a generic part, an
unreadable body gives no attribute, and both are counted in :data:`COUNTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from gateway.telemetry.genai import anthropic, openai, responses
from gateway.telemetry.genai.common import ResponseInfo, decode_object
from gateway.telemetry.genai.parts import (
    COUNTERS,
    BlobPart,
    Content,
    FilePart,
    InputMessage,
    OutputMessage,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallRequestPart,
    ToolCallResponsePart,
    ToolDefinition,
    UriPart,
)
from gateway.telemetry.spans import (
    GEN_AI_CACHE_CREATION_TOKENS,
    GEN_AI_CACHE_READ_TOKENS,
    GEN_AI_FINISH_REASONS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_REASONING_TOKENS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_TOOL_DEFINITIONS,
    LOGFIRE_JSON_SCHEMA,
)

__all__ = [
    "API_BY_PATH",
    "COUNTERS",
    "BlobPart",
    "Content",
    "FilePart",
    "InputMessage",
    "OutputMessage",
    "Part",
    "ReasoningPart",
    "ResponseInfo",
    "TextPart",
    "ToolCallRequestPart",
    "ToolCallResponsePart",
    "ToolDefinition",
    "UriPart",
    "assemble",
    "content_attributes",
    "encode",
    "json_schema",
    "model_call_attributes",
    "output_messages",
    "request_content",
    "response_attributes",
    "response_info",
]

# The inbound path of each API the gateway serves (surfaces add theirs here).
API_BY_PATH: Final[dict[str, str]] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}

Doc = dict[str, Any]

_REQUEST: Final[dict[str, Callable[[bytes | Doc | None], Content]]] = {
    "chat": openai.chat_input,
    "completions": openai.completions_input,
    "messages": anthropic.messages_input,
    "responses": responses.responses_input,
}
_OUTPUT: Final[dict[str, Callable[[Doc | None], list[OutputMessage] | None]]] = {
    "chat": openai.chat_output,
    "completions": openai.completions_output,
    "messages": anthropic.messages_output,
    "responses": responses.responses_output,
}
_INFO: Final[dict[str, Callable[[Doc | None], ResponseInfo]]] = {
    "chat": openai.chat_response_info,
    "completions": openai.chat_response_info,
    "embeddings": openai.chat_response_info,
    "messages": anthropic.messages_response_info,
    "responses": responses.responses_response_info,
}

_encode = msgspec.json.Encoder().encode


def request_content(api: str, body: bytes | Doc | None) -> Content:
    """Input messages, system instructions and tool definitions of a request body.

    Embeddings (and unknown APIs) carry no messages: an empty :class:`Content`."""
    mapper = _REQUEST.get(api)
    return mapper(body) if mapper is not None else Content()


def assemble(api: str, sse: bytes, usage: tuple[int | None, int | None] | None = None) -> Doc | None:
    """The response object a stream's events (bytes as relayed) stand for, or ``None``.

    ``usage`` = (input, output tokens) overrides the stream's own numbers (chat: when the
    relay removed the usage event before the events were kept)."""
    if api in ("chat", "completions"):
        return openai.assemble_chat_stream([sse], usage)
    if api == "messages":
        return anthropic.assemble_stream([sse])
    if api == "responses":
        return responses.assemble_stream([sse])
    return None


def output_messages(api: str, doc: Doc | None) -> list[OutputMessage] | None:
    """One output message per choice of a decoded response (``None`` for embeddings)."""
    mapper = _OUTPUT.get(api)
    return mapper(doc) if mapper is not None else None


def response_info(api: str, doc: Doc | None) -> ResponseInfo:
    """Id, model, finish reasons and token usage of a decoded response."""
    mapper = _INFO.get(api)
    return mapper(doc) if mapper is not None else ResponseInfo()


_schemas: dict[tuple[str, ...], str] = {}


def encode(value: Any) -> str:
    """JSON text of parts, messages or definitions (what the content attributes hold)."""
    return _encode(value).decode()


def json_schema(keys: tuple[str, ...]) -> str:
    """``logfire.json_schema``: the named attributes are JSON arrays (cached per key set)."""
    schema = _schemas.get(keys)
    if schema is None:
        doc = {"type": "object", "properties": {k: {"type": "array"} for k in keys}}
        schema = _schemas[keys] = _encode(doc).decode()
    return schema


def content_attributes(content: Content) -> dict[str, str]:
    """The content attributes (JSON strings) for what ``content`` holds, and their Logfire schema."""
    attrs: dict[str, str] = {}
    if content.input_messages:
        attrs[GEN_AI_INPUT_MESSAGES] = encode(content.input_messages)
    if content.system_instructions:
        attrs[GEN_AI_SYSTEM_INSTRUCTIONS] = encode(content.system_instructions)
    if content.tool_definitions:
        attrs[GEN_AI_TOOL_DEFINITIONS] = encode(content.tool_definitions)
    if content.output_messages:
        attrs[GEN_AI_OUTPUT_MESSAGES] = encode(content.output_messages)
    if attrs:
        attrs[LOGFIRE_JSON_SCHEMA] = json_schema(tuple(attrs))
    return attrs


def response_attributes(info: ResponseInfo) -> dict[str, Any]:
    """``gen_ai.response.*`` and ``gen_ai.usage.*`` for the values the response reported."""
    attrs: dict[str, Any] = {}
    if info.id:
        attrs[GEN_AI_RESPONSE_ID] = info.id
    if info.model:
        attrs[GEN_AI_RESPONSE_MODEL] = info.model
    if info.finish_reasons:
        attrs[GEN_AI_FINISH_REASONS] = info.finish_reasons
    for key, value in (
        (GEN_AI_INPUT_TOKENS, info.input_tokens),
        (GEN_AI_OUTPUT_TOKENS, info.output_tokens),
        (GEN_AI_CACHE_READ_TOKENS, info.cache_read_tokens),
        (GEN_AI_CACHE_CREATION_TOKENS, info.cache_creation_tokens),
        (GEN_AI_REASONING_TOKENS, info.reasoning_tokens),
    ):
        if value is not None:
            attrs[key] = value
    return attrs


def model_call_attributes(
    api: str,
    request_body: bytes | Doc | None,
    response_body: bytes | None = None,
    sse: bytes | None = None,
    *,
    usage: tuple[int | None, int | None] | None = None,
) -> dict[str, Any]:
    """Everything one model-call span derives from its bodies: content and response attributes.

    Args:
        api: ``chat``, ``completions``, ``embeddings``, ``messages`` or ``responses``.
        request_body: the request as the client sent it (bytes, or an already decoded object).
        response_body: the JSON response of a non-streamed call.
        sse: the events of a streamed call, as relayed (takes precedence over ``response_body``).
        usage: token counts the caller already knows, overriding the stream's.
    """
    try:
        content = request_content(api, request_body)
        doc = assemble(api, sse, usage) if sse else decode_object(response_body) if response_body else None
        content.output_messages = output_messages(api, doc)
        return {**content_attributes(content), **response_attributes(response_info(api, doc))}
    except Exception:  # a mapping bug must cost this span's content, never the caller's batch
        COUNTERS["exception"] += 1
        return {}
