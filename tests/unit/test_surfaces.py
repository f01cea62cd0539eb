"""The surface abstraction: native vs hub requests, stream chains, error shapes (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.attempt import build_request
from gateway.config import parse_config
from gateway.errors import InvalidRequest, UpstreamStatus, error_response
from gateway.providers.anthropic import AnthropicStreamTranslator
from gateway.routing import PlanEntry, Router
from gateway.runtime import ModelTarget
from gateway.sse import StreamRelay
from gateway.surfaces import StreamChain
from gateway.surfaces.chat import CHAT, COMPLETIONS

CONFIG = """
providers:
  - {name: oai, base_url: "http://oai.test/v1", api_key: sk-o, models: [gpt-4o]}
  - {name: ant, type: anthropic, base_url: "http://ant.test", api_key: sk-a, models: [claude-x]}
"""


def _target(model_id: str) -> tuple[ModelTarget, PlanEntry]:
    cfg = parse_config(CONFIG)
    plan = Router(cfg).plan(model_id)
    assert plan is not None
    provider_name, model = model_id.split("/")
    provider = next(p for p in cfg.providers if p.name == provider_name)
    return ModelTarget(provider, model, client=None), plan.first().entry  # type: ignore[arg-type]


def _chat(body: dict[str, Any]) -> Any:
    return CHAT.parse(json.dumps(body).encode(), {})


def test_native_chat_keeps_the_client_bytes_with_model_rewritten() -> None:
    target, entry = _target("oai/gpt-4o")
    req = _chat({"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 7})
    url, headers, body, native = build_request(target, entry, req, CHAT, [("traceparent", "x")])
    assert native and url == "http://oai.test/v1/chat/completions"
    assert json.loads(body) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 7}
    assert ("authorization", "Bearer sk-o") in headers and headers[-1] == ("traceparent", "x")


def test_chat_to_anthropic_goes_through_the_hub() -> None:
    target, entry = _target("ant/claude-x")
    req = _chat(
        {
            "model": "ant/claude-x",
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        }
    )
    url, headers, body, native = build_request(target, entry, req, CHAT, [])
    assert not native and url == "http://ant.test/v1/messages"
    sent = json.loads(body)
    assert sent["model"] == "claude-x" and sent["system"] == "S"
    assert ("x-api-key", "sk-a") in headers


def test_a_surface_without_hub_form_is_refused_for_other_providers() -> None:
    target, entry = _target("ant/claude-x")
    req = COMPLETIONS.parse(b'{"model": "ant/claude-x", "prompt": "hi"}', {})
    with pytest.raises(InvalidRequest) as info:
        build_request(target, entry, req, COMPLETIONS, [])
    assert info.value.code == "unsupported_endpoint" and "/v1/completions" in info.value.message


ANTHROPIC_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x",'
    b'"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":1}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def test_stream_chain_reads_usage_in_the_hub_and_strips_what_the_client_did_not_ask_for() -> None:
    chain = StreamChain(
        AnthropicStreamTranslator(include_usage=True),
        StreamRelay(strip_usage=True, keep_events=True),
        None,
        True,
    )
    raw = b"".join(ANTHROPIC_EVENTS)
    out = b"".join(chain.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + chain.flush()
    assert chain.done
    assert chain.usage is not None and (chain.usage.prompt_tokens, chain.usage.completion_tokens) == (14, 3)
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert b"".join(chain.events) == out  # the trace keeps what the client got


def test_relayed_error_headers_appear_once_and_ours_win() -> None:
    exc = UpstreamStatus(
        429, b'{"error":{"message":"slow down","type":"rate_limit"}}', "application/json; charset=utf-8",
        [("content-type", "application/json; charset=utf-8"), ("x-request-id", "req_up"), ("retry-after", "2")],
    )  # fmt: skip
    status, headers, body = error_response(exc)
    names = [k for k, _ in headers]
    assert status == 429 and names.count("content-type") == 1 and "x-request-id" not in names
    assert ("retry-after", "2") in headers and json.loads(body)["error"]["message"] == "slow down"


def test_an_anthropic_error_is_reencoded_for_an_openai_surface() -> None:
    exc = UpstreamStatus(
        529,
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "application/json",
        [],
        "anthropic",
    )
    status, _, body = CHAT.error_response(exc)
    assert status == 529
    assert json.loads(body) == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
