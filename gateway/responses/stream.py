"""Responses API streams, sans-IO: chat SSE → Responses events, and the pass-through watcher.

:class:`ChatToResponses` turns the hub's chat-completion chunks (any provider, after its own
adapter) into the Responses event sequence OpenAI sends, each with its ``sequence_number``::

    response.created, response.in_progress
    per output item:  response.output_item.added
        message:      response.content_part.added, response.output_text.delta…,
                      response.output_text.done, response.content_part.done
        (refusal:     response.refusal.delta…, response.refusal.done)
        reasoning:    response.reasoning_text.delta…, response.reasoning_text.done
        function_call: response.function_call_arguments.delta…, …arguments.done
                      response.output_item.done
    response.completed | response.incomplete (finish_reason length / content_filter)
    | response.failed (an error event from the provider, or a stream cut short)

:class:`NativeStage` relays a passed-through Responses stream without changing it: it notices
the terminal event and keeps its Response object (usage, the stored copy).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.responses.translate import (
    finish_status,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    skeleton,
    usage_of_chat,
)
from gateway.sse import Usage

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_TEXT_DELTA = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)
_LOGPROBS_END = b',"logprobs":[]}\n\n'
_TERMINAL_BYTES = tuple(t.encode() for t in TERMINAL)


def sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event in OpenAI's framing (``event:`` line, then ``data:``)."""
    return b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


def _data_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete events' ``data:`` payloads in ``buf`` and the incomplete tail."""
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    if buf.startswith(b"data: ") and buf.endswith(b"\n\n") and buf.find(b"\n", 6) == len(buf) - 2:
        return [buf[6:-2]], b""  # one single-line event: what relays hand over most of the time
    end = buf.rfind(b"\n\n")
    if end < 0:
        return [], buf
    payloads = []
    for event in buf[:end].split(b"\n\n"):
        data = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if data:
            payloads.append(b"\n".join(data))
    return payloads, buf[end + 2 :]


class _DeltaView(msgspec.Struct):
    content: str | None = None
    tool_calls: msgspec.Raw | None = None
    refusal: msgspec.Raw | None = None
    reasoning_content: msgspec.Raw | None = None
    reasoning: msgspec.Raw | None = None


class _ChoiceView(msgspec.Struct):
    index: int = 0
    delta: _DeltaView | None = None
    finish_reason: msgspec.Raw | None = None


class _ChunkView(msgspec.Struct):
    """Just enough of a chat chunk to see whether it is a plain text delta (the common case)."""

    choices: list[_ChoiceView] = []
    usage: msgspec.Raw | None = None
    error: msgspec.Raw | None = None


_decode_view = msgspec.json.Decoder(_ChunkView).decode


def _plain_text(payload: bytes) -> str | None:
    """The text of a chunk that carries nothing but a text delta, else None (the general path)."""
    try:
        view = _decode_view(payload)
    except msgspec.DecodeError:
        return None
    if view.usage is not None or view.error is not None or len(view.choices) != 1:
        return None
    choice = view.choices[0]
    delta = choice.delta
    if choice.index != 0 or choice.finish_reason is not None or delta is None or not delta.content:
        return None
    if delta.tool_calls or delta.refusal or delta.reasoning_content or delta.reasoning:
        return None
    return delta.content


class _Item:
    __slots__ = ("kind", "index", "id", "text", "refusal", "call_id", "name", "open", "delta_prefix")

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind = kind
        self.index = index
        self.id = item_id
        self.text: str | None = None
        self.refusal: str | None = None
        self.call_id = ""
        self.name = ""
        self.open = True
        # The bytes after ``sequence_number`` of this item's text deltas, made once.
        self.delta_prefix = (
            b',"item_id":"' + item_id.encode() + b'","output_index":' + str(index).encode()
            + b',"content_index":0,"delta":'
        )  # fmt: skip


class ChatToResponses:
    """Chat SSE bytes in (any chunking), Responses SSE bytes out; :attr:`response` at the end.

    A stream stage (:class:`gateway.surfaces.StreamStage`): the first :meth:`feed` also
    returns the opening events; :meth:`finish` ends a stream the upstream left without
    ``[DONE]`` (the response fails with ``error``).
    """

    def __init__(self, body: dict[str, Any], resp_id: str, created_at: int | None = None) -> None:
        self.body = body
        self.response = skeleton(
            body, resp_id, int(time.time()) if created_at is None else created_at, "in_progress"
        )
        self.done = False
        self._started = False
        self._seq = 0
        self._buf = b""
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._tools: dict[int, _Item] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    # --- events --------------------------------------------------------------------------------

    def _ev(self, out: list[bytes], kind: str, **fields: Any) -> None:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        out.append(sse(kind, payload))

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (once; :meth:`feed` calls it)."""
        if self._started:
            return b""
        self._started = True
        body = b',"response":' + _encode(self.response) + b"}\n\n"  # one encoding for both events
        self._seq = 2
        return (
            b'event: response.created\ndata: {"type":"response.created","sequence_number":0' + body
            + b'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1' + body
        )  # fmt: skip

    def feed(self, chunk: bytes) -> bytes:
        """Consume chat SSE bytes; return the Responses events they complete (maybe empty)."""
        if self.done:
            return b""
        payloads, self._buf = _data_lines(self._buf + chunk if self._buf else chunk)
        out: list[bytes] = [] if self._started else [self.start()]
        for payload in payloads:
            if payload == b"[DONE]":
                self._complete(out)
                break
            cur = self._current
            if cur is not None and cur.kind == "message" and cur.open and cur.text is not None:
                text = _plain_text(payload)
                if text is not None:  # the hot path: one templated event, no dicts
                    cur.text += text
                    out.append(
                        _TEXT_DELTA
                        + str(self._seq).encode()
                        + cur.delta_prefix
                        + _encode(text)
                        + _LOGPROBS_END
                    )
                    self._seq += 1
                    continue
            try:
                obj = _decode(payload)
            except msgspec.DecodeError:
                continue  # not JSON: nothing a client could use
            if not isinstance(obj, dict):
                continue
            if "error" in obj and not obj.get("choices"):
                err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
                self._fail(
                    out, err.get("code") or err.get("type") or "upstream_error", err.get("message", "")
                )
                break
            self._chunk(obj, out)
        return b"".join(out)

    def flush(self) -> bytes:
        """Nothing is held back: an incomplete chat event at the end carries nothing usable."""
        return b""

    def fail(self, code: str, message: str) -> bytes:
        """End a stream the upstream left early: ``response.failed`` with ``error``."""
        if self.done:
            return b""
        out: list[bytes] = [self.start()]
        self._fail(out, code, message)
        return b"".join(out)

    # --- chat chunks ---------------------------------------------------------------------------

    def _chunk(self, obj: dict[str, Any], out: list[bytes]) -> None:
        if obj.get("usage"):
            self._usage = usage_of_chat(obj["usage"])
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                item = self._open("reasoning", out)
                item.text = (item.text or "") + reasoning
                self._ev(out, "response.reasoning_text.delta", item_id=item.id, output_index=item.index,
                         content_index=0, delta=reasoning)  # fmt: skip
            text = delta.get("content")
            if isinstance(text, str) and text:
                item = self._open("message", out)
                if item.text is None:
                    item.text = ""
                    self._part_added(
                        item, {"type": "output_text", "text": "", "annotations": [], "logprobs": []}, out
                    )
                item.text += text
                self._ev(out, "response.output_text.delta", item_id=item.id, output_index=item.index,
                         content_index=0, delta=text, logprobs=[])  # fmt: skip
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                item = self._open("message", out)
                if item.refusal is None:
                    item.refusal = ""
                    self._part_added(item, {"type": "refusal", "refusal": ""}, out)
                item.refusal += refusal
                self._ev(out, "response.refusal.delta", item_id=item.id, output_index=item.index,
                         content_index=self._refusal_index(item), delta=refusal)  # fmt: skip
            for call in delta.get("tool_calls") or ():
                self._tool_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _tool_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        k = call.get("index", 0)
        fn = call.get("function") or {}
        item = self._tools.get(k)
        if item is None:
            self._close_current(out)
            item = self._tools[k] = self._new("function_call", new_id("fc"))
            item.call_id = call.get("id") or new_id("call")
            item.name = fn.get("name") or ""
            item.text = ""
            self._ev(out, "response.output_item.added", output_index=item.index,
                     item=function_call_item(item.id, item.call_id, item.name, "", "in_progress"))  # fmt: skip
            self._current = item
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item.text = (item.text or "") + args
            if item.open:
                self._ev(out, "response.function_call_arguments.delta", item_id=item.id,
                         output_index=item.index, delta=args)  # fmt: skip

    def _new(self, kind: str, item_id: str) -> _Item:
        item = _Item(kind, len(self._items), item_id)
        self._items.append(item)
        return item

    def _open(self, kind: str, out: list[bytes]) -> _Item:
        """The open item of ``kind`` (the current one, or a new one after closing the current)."""
        cur = self._current
        if cur is not None and cur.kind == kind and cur.open:
            return cur
        self._close_current(out)
        item = self._new(kind, new_id("msg" if kind == "message" else "rs"))
        if kind == "message":
            added: dict[str, Any] = message_item(item.id, None, None, "in_progress")
        else:
            added = {
                "id": item.id,
                "type": "reasoning",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
        self._ev(out, "response.output_item.added", output_index=item.index, item=added)
        if kind == "reasoning":
            self._part_added(item, {"type": "reasoning_text", "text": ""}, out)
        self._current = item
        return item

    def _part_added(self, item: _Item, part: dict[str, Any], out: list[bytes]) -> None:
        index = self._refusal_index(item) if part["type"] == "refusal" else 0
        self._ev(out, "response.content_part.added", item_id=item.id, output_index=item.index,
                 content_index=index, part=part)  # fmt: skip

    @staticmethod
    def _refusal_index(item: _Item) -> int:
        return 1 if item.text is not None else 0

    def _close_current(self, out: list[bytes]) -> None:
        item = self._current
        self._current = None
        if item is None or not item.open:
            return
        item.open = False
        kw = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            if item.text is not None:
                self._ev(out, "response.output_text.done", **kw, content_index=0, text=item.text, logprobs=[])
                self._ev(out, "response.content_part.done", **kw, content_index=0,
                         part={"type": "output_text", "text": item.text, "annotations": [], "logprobs": []})  # fmt: skip
            if item.refusal is not None:
                index = self._refusal_index(item)
                self._ev(out, "response.refusal.done", **kw, content_index=index, refusal=item.refusal)
                self._ev(out, "response.content_part.done", **kw, content_index=index,
                         part={"type": "refusal", "refusal": item.refusal})  # fmt: skip
        elif item.kind == "reasoning":
            text = item.text or ""
            self._ev(out, "response.reasoning_text.done", **kw, content_index=0, text=text)
            self._ev(out, "response.content_part.done", **kw, content_index=0,
                     part={"type": "reasoning_text", "text": text})  # fmt: skip
        else:
            self._ev(out, "response.function_call_arguments.done", **kw, name=item.name,
                     arguments=item.text or "")  # fmt: skip
        self._ev(out, "response.output_item.done", output_index=item.index, item=self._item_object(item))

    @staticmethod
    def _item_object(item: _Item, status: str = "completed") -> dict[str, Any]:
        if item.kind == "message":
            return message_item(item.id, item.text, item.refusal, status)
        if item.kind == "reasoning":
            return reasoning_item(item.id, item.text or "")
        return function_call_item(item.id, item.call_id, item.name, item.text or "", status)

    # --- the end -------------------------------------------------------------------------------

    def _complete(self, out: list[bytes]) -> None:
        self._close_current(out)
        for item in self._tools.values():  # tool calls interleaved with others close here
            if item.open:
                self._current = item
                self._close_current(out)
        status, incomplete = finish_status(self._finish)
        resp = self.response
        resp["status"] = status
        resp["incomplete_details"] = incomplete
        resp["output"] = [self._item_object(i) for i in self._items]
        resp["usage"] = self._usage
        resp["completed_at"] = int(time.time()) if status == "completed" else None
        self._ev(out, "response.completed" if status == "completed" else "response.incomplete", response=resp)
        self.done = True

    def _fail(self, out: list[bytes], code: str, message: str) -> None:
        resp = self.response
        resp["status"] = "failed"
        resp["error"] = {"code": code, "message": message}
        resp["output"] = [self._item_object(i, "incomplete") for i in self._items]
        resp["usage"] = self._usage
        self._ev(out, "response.failed", response=resp)
        self.done = True


class NativeStage:
    """A passed-through Responses stream: relays complete events as they arrive, notices the
    terminal event and keeps its Response object (usage, the stored copy)."""

    __slots__ = ("_tail", "done", "response", "events", "keep_events", "count")

    def __init__(self, keep_events: bool = False) -> None:
        self._tail = b""
        self.done = False
        self.response: dict[str, Any] | None = None
        self.keep_events = keep_events
        self.events: list[bytes] = []
        self.count = 0  # events relayed: the sequence number of an error event we add

    def feed(self, chunk: bytes) -> bytes:
        """The complete events in ``tail + chunk`` (maybe empty); only a terminal one is decoded."""
        data = self._tail + chunk if self._tail else chunk
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return b""
        complete, self._tail = data[: end + 2], data[end + 2 :]
        self.count += complete.count(b"\n\n")
        if not self.done and any(t in complete for t in _TERMINAL_BYTES):
            self._read_terminal(complete)
        if self.keep_events:
            self.events.append(complete)
        return complete

    def _read_terminal(self, block: bytes) -> None:
        payloads, _ = _data_lines(block)
        for payload in payloads:
            if not any(t in payload for t in _TERMINAL_BYTES):
                continue
            try:
                obj = _decode(payload)
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict) and obj.get("type") in TERMINAL:
                response = obj.get("response")
                self.response = response if isinstance(response, dict) else None
                self.done = True
                return

    def flush(self) -> bytes:
        """Whatever incomplete tail is left when the upstream closes (passed through as is)."""
        tail, self._tail = self._tail, b""
        return tail

    @property
    def usage(self) -> Usage | None:
        """Token usage of the terminal event's response (None before it)."""
        return usage_of_response(self.response)

    def fail(self, code: str, message: str) -> bytes:
        """An ``error`` event ending a stream the provider left early."""
        payload = {
            "type": "error",
            "sequence_number": self.count,
            "code": code,
            "message": message,
            "param": None,
        }
        return sse("error", payload)


def usage_of_response(response: dict[str, Any] | None) -> Usage | None:
    """The gateway's :class:`Usage` of a Response object (None when it has none)."""
    usage = response.get("usage") if response is not None else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    return Usage(prompt, completion, usage.get("total_tokens") or prompt + completion)


class ItemEvents:
    """Events for whole output items, numbered in one sequence: the stream of an agent loop,
    where each item is sent once it is complete (a model call's message, an ``mcp_call`` …)."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self._seq = 0
        self._index = 0

    def _ev(self, out: list[bytes], kind: str, **fields: Any) -> None:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        out.append(sse(kind, payload))

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        out: list[bytes] = []
        self._ev(out, "response.created", response=self.response)
        self._ev(out, "response.in_progress", response=self.response)
        return b"".join(out)

    def item(self, item: dict[str, Any]) -> bytes:
        """The events OpenAI sends for ``item``, from ``output_item.added`` to ``output_item.done``."""
        out: list[bytes] = []
        index = self._index
        self._index += 1
        kind, item_id = item.get("type"), item.get("id", "")
        ids = {"item_id": item_id, "output_index": index}
        if kind == "message":
            self._ev(out, "response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "content": []})  # fmt: skip
            for k, part in enumerate(item.get("content") or []):
                empty = {**part, "text": ""} if part.get("type") == "output_text" else {**part, "refusal": ""}
                self._ev(out, "response.content_part.added", **ids, content_index=k, part=empty)
                if part.get("type") == "output_text":
                    text = part.get("text", "")
                    self._ev(
                        out, "response.output_text.delta", **ids, content_index=k, delta=text, logprobs=[]
                    )
                    self._ev(out, "response.output_text.done", **ids, content_index=k, text=text, logprobs=[])
                else:
                    refusal = part.get("refusal", "")
                    self._ev(out, "response.refusal.delta", **ids, content_index=k, delta=refusal)
                    self._ev(out, "response.refusal.done", **ids, content_index=k, refusal=refusal)
                self._ev(out, "response.content_part.done", **ids, content_index=k, part=part)
        elif kind == "function_call":
            self._ev(out, "response.output_item.added", output_index=index,
                     item={**item, "arguments": "", "status": "in_progress"})  # fmt: skip
            args = item.get("arguments", "")
            self._ev(out, "response.function_call_arguments.delta", **ids, delta=args)
            self._ev(
                out, "response.function_call_arguments.done", **ids, name=item.get("name"), arguments=args
            )
        elif kind == "mcp_list_tools":
            self._ev(out, "response.output_item.added", output_index=index, item={**item, "tools": []})
            self._ev(out, "response.mcp_list_tools.in_progress", **ids)
            done = (
                "response.mcp_list_tools.failed" if item.get("error") else "response.mcp_list_tools.completed"
            )
            self._ev(out, done, **ids)
        elif kind == "mcp_call":
            self._ev(out, "response.output_item.added", output_index=index,
                     item={**item, "arguments": "", "output": None, "error": None, "status": "in_progress"})  # fmt: skip
            args = item.get("arguments", "")
            self._ev(out, "response.mcp_call_arguments.delta", **ids, delta=args)
            self._ev(out, "response.mcp_call_arguments.done", **ids, arguments=args)
            self._ev(out, "response.mcp_call.in_progress", **ids)
            done = "response.mcp_call.failed" if item.get("error") else "response.mcp_call.completed"
            self._ev(out, done, **ids)
        else:  # reasoning, mcp_approval_request: no events of their own between added and done
            self._ev(out, "response.output_item.added", output_index=index, item=item)
        self._ev(out, "response.output_item.done", output_index=index, item=item)
        return b"".join(out)

    def terminal(self, response: dict[str, Any]) -> bytes:
        """``response.completed`` / ``incomplete`` / ``failed``, per the response's status."""
        out: list[bytes] = []
        status = response.get("status")
        kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
            str(status), "response.completed"
        )
        self._ev(out, kind, response=response)
        return b"".join(out)
