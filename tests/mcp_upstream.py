"""A real MCP server for the tests, built with the official ``mcp`` SDK (``MCPServer``), served by
uvicorn on 127.0.0.1::

    python -m tests.mcp_upstream --port 8123 [--stateless] [--json] [--name github]

Tools: ``echo``, ``add``, ``noop``, ``get_issue``, ``list_issues``, ``delete_repo``,
``progress`` (reports progress, then answers), ``fail`` (raises: the result has ``isError``),
``hang`` (sleeps), ``whoami`` (the gateway headers it received: identity, traceparent, _meta),
``remember``/``recall`` (per-session state: only meaningful on the stateful server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel


class Confirmation(BaseModel):
    ok: bool


def build(name: str) -> MCPServer:
    server: MCPServer = MCPServer(name)
    memory: dict[str, str] = {}

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def noop() -> str:
        """Do nothing (benchmarks)."""
        return "ok"

    @server.tool()
    def get_issue(number: int) -> str:
        """Read an issue."""
        return f"issue {number} on {name}"

    @server.tool()
    def list_issues() -> str:
        """List issues."""
        return "1,2,3"

    @server.tool()
    def delete_repo(repo: str) -> str:
        """Delete a repository (the gateway should never let this through)."""
        return f"deleted {repo}"

    @server.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Report ``steps`` progress notifications, then answer."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await asyncio.sleep(0.05)
        return f"done after {steps} steps"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"failed on purpose: {reason}")

    @server.tool()
    async def hang(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "woke up"

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The gateway-set headers this call arrived with, as JSON."""
        headers: Any = ctx.headers or {}
        keep = ("x-gateway-subject", "x-gateway-teams", "traceparent", "authorization", "x-upstream-key")
        seen = {k: headers.get(k) for k in keep if headers.get(k) is not None}
        meta: Any = ctx.request_context.meta or {}
        seen["_meta_traceparent"] = meta.get("traceparent")
        return json.dumps(seen)

    @server.tool()
    async def confirm(action: str, ctx: Context) -> str:
        """Asks the client (elicitation, a server-to-client request) before answering."""
        answer = await ctx.elicit(f"Really {action}?", Confirmation)
        if answer.action == "accept" and answer.data is not None:
            return f"{action}: {'yes' if answer.data.ok else 'no'}"
        return f"{action}: {answer.action}"

    @server.tool()
    def session_key(ctx: Context) -> str:
        """Identifies the upstream session serving this call (stateful server)."""
        headers: Any = ctx.headers or {}
        return str(headers.get("mcp-session-id"))

    @server.tool()
    def remember(key: str, value: str) -> str:
        """Store a value (process memory)."""
        memory[key] = value
        return "stored"

    @server.tool()
    def recall(key: str) -> str:
        """Read a stored value."""
        return memory.get(key, "<missing>")

    return server


async def _html_app(scope: Any, receive: Any, send: Any) -> None:
    """A web server that is not an MCP server (a misconfigured registry entry)."""
    if scope["type"] != "http":
        return
    body = b"<html><body>Welcome to nginx</body></html>"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="upstream")
    ap.add_argument("--stateless", action="store_true")
    ap.add_argument("--json", action="store_true", help="answer with JSON instead of SSE streams")
    ap.add_argument("--html", action="store_true", help="not an MCP server: answer every request with HTML")
    args = ap.parse_args()
    if args.html:
        app: Any = _html_app
    else:
        app = build(args.name).streamable_http_app(stateless_http=args.stateless, json_response=args.json)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
