"""Span attributes derived from the request and response bodies a span carries.

The gateway records ``tfy.input`` (the request body) and ``tfy.output`` (the response body,
or for streams the raw SSE events under ``tfy.output.sse``) as bytes and nothing more; this
module derives the rest here, in the exporter, off the request path: ``gen_ai.request.*``
parameters, ``tfy.input_short_hand``, ``gen_ai.response.id/model/finish_reasons`` and the
assembled ``tfy.output`` of a stream. Every function decodes a small msgspec view and never
raises on malformed input. :func:`enrich_batch` runs once per batch, before a destination's
*exclude request data* switch strips the bodies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.telemetry.spans import (
    GEN_AI_FINISH_REASONS,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    TFY_INPUT,
    TFY_INPUT_SHORT_HAND,
    TFY_OUTPUT,
    TFY_OUTPUT_SSE,
)
from gateway.telemetry.wire import SPAN_KIND_CLIENT, STATUS_ERROR, SpanBatch

SHORT_HAND_MAX_CHARS = 200

# --- request ------------------------------------------------------------------------------------


class RequestParams(msgspec.Struct, gc=False):
    """The sampling parameters of a chat/completion request (a view: other keys ignored)."""

    model: str | None = None
    stream: bool | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None


_params_decoder = msgspec.json.Decoder(RequestParams)


def decode_request_params(body: bytes) -> RequestParams | None:
    """The request parameters, or ``None`` if the body is not a JSON object of that shape."""
    try:
        return _params_decoder.decode(body)
    except msgspec.DecodeError:
        return None


def request_param_attributes(p: RequestParams) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes for the parameters that were set."""
    attrs: dict[str, Any] = {}
    if p.temperature is not None:
        attrs["gen_ai.request.temperature"] = p.temperature
    max_tokens = p.max_completion_tokens if p.max_completion_tokens is not None else p.max_tokens
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
    if p.n is not None and p.n != 1:
        attrs["gen_ai.request.choice.count"] = p.n
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
    except msgspec.DecodeError:
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


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None  # Responses API / embeddings naming
    output_tokens: int | None = None


class _Choice(msgspec.Struct, gc=False):
    finish_reason: str | None = None


class _ResponseView(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


class ResponseSummary(msgspec.Struct, gc=False):
    """What span attributes need from a response."""

    id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = []
    input_tokens: int | None = None
    output_tokens: int | None = None


_response_decoder = msgspec.json.Decoder(_ResponseView)


def _usage_tokens(u: _Usage | None) -> tuple[int | None, int | None]:
    if u is None:
        return None, None
    inp = u.prompt_tokens if u.prompt_tokens is not None else u.input_tokens
    out = u.completion_tokens if u.completion_tokens is not None else u.output_tokens
    return inp, out


def response_summary(body: bytes) -> ResponseSummary:
    """Id, model, finish reasons and token usage of a non-streamed JSON response."""
    try:
        v = _response_decoder.decode(body)
    except msgspec.DecodeError:
        return ResponseSummary()
    inp, out = _usage_tokens(v.usage)
    reasons = [c.finish_reason for c in v.choices or () if c.finish_reason]
    return ResponseSummary(v.id, v.model, reasons, inp, out)


def response_attributes(s: ResponseSummary) -> dict[str, Any]:
    """``gen_ai.response.*`` and ``gen_ai.usage.*`` attributes for the values present."""
    attrs: dict[str, Any] = {}
    if s.id:
        attrs[GEN_AI_RESPONSE_ID] = s.id
    if s.model:
        attrs[GEN_AI_RESPONSE_MODEL] = s.model
    if s.finish_reasons:
        attrs[GEN_AI_FINISH_REASONS] = s.finish_reasons
    if s.input_tokens is not None:
        attrs[GEN_AI_INPUT_TOKENS] = s.input_tokens
    if s.output_tokens is not None:
        attrs[GEN_AI_OUTPUT_TOKENS] = s.output_tokens
    return attrs


# --- streams -------------------------------------------------------------------------------------


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _ChunkChoice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _Delta | None = None
    text: str | None = None  # legacy completions stream
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


def _sse_payloads(chunks: Iterable[bytes]) -> Iterable[bytes]:
    # Chunks from the network cut events anywhere, so join before splitting into lines.
    for line in b"".join(chunks).splitlines():
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                yield data


def assemble_stream(
    chunks: Iterable[bytes], usage: tuple[int | None, int | None] | None = None
) -> tuple[bytes, ResponseSummary]:
    """Assemble OpenAI SSE chunks into the JSON body a non-streamed call would have returned.

    Deltas are merged per choice index: ``content``/``refusal`` concatenated, ``tool_calls``
    merged per tool index (id, type and name kept, arguments concatenated), the last
    ``finish_reason`` kept, ``usage`` taken from the chunk that carries it. Legacy completion
    streams (``choices[].text``) give a ``text_completion`` object. Undecodable events are
    skipped. ``usage`` (prompt, completion tokens) overrides what the events say: pass it when
    the relay stripped the usage event before keeping the events. Returns ``(json_bytes, summary)``.
    """
    rid = model = fingerprint = None
    created: int | None = None
    usage_view: _Usage | None = None
    choices: dict[int, dict[str, Any]] = {}
    is_text = False
    for data in _sse_payloads(chunks):
        try:
            c = _chunk_decoder.decode(data)
        except msgspec.DecodeError:
            continue
        rid = rid or c.id
        model = model or c.model
        created = created or c.created
        fingerprint = fingerprint or c.system_fingerprint
        if c.usage is not None:
            usage_view = c.usage
        for ch in c.choices:
            acc = choices.get(ch.index)
            if acc is None:
                acc = choices[ch.index] = {
                    "role": None,
                    "content": [],
                    "refusal": [],
                    "tools": {},
                    "finish": None,
                }
            if ch.finish_reason:
                acc["finish"] = ch.finish_reason
            if ch.text is not None:
                is_text = True
                acc["content"].append(ch.text)
            d = ch.delta
            if d is None:
                continue
            if d.role:
                acc["role"] = d.role
            if d.content:
                acc["content"].append(d.content)
            if d.refusal:
                acc["refusal"].append(d.refusal)
            for tc in d.tool_calls or ():
                tool = acc["tools"].get(tc.index)
                if tool is None:
                    tool = acc["tools"][tc.index] = {"id": None, "type": "function", "name": "", "args": []}
                if tc.id:
                    tool["id"] = tc.id
                if tc.type:
                    tool["type"] = tc.type
                if tc.function is not None:
                    if tc.function.name:
                        tool["name"] += tc.function.name
                    if tc.function.arguments:
                        tool["args"].append(tc.function.arguments)
    out_choices: list[dict[str, Any]] = []
    reasons: list[str] = []
    for index in sorted(choices):
        acc = choices[index]
        if acc["finish"]:
            reasons.append(acc["finish"])
        if is_text:
            out_choices.append(
                {"index": index, "text": "".join(acc["content"]), "finish_reason": acc["finish"]}
            )
            continue
        message: dict[str, Any] = {
            "role": acc["role"] or "assistant",
            "content": "".join(acc["content"]) if acc["content"] else None,
        }
        if acc["refusal"]:
            message["refusal"] = "".join(acc["refusal"])
        if acc["tools"]:
            message["tool_calls"] = [
                {
                    "id": t["id"],
                    "type": t["type"],
                    "function": {"name": t["name"], "arguments": "".join(t["args"])},
                }
                for _, t in sorted(acc["tools"].items())
            ]
        out_choices.append({"index": index, "message": message, "finish_reason": acc["finish"]})
    body: dict[str, Any] = {
        "id": rid,
        "object": "text_completion" if is_text else "chat.completion",
        "created": created,
        "model": model,
        "choices": out_choices,
    }
    if fingerprint:
        body["system_fingerprint"] = fingerprint
    if usage is not None:
        inp, out = usage
    else:
        inp, out = _usage_tokens(usage_view)
    if inp is not None or out is not None:
        body["usage"] = {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": (inp or 0) + (out or 0),
        }
    return _json_encode(body), ResponseSummary(rid, model, reasons, inp, out)


def enrich_batch(batch: SpanBatch) -> None:
    """Derive body-based attributes in place, once per batch (see the module docstring).

    The root span of a trace carries the bodies; request parameters go on it and on the
    trace's CLIENT spans, response attributes on it and on the CLIENT spans that succeeded.
    """
    by_trace: dict[bytes, list[Any]] = {}
    for span in batch.spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    for spans in by_trace.values():
        for root in spans:
            attrs = root.attributes
            body = attrs.get(TFY_INPUT)
            sse = attrs.pop(TFY_OUTPUT_SSE, None)
            if body is None and sse is None:
                continue
            request_attrs: dict[str, Any] = {}
            if isinstance(body, bytes | str):
                raw = body.encode() if isinstance(body, str) else body
                params = decode_request_params(raw)
                if params is not None:
                    request_attrs = request_param_attributes(params)
                attrs[TFY_INPUT_SHORT_HAND] = input_short_hand(raw)
            response_attrs: dict[str, Any] = {}
            if isinstance(sse, bytes):
                usage = (attrs.get(GEN_AI_INPUT_TOKENS), attrs.get(GEN_AI_OUTPUT_TOKENS))
                assembled, summary = assemble_stream([sse], usage=usage if usage != (None, None) else None)
                attrs[TFY_OUTPUT] = assembled
                response_attrs = response_attributes(summary)
            else:
                out = attrs.get(TFY_OUTPUT)
                if isinstance(out, bytes):
                    response_attrs = response_attributes(response_summary(out))
            attrs.update(request_attrs)
            attrs.update(response_attrs)
            for span in spans:
                if span is root or span.kind != SPAN_KIND_CLIENT:
                    continue
                span.attributes.update(request_attrs)
                if span.status_code != STATUS_ERROR:
                    for key, value in response_attrs.items():
                        span.attributes.setdefault(key, value)
