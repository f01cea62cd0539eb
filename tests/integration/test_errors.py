"""Bad input and upstream failures: a clear OpenAI-style error every time, never a 500 or a hang."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import Proc

pytestmark = pytest.mark.timeout(60)

CHAT = "/v1/chat/completions"


def assert_error(
    resp: httpx.Response, status: int, code: str | None = None, type_: str | None = None
) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    if type_ is not None:
        assert err["type"] == type_
    return err


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b"", "empty_body", None),
        (b"   ", "empty_body", None),
        (b'{"messages": []}', "missing_required_parameter", "model"),
        (b'{"model": 42, "messages": []}', "invalid_type", "model"),
        (b'{"model": "", "messages": []}', "invalid_value", "model"),
        (b'{"model": "mock/gpt-4o", "messages": [], "stream": "yes"}', "invalid_type", "stream"),
        (b'{"model": "mock/gpt-4o", "messages": "hello"}', "invalid_type", "messages"),
        (b'{"model": "mock/gpt-4o"}', "missing_required_parameter", "messages"),
        (
            b'{"model": "mock/gpt-4o", "messages": [], "stream": true, "stream_options": 3}',
            "invalid_type",
            "stream_options",
        ),
    ],
)
def test_bad_bodies_get_400(gateway: Proc, body: bytes, code: str, param: str | None) -> None:
    r = httpx.post(gateway.url + CHAT, content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 400, code, "invalid_request_error")
    assert err["param"] == param


def test_embeddings_require_input(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/embeddings", json={"model": "mock/text-embedding-3-small"})
    assert_error(r, 400, "missing_required_parameter")


def test_unknown_model_404(gateway: Proc) -> None:
    r = httpx.post(gateway.url + CHAT, json={"model": "nope/gpt-4o", "messages": []})
    err = assert_error(r, 404, "model_not_found")
    assert "nope/gpt-4o" in err["message"]


def test_wrong_method_405(gateway: Proc) -> None:
    r = httpx.get(gateway.url + CHAT)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


def test_unknown_route_404(gateway: Proc) -> None:
    assert_error(httpx.get(gateway.url + "/v2/nothing"), 404, "unknown_url")


def test_body_over_limit_413_without_reading_it(gateway: Proc) -> None:
    """Only the headers are sent: the answer must come without the 2 MiB body."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 2097152\r\n\r\n"
        )
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 413"), data[:100]
    assert b'"code":"payload_too_large"' in data


def test_chunked_body_over_limit_413(gateway: Proc) -> None:
    def gen():  # no content-length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65536

    r = httpx.post(gateway.url + CHAT, content=gen(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_upstream_unreachable_502(gateway: Proc) -> None:
    r = httpx.post(gateway.url + CHAT, json={"model": "dead/gpt-4o", "messages": []})
    err = assert_error(r, 502, "upstream_unreachable")
    assert "127.0.0.1" in err["message"]


def test_upstream_timeout_504(gateway: Proc) -> None:
    started = time.monotonic()
    r = httpx.post(gateway.url + CHAT, json={"model": "mock/slow-3000", "messages": []}, timeout=10)
    assert_error(r, 504, "upstream_timeout", "timeout_error")
    assert time.monotonic() - started < 3.0  # the 1.5 s read timeout fired, not the mock's 3 s


@pytest.mark.parametrize("status", [400, 429, 503])
def test_upstream_error_status_relayed_with_body(gateway: Proc, status: int) -> None:
    r = httpx.post(gateway.url + CHAT, json={"model": f"mock/error-{status}", "messages": []})
    assert r.status_code == status
    assert r.json()["error"]["message"] == f"mock: programmed {status}"  # the upstream's own body


def test_stream_cut_mid_way_ends_with_error_event(gateway: Proc) -> None:
    with httpx.stream(
        "POST", gateway.url + CHAT, json={"model": "mock/cut-3", "messages": [], "stream": True}
    ) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert '"error"' in lines[-1], "a cut stream must end with an error event, never silently"
    assert "[DONE]" not in lines[-1]


def test_stream_silent_mid_way_ends_with_timeout_event(gateway: Proc) -> None:
    started = time.monotonic()
    with httpx.stream(
        "POST", gateway.url + CHAT, json={"model": "mock/stall-2", "messages": [], "stream": True}, timeout=10
    ) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert len(lines) == 3 and time.monotonic() - started < 5.0  # two events, then the read timeout
    err = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert err["code"] == "upstream_timeout", err  # the client library's error, translated


def test_gateway_stays_healthy_after_bad_input(gateway: Proc) -> None:
    for body in (b"{", b"", b'{"model": 1}'):
        httpx.post(gateway.url + CHAT, content=body)
    r = httpx.post(gateway.url + CHAT, json={"model": "mock/gpt-4o", "messages": []})
    assert r.status_code == 200
    assert httpx.get(gateway.url + "/healthz").status_code == 200
