"""Surfaces: the inbound APIs, each a small module the one pipeline (``gateway.proxy``) takes.

A surface decodes its request into the view the pipeline needs, and encodes results, stream
events and errors back into its own shapes. Translation goes through one *hub*, the OpenAI chat
completions shape: N surfaces and M provider adapters (``gateway.providers``) make N + M
translators, chained surface → hub → provider, never N × M.

    request   native (the target serves the surface's API):  native_body → provider
              otherwise: hub_request → hub → adapter.from_hub → provider
    response  native: the body as is, native_usage(body)
              otherwise: adapter.to_hub → hub (usage read here) → from_hub
    stream    native: native_stream (relays event by event, reads usage)
              otherwise: StreamChain(adapter.stream_to_hub, hub relay, hub_stream)
    errors    error_response / stream_error: every GatewayError in the surface's own shape;
              a relayed provider error is passed through when it is already in that shape

A surface is a stateless singleton; per-request state lives in the request view it returns and
in the stream stages it creates. Module map:

    chat.py            /v1/chat/completions, /v1/completions, /v1/embeddings   (OpenAI)
    messages.py        /v1/messages, /v1/messages/count_tokens                (Anthropic)
    messages_hub.py    Messages ↔ hub requests and responses
    messages_stream.py hub chunks → Messages events

Adding a surface: subclass :class:`Surface` (``name``, ``operation``, ``api`` and the methods
below), route its path to the instance in ``gateway.app.LLM_ROUTES``, and, for providers that
serve its API natively, add the API's URL to their adapter's ``urls`` (``gateway.providers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gateway.body import ParsedRequest
from gateway.errors import GatewayError
from gateway.sse import StreamRelay, Usage

__all__ = ["StreamChain", "StreamStage", "Surface"]


class StreamStage(Protocol):
    """A sans-IO stream stage: ``feed`` bytes in any chunking, get the bytes they complete."""

    @property
    def done(self) -> bool:
        """Whether the stream ended properly (its protocol's end marker was seen)."""
        ...

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes."""
        ...


class Surface:
    """One inbound API. Subclasses override what differs; defaults describe an OpenAI surface.

    Attributes:
        name: the surface (``TraceRecord.surface``): chat, completions, embeddings, messages.
        operation: the kind of call (``TraceRecord.endpoint``; span types and names).
        api: the provider API spoken natively; a target whose adapter serves it (a key of
            ``ModelTarget.urls``) gets the client's bytes with only ``model`` rewritten.
        error_shape: the provider family whose error bodies this surface relays unchanged.
        translatable: whether the surface has a hub form (else only native targets serve it).
        estimates: whether the gateway answers targets without the API itself (``estimate``).
    """

    name = ""
    operation = "chat"
    api = ""
    error_shape = "openai"
    translatable = False
    estimates = False  # answers targets without its API itself (see ``estimate``)

    # --- request ------------------------------------------------------------------------------

    def parse(self, body: bytes, headers: Any) -> ParsedRequest:
        """The request view (model, stream, wants usage) of ``body``.

        Raises:
            InvalidRequest: malformed or missing the surface's required fields.
        """
        raise NotImplementedError

    def native_body(self, req: ParsedRequest, model: str, overrides: Mapping[str, Any] | None) -> bytes:
        """The body for a target that serves this API: the client's, ``model`` rewritten."""
        raise NotImplementedError

    def native_headers(self, req: ParsedRequest) -> list[tuple[str, str]] | None:
        """Client headers forwarded on the native path (they replace the target's own)."""
        return None

    def hub_request(self, req: ParsedRequest) -> dict[str, Any]:
        """The request as a hub (chat completions) object, for targets with another API.

        Only called when ``translatable``.

        Raises:
            InvalidRequest: the request has no faithful hub form (naming the field).
        """
        raise NotImplementedError

    def estimate(self, req: ParsedRequest) -> bytes:
        """The response body the gateway gives itself for a target without the surface's API
        (only when ``estimates``; e.g. a token count)."""
        raise NotImplementedError

    # --- response -----------------------------------------------------------------------------

    def native_usage(self, body: bytes) -> Usage | None:
        """Token usage of a native non-streamed response body."""
        raise NotImplementedError

    def native_stream(self, req: ParsedRequest, keep_events: bool) -> Any:
        """The stage relaying a native stream; it has ``usage`` and ``events`` attributes."""
        raise NotImplementedError

    def from_hub(self, body: bytes) -> bytes:
        """A hub ``chat.completion`` body → this surface's response body."""
        return body

    def hub_stream(self, req: ParsedRequest) -> StreamStage | None:
        """A stage turning hub SSE chunks into this surface's events (None: the hub is ours)."""
        return None

    # --- errors -------------------------------------------------------------------------------

    def error_response(self, exc: GatewayError) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body of ``exc`` in this surface's error shape."""
        raise NotImplementedError

    def stream_error(self, exc: GatewayError) -> bytes:
        """The event ending a stream that failed after its first bytes were sent."""
        raise NotImplementedError


class StreamChain:
    """A translated stream: provider → (adapter stage) → hub relay → (surface stage) → client.

    The hub relay (:class:`gateway.sse.StreamRelay`) sits in the middle so usage is read the
    same way whatever the two ends speak. ``events`` are the bytes sent to the client, kept
    only when tracing wants them.
    """

    __slots__ = ("first", "relay", "last", "keep_events", "events", "_fast", "_end", "done")

    def __init__(
        self, first: StreamStage | None, relay: StreamRelay, last: StreamStage | None, keep_events: bool
    ) -> None:
        self.first = first
        self.relay = relay
        self.last = last
        self.keep_events = keep_events and last is not None
        # Without a last stage the hub relay's events are what the client gets.
        self.events: list[bytes] = [] if last is not None else relay.events
        # A last stage may recognise a hub chunk that the relay would pass unchanged (whole
        # events, no usage) and translate it directly: ``feed_text(chunk) -> bytes | None``.
        self._fast = getattr(last, "feed_text", None) if first is None else None
        # The stage whose end marker ends the stream. ``done`` is copied from it after every
        # feed, a plain attribute because the relay loop reads it per chunk.
        self._end: Any = last if last is not None else first if first is not None else relay
        self.done = False

    @property
    def usage(self) -> Usage | None:
        return self.relay.usage

    def feed(self, chunk: bytes) -> bytes:
        """Upstream bytes → the client bytes they complete."""
        if self._fast is not None and not self.relay.pending:
            out = self._fast(chunk)
            if out is not None:  # the relay would have passed it on untouched
                if self.keep_events:
                    self.events.append(out)
                self.done = self._end.done
                return out
        if self.first is not None:
            chunk = self.first.feed(chunk)
            if not chunk:
                self.done = self._end.done
                return b""
        chunk = self.relay.feed(chunk)
        if self.last is not None and chunk:
            chunk = self.last.feed(chunk)
            if self.keep_events and chunk:
                self.events.append(chunk)
        self.done = self._end.done
        return chunk

    def flush(self) -> bytes:
        tail = self.relay.flush()
        if self.last is None:
            self.done = self._end.done
            return tail
        out = (self.last.feed(tail) if tail else b"") + self.last.flush()
        if self.keep_events and out:
            self.events.append(out)
        self.done = self._end.done
        return out
