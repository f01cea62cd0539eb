"""max_attribute_chars: values cut to the limit, JSON values still valid in their schema."""

from __future__ import annotations

import json

import pytest

from exporter.config import Destination, ExporterConfig, check_exporter, with_attribute_limit
from exporter.truncate import MARK, truncate_json, truncate_spans
from gateway.telemetry.wire import SPAN_KIND_CLIENT, Span
from tests import genai_schema

MESSAGES = [
    {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
    {"role": "user", "parts": [
        {"type": "text", "content": "Describe: " + "word " * 2000},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBOR" * 4000},
    ]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"q": "é\n" * 500}}]},
]  # fmt: skip


@pytest.mark.parametrize("limit", [20_000, 4_000, 1_000, 300])
def test_content_stays_valid_parts_json_within_the_limit(limit: int) -> None:
    text = json.dumps(MESSAGES, ensure_ascii=False)
    out = truncate_json(text, limit, parts=True)
    assert out is not None and len(out) <= limit
    doc = genai_schema.input_messages(out)
    cut = [p for m in doc for p in m["parts"] if p.get("truncated")]
    assert cut, "the parts that were cut say so"
    for p in cut:
        assert MARK in json.dumps(p, ensure_ascii=False)
    assert doc[-1]["role"] == "assistant"  # the newest message survives longest


def test_structure_too_big_drops_oldest_messages_then_the_attribute() -> None:
    many = [{"role": "user", "parts": [{"type": "text", "content": str(i)}]} for i in range(100)]
    out = truncate_json(json.dumps(many), 200, parts=True)
    assert out is not None and len(out) <= 200
    doc = genai_schema.input_messages(out)
    assert doc[-1]["parts"][0]["content"] == "99" and len(doc) < 100
    assert truncate_json(json.dumps(many), 10, parts=True) is None


def test_escapes_and_non_ascii_count_as_characters() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "ü\"\n" * 3000}]}, ensure_ascii=False)
    out = truncate_json(body.encode(), 500)
    assert out is not None and len(out) <= 500 and len(out) > 400  # cut close to the limit, not far below
    assert json.loads(out)["messages"][0]["content"].endswith(MARK)
    assert json.loads(out)["messages"][0]["role"] == "user"


def test_truncate_spans_copies_what_it_changes_and_counts() -> None:
    attrs = {
        "gen_ai.input.messages": json.dumps(MESSAGES),
        "tfy.input": json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode(),
        "tfy.error_message": "e" * 5000,
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 10**9,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}], "finish_reason": "stop"}] * 300),
    }  # fmt: skip
    original = dict(attrs)
    span = Span(b"t" * 16, b"s" * 8, b"", "chat gpt-4o", SPAN_KIND_CLIENT, 1, 2, attributes=attrs)
    small = Span(b"t" * 16, b"u" * 8, b"", "auth", 1, 1, 2, attributes={"x": "y"})
    (out, same), truncated, dropped = truncate_spans([span, small], 1000)
    assert same is small and span.attributes == original  # the shared batch is never edited
    a = out.attributes
    assert truncated + dropped == 4 and dropped == 0
    for key in ("gen_ai.input.messages", "tfy.input", "tfy.error_message", "gen_ai.output.messages"):
        assert len(a[key]) <= 1000, key
    genai_schema.input_messages(a["gen_ai.input.messages"])
    genai_schema.output_messages(a["gen_ai.output.messages"])
    assert json.loads(a["tfy.input"])["model"] == "m"
    assert a["tfy.error_message"].endswith(MARK)
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.usage.input_tokens"] == 10**9


def test_excluded_attributes_are_not_worked_on() -> None:
    span = Span(b"t" * 16, b"s" * 8, b"", "x", 1, 1, 2, attributes={"tfy.input": "x" * 100})
    (out,), truncated, _ = truncate_spans([span], 10, frozenset({"tfy.input"}))
    assert out is span and truncated == 0


def test_limit_from_the_environment_and_config_checks() -> None:
    d = Destination(name="a", endpoint="http://127.0.0.1:4318/v1/traces")
    assert with_attribute_limit(d, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4096"}).max_attribute_chars == 4096
    assert with_attribute_limit(d, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "nope"}).max_attribute_chars is None
    assert with_attribute_limit(d, {}).max_attribute_chars is None
    explicit = Destination(name="b", endpoint="http://127.0.0.1:4318/v1/traces", max_attribute_chars=0)
    assert with_attribute_limit(explicit, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "10"}).max_attribute_chars == 0
    bad = Destination(name="c", endpoint="http://127.0.0.1:4318/v1/traces", max_attribute_chars=-1)
    assert [p for p in check_exporter(ExporterConfig(traces=[bad])) if "max_attribute_chars" in p]
