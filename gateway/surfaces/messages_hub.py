"""Anthropic Messages ↔ the hub (OpenAI chat completions): pure translation, no I/O.

Used when a ``/v1/messages`` request goes to a target that does not serve the Messages API
(an OpenAI-compatible provider). Every request field is translated or refused with a 400
naming it, never dropped:

    system (string or text blocks, cache_control)  → a system message (caching is automatic
                                                     on OpenAI-type providers, so cache_control
                                                     hints have nothing to do)
    messages[].role user/assistant/system          → the same roles
      text, image (base64, url)                    → text and image_url parts
      document (base64 PDF, plain text)            → file part, text part
      tool_use / tool_result                       → assistant tool_calls / tool messages
      thinking, redacted_thinking (history)        → omitted: chat completions takes no
                                                     reasoning back (equivalent to clearing it)
    max_tokens → max_completion_tokens; stop_sequences → stop; temperature, top_p;
    metadata.user_id → user; stream → stream + usage chunk;
    tools (custom) → function tools; tool_choice auto/any/tool/none, disable_parallel_tool_use;
    thinking enabled (budget) / output_config.effort → reasoning_effort; adaptive, between_tools →
    the provider's default (the model decides when to reason); speed standard;
    output_config.format (json_schema) → response_format; service_tier auto/standard_only;
    context_management: clear_thinking edits hold by construction (see thinking above)

Refused: top_k, server tools, server-tool blocks, documents from URLs or files, other
context_management edits, speed fast, mcp_servers, container, inference_geo, diagnostics,
workspace_id, user_profile_id, and any field this module does not know.

Responses come back as a ``message`` (thinking from ``reasoning_content``/``reasoning``, text,
refusal, tool_use) and streams as the Messages event sequence
(:class:`gateway.surfaces.messages_stream.HubToMessagesStream`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest, UpstreamUnreachable

__all__ = ["STOP_REASONS", "hub_to_message", "message_id", "messages_to_hub", "messages_usage"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
# Ignored on purpose: hints whose effect OpenAI-type providers apply on their own.
_IGNORED = frozenset({"cache_control"})
_CUSTOM_TOOL_KEYS = frozenset({"name", "description", "input_schema", "type", "cache_control", "strict"})


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _text_of_blocks(blocks: Any, param: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"'{param}' must be a string or a list of text blocks", param=param)
    texts = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise _bad(f"'{param}[{i}]': only text blocks can be sent to this model", f"{param}[{i}]")
        texts.append(b.get("text", ""))
    return "\n\n".join(texts)


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    src = block.get("source") or {}
    kind = src.get("type")
    if kind == "base64":
        return {
            "type": "image_url",
            "image_url": {"url": f"data:{src.get('media_type')};base64,{src.get('data')}"},
        }
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": src.get("url")}}
    raise _bad(f"'{param}.source.type' {kind!r} cannot be sent to this model", f"{param}.source.type")


def _document_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    src = block.get("source") or {}
    kind = src.get("type")
    if kind == "base64" and src.get("media_type") == "application/pdf":
        name = block.get("title") or "document.pdf"
        return {
            "type": "file",
            "file": {"filename": name, "file_data": f"data:application/pdf;base64,{src['data']}"},
        }
    if kind == "text":
        return {"type": "text", "text": src.get("data", "")}
    if kind == "content":
        return {"type": "text", "text": _text_of_blocks(src.get("content"), f"{param}.source.content")}
    raise _bad(f"'{param}.source' of type {kind!r} cannot be sent to this model", f"{param}.source")


def _user_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return _image_part(block, param)
    if kind == "document":
        return _document_part(block, param)
    raise _bad(f"'{param}.type' {kind!r} cannot be sent to this model", f"{param}.type")


def _tool_message(block: dict[str, Any], param: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(part.get("text", ""))
            elif kind == "image":
                # Tool messages hold text only: the image follows in a user message.
                images.append(_image_part(part, f"{param}.content[{j}]"))
            elif kind == "document":
                images.append(_document_part(part, f"{param}.content[{j}]"))
            else:
                raise _bad(f"'{param}.content[{j}].type' {kind!r} cannot be sent to this model", param)
        text = "\n\n".join(texts)
    else:
        raise InvalidRequest(f"'{param}.content' must be a string or a list of blocks", param=param)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _messages(raw: Any, out: list[dict[str, Any]]) -> None:
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(f"'{param}' must be an object", param=param)
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"'{param}.role' must be user, assistant or system", param=f"{param}.role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"'{param}.content' must be a string or an array", param=f"{param}.content")
        if role == "system":
            out.append({"role": "system", "content": _text_of_blocks(content, f"{param}.content")})
        elif role == "assistant":
            _assistant(content, param, out)
        else:
            _user(content, param, out)


def _assistant(content: list[Any], param: str, out: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            texts.append(b.get("text", ""))
        elif kind == "tool_use":
            args = _encode(b.get("input", {})).decode()
            calls.append(
                {
                    "id": b.get("id", ""),
                    "type": "function",
                    "function": {"name": b.get("name", ""), "arguments": args},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # see the module docstring: chat completions takes no reasoning back
        else:
            raise _bad(
                f"'{param}.content[{j}].type' {kind!r} cannot be sent to this model",
                f"{param}.content[{j}].type",
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _user(content: list[Any], param: str, out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        if not isinstance(b, dict):
            raise InvalidRequest(f"'{param}.content[{j}]' must be an object", param=f"{param}.content[{j}]")
        if b.get("type") == "tool_result":
            # Tool results answer the previous assistant turn: they come first, as tool messages.
            out.append(_tool_message(b, f"{param}.content[{j}]", parts))
        else:
            parts.append(_user_part(b, f"{param}.content[{j}]"))
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append(
                {
                    "role": "user",
                    "content": "\n\n".join(p["text"] for p in parts) if len(parts) > 1 else parts[0]["text"],
                }
            )
        else:
            out.append({"role": "user", "content": parts})


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise InvalidRequest(f"'tools[{i}]' must be an object", param=f"tools[{i}]")
        kind = t.get("type")
        if kind not in (None, "custom"):
            raise _bad(
                f"'tools[{i}].type' {kind!r}: server tools cannot be used with this model", f"tools[{i}].type"
            )
        extra = set(t) - _CUSTOM_TOOL_KEYS
        if extra:
            key = sorted(extra)[0]
            raise _bad(f"'tools[{i}].{key}' cannot be sent to this model", f"tools[{i}].{key}")
        fn: dict[str, Any] = {
            "name": t.get("name", ""),
            "parameters": t.get("input_schema") or {"type": "object"},
        }
        if t.get("description"):
            fn["description"] = t["description"]
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
        tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(tc: Any, hub: dict[str, Any]) -> None:
    if not isinstance(tc, dict):
        raise InvalidRequest("'tool_choice' must be an object", param="tool_choice")
    kind = tc.get("type")
    if kind == "auto":
        hub["tool_choice"] = "auto"
    elif kind == "any":
        hub["tool_choice"] = "required"
    elif kind == "none":
        hub["tool_choice"] = "none"
    elif kind == "tool":
        hub["tool_choice"] = {"type": "function", "function": {"name": tc.get("name", "")}}
    else:
        raise InvalidRequest(f"'tool_choice.type' {kind!r} is not valid", param="tool_choice.type")
    if tc.get("disable_parallel_tool_use") and kind != "none":
        hub["parallel_tool_calls"] = False


def _effort_of_budget(budget: Any) -> str:
    if not isinstance(budget, int):
        raise InvalidRequest("'thinking.budget_tokens' must be an integer", param="thinking.budget_tokens")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def messages_to_hub(req: dict[str, Any]) -> dict[str, Any]:
    """A Messages request object → a chat completions request object (see the module docstring).

    Raises:
        InvalidRequest: a field with no faithful translation, named in ``param``.
    """
    hub: dict[str, Any] = {"model": req.get("model")}
    messages: list[dict[str, Any]] = []
    if req.get("system") is not None:
        messages.append({"role": "system", "content": _text_of_blocks(req["system"], "system")})
    _messages(req.get("messages"), messages)
    hub["messages"] = messages
    effort: str | None = None
    for key, value in req.items():
        if value is None or key in ("model", "messages", "system") or key in _IGNORED:
            continue
        if key == "max_tokens":
            hub["max_completion_tokens"] = value
        elif key in ("temperature", "top_p"):
            hub[key] = value
        elif key == "stop_sequences":
            hub["stop"] = value
        elif key == "stream":
            hub["stream"] = bool(value)
        elif key == "metadata":
            if isinstance(value, dict) and value.get("user_id") is not None:
                hub["user"] = value["user_id"]
        elif key == "tools":
            if value:
                hub["tools"] = _tools(value)
        elif key == "tool_choice":
            _tool_choice(value, hub)
        elif key == "thinking":
            kind = value.get("type") if isinstance(value, dict) else None
            if kind == "enabled" and effort is None:
                effort = _effort_of_budget(value.get("budget_tokens"))
            elif kind not in ("enabled", "disabled", "adaptive", "between_tools"):
                raise InvalidRequest(f"'thinking.type' {kind!r} is not valid", param="thinking.type")
        elif key == "output_config":
            effort = _output_config(value, hub) or effort
        elif key == "service_tier":
            if value not in ("auto", "standard_only"):
                raise InvalidRequest(f"'service_tier' {value!r} is not valid", param="service_tier")
            hub["service_tier"] = "auto" if value == "auto" else "default"
        elif key == "context_management":
            _context_management(value)
        elif key == "speed":
            if value != "standard":
                raise _bad(f"'speed' {value!r} cannot be honoured by this model's provider", key)
        else:
            raise _bad(f"'{key}' cannot be sent to this model (its provider has no equivalent)", key)
    if "tool_choice" in hub and "tools" not in hub:
        del hub["tool_choice"]  # as Anthropic: a choice without tools constrains nothing
        hub.pop("parallel_tool_calls", None)
    if effort is not None:
        hub["reasoning_effort"] = effort
    return hub


def _output_config(value: Any, hub: dict[str, Any]) -> str | None:
    if not isinstance(value, dict):
        raise InvalidRequest("'output_config' must be an object", param="output_config")
    effort = None
    for key, v in value.items():
        if v is None:
            continue
        if key == "effort":
            if v not in EFFORTS:
                raise InvalidRequest(
                    f"'output_config.effort' {v!r} is not valid", param="output_config.effort"
                )
            effort = EFFORTS[v]
        elif key == "format":
            if not isinstance(v, dict) or v.get("type") != "json_schema":
                raise _bad("'output_config.format' must be a json_schema format", "output_config.format")
            hub["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": v.get("schema") or {}, "strict": True},
            }
        else:
            raise _bad(f"'output_config.{key}' cannot be sent to this model", f"output_config.{key}")
    return effort


def _context_management(value: Any) -> None:
    edits = value.get("edits") if isinstance(value, dict) else None
    for i, edit in enumerate(edits or []):
        kind = edit.get("type", "") if isinstance(edit, dict) else ""
        if not kind.startswith("clear_thinking_"):
            raise _bad(
                f"'context_management.edits[{i}].type' {kind!r} cannot be applied by this model's provider",
                f"context_management.edits[{i}].type",
            )


# --- response -------------------------------------------------------------------------------------


def messages_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Hub ``usage`` → Messages ``usage`` (cached prompt tokens are cache reads)."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.get("completion_tokens") or 0,
    }


def message_id(hub_id: Any) -> str:
    text = str(hub_id or "")
    return text if text.startswith("msg") else f"msg_{text}"


def _tool_input(arguments: Any, name: str) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = _decode(arguments or "{}")
    except msgspec.DecodeError:
        raise UpstreamUnreachable(f"the provider returned invalid JSON arguments for tool '{name}'") from None
    return value


def hub_to_message(body: bytes) -> bytes:
    """A hub ``chat.completion`` body → a Messages ``message`` body."""
    resp = _decode(body)
    choice = (resp.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if msg.get("content"):
        text = msg["content"]
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        content.append({"type": "text", "text": text})
    stop = STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    if msg.get("refusal"):
        content.append({"type": "text", "text": msg["refusal"]})
        stop = "refusal"
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        name = fn.get("name", "")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": name,
                "input": _tool_input(fn.get("arguments"), name),
            }
        )
    return _encode(
        {
            "id": message_id(resp.get("id")),
            "type": "message",
            "role": "assistant",
            "model": resp.get("model", ""),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": messages_usage(resp.get("usage")),
        }
    )
