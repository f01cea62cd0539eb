"""Responses API ↔ chat-completions hub: pure translation, no I/O.

A Responses request becomes a chat-completions request (the hub shape every provider adapter
speaks); a chat completion becomes a Response object. Streams are in :mod:`.stream`.

Request mapping:

    instructions                     → a leading system message (never carried across a chain)
    input: "text"                    → one user message
    input items  message             → a chat message (input_text / output_text → text parts,
                                       input_image → image_url part, input_file with file_data →
                                       file part; developer → system)
                 function_call       → assistant tool_calls (consecutive calls share one message)
                 function_call_output→ a tool message
                 reasoning, mcp_list_tools, mcp_approval_request → skipped: the model's or the
                                       gateway's own output echoed back, nothing a chat model reads
    tools        function            → chat function tools; built-in tools → 400 naming
                                       ``tools[i].type`` unless the operator lists them to drop
    tool_choice, parallel_tool_calls, temperature, top_p, user → same names
    text.format                      → response_format; text.verbosity → verbosity
    reasoning.effort                 → reasoning_effort (summaries are a display preference)
    max_output_tokens                → max_completion_tokens
    stream                           → stream + stream_options.include_usage

Anything else a chat target cannot honour is refused with a 400 naming the field.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from gateway.errors import InvalidRequest

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# Request fields the gateway itself serves (never sent to a chat target).
GATEWAY_FIELDS = frozenset(
    {
        "model",
        "input",
        "store",
        "stream",
        "stream_options",
        "previous_response_id",
        "metadata",
        "include",
        "truncation",
        "max_tool_calls",
        "background",
        "prompt_cache_retention",
    }
)
# Request fields translated into the hub request.
TRANSLATED_FIELDS = frozenset(
    {
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
    }
)


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``resp_…``, ``msg_…``, ``fc_…``): prefix and 32 hex digits."""
    return f"{prefix}_{os.urandom(16).hex()}"


# --- input items ---------------------------------------------------------------------------------


def normalize_input(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items, each with a ``type`` (and an id for messages).

    Raises:
        InvalidRequest: ``input`` is neither a string nor a list of objects, or an item is malformed.
    """
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # EasyInputMessage: {"role", "content"} without a type
        if not isinstance(kind, str):
            raise InvalidRequest(f"input[{i}] has no 'type'", param=f"input[{i}].type")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"input[{i}].role {role!r} is not a valid role", param=f"input[{i}].role"
                )
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if role == "assistant" else "input_text"
                content = [{"type": part, "text": content}]
            elif not isinstance(content, list):
                raise InvalidRequest(
                    f"input[{i}].content must be a string or an array", param=f"input[{i}].content"
                )
            msg = _message_item(role, content, item.get("id"))
            items.append(msg)
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise InvalidRequest(f"input[{i}].{key} must be a string", param=f"input[{i}].{key}")
            items.append(item)
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequest(f"input[{i}].call_id must be a string", param=f"input[{i}].call_id")
            if not isinstance(item.get("output"), (str, list)):
                raise InvalidRequest(
                    f"input[{i}].output must be a string or an array", param=f"input[{i}].output"
                )
            items.append(item)
        else:
            items.append(item)
    return items


def _message_item(role: str, content: list[Any], item_id: Any = None) -> dict[str, Any]:
    return {
        "id": item_id if isinstance(item_id, str) else new_id("msg"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


def _user_parts(content: list[Any], at: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"{where}: only images given by image_url can be sent to this model", param=where
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file: dict[str, Any] = {"file_data": part["file_data"]}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise InvalidRequest(f"{where}: content part type {kind!r} is not supported", param=where)
    return parts


def _text(content: list[Any], at: str) -> str:
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidRequest(f"{at}[{j}] must be an object", param=f"{at}[{j}]")
        kind = part.get("type")
        if kind in ("output_text", "input_text", "text"):
            out.append(part.get("text", ""))
        elif kind == "refusal":
            out.append(part.get("refusal", ""))
        else:
            raise InvalidRequest(
                f"{at}[{j}]: content part type {kind!r} is not supported", param=f"{at}[{j}]"
            )
    return "".join(out)


def items_to_messages(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Chat messages for a list of Responses items (see the module docstring for the mapping).

    Raises:
        InvalidRequest: naming ``input[i]…`` for an item or part no chat model can take.
    """
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"{param}[{i}]"
        kind = item.get("type")
        if kind == "message":
            role, content = item["role"], item["content"]
            if role == "assistant":
                text = _text(content, f"{at}.content")
                _assistant(messages)["content"] = (_assistant(messages).get("content") or "") + text
            elif role in ("system", "developer"):
                messages.append({"role": "system", "content": _text(content, f"{at}.content")})
            else:
                messages.append({"role": "user", "content": _user_parts(content, at)})
        elif kind in ("function_call", "mcp_call"):
            call = {
                "id": item.get("call_id") or item.get("id") or "",
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"},
            }
            _assistant(messages).setdefault("tool_calls", []).append(call)
            if kind == "mcp_call":
                result = item.get("output")
                if result is None:
                    err = item.get("error")
                    result = f"error: {err}" if err else ""
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": str(result)})
        elif kind == "function_call_output":
            output = item["output"]
            if isinstance(output, list):
                output = _text(output, f"{at}.output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        elif kind in ("reasoning", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response"):
            continue  # echoed output of the model or of the gateway's own loop
        else:
            raise InvalidRequest(f"{at}: input item type {kind!r} is not supported", param=f"{at}.type")
    return messages


def _assistant(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message at the end of ``messages`` (text and tool calls of one turn share it)."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[-1]
    msg: dict[str, Any] = {"role": "assistant", "content": None}
    messages.append(msg)
    return msg


# --- request -------------------------------------------------------------------------------------


def _tools(tools: Any, drop: frozenset[str], dropped: list[str], model: str) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{i}] must be an object", param=f"tools[{i}]")
        kind = tool.get("type")
        if kind == "function":
            if not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"tools[{i}].name must be a string", param=f"tools[{i}].name")
            fn: dict[str, Any] = {"name": tool["name"]}
            for key in ("description", "parameters", "strict"):
                if tool.get(key) is not None:
                    fn[key] = tool[key]
            out.append({"type": "function", "function": fn})
        elif kind == "mcp":
            continue  # run by the gateway's agent loop, never sent upstream
        elif isinstance(kind, str) and kind in drop:
            dropped.append(kind)
        else:
            raise InvalidRequest(
                f"tools[{i}]: tool type {kind!r} is not supported by '{model}' (served through chat "
                "completions); the gateway operator may list it in responses.drop_builtin_tools",
                param=f"tools[{i}].type",
                code="unsupported_tool",
            )
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("unsupported 'tool_choice' for a chat-completions target", param="tool_choice")


def _response_format(text: Any) -> tuple[dict[str, Any] | None, Any]:
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    fmt = text.get("format")
    verbosity = text.get("verbosity")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None, verbosity
    if not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object", param="text.format")
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}, verbosity
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}, verbosity
    raise InvalidRequest(f"unsupported text.format type {fmt.get('type')!r}", param="text.format.type")


def to_chat_request(
    body: dict[str, Any],
    history: list[dict[str, Any]],
    items: list[dict[str, Any]],
    upstream_model: str,
    drop_tools: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[str]]:
    """The hub (chat-completions) request for a Responses request and the built-in tools dropped.

    Args:
        body: the decoded Responses request.
        history: items of the ``previous_response_id`` chain (inputs and outputs), oldest first.
        items: this request's input items (:func:`normalize_input`).
        upstream_model: the model name the provider knows.
        drop_tools: built-in tool types the operator allows to drop for translated targets.

    Raises:
        InvalidRequest: naming the field a chat-completions target cannot honour.
    """
    for key in body:
        if key not in GATEWAY_FIELDS and key not in TRANSLATED_FIELDS:
            raise InvalidRequest(
                f"parameter '{key}' is not supported for '{body.get('model')}' (served through chat "
                "completions)",
                param=key,
                code="unsupported_parameter",
            )
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    if history:
        messages.extend(items_to_messages(history, "previous_response_id"))
    messages.extend(items_to_messages(items))
    chat: dict[str, Any] = {"model": upstream_model, "messages": messages}
    dropped: list[str] = []
    if body.get("tools"):
        tools = _tools(body["tools"], drop_tools, dropped, str(body.get("model")))
        if tools:
            chat["tools"] = tools
            if body.get("tool_choice") is not None:
                chat["tool_choice"] = _tool_choice(body["tool_choice"])
            if body.get("parallel_tool_calls") is not None:
                chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("text") is not None:
        fmt, verbosity = _response_format(body["text"])
        if fmt is not None:
            chat["response_format"] = fmt
        if verbosity is not None:
            chat["verbosity"] = verbosity
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "prompt_cache_key", "service_tier"):
        if body.get(key) is not None:
            chat[key] = body[key]
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str):
        chat["user"] = user
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, dropped


# --- response ------------------------------------------------------------------------------------

_ECHO = ("instructions", "max_output_tokens", "max_tool_calls", "previous_response_id", "reasoning",
         "temperature", "top_p", "truncation", "user", "safety_identifier", "prompt_cache_key",
         "service_tier")  # fmt: skip


def skeleton(body: dict[str, Any], resp_id: str, created_at: int, status: str) -> dict[str, Any]:
    """A Response object without output: the request's settings echoed as OpenAI does."""
    obj: dict[str, Any] = {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "store": body.get("store", True) is not False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "usage": None,
    }
    for key in _ECHO:
        obj[key] = body.get(key)
    if obj["truncation"] is None:
        obj["truncation"] = "disabled"
    return obj


def usage_of_chat(usage: Any) -> dict[str, Any] | None:
    """Responses ``usage`` (with the token details objects) from a chat ``usage``."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def finish_status(finish: str | None) -> tuple[str, dict[str, str] | None]:
    """Response ``status`` and ``incomplete_details`` for a chat ``finish_reason``."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    """An output ``message`` item with its text and/or refusal part."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """An output ``reasoning`` item carrying the provider's reasoning text."""
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """An output ``function_call`` item."""
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_output(chat: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Output items and ``finish_reason`` of a chat completion's first choice."""
    choices = chat.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return [], None
    choice = choices[0]
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(new_id("rs"), reasoning))
    text, refusal = msg.get("content"), msg.get("refusal")
    if text or refusal:
        output.append(message_item(new_id("msg"), text or None, refusal or None, "completed"))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"), call.get("id") or new_id("call"), fn.get("name", ""),
                fn.get("arguments") or "", "completed",
            )
        )  # fmt: skip
    return output, choice.get("finish_reason")


def chat_to_response(
    chat_body: bytes, body: dict[str, Any], resp_id: str, created_at: int | None = None
) -> dict[str, Any]:
    """The Response object for a (non-streamed) chat completion answering ``body``."""
    try:
        chat = _decode(chat_body)
    except msgspec.DecodeError:
        chat = {}
    if not isinstance(chat, dict):
        chat = {}
    output, finish = chat_to_output(chat)
    status, incomplete = finish_status(finish)
    obj = skeleton(body, resp_id, int(time.time()) if created_at is None else created_at, status)
    obj["output"] = output
    obj["incomplete_details"] = incomplete
    obj["usage"] = usage_of_chat(chat.get("usage"))
    obj["completed_at"] = int(time.time()) if status == "completed" else None
    return obj


def output_text(response: dict[str, Any]) -> str:
    """The concatenated ``output_text`` of a Response object (what SDKs call ``output_text``)."""
    return "".join(
        part.get("text", "")
        for item in response.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


def encode(obj: Any) -> bytes:
    """JSON bytes (msgspec)."""
    return _encode(obj)


def decode(data: bytes) -> Any:
    """Decoded JSON (msgspec); raises ``msgspec.DecodeError``."""
    return _decode(data)
