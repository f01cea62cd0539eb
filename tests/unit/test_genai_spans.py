"""Records → spans → enrichment: where the GenAI attributes land on a trace."""

from __future__ import annotations

import json
from typing import Any

from exporter.enrich import enrich_batch
from gateway.telemetry.expand import expand_batch
from gateway.telemetry.wire import (
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    AttemptRecord,
    Resource,
    Span,
    TargetInfo,
    TraceBatch,
)
from tests import genai_schema
from tests.records import TARGET, chat_record

CLAUDE = TargetInfo("anthropic-main/claude", "anthropic", "claude-sonnet-4-5", "api.anthropic.com", 443)
REQUEST = {
    "model": "openai-main/gpt-4o",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "temperature": 0.3,
}
RESPONSE = {
    "id": "chatcmpl-1",
    "system_fingerprint": "fp_44709d6fcb",
    "service_tier": "default",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Rainy."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 16}},
}


def _spans(**fields: Any) -> list[Span]:
    record = chat_record(json.dumps(REQUEST).encode(), **fields)
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, Resource("svc", "1", "h"), [record]))
    enrich_batch(batch)
    return batch.spans


def test_only_the_model_call_carries_gen_ai_and_its_content() -> None:
    spans = _spans(response_body=json.dumps(RESPONSE).encode(), input_tokens=20, output_tokens=2)
    root, *others = spans
    (call,) = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    for s in spans:
        if s is not call:
            assert not [k for k in s.attributes if k.startswith("gen_ai.")], s.name
            assert s.attributes["openinference.span.kind"] == "CHAIN"
    assert "tfy.input_short_hand" in root.attributes and root.attributes["tfy.usage.input_tokens"] == 20
    a = call.attributes
    found = genai_schema.check_attributes(a)
    assert set(found) == {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"}
    assert found["gen_ai.output.messages"][0]["parts"] == [{"type": "text", "content": "Rainy."}]
    assert a["openinference.span.kind"] == "LLM"
    assert a["gen_ai.request.temperature"] == 0.3
    assert a["gen_ai.response.id"] == "chatcmpl-1" and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.cache_read.input_tokens"]) == (20, 16)
    assert "gen_ai.response.time_to_first_chunk" not in a  # not streamed
    assert a["openai.api.type"] == "chat_completions" and a["openai.response.service_tier"] == "default"
    assert a["openai.response.system_fingerprint"] == "fp_44709d6fcb"


def test_anthropic_target_shows_the_conversation_as_received() -> None:
    t0 = chat_record().start_pc
    attempt = AttemptRecord(b"c" * 8, CLAUDE, "primary", t0 + 40_000, t0 + 4_000_000, 200)
    # What the gateway recorded: the client's OpenAI body, and the response as translated for it.
    translated = {**RESPONSE, "model": "claude-sonnet-4-5-20250929", "usage": {"prompt_tokens": 20, "completion_tokens": 2}}
    spans = _spans(attempts=(attempt,), response_body=json.dumps(translated).encode())
    (call,) = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    assert call.name == "chat claude-sonnet-4-5" and call.attributes["gen_ai.provider.name"] == "anthropic"
    assert not [k for k in call.attributes if k.startswith("openai.")]  # not an OpenAI call
    found = genai_schema.check_attributes(call.attributes)
    assert found["gen_ai.input.messages"][0] == {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}
    assert found["gen_ai.output.messages"][0]["finish_reason"] == "stop"


def test_failed_attempts_carry_the_input_not_the_answer() -> None:
    t0 = chat_record().start_pc
    attempts = (
        AttemptRecord(b"a" * 8, TARGET, "primary", t0 + 1, t0 + 2, 503, "upstream_error", "503"),
        AttemptRecord(b"b" * 8, CLAUDE, "fallback", t0 + 3, t0 + 4, 200),
    )
    spans = _spans(attempts=attempts, response_body=json.dumps(RESPONSE).encode())
    failed, served = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    assert "gen_ai.input.messages" in failed.attributes and "gen_ai.output.messages" not in failed.attributes
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert json.loads(failed.attributes["logfire.json_schema"])["properties"].keys() == {
        "gen_ai.input.messages", "gen_ai.tool.definitions"
    }
    assert "gen_ai.output.messages" in served.attributes and served.attributes["gen_ai.usage.input_tokens"] == 3


def test_stream_output_and_time_to_first_chunk_on_the_call() -> None:
    t0 = chat_record().start_pc
    events = [
        {"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Rai"}}]},
        {"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "ny."}, "finish_reason": "stop"}]},
    ]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    spans = _spans(stream=True, response_body=b"", response_sse=sse, stream_start_pc=t0 + 4_100_000, stream_end_pc=t0 + 4_900_000)
    root = spans[0]
    (call,) = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    assert json.loads(root.attributes["tfy.output"])["choices"][0]["message"]["content"] == "Rainy."
    assert "tfy.output.sse" not in root.attributes
    assert root.attributes["tfy.model.metric.time_to_first_token_in_ms"] == 4.0
    assert call.attributes["gen_ai.response.time_to_first_chunk"] > 0
    out = genai_schema.check_attributes(call.attributes)["gen_ai.output.messages"]
    assert out == [{"role": "assistant", "parts": [{"type": "text", "content": "Rainy."}], "finish_reason": "stop"}]
    stream = next(s for s in spans if s.name == "stream")
    assert stream.attributes == {"openinference.span.kind": "CHAIN"}


def test_embeddings_call_is_an_embedding_span_without_messages() -> None:
    body = b'{"model":"emb","input":"hello","encoding_format":"float","dimensions":64}'
    record = chat_record(body, path="/v1/embeddings", endpoint="embeddings",
                         response_body=b'{"object":"list","model":"text-embedding-3-small","data":[],"usage":{"prompt_tokens":1,"total_tokens":1}}')  # fmt: skip
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, Resource("svc", "1", "h"), [record]))
    enrich_batch(batch)
    (call,) = [s for s in batch.spans if s.kind == SPAN_KIND_CLIENT]
    a = call.attributes
    assert call.name == "embeddings gpt-4o" and a["openinference.span.kind"] == "EMBEDDING"
    assert not [k for k in a if k in genai_schema.CHECKS or k == "logfire.json_schema"]
    assert a["gen_ai.embeddings.dimension.count"] == 64 and a["gen_ai.request.encoding_formats"] == ["float"]
    assert a["gen_ai.response.model"] == "text-embedding-3-small"


def test_no_content_work_when_every_destination_excludes_it() -> None:
    record = chat_record(json.dumps(REQUEST).encode(), response_body=json.dumps(RESPONSE).encode())
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, Resource("svc", "1", "h"), [record]))
    enrich_batch(batch, content=False)
    (call,) = [s for s in batch.spans if s.kind == SPAN_KIND_CLIENT]
    assert not [k for k in call.attributes if k in genai_schema.CHECKS or k == "logfire.json_schema"]
    assert call.attributes["gen_ai.response.id"] == "chatcmpl-1"  # response attributes stay
    assert call.attributes["gen_ai.usage.cache_read.input_tokens"] == 16


def test_the_inbound_path_picks_the_api_mapping() -> None:
    """A Messages-API surface records Anthropic bodies: the same enrichment maps them as such."""
    body = {"model": "claude", "max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
              "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 5, "cache_read_input_tokens": 3, "output_tokens": 2}}  # fmt: skip
    record = chat_record(json.dumps(body).encode(), path="/v1/messages", response_body=json.dumps(answer).encode())
    batch = expand_batch(TraceBatch(SCHEMA_VERSION, Resource("svc", "1", "h"), [record]))
    enrich_batch(batch)
    (call,) = [s for s in batch.spans if s.kind == SPAN_KIND_CLIENT]
    found = genai_schema.check_attributes(call.attributes)
    assert found["gen_ai.system_instructions"] == [{"type": "text", "content": "Be brief."}]
    assert found["gen_ai.output.messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello."}], "finish_reason": "stop"}
    ]
    assert call.attributes["gen_ai.usage.cache_read.input_tokens"] == 3
