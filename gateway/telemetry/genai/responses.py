"""OpenAI Responses API → GenAI content.

``instructions`` becomes ``gen_ai.system_instructions`` (the API carries it apart from the
input). ``input`` is a string or a list of items: messages (``input_text``, ``input_image``,
``input_file``, ``input_audio``, ``output_text``, ``refusal`` content), ``function_call`` →
an assistant ``tool_call``, ``function_call_output`` → a ``tool`` message with a
``tool_call_response``, ``reasoning`` → ``reasoning``; other items (built-in tool calls, item
references) pass through as generic parts. Consecutive items of one role share a message.
The response's ``output`` items are one generation, hence one output message. A stream's final
``response.completed`` (or ``incomplete`` / ``failed``) event carries the whole response.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.telemetry.genai.common import (
    ResponseInfo,
    as_dict,
    as_int,
    as_list,
    as_str,
    audio_mime,
    decode_object,
    file_part,
    media_part,
    parse_arguments,
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
    "responses_input",
    "responses_output",
    "responses_response_info",
    "tool_definitions",
]

_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# incomplete_details.reason -> the spec's finish reason ("interrupted": a stream cut short).
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter", "interrupted": "error"}
_JOINING = frozenset(
    {"function_call", "custom_tool_call", "function_call_output", "custom_tool_call_output", "reasoning"}
)


def _content_part(p: Any) -> Part:
    if isinstance(p, str):
        return TextPart(p)
    if not isinstance(p, dict):
        return generic(p)
    kind = p.get("type")
    if kind in ("input_text", "output_text", "text") and isinstance(p.get("text"), str):
        return TextPart(p["text"])
    if kind == "refusal" and isinstance(p.get("refusal"), str):
        return {"type": "refusal", "content": p["refusal"]}
    if kind == "input_image":
        if as_str(p.get("image_url")):
            return media_part(p["image_url"], "image")
        if as_str(p.get("file_id")):
            return file_part(p["file_id"], "image")
    elif kind == "input_file":
        if as_str(p.get("file_id")):
            return file_part(p["file_id"], "document")
        if as_str(p.get("file_data")):
            data = p["file_data"]
            return (
                media_part(data, "document")
                if data.startswith("data:")
                else BlobPart(modality="document", content=data)
            )
        if as_str(p.get("file_url")):
            return media_part(p["file_url"], "document")
    elif kind == "input_audio":
        audio = as_dict(p.get("input_audio"))
        if as_str(audio.get("data")):
            return BlobPart(
                modality="audio", mime_type=audio_mime(audio.get("format")), content=audio["data"]
            )
    return generic(p)


def _reasoning_text(item: dict[str, Any]) -> str:
    texts = [str(s.get("text", "")) for s in as_list(item.get("content")) if isinstance(s, dict)]
    if not any(texts):
        texts = [str(s.get("text", "")) for s in as_list(item.get("summary")) if isinstance(s, dict)]
    return "\n".join(t for t in texts if t)


def _item(item: Any) -> tuple[str, list[Part]]:
    """The role and parts one input or output item stands for."""
    if isinstance(item, str):
        return "user", [TextPart(item)]
    if not isinstance(item, dict):
        degraded("message")
        return "user", [generic(item)]
    kind = item.get("type", "message")
    if kind == "message" or (kind is None and "role" in item):
        content = item.get("content")
        if isinstance(content, str):
            parts: list[Part] = [TextPart(content)]
        else:
            parts = [_content_part(p) for p in as_list(content)]
        return as_str(item.get("role")) or "user", parts
    if kind == "function_call" and as_str(item.get("name")):
        call = ToolCallRequestPart(
            id=as_str(item.get("call_id")),
            name=item["name"],
            arguments=parse_arguments(item.get("arguments")),
        )
        return "assistant", [call]
    if kind == "custom_tool_call" and as_str(item.get("name")):
        return "assistant", [
            ToolCallRequestPart(
                id=as_str(item.get("call_id")), name=item["name"], arguments=item.get("input")
            )
        ]
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, list):
            if all(isinstance(p, dict) and p.get("type") in ("input_text", "output_text") for p in output):
                output = "".join(str(p.get("text", "")) for p in output)
            else:
                output = [_content_part(p) for p in output]
        return "tool", [ToolCallResponsePart(id=as_str(item.get("call_id")), response=output)]
    if kind == "reasoning":
        text = _reasoning_text(item)
        return "assistant", [ReasoningPart(text)] if text else [{"type": "reasoning_encrypted"}]
    # Built-in tool calls, MCP items, item references: the provider's own shapes.
    return as_str(item.get("role")) or ("user" if kind == "item_reference" else "assistant"), [generic(item)]


def _messages(items: list[Any]) -> list[InputMessage]:
    out: list[InputMessage] = []
    for item in items:
        role, parts = _item(item)
        # Calls, results and reasoning join the previous message of their role (one assistant
        # turn that called two tools is one message); messages and anything else start one.
        joins = isinstance(item, dict) and item.get("type") in _JOINING
        if out and joins and out[-1].role == role:
            out[-1].parts.extend(parts)
        else:
            out.append(InputMessage(role=role, parts=parts))
    return out


def tool_definitions(tools: Any) -> list[ToolDefinition] | None:
    """Responses tools are already flat; built-in ones (``web_search``, ``mcp``) are named by type."""
    out = []
    for t in as_list(tools):
        t = as_dict(t)
        kind = as_str(t.get("type"))
        if kind is None:
            degraded("tool_definition")
            continue
        name = as_str(t.get("name")) or as_str(t.get("server_label")) or kind
        out.append(
            ToolDefinition(
                type=kind, name=name, description=as_str(t.get("description")),
                parameters=t.get("parameters") if kind == "function" else None,
            )
        )  # fmt: skip
    return out or None


def responses_input(body: bytes | dict[str, Any] | None) -> Content:
    """System instructions, input messages and tool definitions of a Responses request."""
    doc = body if isinstance(body, dict) else decode_object(body)
    if doc is None:
        return Content()
    instructions = doc.get("instructions")
    system: list[Part] | None = None
    if isinstance(instructions, str) and instructions:
        system = [TextPart(instructions)]
    elif isinstance(instructions, list) and instructions:  # a prompt template's items
        system = [p for m in _messages(instructions) for p in m.parts]
    inp = doc.get("input")
    if isinstance(inp, str):
        messages: list[InputMessage] | None = [InputMessage(role="user", parts=[TextPart(inp)])]
    elif isinstance(inp, list):
        messages = _messages(inp)
    else:
        messages = None
        if inp is not None:
            degraded("messages")
    return Content(
        input_messages=messages,
        system_instructions=system,
        tool_definitions=tool_definitions(doc.get("tools")),
    )


def _finish(doc: dict[str, Any], parts: list[Part]) -> str:
    status = doc.get("status")
    if status == "incomplete":
        reason = as_dict(doc.get("incomplete_details")).get("reason")
        return _INCOMPLETE.get(str(reason), str(reason or "length"))
    if status == "failed" or doc.get("error"):
        return "error"
    if any(isinstance(p, ToolCallRequestPart) for p in parts):
        return "tool_call"
    return "stop" if status in ("completed", None) else str(status)


def responses_output(doc: dict[str, Any] | None) -> list[OutputMessage] | None:
    """The output items of a decoded response, as one assistant message."""
    if doc is None or not isinstance(doc.get("output"), list):
        return None
    parts = [p for item in doc["output"] for p in _item(item)[1]]
    return [OutputMessage(role="assistant", parts=parts, finish_reason=_finish(doc, parts))]


def responses_response_info(doc: dict[str, Any] | None) -> ResponseInfo:
    """Id, model, status and usage (cached and reasoning tokens) of a response object."""
    if doc is None:
        return ResponseInfo()
    usage = as_dict(doc.get("usage"))
    out = responses_output(doc) if doc.get("status") else None
    reasons = [out[0].finish_reason] if out else []
    return ResponseInfo(
        id=as_str(doc.get("id")),
        model=as_str(doc.get("model")),
        finish_reasons=reasons,
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_tokens=as_int(as_dict(usage.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=as_int(as_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
        service_tier=as_str(doc.get("service_tier")),
    )


def assemble_stream(chunks: Iterable[bytes]) -> dict[str, Any] | None:
    """The response object a Responses stream ends with (``None`` if it never began).

    The final event (``response.completed`` / ``incomplete`` / ``failed``) carries it whole;
    a stream cut before that gives the ``response.created`` object with the items finished so
    far (``response.output_item.done``), or the text deltas when no item finished."""
    response: dict[str, Any] | None = None
    items: dict[int, Any] = {}
    deltas: list[str] = []
    for ev in json_events(chunks):
        kind = ev.get("type")
        if kind in _FINAL_EVENTS and isinstance(ev.get("response"), dict):
            return ev["response"]
        if kind in ("response.created", "response.in_progress") and isinstance(ev.get("response"), dict):
            response = dict(ev["response"])
        elif kind == "response.output_item.done" and isinstance(ev.get("item"), dict):
            items[as_int(ev.get("output_index")) or len(items)] = ev["item"]
        elif kind == "response.output_text.delta" and isinstance(ev.get("delta"), str):
            deltas.append(ev["delta"])
    if response is None and not items and not deltas:
        return None
    response = response or {}
    output = [items[i] for i in sorted(items)]
    if not output and deltas:
        output = [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(deltas)}],
            }
        ]
    response["output"] = output
    response["status"] = "incomplete"  # it never said it completed
    response.setdefault("incomplete_details", {"reason": "interrupted"})
    return response
