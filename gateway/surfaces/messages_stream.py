"""Hub (OpenAI chat completions) chunks → the Anthropic Messages event sequence: sans-IO.

The stream half of :mod:`gateway.surfaces.messages_hub`, for ``/v1/messages`` streams from
targets that do not serve the Messages API. Usage arrives in the hub's last chunk (the
adapter always asks for it) and goes out in ``message_delta``, where the anthropic SDK reads it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.surfaces.messages_hub import STOP_REASONS, message_id, messages_usage

__all__ = ["HubToMessagesStream"]

_encode = msgspec.json.Encoder().encode


# Typed views of a hub chunk: decoding into Structs skips every field the translation ignores.
class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: Any = None  # a string with some providers, an object with others
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_DELTA_END = b"}}\n\n"


# The hot path's view: a chunk that is nothing but a text delta. A field typed ``None`` must be
# absent or null; anything else there (a finish reason, usage, an error, a tool call...) fails
# validation and the chunk takes the general path. Unknown fields (``obfuscation``,
# ``service_tier``, ``logprobs``...) are skipped without being decoded.
class _TextDeltaView(msgspec.Struct, gc=False):
    content: str = ""
    refusal: None = None
    reasoning_content: None = None
    reasoning: None = None
    tool_calls: None = None


class _TextChoiceView(msgspec.Struct, gc=False):
    delta: _TextDeltaView
    index: int = 0
    finish_reason: None = None


class _TextChunkView(msgspec.Struct, gc=False):
    choices: list[_TextChoiceView]
    usage: None = None
    error: None = None


_decode_text_view = msgspec.json.Decoder(_TextChunkView).decode


def _plain_text(payload: bytes) -> str:
    """The text of a chunk carrying nothing but one choice's text delta, else "" (general path)."""
    try:
        choices = _decode_text_view(payload).choices
    except msgspec.DecodeError:  # not that shape (ValidationError is a DecodeError)
        return ""
    if len(choices) != 1:
        return ""
    choice = choices[0]
    return choice.delta.content if choice.index == 0 else ""


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **data}) + b"\n\n"


class HubToMessagesStream:
    """Hub ``chat.completion.chunk`` SSE in (any chunking), the Messages event sequence out.

    ``message_start`` at the first chunk; one content block at a time (thinking from
    ``reasoning_content``/``reasoning``, text from ``content`` or ``refusal``, ``tool_use`` per
    tool call with its arguments as ``input_json_delta``); ``message_delta`` (stop reason and
    usage) and ``message_stop`` at ``[DONE]``. A provider error chunk becomes an ``error``
    event. Tool call fragments must arrive call after call, as OpenAI sends them; a fragment
    for a call already closed ends the stream with an error rather than corrupting it.
    """

    __slots__ = (
        "done", "_buf", "_started", "_index", "_open", "_tool", "_tools", "_stop", "_usage", "_text_prefix",
    )  # fmt: skip

    def __init__(self) -> None:
        self.done = False
        self._buf = b""
        self._started = False
        self._index = -1  # the current content block's index
        self._open: str | None = None  # kind of the open block: thinking | text | tool_use
        self._tool = -1  # hub index of the open tool call
        self._tools: set[int] = set()  # hub indexes of tool calls seen
        self._stop: str | None = None
        self._usage: dict[str, Any] | None = None
        # While a text block is open (and the stream not done): the bytes of its text delta
        # events before the encoded text, made once per block.
        self._text_prefix = b""

    def feed(self, chunk: bytes) -> bytes:
        """Consume hub SSE bytes; return the Messages events they complete (maybe empty)."""
        if self._buf:
            buf = self._buf + chunk
        else:
            buf = chunk
            if self._text_prefix:
                fast = self.feed_text(chunk)
                if fast is not None:
                    return fast
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

    def feed_text(self, chunk: bytes) -> bytes | None:
        """The hot path: the event for ``chunk`` when it is one whole single-line event (how
        upstreams and relays hand chunks over) carrying a plain text delta inside an open text
        block, else None (``feed`` it). One templated event, no dicts.

        Such a chunk has no usage (its ``usage`` is absent or null) and leaves no tail, so
        :class:`gateway.surfaces.StreamChain` may hand it over without the hub relay.
        """
        prefix = self._text_prefix
        if not prefix or self._buf:
            return None
        # One ``partition`` (it takes its argument directly, see gateway/sse.py) checks the
        # shape: a first line ``data: ...`` followed by nothing but the blank line.
        line, _, rest = chunk.partition(b"\n")
        if rest != b"\n" or line[:6] != b"data: ":
            return None
        text = _plain_text(line[6:])
        if not text:
            return None
        return prefix + _encode(text) + _DELTA_END

    def flush(self) -> bytes:
        tail, self._buf = self._buf, b""
        return self.feed(tail + b"\n\n") if tail.strip() else b""

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if raw.startswith(b"data: ") and b"\n" not in raw:  # how every provider sends a chunk
            payload = raw[6:]
        else:
            payload = b"\n".join(line[5:].lstrip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not payload:
            return
        if payload == b"[DONE]":
            self._finish(out)
            return
        try:
            ev = _decode_chunk(payload)
        except msgspec.DecodeError:
            return  # not a chunk: nothing a client could use
        if ev.error is not None:
            self._error(ev.error, out)
            return
        if not self._started:
            self._start(ev.id, ev.model, out)
        if ev.usage:
            self._usage = ev.usage
        for choice in ev.choices or ():
            if choice.index != 0:
                continue  # a Messages request asks for one choice
            if choice.delta is not None:
                self._delta(choice.delta, out)
            if choice.finish_reason:
                if self._stop != "refusal":
                    self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")
                self._close(out)

    def _start(self, hub_id: Any, model: Any, out: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(hub_id), "type": "message", "role": "assistant", "model": model or "",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        out.append(_event("message_start", {"message": message}))

    def _delta(self, delta: _Delta, out: list[bytes]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if isinstance(reasoning, str) and reasoning:
            self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._text_delta(b'"thinking_delta","thinking":', reasoning))
        if delta.content:
            self._ensure_text(out)
            out.append(self._text_prefix + _encode(delta.content) + _DELTA_END)
        if delta.refusal:
            self._stop = "refusal"
            self._ensure_text(out)
            out.append(self._text_prefix + _encode(delta.refusal) + _DELTA_END)
        for call in delta.tool_calls or ():
            k = call.index
            fn = call.function or _Function()
            if k not in self._tools:
                self._tools.add(k)
                self._close(out)
                self._index += 1
                self._open, self._tool = "tool_use", k
                block = {"type": "tool_use", "id": call.id or "", "name": fn.name or "", "input": {}}
                out.append(_event("content_block_start", {"index": self._index, "content_block": block}))
            elif k != self._tool:
                self._error(
                    {"type": "api_error", "message": "the provider interleaved tool call fragments"}, out
                )
                return
            if fn.arguments:
                out.append(self._text_delta(b'"input_json_delta","partial_json":', fn.arguments))

    def _text_delta(self, kind_and_key: bytes, text: str) -> bytes:
        # The hot event of a stream, built from bytes: one encode for the text.
        return (
            _TEXT_DELTA
            + str(self._index).encode()
            + b',"delta":{"type":'
            + kind_and_key
            + _encode(text)
            + b"}}\n\n"
        )

    def _ensure_text(self, out: list[bytes]) -> None:
        if self._open != "text":
            self._ensure("text", {"type": "text", "text": ""}, out)
            self._text_prefix = (
                _TEXT_DELTA + str(self._index).encode() + b',"delta":{"type":"text_delta","text":'
            )

    def _ensure(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        if self._open == kind:
            return
        self._close(out)
        self._index += 1
        self._open = kind
        out.append(_event("content_block_start", {"index": self._index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_event("content_block_stop", {"index": self._index}))
            self._open, self._tool, self._text_prefix = None, -1, b""

    def _finish(self, out: list[bytes]) -> None:
        if not self._started:
            self._start("", "", out)
        self._close(out)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        out.append(_event("message_delta", {"delta": delta, "usage": messages_usage(self._usage)}))
        out.append(_event("message_stop", {}))
        self.done = True

    def _error(self, err: Any, out: list[bytes]) -> None:
        if isinstance(err, dict):
            etype, message = str(err.get("type") or "api_error"), str(err.get("message") or "provider error")
        else:
            etype, message = "api_error", str(err)
        out.append(_event("error", {"error": {"type": etype, "message": message}}))
        self.done = True
        self._text_prefix = b""
