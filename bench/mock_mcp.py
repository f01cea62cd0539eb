"""A zero-latency MCP server for the MCP benchmark: Streamable HTTP, stateless, JSON answers.

Answers ``initialize``, ``server/discover``, ``ping``, ``tools/list`` (one tool, ``noop``) and
``tools/call`` of ``noop`` with one pre-encoded JSON body each, and 202 to notifications, so the
figures measure the gateway rather than an SDK server's own cost. Both protocol eras work
(``_meta`` is ignored). One granian RSGI worker, like ``bench.mock_upstream``.

    python -m bench.mock_mcp --port 8190          # MCP endpoint: http://127.0.0.1:8190/mcp
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

JSON = [("content-type", "application/json")]
TOOL = {"name": "noop", "description": "Does nothing.", "inputSchema": {"type": "object", "properties": {}}}
RESULTS: dict[str, Any] = {
    "initialize": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "bench-mcp", "version": "1"},
    },
    "server/discover": {
        "supportedVersions": ["2026-07-28"],
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "bench-mcp", "version": "1"},
        "resultType": "complete",
    },
    "ping": {},
    "tools/list": {"tools": [TOOL], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"},
    "tools/call": {"content": [{"type": "text", "text": "ok"}], "isError": False, "resultType": "complete"},
}


class _Msg(msgspec.Struct):
    id: Any = None
    method: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_encode = msgspec.json.Encoder().encode


class McpMock:
    """RSGI app: POST /mcp → a JSON-RPC answer (the request's id echoed); anything else 405."""

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.method != "POST":
            proto.response_bytes(405, [("allow", "POST")], b"")
            return
        try:
            msg = _decode(await proto())
        except msgspec.DecodeError:
            proto.response_bytes(
                400, JSON, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}'
            )
            return
        if msg.id is None:
            proto.response_bytes(202, [], b"")
            return
        result = RESULTS.get(msg.method)
        if result is None:
            body = {"jsonrpc": "2.0", "id": msg.id, "error": {"code": -32601, "message": "Method not found"}}
        else:
            body = {"jsonrpc": "2.0", "id": msg.id, "result": result}
        proto.response_bytes(200, JSON, _encode(body))


app = McpMock()


def main(argv: list[str] | None = None) -> None:
    """Serve the mock with one granian RSGI worker."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8190)
    args = parser.parse_args(argv)
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "bench.mock_mcp:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=1,
        log_level=LogLevels.warning,
    ).serve()


if __name__ == "__main__":
    main()
