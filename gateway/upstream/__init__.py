"""The one small interface between the hot path and an HTTP client library.

``UpstreamClient.send`` returns an :class:`UpstreamResponse`: status, the headers the gateway
relays, and either the whole body (``read``) or chunks as they arrive (``next_chunk``).
Library exceptions are translated here, at the edge, into :class:`~gateway.errors.UpstreamUnreachable`
and :class:`~gateway.errors.UpstreamTimeout`; nothing above this package imports a client library.

Two implementations, selected by ``server.upstream_client``: pyreqwest (default, fastest measured)
and aiohttp (the alternative). Both pass the same tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.redact import origin

__all__ = ["RELAYED_HEADERS", "UpstreamClient", "UpstreamResponse", "make_client", "origin"]

if TYPE_CHECKING:
    from gateway.config import ProviderConfig
    from gateway.errors import GatewayError

# Response headers worth relaying to the client; everything else (hop-by-hop, the provider's
# own rate-limit bookkeeping, cookies) stays behind the gateway.
RELAYED_HEADERS = frozenset({"content-type", "retry-after", "openai-processing-ms", "x-request-id"})


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read with ``read`` or ``next_chunk``."""

    status: int
    content_type: str | None

    @property
    def relayed_headers(self) -> list[tuple[str, str]]:
        """The provider's response headers in :data:`RELAYED_HEADERS` (read for error answers)."""
        ...

    async def read(self) -> bytes:
        """The whole body (non-streaming responses and error bodies)."""
        ...

    async def next_chunk(self) -> bytes | None:
        """The next chunk as it arrives, None at the end of the body."""
        ...

    # The stream relay's loop (gateway.proxy._relay_stream) reads through the library's own
    # reader rather than ``next_chunk``: one coroutine layer less per chunk, with the library's
    # errors caught around the loop and translated once (~1,300 instructions per chunk saved,
    # callgrind, bench/micro_relay.py).
    @property
    def read_errors(self) -> tuple[type[BaseException], ...]:
        """The client library's exceptions ``read_chunk`` raises (to catch around the loop)."""
        ...

    def chunk_reader(self) -> Callable[[], Awaitable[Any]]:
        """``read_chunk``: awaiting it gives the next chunk (``chunk.to_bytes()`` is its bytes)
        or None at the end of the body, and raises one of ``read_errors`` on failure."""
        ...

    def translate(self, exc: BaseException) -> GatewayError:
        """One of ``read_errors`` as the :class:`~gateway.errors.UpstreamError` it means."""
        ...

    async def aclose(self) -> None:
        """Release the connection (cancelling the upstream request if unfinished)."""
        ...


class UpstreamClient(Protocol):
    """One pooled, keep-alive client per provider, created at start-up."""

    async def send(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        stream: bool,
        timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """POST ``body`` and return once the response headers arrived.

        Raises:
            UpstreamUnreachable: connection refused/reset before a response.
            UpstreamTimeout: connect, header or read timeout.
        """
        ...

    async def aclose(self) -> None: ...


def make_client(kind: str, provider: ProviderConfig) -> UpstreamClient:
    """The client implementation named by ``server.upstream_client``."""
    if kind == "aiohttp":
        from gateway.upstream.aiohttp_client import AiohttpUpstream

        return AiohttpUpstream(provider)
    from gateway.upstream.pyreqwest_client import PyreqwestUpstream

    return PyreqwestUpstream(provider)
