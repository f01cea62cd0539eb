"""Anthropic Messages API → GenAI content.

``system`` (a string or text blocks) becomes ``gen_ai.system_instructions``: the API carries it
apart from the history. Content blocks map to parts: ``text``, ``image`` / ``document``
(base64 → ``blob``, url → ``uri``, file → ``file``), ``tool_use`` → ``tool_call``,
``tool_result`` → ``tool_call_response`` (the role stays ``user``, as sent), ``thinking`` →
``reasoning``; server tool blocks and anything newer pass through as generic parts. A stream's
events are merged back into the message they describe (:func:`assemble_stream`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.telemetry.genai.common import (
    DECODE_ERRORS,
    ResponseInfo,
    as_dict,
    as_int,
    as_list,
    as_str,
    decode_object,
    file_part,
    finish_reason,
    media_part,
    modality_of,
)
from gateway.telemetry.genai.openai import json_events
from gateway.telemetry.genai.parts import (
    BlobPart,
    Content,
    InputMessage,
    OutputMessage,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallRequestPart,
    ToolCallResponsePart,
    ToolDefinition,
    degraded,
    generic,
)

__all__ = [
    "assemble_stream",
    "messages_input",
    "messages_output",
    "messages_response_info",
    "tool_definitions",
]


def _source_part(block: dict[str, Any], modality: str) -> Part:
    src = as_dict(block.get("source"))
    kind = src.get("type")
    mime = as_str(src.get("media_type"))
    if kind == "base64" and as_str(src.get("data")):
        return BlobPart(modality=modality_of(mime, modality), mime_type=mime, content=src["data"])
    if kind == "url" and as_str(src.get("url")):
        return media_part(src["url"], modality, mime)
    if kind == "file" and as_str(src.get("file_id")):
        return file_part(src["file_id"], modality, mime)
    if kind == "text" and isinstance(src.get("data"), str):  # a plain-text document
        return TextPart(src["data"])
    return generic(block)


def _tool_result(content: Any) -> Any:
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "".join(str(b.get("text", "")) for b in content)
    if isinstance(content, list):
        return [_block(b) for b in content]
    return content


def _block(b: Any) -> Part:
    if isinstance(b, str):
        return TextPart(b)
    if not isinstance(b, dict):
        return generic(b)
    kind = b.get("type")
    if kind == "text" and isinstance(b.get("text"), str):
        return TextPart(b["text"])
    if kind == "image":
        return _source_part(b, "image")
    if kind == "document":
        return _source_part(b, "document")
    if kind == "tool_use" and as_str(b.get("name")):
        return ToolCallRequestPart(id=as_str(b.get("id")), name=b["name"], arguments=b.get("input"))
    if kind == "tool_result":
        response = _tool_result(b.get("content"))
        part = ToolCallResponsePart(id=as_str(b.get("tool_use_id")), response=response)
        return part
    if kind == "thinking" and isinstance(b.get("thinking"), str):
        return ReasoningPart(b["thinking"])
    if kind == "redacted_thinking":  # encrypted: only its presence is worth showing
        return {"type": "redacted_thinking"}
    return generic(b)


def _blocks(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if isinstance(content, list):
        return [_block(b) for b in content]
    if content is None:
        return []
    return [generic(content)]


def tool_definitions(tools: Any) -> list[ToolDefinition] | None:
    """Client tools (``input_schema``) as functions; server tools (``web_search_…``) by type."""
    out = []
    for t in as_list(tools):
        t = as_dict(t)
        name = as_str(t.get("name"))
        if name is None:
            degraded("tool_definition")
            continue
        kind = as_str(t.get("type"))
        if kind is None or kind == "custom" or "input_schema" in t:
            out.append(
                ToolDefinition(
                    type="function", name=name, description=as_str(t.get("description")),
                    parameters=t.get("input_schema"),
                )
            )  # fmt: skip
        else:
            out.append(ToolDefinition(type=kind, name=name))
    return out or None


def messages_input(body: bytes | dict[str, Any] | None) -> Content:
    """System instructions, input messages and tool definitions of a Messages request."""
    doc = body if isinstance(body, dict) else decode_object(body)
    if doc is None:
        return Content()
    system = doc.get("system")
    instructions = _blocks(system) if system else None
    messages = doc.get("messages")
    inputs = None
    if isinstance(messages, list):
        inputs = []
        for m in messages:
            if isinstance(m, dict):
                inputs.append(
                    InputMessage(role=as_str(m.get("role")) or "unknown", parts=_blocks(m.get("content")))
                )
            else:
                degraded("message")
                inputs.append(InputMessage(role="unknown", parts=[generic(m)]))
    else:
        degraded("messages")
    return Content(
        input_messages=inputs,
        system_instructions=instructions,
        tool_definitions=tool_definitions(doc.get("tools")),
    )


def messages_output(doc: dict[str, Any] | None) -> list[OutputMessage] | None:
    """The one output message of a decoded Messages response."""
    if doc is None or not isinstance(doc.get("content"), list):
        return None
    return [
        OutputMessage(
            role=as_str(doc.get("role")) or "assistant",
            parts=_blocks(doc["content"]),
            finish_reason=finish_reason(doc.get("stop_reason")),
        )
    ]


def messages_response_info(doc: dict[str, Any] | None) -> ResponseInfo:
    """Id, model, stop reason and usage; input tokens include cache reads and writes."""
    if doc is None:
        return ResponseInfo()
    usage = as_dict(doc.get("usage"))
    base = as_int(usage.get("input_tokens"))
    read = as_int(usage.get("cache_read_input_tokens"))
    created = as_int(usage.get("cache_creation_input_tokens"))
    total = (
        None
        if base is None and read is None and created is None
        else (base or 0) + (read or 0) + (created or 0)
    )
    reason = as_str(doc.get("stop_reason"))
    return ResponseInfo(
        id=as_str(doc.get("id")),
        model=as_str(doc.get("model")),
        finish_reasons=[reason] if reason else [],
        input_tokens=total,
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_tokens=read,
        cache_creation_tokens=created,
        service_tier=as_str(usage.get("service_tier")),
    )


def assemble_stream(chunks: Iterable[bytes]) -> dict[str, Any] | None:
    """Merge Messages stream events into the message object they describe (``None`` if none).

    ``message_start`` gives the message, ``content_block_start`` / ``_delta`` build each block
    (text, thinking and ``input_json_delta`` fragments concatenated, tool input parsed at the
    end), ``message_delta`` the stop reason and the final usage.
    """
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    for ev in json_events(chunks):
        kind = ev.get("type")
        if kind == "message_start" and isinstance(ev.get("message"), dict):
            message = dict(ev["message"])
            message["usage"] = dict(as_dict(message.get("usage")))
        elif kind == "content_block_start" and isinstance(ev.get("content_block"), dict):
            blocks[as_int(ev.get("index")) or 0] = dict(ev["content_block"])
        elif kind == "content_block_delta":
            index = as_int(ev.get("index")) or 0
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = as_dict(ev.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = str(block.get("text") or "") + str(delta.get("text", ""))
            elif dtype == "thinking_delta":
                block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking", ""))
            elif dtype == "input_json_delta":
                partial.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            if message is None:
                message = {"role": "assistant", "usage": {}}
            delta = as_dict(ev.get("delta"))
            if "stop_reason" in delta:
                message["stop_reason"] = delta["stop_reason"]
            message["usage"].update(as_dict(ev.get("usage")))  # cumulative counts
    if message is None and not blocks:
        return None
    if message is None:
        message = {"role": "assistant"}
    for index, fragments in partial.items():
        text = "".join(fragments)
        try:
            blocks[index]["input"] = msgspec.json.decode(text) if text else {}
        except DECODE_ERRORS:
            blocks[index]["input"] = text  # cut short: keep what arrived
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message
