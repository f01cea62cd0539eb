"""Sans-IO: the UTF-8 and nesting checks on request bodies, and URL credential redaction."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.body import MAX_JSON_DEPTH, check_json_bytes, json_depth_exceeds, parse_request
from gateway.errors import InvalidRequest
from gateway.redact import install_log_redaction, origin, redact_text


def nested(depth: int, filler: bytes = b"") -> bytes:
    """An object whose deepest array is at ``depth`` (the object itself is level 1)."""
    return b'{"a": ' + b"[" * (depth - 1) + filler + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [2, 10, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
def test_depth_at_or_under_the_limit(depth: int) -> None:
    body = nested(depth)
    json.loads(body)
    assert not json_depth_exceeds(body)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 50_000])
def test_depth_over_the_limit(depth: int) -> None:
    assert json_depth_exceeds(nested(depth))


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 1000 + "{" * 1000, "t": 'a \\"[[[[" ]]]] \\\\', "u": "\\\\"}).encode()
    json.loads(text)
    assert not json_depth_exceeds(text)
    deep_after_strings = b'{"s": "]]]]\\"]]]]", "x": ' + nested(MAX_JSON_DEPTH + 1)[6:-1] + b"}"
    json.loads(deep_after_strings)
    assert json_depth_exceeds(deep_after_strings)


def test_wide_but_shallow_bodies_pass() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "[x] {y} \\ \n"}]}] * 2000
    body = json.dumps({"model": "m", "messages": messages}).encode()
    assert len(body) > 64 * 1024
    assert not json_depth_exceeds(body)


def test_long_projection_uses_the_linear_scan() -> None:
    chain = b"[" * 100 + b"]" * 100
    wide = b'{"a": [' + b",".join([chain] * 400) + b"]}"  # projection > 64 KiB, depth 102
    assert not json_depth_exceeds(wide)
    assert json_depth_exceeds(wide, limit=101)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "m\xff", "messages": []}', "invalid_utf8"),
        (b'{"model": "m", "messages": [{"content": "\xc3\x28"}]}', "invalid_utf8"),
        (b'{"model": "m", "messages": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "json_too_deep"),
    ],
)
def test_parse_request_refuses(body: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body, "chat")
    assert info.value.code == code and info.value.status == 400


def test_valid_utf8_passes() -> None:
    check_json_bytes('{"model": "m", "messages": [{"content": "héllo ✓ 日本"}]}'.encode())


def test_redaction() -> None:
    assert origin("http://svc:PASS@host:8080/v1?key=x") == "http://host:8080"
    assert origin("https://api.example.com/v1") == "https://api.example.com"
    assert origin("http://u:p@ss@host/v1") == "http://host"  # a raw "@" in the password
    text = "cannot reach http://u:secret@h:1/v1 nor nats://a:b@n:4222, mail me@example.com"
    assert redact_text(text) == "cannot reach http://***@h:1/v1 nor nats://***@n:4222, mail me@example.com"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    log = logging.getLogger("test.redact")
    with caplog.at_level(logging.INFO, logger="test.redact"):
        log.info("connecting to %s", "nats://user:hunter2@nats:4222")
        try:
            raise ConnectionError("refused by http://svc:hunter2@10.0.0.1/v1")
        except ConnectionError:
            log.exception("upstream failed")
    assert "hunter2" not in caplog.text
    assert "nats://***@nats:4222" in caplog.text and "http://***@10.0.0.1/v1" in caplog.text
