"""Bare granian RSGI pass-through proxy with pyreqwest's native async client (a baseline).

Set up the way a pass-through must use pyreqwest (measured pitfalls, see issue 2): redirects and
decompression off, and streamed responses read with ``read_chunk()`` on a request whose
``streamed_read_buffer_limit`` is 0, otherwise SSE is held back until 64 KiB or EOF.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from granian.rsgi import ProtocolClosed
from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import PyreqwestError

from bench.baselines import BAD_GATEWAY, HEALTH, JSON, SSE, forward_headers, serve, wants_stream


class PyreqwestProxy:
    """RSGI app: POST → upstream + same path; ``GET /healthz`` answers locally."""

    def __rsgi_init__(self, loop: Any) -> None:
        self.upstream = os.environ.get("BASELINE_UPSTREAM", "http://127.0.0.1:8099")
        builder = ClientBuilder()
        ca_file = os.environ.get("BASELINE_CA_FILE")
        if ca_file:  # an https upstream signed by the bench's throwaway CA (as the gateway's ca_file)
            with open(ca_file, "rb") as f:
                builder = builder.add_root_certificate_pem(f.read())
        self.client = (
            builder.follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .connect_timeout(timedelta(seconds=5))
            .read_timeout(timedelta(seconds=60))
            .pool_max_idle_per_host(1024)
            .build()
        )

    def __rsgi_del__(self, loop: Any) -> None:
        loop.run_until_complete(self.client.close())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.method != "POST":
            proto.response_bytes(200, JSON, HEALTH)
            return
        body = await proto()
        request = (
            self.client.post(self.upstream + scope.path).headers(forward_headers(scope)).body_bytes(body)
        )
        try:
            if wants_stream(body):
                async with request.streamed_read_buffer_limit(0).build_streamed() as resp:
                    if resp.status != 200:
                        proto.response_bytes(resp.status, JSON, (await resp.bytes()).to_bytes())
                        return
                    transport = proto.response_stream(200, SSE)
                    reader = resp.body_reader
                    while (chunk := await reader.read_chunk()) is not None:
                        await transport.send_bytes(chunk.to_bytes())
                return
            resp = await request.build().send()
            proto.response_bytes(resp.status, JSON, (await resp.bytes()).to_bytes())
        except PyreqwestError:
            proto.response_bytes(502, JSON, BAD_GATEWAY)
        except ProtocolClosed:
            pass  # the client went away mid-stream; leaving the block releases the upstream connection


app = PyreqwestProxy()


def main(argv: list[str] | None = None) -> None:
    """Serve the pyreqwest baseline (see ``bench.baselines``)."""
    serve("bench.baselines.pyreqwest_proxy:app", argv, __doc__ or "")


if __name__ == "__main__":
    main()
