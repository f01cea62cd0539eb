"""Request rows from spans: the older root layout (gen_ai.* on the root) and the newer one (tfy.*
on the root, gen_ai.* on the model calls only) give the same row."""

from __future__ import annotations

from typing import Any

from exporter.store.rows import build_rows
from gateway.telemetry.wire import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, Span

T = bytes(range(16))


def spans(root: dict[str, Any], calls: list[dict[str, Any]]) -> list[Span]:
    out = [
        Span(
            T,
            b"\x01" * 8,
            b"",
            "POST /v1/chat/completions",
            SPAN_KIND_SERVER,
            10**18,
            10**18 + 5 * 10**6,
            0,
            "",
            root,
        )
    ]
    for i, attrs in enumerate(calls):
        out.append(
            Span(
                T,
                bytes([2 + i]) * 8,
                b"\x01" * 8,
                "chat m",
                SPAN_KIND_CLIENT,
                10**18 + 1000,
                10**18 + 2000,
                0,
                "",
                attrs,
            )
        )
    return out


BASE = {
    "tfy.span_type": "ChatCompletion",
    "http.response.status_code": 200,
    "tfy.data_routing.destination": "p/m",
}


def test_old_and_new_layouts_agree() -> None:
    old = spans(
        {**BASE, "gen_ai.request.model": "p/m", "gen_ai.provider.name": "openai",
         "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3},
        [{"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3}],
    )  # fmt: skip
    new = spans(
        {**BASE, "tfy.request.model": "p/m", "tfy.data_routing.provider": "openai"},
        [
            {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 4, "gen_ai.usage.output_tokens": 1,
             "gen_ai.usage.cache_read.input_tokens": 2},
            {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 2,
             "gen_ai.usage.reasoning.output_tokens": 1},
        ],
    )  # fmt: skip
    (a,), _ = build_rows(old)
    (b,), span_rows = build_rows(new)
    for row in (a, b):
        assert (row.model, row.target, row.provider, row.input_tokens, row.output_tokens) == (
            "p/m",
            "p/m",
            "openai",
            7,
            3,
        )
    assert (b.cached_tokens, b.reasoning_tokens) == (2, 1)
    assert len(span_rows) == 3 and b.span_count == 3 and b.day == "2001-09-09"


def test_tool_spans_counted_and_agent_spans_not_model_calls() -> None:
    s = spans(
        {**BASE, "tfy.request.model": "p/m"},
        [
            {"gen_ai.operation.name": "invoke_agent"},
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 5,
                "gen_ai.usage.output_tokens": 5,
            },
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"},
            {"mcp.method.name": "tools/call"},
        ],
    )
    (row,), _ = build_rows(s)
    assert row.tool_calls == 2 and row.input_tokens == 5
    (model_only,), _ = build_rows(
        spans({**BASE}, [{"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "x"}])
    )
    assert model_only.model == ""  # an agent span is not a model call


def test_bodies_stored_once_and_excluded_on_request() -> None:
    s = spans(
        {**BASE, "tfy.input": b'{"a":1}', "tfy.output": b"{}", "tfy.input_short_hand": '{"content":"hi"}'}, []
    )
    (row,), (root,) = build_rows(s)
    assert row.input == '{"a":1}' and row.preview == "hi"
    assert "tfy.input" not in root.attributes and "tfy.input_short_hand" in root.attributes
    (row,), (root,) = build_rows(s, exclude=True)
    assert row.input == row.output == row.preview == "" and "tfy.input_short_hand" not in root.attributes
