"""Relay an OpenAI server-sent-event stream chunk by chunk, reading usage on the way.

Upstream chunks split events at arbitrary byte positions. The relay forwards every complete
event as soon as its terminating blank line arrives and keeps only the incomplete tail, so a
stream is never buffered. Only events whose ``"usage"`` is not ``null`` are decoded (one small
view Struct), which is how the gateway learns token counts without parsing every delta.

When the gateway injected ``stream_options.include_usage`` on the client's behalf, the
usage-only event (``"choices": []``) is removed before it reaches the client.
"""

from __future__ import annotations

import msgspec


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _UsageView(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: Usage | None = None


_decode_usage_view = msgspec.json.Decoder(_UsageView).decode


class _BodyUsage(msgspec.Struct):
    usage: Usage | None = None


_decode_body_usage = msgspec.json.Decoder(_BodyUsage).decode


def usage_of(body: bytes) -> Usage | None:
    """Token usage of a non-streamed OpenAI response body (None when absent or unreadable)."""
    try:
        return _decode_body_usage(body).usage
    except msgspec.DecodeError:
        return None


_SEP = b"\n\n"
_DATA = b"data:"
_USAGE = b'"usage"'
_USAGE_NULL = b'"usage":null'
_DONE_LINE = b"[DONE]\n"  # a JSON string cannot hold a raw newline: only the data line ``[DONE]``


class StreamRelay:
    """Stateful, sans-IO: ``feed`` upstream bytes, get the bytes to send to the client.

    ``done`` turns true once the ``[DONE]`` event has been relayed (a plain attribute: the
    relay loop reads it per chunk).
    """

    __slots__ = ("_tail", "_strip_usage", "usage", "events", "keep_events", "done")

    def __init__(self, strip_usage: bool, keep_events: bool = False) -> None:
        self._tail = b""
        self._strip_usage = strip_usage
        self.usage: Usage | None = None
        self.keep_events = keep_events
        self.events: list[bytes] = []  # complete event blocks, kept for telemetry when asked
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Return the complete events in ``tail + chunk`` (possibly empty), minus a stripped usage event."""
        # Shaped for the usual chunk (whole events, "usage":null) at ~0.4 us instead of ~1.1 us
        # (bench/micro_relay.py). Only methods that take their argument directly (METH_O
        # ``rpartition``, slicing): ``in`` on bytes first tries the needle as an int and formats
        # an exception each time, and ``find``/``endswith``/``count`` parse a format string per
        # call; both cost more than the scans. ``rpartition`` of an absent needle copies nothing.
        data = self._tail + chunk if self._tail else chunk
        if data.rpartition(b"\r")[1]:  # some servers end lines with CRLF: one rule for splitting
            data = data.replace(b"\r\n", b"\n")
        if data[-2:] == _SEP:  # the usual chunk: whole events
            complete = data
            self._tail = b""
        else:
            head, sep, tail = data.rpartition(_SEP)
            if not sep:
                self._tail = data
                return b""
            complete = head + sep
            self._tail = tail
        # Decode only a block where some "usage" is not null (see _carries_usage); the usual
        # block has exactly one "usage":null, which two scans of absent needles rule out.
        head, sep, rest = complete.rpartition(_USAGE_NULL)
        if (
            (rest.rpartition(_USAGE)[1] or head.rpartition(_USAGE)[1])
            if sep
            else complete.rpartition(_USAGE)[1]
        ) and _carries_usage(complete):
            complete = self._read_usage(complete)
        if self.keep_events:
            self.events.append(complete)
        if not self.done and complete.rpartition(_DONE_LINE)[1]:
            self.done = True
        return complete

    @property
    def pending(self) -> bool:
        """Whether an incomplete event is held (the next chunk completes it)."""
        return bool(self._tail)

    def flush(self) -> bytes:
        """Whatever incomplete tail is left when the upstream closes (passed through as is)."""
        tail, self._tail = self._tail, b""
        return tail

    def _read_usage(self, block: bytes) -> bytes:
        kept: list[bytes] = []
        dropped = False
        for event in block.split(_SEP):
            if not event:
                continue
            if _carries_usage(event):
                payload = _event_data(event)
                if payload is not None:
                    try:
                        view = _decode_usage_view(payload)
                    except msgspec.DecodeError:
                        view = None
                    if view is not None and view.usage is not None:
                        self.usage = view.usage
                        if self._strip_usage and not view.choices:
                            dropped = True
                            continue
            kept.append(event)
        if not dropped:
            return block
        return b"".join(e + _SEP for e in kept)


def _carries_usage(block: bytes) -> bool:
    """Whether ``block`` may hold a usage object, so that decoding it is worth it.

    OpenAI sends ``"usage":null`` in every chunk once usage is requested (which the gateway
    always does), so mentioning the key is not enough: a block is decoded only when some
    ``"usage"`` in it is not followed by ``null`` (in practice the final chunk). Where the word is
    some other string (a token ``"usage"``) the block is decoded too and yields nothing: safe,
    and rare. ``split`` scans once and parses no arguments (see ``StreamRelay.feed``).
    """
    parts = block.split(b'"usage"')
    for rest in parts[1:]:
        if rest[:5] == b":null" or rest[:6] == b": null":
            continue
        if not rest[:12].lstrip(b" \t:").startswith(b"null"):
            return True
    return False


def _event_data(event: bytes) -> bytes | None:
    """The JSON payload of an event's ``data:`` line(s), or None."""
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(_DATA)]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)
