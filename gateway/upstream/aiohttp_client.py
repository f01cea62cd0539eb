"""Upstream client on ``aiohttp.ClientSession``: the measured alternative to pyreqwest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from gateway.config import ProviderConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.upstream import RELAYED_HEADERS, origin
from gateway.upstream.tls import ssl_context


def _translate(exc: BaseException, url: str) -> GatewayError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"the provider at {origin(url)} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"cannot connect to the provider at {origin(url)}")
    return UpstreamUnreachable(f"the provider at {origin(url)} failed: {type(exc).__name__}")


class _Chunk:
    """A read's bytes in the shape the relay loop takes (pyreqwest's ``Buffer.to_bytes``)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


class _Response:
    __slots__ = ("status", "content_type", "relayed_headers", "_resp", "_url")

    # aiohttp keeps a read's exception in the response's StreamReader: raised through the relay
    # loop, its traceback would tie the loop's frame (and granian's transport, whose release ends
    # the client's stream) into a cycle only the GC frees. So ``_read_chunk`` translates it here.
    read_errors: tuple[type[BaseException], ...] = (UpstreamError,)

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.content_type = resp.headers.get("content-type")
        self.relayed_headers = [(k, resp.headers[k]) for k in RELAYED_HEADERS if k in resp.headers]

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, self._url) from None
        finally:
            self._resp.release()

    async def next_chunk(self) -> bytes | None:
        try:
            chunk = await self._resp.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, self._url) from None
        return chunk or None

    def chunk_reader(self) -> Callable[[], Awaitable[_Chunk | None]]:
        return self._read_chunk

    async def _read_chunk(self) -> _Chunk | None:
        try:
            chunk = await self._resp.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, self._url) from None
        return _Chunk(chunk) if chunk else None

    def translate(self, exc: BaseException) -> GatewayError:
        assert isinstance(exc, GatewayError)  # noqa: S101 - already translated by _read_chunk
        return exc

    async def aclose(self) -> None:
        # close() rather than release(): an unfinished body must not go back to the pool.
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()


class AiohttpUpstream:
    """One pooled aiohttp session for one provider."""

    def __init__(self, provider: ProviderConfig) -> None:
        self._provider = provider
        self._session: aiohttp.ClientSession | None = None

    def _timeout(self, total_s: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total_s, sock_connect=self._provider.connect_timeout_s, sock_read=self._provider.timeout_s
        )

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so that it binds to the worker's running loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._provider.max_connections,
                keepalive_timeout=90,
                ssl=ssl_context(self._provider.ca_file) or True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout(None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        stream: bool,
        timeout_s: float | None = None,
    ) -> _Response:
        try:
            resp = await self._get_session().post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout(timeout_s)
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, url) from None
        return _Response(resp, url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
