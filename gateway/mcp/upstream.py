"""HTTP to one upstream MCP server (Streamable HTTP), on a pooled pyreqwest client.

Every reply is read as a stream: whether the server answers a POST with one JSON object or an
SSE stream is only known from its ``content-type``. ``timeout_s`` is the longest silence
tolerated between bytes (an SSE stream with progress events may run far longer). Library
exceptions become :class:`~gateway.mcp.jsonrpc.UpstreamFailed` / ``UpstreamTimedOut`` here, at
the edge; messages name the server, never its URL (paths and queries may carry keys).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import (
    BuilderError,
    ConnectError,
    ConnectTimeoutError,
    PoolTimeoutError,
    ReadTimeoutError,
    RequestError,
    RequestTimeoutError,
)

from gateway.mcp.config import McpServerConfig
from gateway.mcp.jsonrpc import UpstreamFailed, UpstreamTimedOut

__all__ = ["Reply", "UpstreamServer"]

MAX_JSON_BYTES = 16 * 1024 * 1024


def _translate(exc: RequestError, server: str) -> Exception:
    if isinstance(exc, ConnectTimeoutError | PoolTimeoutError):
        return UpstreamTimedOut(f"timed out connecting to MCP server '{server}'")
    if isinstance(exc, RequestTimeoutError | ReadTimeoutError):
        return UpstreamTimedOut(f"MCP server '{server}' did not answer in time")
    if isinstance(exc, ConnectError):
        return UpstreamFailed(f"cannot connect to MCP server '{server}'")
    return UpstreamFailed(f"MCP server '{server}' failed: {type(exc).__name__}")


class Reply:
    """An upstream response whose headers arrived; read it with :meth:`read` or :meth:`next_chunk`."""

    __slots__ = ("_ctx", "_reader", "_resp", "content_type", "server", "session_id", "status")

    def __init__(self, resp: Any, ctx: Any, server: str) -> None:
        self._resp = resp
        self._ctx = ctx
        self._reader: Any = None
        self.server = server
        self.status: int = resp.status
        headers = resp.headers
        self.content_type: str = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        self.session_id: str | None = headers.get("mcp-session-id")

    @property
    def is_sse(self) -> bool:
        return self.content_type == "text/event-stream"

    async def next_chunk(self) -> bytes | None:
        """The next chunk as it arrives; None at the end."""
        if self._reader is None:
            self._reader = self._resp.body_reader
        try:
            chunk = await self._reader.read_chunk()
        except RequestError as exc:
            raise _translate(exc, self.server) from None
        return None if chunk is None else bytes(chunk)

    async def read(self, limit: int = MAX_JSON_BYTES) -> bytes:
        """The whole body (a JSON reply), refusing more than ``limit`` bytes; closes the reply."""
        if self._ctx is None and self._reader is None:  # a buffered reply: the body is here already
            try:
                body = bytes(await self._resp.bytes())
            except RequestError as exc:
                raise _translate(exc, self.server) from None
            if len(body) > limit:
                raise UpstreamFailed(f"MCP server '{self.server}' sent a reply over {limit} bytes")
            return body
        parts: list[bytes] = []
        size = 0
        try:
            while (chunk := await self.next_chunk()) is not None:
                size += len(chunk)
                if size > limit:
                    raise UpstreamFailed(f"MCP server '{self.server}' sent a reply over {limit} bytes")
                parts.append(chunk)
        finally:
            await self.aclose()
        return b"".join(parts)

    async def aclose(self) -> None:
        """Release the connection (cancels the upstream request when unfinished)."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                await ctx.__aexit__(None, None, None)
            except RequestError:  # the connection already failed; nothing left to release
                pass


class UpstreamServer:
    """A registered (non-composite) MCP server: URL, the gateway's headers, one pooled client."""

    def __init__(self, cfg: McpServerConfig) -> None:
        assert cfg.url is not None
        self.name = cfg.name
        self.url = cfg.url
        self.cfg = cfg
        self.headers: list[tuple[str, str]] = list(cfg.headers.items())
        from urllib.parse import urlsplit

        parts = urlsplit(cfg.url)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        self._json_methods: set[str] = set()  # JSON-RPC methods this upstream answers with JSON
        self._client = (
            ClientBuilder()
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .connect_timeout(timedelta(seconds=cfg.connect_timeout_s))
            .read_timeout(timedelta(seconds=cfg.timeout_s))
            .pool_idle_timeout(timedelta(seconds=90))
            .tcp_nodelay(True)
            .build()
        )

    async def send(
        self, method: str, headers: list[tuple[str, str]], body: bytes = b"", *, rpc_method: str = ""
    ) -> Reply:
        """Send ``method`` (POST, GET, DELETE) with the gateway's headers plus ``headers``.

        ``rpc_method`` (a JSON-RPC request that expects no progress) may be sent buffered: once
        this upstream answered that method with JSON, the reply is read whole by the client
        library, which costs ~20 µs less than a streamed read. An SSE answer turns it back to
        streamed for the next call (that one is still relayed correctly, only not incrementally).

        Raises:
            UpstreamFailed: unreachable or reset before the response headers.
            UpstreamTimedOut: connect or header timeout.
        """
        client = self._client
        if method == "POST":
            builder = client.post(self.url).body_bytes(body)
        elif method == "GET":
            builder = client.get(self.url)
        else:
            builder = client.delete(self.url)
        builder = builder.headers([*self.headers, *headers])
        try:
            if rpc_method and rpc_method in self._json_methods:
                reply = Reply(await builder.build().send(), None, self.name)
            else:
                ctx = builder.streamed_read_buffer_limit(0).build_streamed()
                reply = Reply(await ctx.__aenter__(), ctx, self.name)
        except RequestError as exc:
            raise _translate(exc, self.name) from None
        except BuilderError:  # a header value the HTTP library refuses (odd bytes in an identity claim)
            raise UpstreamFailed(f"the request to MCP server '{self.name}' could not be built") from None
        if rpc_method:
            if reply.is_sse:
                self._json_methods.discard(rpc_method)
            elif reply.status == 200 and reply.content_type == "application/json":
                self._json_methods.add(rpc_method)
        return reply

    async def aclose(self) -> None:
        await self._client.close()
