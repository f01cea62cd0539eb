"""Trace records → spans: the span tree, attributes and statuses the exporter builds."""

from __future__ import annotations

import msgspec
import pytest

from gateway.telemetry.expand import expand_batch, expand_trace
from gateway.telemetry.wire import (
    PHASE_AUTH,
    PHASE_RESOLUTION,
    SCHEMA_VERSION,
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    AttemptRecord,
    Resource,
    TargetInfo,
    TraceBatch,
    WireVersionError,
    decode_batch,
    encode_batch,
)
from tests.records import TARGET, chat_record

OTHER = TargetInfo("backup/claude", "anthropic", "claude-3-5-haiku", "api.anthropic.com", 443)


def _by_name(record: object) -> dict[str, object]:
    return {s.name: s for s in expand_trace(record)}  # type: ignore[arg-type]


def test_success_tree_links_times_and_attributes() -> None:
    record = chat_record(parent_id=bytes.fromhex("00f067aa0ba902b7"), metadata={"team": "ml"}, cost_usd=0.5)
    spans = expand_trace(record)
    assert [s.name for s in spans] == ["POST /v1/chat/completions", "auth", "model resolution", "chat gpt-4o"]
    assert len(spans) == record.span_count
    root, auth, resolution, call = spans
    assert root.kind == SPAN_KIND_SERVER and root.parent_span_id.hex() == "00f067aa0ba902b7"
    assert root.span_id == record.span_id and call.span_id == record.attempts[0].span_id
    assert (auth.kind, resolution.kind, call.kind) == (
        SPAN_KIND_INTERNAL,
        SPAN_KIND_INTERNAL,
        SPAN_KIND_CLIENT,
    )
    assert {s.trace_id for s in spans} == {record.trace_id}
    assert all(s.parent_span_id == root.span_id for s in spans[1:])
    assert len({s.span_id for s in spans}) == 4
    assert root.start_ns == record.start_pc + record.epoch_offset
    for s in spans:
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
    assert all(s.status_code == STATUS_UNSET for s in spans)
    # The root is no model call: no gen_ai.* at all, the values users filter on under tfy.*;
    # a non-streamed response has no time to first token.
    assert root.attributes == {
        "openinference.span.kind": "CHAIN",
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "tfy.span_type": "ChatCompletion",
        "tfy.input": b'{"model":"m"}',
        "tfy.request.model": "openai-main/gpt-4o",
        "tfy.request.stream": False,
        "tfy.data_routing.provider": "openai",
        "tfy.data_routing.destination": "openai-main/gpt-4o",
        "tfy.request.created_by_subject": "user:alice",
        "tfy.request.metadata": '{"team":"ml"}',
        "tfy.usage.input_tokens": 3,
        "tfy.usage.output_tokens": 5,
        "tfy.output": b'{"id":"chatcmpl-1","choices":[]}',
        "tfy.model.metric.cost_in_usd": 0.5,
        "tfy.model.metric.latency_in_ms": 5.0,
        "http.response.status_code": 200,
    }
    assert not [k for s in spans if s is not call for k in s.attributes if k.startswith("gen_ai.")]
    assert auth.attributes == {"tfy.request.created_by_subject": "user:alice", "openinference.span.kind": "CHAIN"}
    assert resolution.attributes == {"openinference.span.kind": "CHAIN"}
    assert call.attributes == {
        "openinference.span.kind": "LLM",
        "tfy.span_type": "ChatCompletion",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.stream": False,
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "tfy.data_routing.destination": "openai-main/gpt-4o",
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 5,
    }


def test_auth_failure_marks_auth_and_root() -> None:
    record = chat_record(
        status=401,
        error_type="invalid_api_key",
        error_message="API key is not valid",
        failed_phase=PHASE_AUTH,
        subject="",
        resolved_pc=0,
        attempts=(),
        input_tokens=-1,
        response_body=b"",
        first_chunk_pc=0,
    )
    spans = _by_name(record)
    assert set(spans) == {"POST /v1/chat/completions", "auth"}
    root, auth = spans["POST /v1/chat/completions"], spans["auth"]
    for s in (root, auth):
        assert s.status_code == STATUS_ERROR and s.status_message == "API key is not valid"  # type: ignore[attr-defined]
        assert s.attributes["error.type"] == "invalid_api_key"  # type: ignore[attr-defined]
        assert s.attributes["tfy.error_message"] == "API key is not valid"  # type: ignore[attr-defined]
    assert "tfy.request.created_by_subject" not in root.attributes  # type: ignore[attr-defined]
    assert "tfy.usage.input_tokens" not in root.attributes  # type: ignore[attr-defined]
    assert "tfy.data_routing.destination" not in root.attributes  # type: ignore[attr-defined]


def test_unknown_model_fails_model_resolution() -> None:
    record = chat_record(
        status=404,
        error_type="model_not_found",
        error_message="model 'x' does not exist",
        failed_phase=PHASE_RESOLUTION,
        attempts=(),
    )
    resolution = _by_name(record)["model resolution"]
    assert resolution.status_code == STATUS_ERROR  # type: ignore[attr-defined]
    assert resolution.attributes == {"error.type": "ModelNotFound", "openinference.span.kind": "CHAIN"}  # type: ignore[attr-defined]
    root = _by_name(record)["POST /v1/chat/completions"]
    assert root.status_code == STATUS_ERROR  # a gateway error on a 4xx is still the request's error  # type: ignore[attr-defined]


def test_retries_and_fallbacks_are_client_spans_of_their_own() -> None:
    t0 = chat_record().start_pc
    attempts = (
        AttemptRecord(
            b"a" * 8, TARGET, "primary", t0 + 1, t0 + 2, 503, "upstream_error", "503 from provider"
        ),
        AttemptRecord(b"b" * 8, TARGET, "retry", t0 + 3, t0 + 4, 0, "upstream_timeout", "timed out"),
        AttemptRecord(b"c" * 8, OTHER, "fallback", t0 + 5, t0 + 6, 200),
    )
    record = chat_record(attempts=attempts, lb_rule_ids=("lb-1",))
    spans = expand_trace(record)
    assert len(spans) == record.span_count
    calls = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    assert [s.name for s in calls] == ["chat gpt-4o", "chat gpt-4o", "chat claude-3-5-haiku"]
    assert [s.span_id for s in calls] == [b"a" * 8, b"b" * 8, b"c" * 8]
    assert [s.status_code for s in calls] == [STATUS_ERROR, STATUS_ERROR, STATUS_UNSET]
    assert "tfy.attempt.kind" not in calls[0].attributes
    assert calls[1].attributes["tfy.attempt.kind"] == "retry"
    assert "http.response.status_code" not in calls[1].attributes  # no response at all
    assert calls[0].attributes["http.response.status_code"] == 503
    assert calls[0].attributes["error.type"] == "upstream_error"
    assert calls[2].attributes["tfy.attempt.kind"] == "fallback"
    assert calls[2].attributes["gen_ai.provider.name"] == "anthropic"
    root = spans[0]
    assert root.attributes["tfy.data_routing.provider"] == "anthropic"  # the attempt that answered
    assert root.attributes["tfy.data_routing.destination"] == "backup/claude"
    assert root.attributes["applied_loadbalance_rule_ids"] == ["lb-1"]
    assert spans[2].attributes == {"applied_loadbalance_rule_ids": ["lb-1"], "openinference.span.kind": "CHAIN"}
    # Usage belongs to the call that answered, once: failed attempts carry none.
    assert [c.attributes.get("gen_ai.usage.input_tokens") for c in calls] == [None, None, 3]


def test_stream_span_and_raw_events() -> None:
    t0 = chat_record().start_pc
    record = chat_record(
        stream=True,
        response_body=b"",
        response_sse=b'data: {"choices":[]}\n\ndata: [DONE]\n\n',
        stream_start_pc=t0 + 4_100_000,
        stream_end_pc=t0 + 4_900_000,
    )
    spans = _by_name(record)
    stream = spans["stream"]
    assert stream.kind == SPAN_KIND_INTERNAL  # type: ignore[attr-defined]
    assert stream.end_ns - stream.start_ns == 800_000  # type: ignore[attr-defined]
    root = spans["POST /v1/chat/completions"].attributes  # type: ignore[attr-defined]
    assert root["tfy.output.sse"].endswith(b"[DONE]\n\n") and "tfy.output" not in root
    assert root["tfy.request.stream"] is True
    # Time to first token: the root's from the request's start, the call's from its own start.
    (call,) = [s for s in spans.values() if s.kind == SPAN_KIND_CLIENT]  # type: ignore[attr-defined]
    assert root["tfy.model.metric.time_to_first_token_in_ms"] == 4.0
    assert call.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.00396)  # type: ignore[attr-defined]
    assert call.attributes["gen_ai.request.stream"] is True  # type: ignore[attr-defined]
    assert "gen_ai.response.time_to_first_chunk" not in root


@pytest.mark.parametrize(
    ("status", "expected"), [(502, STATUS_ERROR), (404, STATUS_UNSET), (200, STATUS_UNSET)]
)
def test_http_status_alone_decides_the_root_status(status: int, expected: int) -> None:
    root = expand_trace(chat_record(status=status))[0]
    assert root.status_code == expected
    assert root.attributes["http.response.status_code"] == status
    assert ("error.type" in root.attributes) == (status >= 500)


def test_unreadable_request_has_no_request_attributes() -> None:
    record = chat_record(
        model="",
        request_body=b"",
        status=400,
        error_type="invalid_json",
        error_message="request body is not valid JSON",
        auth_start_pc=0,
        auth_end_pc=0,
        resolved_pc=0,
        attempts=(),
    )
    (root,) = expand_trace(record)
    assert "tfy.input" not in root.attributes and "tfy.request.model" not in root.attributes
    assert root.attributes["error.type"] == "invalid_json"


def test_batch_round_trip_on_the_wire() -> None:
    records = [chat_record(b'{"model":"m","x":"\xc3\xa9"}'), chat_record(stream=True)]
    batch = TraceBatch(SCHEMA_VERSION, Resource("svc", "1", "h-1"), records)
    back = decode_batch(encode_batch(batch))
    assert back == batch and back.span_count == 8
    spans = expand_batch(back)
    assert spans.resource == batch.resource and len(spans.spans) == 8
    assert spans.spans[0].attributes["tfy.input"] == b'{"model":"m","x":"\xc3\xa9"}'


def test_unknown_schema_version_is_named() -> None:
    future = msgspec.msgpack.encode([SCHEMA_VERSION + 1, ["svc", "1", "h", {}], []])
    with pytest.raises(WireVersionError, match=f"version {SCHEMA_VERSION + 1}"):
        decode_batch(future)
    with pytest.raises(msgspec.DecodeError):
        decode_batch(b"\x00not msgpack")
