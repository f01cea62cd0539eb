"""MCP sessions across gateway processes that share a config file and nothing else, a gateway
restart, an upstream restart, and an upstream killed in the middle of a streamed tool call."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import Proc, start_gateway
from tests.integration.mcp_helpers import gateway_config, sdk_session, start_upstream

pytestmark = pytest.mark.timeout(120)


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each HTTP request of one client to the next gateway process in turn (a load balancer)."""

    def __init__(self, ports: list[int]) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.ports = ports
        self.sent: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.sent) % len(self.ports)]
        self.sent.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _port(proc: Proc) -> int:
    return int(proc.url.rsplit(":", 1)[1])


def _text(result: Any) -> str:
    assert not result.is_error, result
    return str(result.content[0].text)


async def test_session_moves_between_gateways_and_survives_a_restart(tmp_path: Path) -> None:
    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless")
    cfg = gateway_config(stateful.url, stateless.url)
    a = start_gateway(cfg, tmp_path)
    b = start_gateway(cfg, tmp_path)
    try:
        lb = RoundRobin([_port(a), _port(b)])
        async with sdk_session(a.url + "/mcp/stateful", "alice", transport=lb) as s:
            keys = {_text(await s.call_tool("session_key", {})) for _ in range(4)}
            assert len(keys) == 1 and "None" not in keys  # one upstream session, whichever gateway served it
            assert set(lb.sent) == {_port(a), _port(b)}
            assert _text(await s.call_tool("add", {"a": 1, "b": 2})) == "3"
            # gateway A goes away; a new process with the same config takes its traffic
            a.stop()
            a2 = start_gateway(cfg, tmp_path)
            try:
                lb.ports = [_port(a2), _port(b)]
                assert {_text(await s.call_tool("session_key", {})) for _ in range(3)} == keys
                # the upstream restarts and forgets every session: re-initialised lazily
                stateful.stop()
                restarted = start_upstream(
                    "--name", "stateful", port=int(stateful.url.split(":")[2].split("/")[0])
                )
                try:
                    after = {_text(await s.call_tool("session_key", {})) for _ in range(3)}
                    assert len(after) <= 2 and after.isdisjoint(keys)  # new upstream session(s), no error
                    assert _text(await s.call_tool("echo", {"text": "still here"})) == "still here"
                finally:
                    restarted.stop()
            finally:
                a2.stop()
        # a composite session moves too
        async with sdk_session(b.url + "/mcp/everything", "alice", transport=RoundRobin([_port(b)])) as s:
            assert _text(await s.call_tool("stateless__add", {"a": 2, "b": 2})) == "4"
    finally:
        for p in (a, b, stateful, stateless):
            p.stop()


async def test_upstream_killed_mid_stream_ends_the_call_with_an_error(tmp_path: Path) -> None:
    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless")
    gw = start_gateway(gateway_config(stateful.url, stateless.url), tmp_path)
    try:
        first = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            first.set()

        async with sdk_session(gw.url + "/mcp/stateful", "alice") as s:
            call = asyncio.ensure_future(
                s.call_tool("progress", {"steps": 200}, progress_callback=on_progress)
            )
            await asyncio.wait_for(first.wait(), 15)
            stateful.popen.send_signal(signal.SIGKILL)
            with pytest.raises(MCPError) as exc:
                await asyncio.wait_for(call, 15)  # an error, promptly: never a hung client
            assert exc.value.error.code == -32050
        assert httpx.get(gw.url + "/healthz").status_code == 200
        async with sdk_session(gw.url + "/mcp/stateless", "alice") as s:  # the worker is healthy
            assert _text(await s.call_tool("add", {"a": 1, "b": 1})) == "2"
    finally:
        for p in (gw, stateful, stateless):
            p.stop()


def test_draining_pod_closes_get_streams_and_finishes_tool_calls(tmp_path: Path) -> None:
    """SIGTERM: /readyz turns 503, the GET stream ends at once (the client reconnects elsewhere),
    an in-flight streamed tool call still gets its answer."""
    from tests.integration.mcp_helpers import ACCEPT, headers_for, initialize, post, rpc_result

    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless")
    cfg = gateway_config(stateful.url, stateless.url, server={"shutdown_delay_s": 8, "drain_timeout_s": 10})
    gw = start_gateway(cfg, tmp_path)
    try:
        url = gw.url + "/mcp/stateful"
        token = initialize(url)
        h = {**headers_for("alice"), "accept": ACCEPT, "mcp-session-id": token}
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 30}},
        }
        answer: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: answer.update(r=post(url, call, mcp_session_id=token)))
        with httpx.stream("GET", url, headers=h, timeout=20) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            worker.start()
            time.sleep(0.3)
            gw.popen.send_signal(signal.SIGTERM)
            for _ in stream.iter_bytes():  # ends when the gateway closes it
                pass
        # closed by the drain while the pod still listens (readiness already false)
        assert httpx.get(gw.url + "/readyz").status_code == 503
        worker.join(20)
        r = answer["r"]
        assert r.status_code == 200 and rpc_result(r)["result"]["content"][0]["text"] == "done after 30 steps"
    finally:
        for p in (gw, stateful, stateless):
            p.stop()


async def test_config_reload_changes_tool_access_and_keeps_sessions(tmp_path: Path) -> None:
    import yaml

    stateful = start_upstream("--name", "stateful")
    stateless = start_upstream("--stateless")
    cfg = gateway_config(stateful.url, stateless.url, reload={"poll_interval_s": 0.2})
    gw = start_gateway(cfg, tmp_path)
    try:
        async with sdk_session(gw.url + "/mcp/stateful", "bob") as s:
            assert {t.name for t in (await s.list_tools()).tools} == {"get_issue", "list_issues"}
            cfg["access_mcp"][1]["tools"] = ["get_*", "list_*", "echo"]
            (tmp_path / f"gateway-{_port(gw)}.yaml").write_text(yaml.safe_dump(cfg))
            names: set[str] = set()
            for _ in range(100):  # bounded: the file is polled every 0.2 s
                names = {t.name for t in (await s.list_tools()).tools}
                if "echo" in names:
                    break
                await asyncio.sleep(0.1)
            assert names == {"get_issue", "list_issues", "echo"}  # same session, new rules
            assert _text(await s.call_tool("echo", {"text": "after reload"})) == "after reload"
    finally:
        for p in (gw, stateful, stateless):
            p.stop()


async def test_composite_member_down_at_initialize_is_initialised_later(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    stateless = start_upstream("--stateless")
    cfg = gateway_config(f"http://127.0.0.1:{port}/mcp", stateless.url)
    gw = start_gateway(cfg, tmp_path)
    stateful: Proc | None = None
    try:
        async with sdk_session(gw.url + "/mcp/everything", "alice") as s:
            names = {t.name for t in (await s.list_tools()).tools}
            assert "stateless__add" in names and not any(n.startswith("stateful__") for n in names)
            stateful = start_upstream("--name", "stateful", port=port)
            names = {t.name for t in (await s.list_tools()).tools}
            assert "stateful__echo" in names
            assert _text(await s.call_tool("stateful__echo", {"text": "late"})) == "late"
            keys = {_text(await s.call_tool("stateful__session_key", {})) for _ in range(2)}
            assert len(keys) == 1 and "None" not in keys  # one upstream session, opened lazily
    finally:
        for p in (gw, stateless, stateful):
            if p is not None:
                p.stop()
