"""Anthropic Messages API provider: pure translation from and to OpenAI chat completions.

No I/O here. The caller POSTs to :func:`messages_url` with :func:`request_headers`:

    body = encode_request(client_body, entry.upstream_model, entry.override_params)  # -> Anthropic
    # non-stream 2xx:  translate_response(upstream_bytes)                    # Anthropic -> OpenAI
    # stream 2xx:      t = AnthropicStreamTranslator(include_usage=wants_usage(...))
    #                  for chunk in upstream: client.send(t.feed(chunk)); t.done tells a clean end
    # error status:    translate_error(upstream_bytes, status)               # OpenAI error shape

``base_url`` of an anthropic provider may be given with or without the ``/v1`` suffix
(``https://api.anthropic.com`` or ``https://api.anthropic.com/v1``); both reach ``/v1/messages``.

Mapping (request): system/developer messages -> ``system``; user/assistant content parts ->
text and image blocks (``data:`` URLs become base64 sources, others URL sources); assistant
``tool_calls`` -> ``tool_use`` blocks; ``tool`` messages -> ``tool_result`` blocks in a user turn
(consecutive same-role turns are merged, as Anthropic wants alternation); ``tools`` and
``tool_choice`` (auto/none/required/named, ``parallel_tool_calls: false``); ``max_tokens``
(required by Anthropic, default :data:`DEFAULT_MAX_TOKENS`); ``temperature`` (clamped to 1),
``top_p``, ``stop`` -> ``stop_sequences``, ``user`` -> ``metadata.user_id``, ``stream``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.providers.anthropic_params import apply_params

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicStreamTranslator",
    "encode_request",
    "finish_reason",
    "from_anthropic_response",
    "messages_url",
    "request_headers",
    "to_anthropic_request",
    "translate_error",
    "translate_response",
    "wants_usage",
]

ANTHROPIC_VERSION = "2023-06-01"
# The tool the gateway forces for ``response_format`` (gateway.providers.anthropic_params);
# its input is the answer, returned as message content.
JSON_TOOL = "gateway_json_output"
_JSON_BLOCK = -2  # marks JSON_TOOL's block in the stream translator's block map
DEFAULT_MAX_TOKENS = 4096

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def messages_url(base_url: str) -> str:
    """The Messages endpoint under ``base_url`` (with or without a trailing ``/v1``)."""
    base = base_url.rstrip("/")
    return base + "/messages" if base.endswith("/v1") else base + "/v1/messages"


def request_headers(api_key: str | None) -> list[tuple[str, str]]:
    """Headers Anthropic requires (the key goes in ``x-api-key``, not ``authorization``)."""
    headers = [("content-type", "application/json"), ("anthropic-version", ANTHROPIC_VERSION)]
    if api_key:
        headers.append(("x-api-key", api_key))
    return headers


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI ``finish_reason`` of an Anthropic ``stop_reason``."""
    if stop_reason is None:
        return None
    return _FINISH.get(stop_reason, "stop")


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether an OpenAI request asked for a usage chunk (``stream_options.include_usage``)."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


# --- request -----------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise InvalidRequest("message content must be a string or a list of parts", param="messages")


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url.url must be a string", param="messages")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise InvalidRequest("image data URLs must be base64-encoded", param="messages")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document_block(part: Mapping[str, Any]) -> dict[str, Any]:
    file: Any = part.get("file")
    if not isinstance(file, dict):
        file = {}
    data = file.get("file_data")
    if not isinstance(data, str) or not data.startswith("data:application/pdf;base64,"):
        raise InvalidRequest(
            "file parts must carry a base64 PDF in file_data for anthropic (file_id is not supported)",
            param="messages",
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data.partition(",")[2]},
    }
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts", param="messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            raise InvalidRequest("content parts must be objects", param="messages")
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        elif kind == "file":
            blocks.append(_document_block(part))
        else:
            raise InvalidRequest(
                f"content part type {kind!r} is not supported by anthropic", param="messages"
            )
    return blocks


def _tool_use_blocks(tool_calls: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for call in tool_calls or []:
        fn = call.get("function") or {}
        args = fn.get("arguments") or "{}"
        try:
            parsed = _decode(args) if isinstance(args, str) else args
        except msgspec.DecodeError:
            raise InvalidRequest("tool_calls[].function.arguments must be JSON", param="messages") from None
        blocks.append(
            {"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": parsed}
        )
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise InvalidRequest("only function tools are supported by anthropic", param="tools")
        t: dict[str, Any] = {
            "name": fn.get("name", ""),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            t["description"] = fn["description"]
        if fn.get("strict"):
            t["strict"] = True  # Anthropic's strict tool use: inputs follow the schema exactly
        if t["name"] == JSON_TOOL:
            raise InvalidRequest(f"the tool name '{JSON_TOOL}' is reserved by the gateway", param="tools")
        out.append(t)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    tc: dict[str, Any] | None
    if choice is None:
        tc = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        tc = {"type": "auto"}
    elif choice == "none":
        tc = {"type": "none"}
    elif choice == "required":
        tc = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tc = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        raise InvalidRequest("unsupported tool_choice", param="tool_choice")
    if tc is not None and parallel is False and tc["type"] != "none":
        tc["disable_parallel_tool_use"] = True
    return tc


def to_anthropic_request(
    body: Mapping[str, Any], model: str | None = None, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """Translate an OpenAI chat completion request (decoded JSON) into a Messages request.

    Args:
        body: the client's request object.
        model: the upstream model name (defaults to ``body["model"]``).
        default_max_tokens: used when the client set neither ``max_completion_tokens``
            nor ``max_tokens`` (Anthropic requires one).

    Raises:
        InvalidRequest: for shapes Anthropic cannot express.
    """
    if body.get("n") not in (None, 1):
        raise InvalidRequest("anthropic models return one choice: n must be 1", param="n")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequest("messages must be a list", param="messages")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in raw_messages:
        if not isinstance(m, dict):
            raise InvalidRequest("messages must be objects", param="messages")
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _content_blocks(content))
        elif role == "assistant":
            _append(messages, "assistant", _content_blocks(content) + _tool_use_blocks(m.get("tool_calls")))
        elif role in ("tool", "function"):
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id") or m.get("name") or "",
                "content": _text_of(content),
            }
            _append(messages, "user", [result])
        else:
            raise InvalidRequest(f"unsupported message role {role!r}", param="messages")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    out: dict[str, Any] = {
        "model": model or body.get("model"),
        "max_tokens": max_tokens,
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(system)
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI allows up to 2, Anthropic 1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    tc = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tc is not None and tools:
        out["tool_choice"] = tc
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    apply_params(body, out, JSON_TOOL)  # every other field: translated or refused, never dropped
    return out


def encode_request(
    body: bytes,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> bytes:
    """:func:`to_anthropic_request` from and to JSON bytes.

    ``overrides`` (a routing target's ``override_params``) are merged into the OpenAI
    request before translation, so they use OpenAI names (``max_tokens``, ``stop``, ...).

    Raises:
        InvalidRequest: the body is not a JSON object or cannot be expressed.
    """
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("request body must be a JSON object")
    if overrides:
        obj.update(overrides)
    return _encode(to_anthropic_request(obj, model, default_max_tokens))


# --- response ----------------------------------------------------------------------------------


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    # Cached input is still input the client sent: OpenAI counts it in prompt_tokens.
    prompt = (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )
    completion = usage.get("output_tokens") or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached, created = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
    if cached or created:
        # OpenAI's name for cache reads; cache writes have none, so they keep Anthropic's.
        out["prompt_tokens_details"] = {"cached_tokens": cached, "cache_creation_input_tokens": created}
    return out


def from_anthropic_response(resp: Mapping[str, Any], created: int | None = None) -> dict[str, Any]:
    """Translate a Messages response object into an OpenAI ``chat.completion`` object.

    Thinking blocks become ``message.reasoning_content`` (the field OpenAI-compatible reasoning
    providers use); the gateway's own structured-output tool (:data:`JSON_TOOL`, see
    ``gateway.providers.anthropic_params``) becomes the message content."""
    text: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    answer: str | None = None
    stop = resp.get("stop_reason")
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use" and block.get("name") == JSON_TOOL:
            answer = _encode(block.get("input", {})).decode()
            stop = "end_turn"
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": _encode(block.get("input", {})).decode(),
                    },
                }
            )
        # redacted_thinking is encrypted (nothing readable to carry); server tool blocks
        # cannot occur: a chat request never enables server tools.
    if answer is not None:
        text = [answer]  # the structured answer is the content (a forced tool has no preamble)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": resp.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": resp.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(stop),
                "logprobs": None,
            }
        ],
        "usage": _usage(resp.get("usage")),
    }


def translate_response(body: bytes, created: int | None = None) -> bytes:
    """:func:`from_anthropic_response` from and to JSON bytes."""
    return _encode(from_anthropic_response(_decode(body), created))


def _error_object(body: bytes, status: int) -> dict[str, Any]:
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        etype = err.get("type") or "upstream_error"
        message = err.get("message") or f"anthropic answered {status}"
    else:
        etype, message = (
            "upstream_error",
            body.decode("utf-8", "replace")[:500] or f"anthropic answered {status}",
        )
    return {"error": {"message": message, "type": etype, "param": None, "code": etype}}


def translate_error(body: bytes, status: int) -> bytes:
    """An Anthropic error body (``{"type":"error","error":{type,message}}``) in OpenAI's shape."""
    return _encode(_error_object(body, status))


# --- streaming ---------------------------------------------------------------------------------


class AnthropicStreamTranslator:
    """Anthropic SSE bytes in (any chunking), OpenAI ``chat.completion.chunk`` SSE bytes out.

    Emits: a role chunk at ``message_start``; content deltas; tool call deltas (the
    ``content_block_start`` of a ``tool_use`` carries index, id and name, each
    ``input_json_delta`` an arguments fragment); a finish chunk at ``message_delta``; at
    ``message_stop`` a usage chunk (``choices: []``, when ``include_usage``) and ``[DONE]``.
    An ``error`` event becomes an OpenAI error event and ends the stream (no ``[DONE]``).
    """

    __slots__ = (
        "include_usage",
        "created",
        "done",
        "failed",
        "id",
        "model",
        "finish_reason",
        "usage",
        "_buf",
        "_prefix",
        "_tools",
        "_n_tools",
        "_json",
        "_raw_usage",
    )

    def __init__(self, include_usage: bool = False, created: int | None = None) -> None:
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.done = False  # message_stop (or an error event) was seen
        self.failed = False  # the upstream sent an error event
        self.id = ""
        self.model = ""
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self._raw_usage: dict[str, Any] = {}  # Anthropic's counts so far
        self._buf = b""
        self._prefix = b""
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_call index
        self._n_tools = 0
        self._json = False  # the structured-output tool (JSON_TOOL) is streaming the answer

    def feed(self, chunk: bytes) -> bytes:
        """Consume upstream bytes; return the OpenAI SSE bytes they complete (maybe empty)."""
        buf = self._buf + chunk
        if buf.rpartition(b"\r")[1]:  # not ``in``: it formats an exception per call (~0.2 us)
            buf = buf.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        start = 0
        while not self.done:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self._event(buf[start:end], out)
            start = end + 2
        self._buf = buf[start:] if not self.done else b""
        return b"".join(out)

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if not data:
            return  # comments, bare event lines
        try:
            ev = _decode(b"\n".join(data))
        except msgspec.DecodeError:
            return  # not JSON: nothing a client could use
        if not isinstance(ev, dict):
            return
        kind = ev.get("type")
        if kind == "content_block_delta":
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                self._chunk(out, {"content": delta.get("text", "")})
            elif dtype == "thinking_delta":
                self._chunk(out, {"reasoning_content": delta.get("thinking", "")})
            elif dtype == "input_json_delta":
                k = self._tools.get(ev.get("index", -1))
                if k == _JSON_BLOCK:  # the structured-output tool: its input is the answer
                    self._chunk(out, {"content": delta.get("partial_json", "")})
                elif k is not None:
                    fn = {"arguments": delta.get("partial_json", "")}
                    self._chunk(out, {"tool_calls": [{"index": k, "function": fn}]})
        elif kind == "content_block_start":
            block = ev.get("content_block") or {}
            btype = block.get("type")
            if btype == "text" and block.get("text"):
                self._chunk(out, {"content": block["text"]})
            elif btype == "thinking" and block.get("thinking"):
                self._chunk(out, {"reasoning_content": block["thinking"]})
            elif btype == "tool_use" and block.get("name") == JSON_TOOL:
                self._tools[ev.get("index", -1)] = _JSON_BLOCK
                self._json = True
            elif btype == "tool_use":
                k = self._tools[ev.get("index", -1)] = self._n_tools
                self._n_tools += 1
                call = {
                    "index": k,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                self._chunk(out, {"tool_calls": [call]})
        elif kind == "message_start":
            msg = ev.get("message") or {}
            self.id = msg.get("id", "")
            self.model = msg.get("model", "")
            self._raw_usage = dict(msg.get("usage") or {})
            self.usage = _usage(self._raw_usage)
            self._prefix = (
                b'{"id":'
                + _encode(self.id)
                + b',"object":"chat.completion.chunk","created":'
                + str(self.created).encode()
                + b',"model":'
                + _encode(self.model)
            )
            self._chunk(out, {"role": "assistant", "content": ""})
        elif kind == "message_delta":
            delta = ev.get("delta") or {}
            if ev.get("usage"):
                self._merge_usage(ev["usage"])
            stop = delta.get("stop_reason")
            if self._json and stop == "tool_use" and not self._n_tools:
                stop = "end_turn"  # the structured-output tool answered: a plain stop for the client
            self.finish_reason = finish_reason(stop) or "stop"
            self._chunk(out, {}, self.finish_reason)
        elif kind == "message_stop":
            if self.include_usage:
                out.append(
                    b"data: " + self._prefix + b',"choices":[],"usage":' + _encode(self.usage) + b"}\n\n"
                )
            out.append(b"data: [DONE]\n\n")
            self.done = True
        elif kind == "error":
            err = _error_object(_encode(ev), 500)
            out.append(b"data: " + _encode(err) + b"\n\n")
            self.done = self.failed = True
        # ping, content_block_stop and unknown events carry nothing for the client.

    def _merge_usage(self, usage: Mapping[str, Any]) -> None:
        # message_delta counts are cumulative and override message_start's; input and cache
        # counts appear there only sometimes.
        self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
        self.usage = _usage(self._raw_usage)

    def _chunk(self, out: list[bytes], delta: dict[str, Any], finish: str | None = None) -> None:
        fin = b"null" if finish is None else b'"' + finish.encode() + b'"'
        out.append(
            b"data: "
            + self._prefix
            + b',"choices":[{"index":0,"delta":'
            + _encode(delta)
            + b',"logprobs":null,"finish_reason":'
            + fin
            + b"}]}\n\n"
        )
