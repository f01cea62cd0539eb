"""Hostile input against the real gateway: never a 500, a hang, a traceback or a leaked secret.

Invalid UTF-8 and JSON nested past ``MAX_JSON_DEPTH`` get a 400 in OpenAI's error shape; a body
that stops arriving gets a 408 after ``server.body_timeout_s`` and its connection is closed; a
client that leaves mid-body is counted under status 499; a password in a provider's
``base_url`` reaches neither the client, nor the log, nor a span.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.body import MAX_JSON_DEPTH
from tests.conftest import Proc, free_port, provider, start_gateway
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(90)

CHAT = "/v1/chat/completions"
PASSWORD = "S3cr3t-pa55word"  # noqa: S105 - a test value that must never leave the gateway


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "server": {"body_timeout_s": 1.0, "header_timeout_s": 1.0},
        "tracing": {"enabled": False},
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("inputs"))
    yield proc
    proc.stop()


def assert_400(resp: httpx.Response, code: str) -> None:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == code and err["message"]


def status_counts(gw: Proc) -> dict[str, float]:
    body = httpx.get(gw.url + "/metrics").text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            if s.name == "llm_gateway_requests_total":
                out[s.labels["status_code"]] = out.get(s.labels["status_code"], 0) + s.value
    return out


def raw_exchange(port: int, data: bytes, wait_s: float) -> tuple[bytes, bool]:
    """Send ``data``, read until the server closes or ``wait_s`` passes: (bytes read, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return got, False
            if not chunk:
                return got, True
            got += chunk
        return got, False


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "mock/gpt-\xff\xfe4o", "messages": []}',  # inside model
        b'{"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "\xc3\x28"}]}',
        b'{"model": "mock/gpt-4o", "messages": [], "\xed\xa0\x80": 1}',  # a surrogate, in a key
    ],
)
def test_invalid_utf8_is_400(gw: Proc, body: bytes) -> None:
    r = httpx.post(gw.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert_400(r, "invalid_utf8")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_json_nested_past_the_limit_is_400(gw: Proc, depth: int) -> None:
    # {"model", "messages": [ <depth - 2 arrays> ]}: the document's depth is ``depth``.
    inner = b"[" * (depth - 2) + b"]" * (depth - 2)
    body = b'{"model": "mock/gpt-4o", "messages": [' + inner + b"]}"
    r = httpx.post(gw.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert_400(r, "json_too_deep")


def test_json_at_the_limit_is_accepted(gw: Proc) -> None:
    # Depth exactly MAX_JSON_DEPTH, most of it inside a string-free extra field; brackets in strings
    # (which do not nest) must not count.
    extra = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    body = (
        b'{"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "[[[[ \\" {{{{"}],'
        b' "metadata_x": ' + extra + b"}"
    )
    r = httpx.post(gw.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_slow_body_times_out_and_the_connection_closes(gw: Proc) -> None:
    port = int(gw.url.rsplit(":", 1)[1])
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    got, closed = raw_exchange(port, head + b'content-length: 100\r\n\r\n{"model"', wait_s=10)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"code":"body_timeout"' in got
    assert closed  # the rest of the body may still come: the connection is not reused


def test_slow_headers_are_cut_off(gw: Proc) -> None:
    port = int(gw.url.rsplit(":", 1)[1])
    _, closed = raw_exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n", wait_s=10)
    assert closed  # granian's header_read_timeout (server.header_timeout_s)


def test_client_leaving_mid_body_is_499_not_500(gw: Proc) -> None:
    before = status_counts(gw)
    port = int(gw.url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"
                b'{"model": "mock/gpt-4o", "mess'
            )
            time.sleep(0.1)  # the request is being read when the client goes
    deadline = time.monotonic() + 10
    after = status_counts(gw)
    while after.get("499", 0) - before.get("499", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        after = status_counts(gw)
    assert after.get("499", 0) - before.get("499", 0) == 3
    assert after.get("500", 0) == before.get("500", 0)


def test_no_traceback_logged_for_any_of_it(gw: Proc) -> None:
    """Runs last in this module: everything above happened on this gateway."""
    r = httpx.post(gw.url + CHAT, json={"model": "mock/gpt-4o", "messages": []})
    assert r.status_code == 200  # still serving
    log = gw.output()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


async def test_password_in_base_url_never_leaks(
    mock: Proc,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    dead = f"http://svc:{PASSWORD}@127.0.0.1:{free_port()}/v1"
    config = {
        "providers": [
            {**provider("locked", dead, ["gpt-4o"]), "connect_timeout_s": 1},
            provider("mock", mock.url, ["gpt-4o"]),
        ],
        "tracing": {"flush_interval_ms": 50},
        "exporter": {"traces": [{"name": "receiver", "endpoint": otlp_receiver.traces_url}]},
    }
    gw = start_gateway(config, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=15) as client:
            msg = {"model": "locked/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
            r = await client.post(CHAT, json=msg)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "upstream_unreachable"
            assert "127.0.0.1" in r.json()["error"]["message"]  # the origin is named...
            assert PASSWORD not in r.text and "svc:" not in r.text  # ...without its userinfo
            trace = r.headers["x-request-id"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(s.trace_id.hex() == trace for s in otlp_receiver.spans()):
                break
            await asyncio.sleep(0.05)
        spans = [s for s in otlp_receiver.spans() if s.trace_id.hex() == trace]
        assert len(spans) >= 3  # root, auth, resolution, the failed attempt
        exported = b"".join(rec.message.SerializeToString() for rec in otlp_receiver.received)
        assert b"locked/gpt-4o" in exported
        assert PASSWORD.encode() not in exported
    finally:
        gw.stop()
    log = gw.output()
    assert log  # the gateway did log (start-up lines at least)
    assert PASSWORD not in log
