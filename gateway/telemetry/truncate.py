"""Fitting one trace into one NATS message: cut its bodies, keep the trace (pure, no I/O).

A trace whose record alone exceeds the broker's ``max_payload`` (a 1.5 MiB prompt, a base64
image) used to be dropped whole. :func:`fit_trace` keeps it: the request and response bodies and
error messages are cut until the encoded batch fits, and every span, id, timing and count
survives. JSON bodies stay valid JSON: the longest strings in them (message contents, data URLs)
are shortened and marked, so the exporter still reads the model, the usage and the structure.
A body that is not JSON, or whose structure alone is too large, is cut to a prefix. SSE bodies
keep their first and last events (the last carries the usage) around an SSE comment saying how
much was left out.

Runs in the drain task, off the request path, and only for traces that do not fit.
"""

from __future__ import annotations

import msgspec

from gateway.telemetry.wire import (
    AgentRecord,
    McpCallRecord,
    Resource,
    TraceBatch,
    TraceRecord,
    encode_batch,
)

__all__ = ["fit_trace", "truncate_json", "truncate_sse", "truncate_text"]

_MIN_STRING = 64  # shortest a JSON string is cut to before the whole body is cut instead
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


def _marker(cut: int) -> str:
    return f"...[truncated {cut} bytes]"


def truncate_text(data: bytes, limit: int) -> bytes:
    """A UTF-8-safe prefix of ``data`` no longer than ``limit`` bytes, marker included (a limit
    shorter than the marker yields the marker alone: the reader still learns what was cut)."""
    if len(data) <= limit:
        return data
    marker = _marker(len(data) - max(limit, 0)).encode()
    keep = max(limit - len(marker), 0)
    return data[:keep].decode("utf-8", "ignore").encode() + marker


def _strings(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def _cap_strings(value: object, cap: int) -> object:
    if isinstance(value, str):
        if len(value) <= cap:
            return value
        return value[:cap] + _marker(len(value.encode()) - cap)
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap_strings(v, cap) for v in value]
    return value


def truncate_json(data: bytes, limit: int) -> bytes:
    """``data`` (a JSON document) in at most ``limit`` bytes, still valid JSON if possible.

    Finds the largest per-string length cap under which the document fits and applies it; when
    even :data:`_MIN_STRING` characters per string is too much, or ``data`` is not JSON, falls
    back to :func:`truncate_text` (a prefix)."""
    if len(data) <= limit:
        return data
    try:
        doc = _json_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return truncate_text(data, limit)
    strings: list[str] = []
    _strings(doc, strings)
    if not strings:
        return truncate_text(data, limit)
    lo, hi = _MIN_STRING, max(len(s) for s in strings)
    best: bytes | None = None
    # Binary search on the cap; each probe re-encodes (bounded: ~20 probes of a few MB at most).
    while lo <= hi:
        cap = (lo + hi) // 2
        out = _json_encoder.encode(_cap_strings(doc, cap))
        if len(out) <= limit:
            best, lo = out, cap + 1
        else:
            hi = cap - 1
    return best if best is not None else truncate_text(data, limit)


def truncate_sse(data: bytes, limit: int) -> bytes:
    """An SSE body in at most ``limit`` bytes: first events, an SSE comment, last events."""
    if len(data) <= limit:
        return data
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    half = limit // 2
    head: list[bytes] = []
    used = 0
    for e in events:
        if used + len(e) > half:
            break
        head.append(e)
        used += len(e)
    tail: list[bytes] = []
    room = limit - used - 64  # the comment line
    for e in reversed(events[len(head) :]):
        if len(e) > room:
            break
        tail.append(e)
        room -= len(e)
    if not head and not tail:
        return truncate_text(data, limit)
    tail.reverse()
    cut = len(data) - used - sum(len(e) for e in tail)
    return b"".join(head) + f": truncated {cut} bytes\n\n".encode() + b"".join(tail)


def _shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` fairly: bodies smaller than an equal share keep all of it (smallest
    first), the large ones split what is left equally."""
    share: dict[str, int] = {}
    left, n = budget, len(sizes)
    for key, size in sorted(sizes.items(), key=lambda kv: kv[1]):
        fair = left // n
        share[key] = min(size, fair)
        left -= share[key]
        n -= 1
    return share


def _with_limits(trace: TraceRecord, budget: int) -> TraceRecord:
    """``trace`` with its bodies sharing ``budget`` bytes (see :func:`_shares`)."""
    sizes = {
        "request_body": len(trace.request_body),
        "response_body": len(trace.response_body),
        "response_sse": len(trace.response_sse),
        "error_message": len(trace.error_message.encode()),
    }
    share = _shares(sizes, budget)
    attempts = tuple(
        msgspec.structs.replace(a, error_message=truncate_text(a.error_message.encode(), 1024).decode())
        if len(a.error_message) > 1024
        else a
        for a in trace.attempts
    )
    nested: dict[str, object] = {}
    if trace.mcp is not None or trace.agent is not None:
        # Tool arguments/results and the agent's model-call bodies share the budget evenly.
        cap = max(1024, budget // 8)
        if trace.mcp is not None:
            nested["mcp"] = msgspec.structs.replace(trace.mcp, calls=_cut_calls(trace.mcp.calls, cap))
        if trace.agent is not None:
            nested["agent"] = _cut_agent(trace.agent, cap)
    return msgspec.structs.replace(
        trace,
        **nested,
        request_body=truncate_json(trace.request_body, share["request_body"]),
        response_body=truncate_json(trace.response_body, share["response_body"]),
        response_sse=truncate_sse(trace.response_sse, share["response_sse"]),
        error_message=truncate_text(trace.error_message.encode(), share["error_message"]).decode(),
        attempts=attempts,
    )


def _cut_calls(calls: tuple[McpCallRecord, ...], cap: int) -> tuple[McpCallRecord, ...]:
    return tuple(
        msgspec.structs.replace(
            c, arguments=truncate_json(c.arguments, cap), result=truncate_json(c.result, cap)
        )
        if len(c.arguments) > cap or len(c.result) > cap
        else c
        for c in calls
    )


def _cut_agent(agent: AgentRecord, cap: int) -> AgentRecord:
    return msgspec.structs.replace(
        agent,
        model_calls=tuple(
            msgspec.structs.replace(
                m,
                request_body=truncate_json(m.request_body, cap),
                response_body=truncate_json(m.response_body, cap),
            )
            for m in agent.model_calls
        ),
        tool_calls=tuple(
            msgspec.structs.replace(
                t,
                arguments=truncate_json(t.arguments, cap),
                result=truncate_json(t.result, cap),
                calls=_cut_calls(t.calls, cap),
            )
            for t in agent.tool_calls
        ),
        list_calls=_cut_calls(agent.list_calls, cap),
    )


def fit_trace(trace: TraceRecord, resource: Resource, max_payload: int) -> TraceRecord | None:
    """``trace`` as it fits alone in a batch of at most ``max_payload`` bytes.

    Returns the trace unchanged if it fits, a copy with cut bodies if that fits, or ``None`` if
    even empty bodies would not (ids and metadata alone too large: the caller drops and counts).
    """
    version = 2  # the batch header's size does not depend on the value
    size = len(encode_batch(TraceBatch(version, resource, [trace])))
    if size <= max_payload:
        return trace
    bodies = (
        len(trace.request_body)
        + len(trace.response_body)
        + len(trace.response_sse)
        + len(trace.error_message.encode())
    )
    budget = max(bodies - (size - max_payload) - 256, 0)
    for _ in range(6):  # markers and re-encoding cost a little more than planned: shrink and retry
        fitted = _with_limits(trace, budget)
        if len(encode_batch(TraceBatch(version, resource, [fitted]))) <= max_payload:
            return fitted
        if budget == 0:
            return None
        budget = budget * 3 // 4 if budget > 1024 else 0
    return None
