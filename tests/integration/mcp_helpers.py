"""Shared pieces of the MCP gateway tests: real upstream MCP servers (official SDK) on free ports,
the gateway config that registers them, and official-SDK client sessions through the gateway."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import LOG_DIR, ROOT, Proc, free_port, wait_http

KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-0123456789", "carol": "sk-carol-0123456789"}
ACCEPT = "application/json, text/event-stream"


def start_upstream(*args: str, port: int | None = None) -> Proc:
    """``python -m tests.mcp_upstream`` (an MCPServer under uvicorn) on a free port."""
    port = port or free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"mcp-upstream-{port}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_upstream", "--port", str(port), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout_s=30, proc=popen)  # a GET on /mcp would open a stream
    except Exception:
        popen.kill()
        popen.wait()
        raise
    return Proc(popen, url, log_path)


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def gateway_config(stateful: str, stateless: str, html: str | None = None, **extra: Any) -> dict[str, Any]:
    servers: list[dict[str, Any]] = [
        {
            "name": "stateful",
            "url": stateful,
            "tools": {"deny": ["delete_*"]},
            "headers": {"x-upstream-key": "gateway-secret"},
            "forward_caller_identity": True,
        },
        {"name": "stateless", "url": stateless, "timeout_s": 2},
        {"name": "everything", "composite": ["stateful", "stateless"]},
    ]
    if html:
        servers.append({"name": "website", "url": html})
    return {
        "auth": {
            "api_keys": [
                {"subject": "user:alice", "teams": ["eng"], "key_sha256": sha(KEYS["alice"])},
                {"subject": "user:bob", "key_sha256": sha(KEYS["bob"])},
                {"subject": "user:carol", "key_sha256": sha(KEYS["carol"])},
            ]
        },
        "mcp_servers": servers,
        "access_mcp": [
            {"subjects": ["team:eng"], "servers": ["*"], "tools": ["*"]},
            {"subjects": ["user:bob"], "servers": ["stateful"], "tools": ["get_*", "list_*"]},
            {"subjects": ["user:bob"], "servers": ["everything"], "tools": ["*"]},
        ],
        "rate_limiting": [
            {
                "id": "issue-reads",
                "when": {"mcp_servers": ["stateless"], "tools": ["get_issue"]},
                "limit_to": 2,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ],
        **extra,
    }


def headers_for(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[user]}"}


@asynccontextmanager
async def sdk_session(
    url: str, user: str, transport: httpx2.AsyncBaseTransport | None = None, **session_kw: Any
) -> AsyncIterator[ClientSession]:
    """An initialized official-SDK ClientSession (Streamable HTTP, handshake revision) as ``user``."""
    client = httpx2.AsyncClient(headers=headers_for(user), timeout=httpx2.Timeout(20.0), transport=transport)
    async with client, streamable_http_client(url, http_client=client) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, **session_kw) as session:
            await session.initialize()
            yield session


def post(url: str, body: Any, user: str | None = "alice", **headers: str) -> httpx.Response:
    """One raw POST to an MCP endpoint (JSON body, the Accept the spec requires unless overridden)."""
    h = {"accept": ACCEPT, "content-type": "application/json", **(headers_for(user) if user else {})}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    content = body if isinstance(body, bytes) else httpx.Request("POST", url, json=body).content
    return httpx.post(url, content=content, headers=h, timeout=15)


def initialize(url: str, user: str = "alice", version: str = "2025-06-18") -> str:
    """A raw handshake; returns the session token."""
    r = post(
        url,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        user,
    )
    assert r.status_code == 200, r.text
    token = r.headers["mcp-session-id"]
    ack = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, user, mcp_session_id=token)
    assert ack.status_code == 202, ack.text
    return token


def rpc_result(r: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message in a JSON or SSE answer (the last message event)."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        import json

        datas = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        return json.loads(datas[-1])
    return r.json()
