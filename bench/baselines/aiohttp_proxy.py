"""Bare granian RSGI pass-through proxy with one pooled ``aiohttp.ClientSession`` (a baseline)."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from granian.rsgi import ProtocolClosed

from bench.baselines import BAD_GATEWAY, HEALTH, JSON, SSE, forward_headers, serve, wants_stream


class AiohttpProxy:
    """RSGI app: POST → upstream + same path; ``GET /healthz`` answers locally."""

    session: aiohttp.ClientSession

    def __rsgi_init__(self, loop: Any) -> None:
        self.upstream = os.environ.get("BASELINE_UPSTREAM", "http://127.0.0.1:8099")
        # Built inside granian's worker loop: a session is bound to the loop running when it is made.
        self.session = loop.run_until_complete(self._make_session())

    @staticmethod
    async def _make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    def __rsgi_del__(self, loop: Any) -> None:
        loop.run_until_complete(self.session.close())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.method != "POST":
            proto.response_bytes(200, JSON, HEALTH)
            return
        body = await proto()
        try:
            async with self.session.post(
                self.upstream + scope.path, data=body, headers=forward_headers(scope), allow_redirects=False
            ) as resp:
                if wants_stream(body) and resp.status == 200:
                    transport = proto.response_stream(200, SSE)
                    async for chunk in resp.content.iter_any():
                        await transport.send_bytes(chunk)
                    return
                proto.response_bytes(resp.status, JSON, await resp.read())
        except aiohttp.ClientError:
            proto.response_bytes(502, JSON, BAD_GATEWAY)
        except ProtocolClosed:
            pass  # the client went away mid-stream; leaving the block releases the upstream connection


app = AiohttpProxy()


def main(argv: list[str] | None = None) -> None:
    """Serve the aiohttp baseline (see ``bench.baselines``)."""
    serve("bench.baselines.aiohttp_proxy:app", argv, __doc__ or "")


if __name__ == "__main__":
    main()
