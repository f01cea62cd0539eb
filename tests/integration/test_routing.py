"""Virtual models through the real gateway: fallbacks, retries, strategies, Anthropic."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import Proc, free_port, provider, start_gateway, start_mock

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def mocks() -> Iterator[dict[str, Proc]]:
    procs = {"flaky": start_mock(), "slow": start_mock("--latency-ms", "40")}
    yield procs
    for p in procs.values():
        p.stop()


def vm(name: str, type_: str, *targets: dict) -> dict:
    return {"name": name, "type": type_, "load_balance_targets": list(targets)}


@pytest.fixture(scope="module")
def gw(mock: Proc, mocks: dict[str, Proc], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    good_models = ["gpt-4o", "gpt-4o-mini", "error-400", "slow-3000", "stall-0", "cut-3"]
    config = {
        "providers": [
            provider("good", mock.url, good_models),
            provider("flaky", mocks["flaky"].url, ["gpt-4o"]),
            provider("slow", mocks["slow"].url, ["gpt-4o"]),
            provider("dead", f"http://127.0.0.1:{free_port()}", ["gpt-4o"], connect_timeout_s=1),
            {
                "name": "anth",
                "type": "anthropic",
                "base_url": mock.url,
                "api_key": "sk-ant",
                "models": ["claude-sonnet-4-5"],
            },
        ],
        "virtual_models": [
            vm(
                "to-dead",
                "priority-based-routing",
                {"target": "dead/gpt-4o", "priority": 0},
                {"target": "good/gpt-4o", "priority": 1},
            ),
            vm(
                "to-flaky",
                "priority-based-routing",
                {"target": "flaky/gpt-4o", "priority": 0, "retry_config": {"attempts": 0}},
                {"target": "good/gpt-4o-mini", "priority": 1},
            ),
            vm(
                "retrying",
                "priority-based-routing",
                {"target": "flaky/gpt-4o", "priority": 0, "retry_config": {"attempts": 2, "delay": 10}},
                {"target": "good/gpt-4o-mini", "priority": 1},
            ),
            vm(
                "client-error",
                "priority-based-routing",
                {"target": "good/error-400", "priority": 0},
                {"target": "good/gpt-4o", "priority": 1},
            ),
            vm(
                "slow-headers",
                "priority-based-routing",
                {"target": "good/slow-3000", "priority": 0, "timeout_ms": 400},
                {"target": "good/gpt-4o", "priority": 1},
            ),
            vm(
                "stalls",
                "priority-based-routing",
                {"target": "good/stall-0", "priority": 0, "ttft_timeout_ms": 400},
                {"target": "good/gpt-4o", "priority": 1},
            ),
            vm(
                "cut-after-bytes",
                "priority-based-routing",
                {"target": "good/cut-3", "priority": 0},
                {"target": "good/gpt-4o", "priority": 1},
            ),
            vm(
                "split",
                "weight-based-routing",
                {"target": "good/gpt-4o", "weight": 70},
                {"target": "good/gpt-4o-mini", "weight": 30},
            ),
            vm("fastest", "latency-based-routing", {"target": "slow/gpt-4o"}, {"target": "good/gpt-4o"}),
            vm(
                "mixed",
                "weight-based-routing",
                {"target": "anth/claude-sonnet-4-5", "weight": 50, "override_params": {"temperature": 0.1}},
                {"target": "good/gpt-4o", "weight": 50, "headers_override": {"set": {"x-region": "eu"}}},
            ),
        ],
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("routing"))
    yield proc
    proc.stop()


_client = httpx.Client(timeout=15)  # one client: httpx builds an SSL context per Client (~30 ms)


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    _client.close()


def chat(gw: Proc, model: str, **extra: object) -> httpx.Response:
    return _client.post(
        gw.url + CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def calls(mock: Proc, model: str) -> int:
    return sum(f'"model":"{model}"' in r["body"] for r in httpx.get(mock.url + "/_mock/requests").json())


def test_virtual_models_listed(gw: Proc) -> None:
    ids = {m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]}
    assert {"split", "fastest", "mixed", "good/gpt-4o"} <= ids


def test_connection_refused_falls_back(gw: Proc) -> None:
    r = chat(gw, "to-dead")
    assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o"


def test_503_falls_back_and_retries_per_config(gw: Proc, mocks: dict[str, Proc]) -> None:
    flaky = mocks["flaky"]
    httpx.post(flaky.url + "/_mock/fail?status=503")
    try:
        httpx.delete(flaky.url + "/_mock/requests")
        r = chat(gw, "retrying")
        assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o-mini"
        assert calls(flaky, "gpt-4o") == 3  # the first call and its 2 configured retries
    finally:
        httpx.post(flaky.url + "/_mock/fail?status=0")


def test_no_retry_or_fallback_on_unlisted_status(gw: Proc, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    r = chat(gw, "client-error")
    assert r.status_code == 400  # the client's own error, relayed, not hidden by a fallback
    assert calls(mock, "error-400") == 1 and calls(mock, "gpt-4o") == 0


def test_slow_headers_fall_back_quickly(gw: Proc) -> None:
    r = chat(gw, "slow-headers")
    assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o"
    assert r.elapsed.total_seconds() < 2.5


def test_stream_stall_before_first_byte_falls_back(gw: Proc) -> None:
    with httpx.stream(
        "POST", gw.url + CHAT, json={"model": "stalls", "messages": [], "stream": True}, timeout=10
    ) as r:
        assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o"
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]"


def test_stream_503_falls_back_before_first_byte(gw: Proc, mocks: dict[str, Proc]) -> None:
    httpx.post(mocks["flaky"].url + "/_mock/fail?status=503")
    try:
        with httpx.stream(
            "POST", gw.url + CHAT, json={"model": "to-flaky", "messages": [], "stream": True}
        ) as r:
            assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o-mini"
            assert [ln for ln in r.iter_lines() if ln.startswith("data:")][-1] == "data: [DONE]"
    finally:
        httpx.post(mocks["flaky"].url + "/_mock/fail?status=0")


def test_stream_failure_after_first_byte_ends_with_error_event(gw: Proc, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    with httpx.stream(
        "POST", gw.url + CHAT, json={"model": "cut-after-bytes", "messages": [], "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/cut-3"
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["message"]
    assert calls(mock, "gpt-4o") == 0  # bytes were sent: no fallback, no mixing of two answers


def test_weight_split(gw: Proc) -> None:
    served = Counter(chat(gw, "split").headers["x-tfy-resolved-model"] for _ in range(200))
    assert 120 <= served["good/gpt-4o"] <= 160, served  # 70 % of 200 = 140
    assert served["good/gpt-4o"] + served["good/gpt-4o-mini"] == 200


def test_latency_based_prefers_the_faster_upstream(gw: Proc) -> None:
    for _ in range(20):  # both targets get probed and measured
        assert chat(gw, "fastest").status_code == 200
    served = Counter(chat(gw, "fastest").headers["x-tfy-resolved-model"] for _ in range(40))
    assert served["good/gpt-4o"] >= 30, served  # the 40 ms upstream is > 1.2x slower


def test_priority_uses_backup_only_while_primary_fails(gw: Proc, mocks: dict[str, Proc]) -> None:
    flaky = mocks["flaky"]
    assert chat(gw, "to-flaky").headers["x-tfy-resolved-model"] == "flaky/gpt-4o"
    httpx.post(flaky.url + "/_mock/fail?status=503")
    try:
        for _ in range(3):
            r = chat(gw, "to-flaky")
            assert r.status_code == 200 and r.headers["x-tfy-resolved-model"] == "good/gpt-4o-mini"
    finally:
        httpx.post(flaky.url + "/_mock/fail?status=0")
    assert chat(gw, "to-flaky").headers["x-tfy-resolved-model"] == "flaky/gpt-4o"


def test_overrides_reach_the_target(gw: Proc, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    for _ in range(4):  # 50/50 smooth weights alternate: both targets see a request
        assert chat(gw, "mixed").status_code == 200
    seen = httpx.get(mock.url + "/_mock/requests").json()
    openai_calls = [r for r in seen if r["path"] == "/v1/chat/completions"]
    anthropic_calls = [r for r in seen if r["path"] == "/v1/messages"]
    assert openai_calls and all(r["headers"].get("x-region") == "eu" for r in openai_calls)
    assert anthropic_calls and all(json.loads(r["body"])["temperature"] == 0.1 for r in anthropic_calls)
    assert all(r["headers"]["x-api-key"] == "sk-ant" for r in anthropic_calls)


@pytest.fixture
def sdk(gw: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10) as c:
        yield c


def test_anthropic_round_trip(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(
        model="anth/claude-sonnet-4-5",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    )
    assert resp.choices[0].message.content and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_anthropic_stream(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="anth/claude-sonnet-4-5",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_anthropic_tool_call(sdk: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    resp = sdk.chat.completions.create(
        model="anth/claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
    )
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    stream = list(
        sdk.chat.completions.create(
            model="anth/claude-sonnet-4-5",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=tools,
            stream=True,
        )
    )
    names = [
        tc.function.name
        for c in stream
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]
