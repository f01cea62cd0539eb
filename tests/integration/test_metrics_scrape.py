"""``GET /metrics`` of the real gateway with two workers: totals exact after a known mix."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Proc, provider

pytestmark = pytest.mark.timeout(90)


def scrape(gw: Proc) -> dict[str, list]:
    with httpx.Client() as fresh:  # a new connection each time: either worker may answer
        text = fresh.get(gw.url + "/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def total(samples: list, suffix: str = "_total", **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_scrape_reports_exact_totals_of_all_workers(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    gw = gateway_factory(
        {
            "providers": [provider("mock", mock.url, ["gpt-4o", "error-400", "text-embedding-3-small"])],
            "rate_limiting": [
                {
                    "id": "embed-rpm",
                    "when": {"subjects": ["*"], "models": ["mock/text-embedding-3-small"]},
                    "limit_to": 1,
                    "unit": "requests_per_minute",
                    "rate_limit_applies_per": ["user"],
                }
            ],
            "metrics": {"metadata_label_keys": ["env"]},
        },
        workers=2,
    )
    chat = {"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    statuses: list[int] = []
    tokens_in = tokens_out = 0
    for _ in range(6):  # new connections: both workers serve some
        with httpx.Client(base_url=gw.url, headers={"x-tfy-metadata": '{"env": "test"}'}) as c:
            r = c.post("/v1/chat/completions", json=chat)
            statuses.append(r.status_code)
            tokens_in += r.json()["usage"]["prompt_tokens"]
            tokens_out += r.json()["usage"]["completion_tokens"]
            with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as s:
                statuses.append(s.status_code)
                s.read()
            tokens_in += 12
            tokens_out += 8  # the mock's usage for a stream (hidden from this client, counted by the gateway)
    statuses.append(
        httpx.post(gw.url + "/v1/chat/completions", json={**chat, "model": "mock/error-400"}).status_code
    )
    emb = {"model": "mock/text-embedding-3-small", "input": "x"}
    with httpx.Client(base_url=gw.url) as one_connection:  # one worker: limits are per process here
        statuses += [one_connection.post("/v1/embeddings", json=emb).status_code for _ in range(2)]
    assert sorted(statuses) == [200] * 13 + [400, 429]
    tokens_in += 4

    time.sleep(1.3)  # the other worker flushes its numbers at least once a second
    for _ in range(4):  # whichever worker answers, the totals are the same
        m = scrape(gw)
        assert total(m["llm_gateway_requests"], status_code="200") == 13
        assert total(m["llm_gateway_requests"], status_code="400") == 1
        assert total(m["llm_gateway_requests"], status_code="429") == 1
        assert total(m["llm_gateway_input_tokens"]) == tokens_in
        assert total(m["llm_gateway_output_tokens"]) == tokens_out
        assert total(m["llm_gateway_rate_limit_rejections"], rule_id="embed-rpm") == 1
        assert total(m["llm_gateway_request_processing_ms"], "_count") == 15
        assert total(m["llm_gateway_first_token_latency_ms"], "_count") == 6
        assert total(m["llm_gateway_input_tokens"], llm_gateway_metadata_env="test") == 12 * 12
        assert total(m["llm_gateway_requests_in_flight"], "") == 0
        assert total(m["llm_gateway_request_cost"]) > 0  # gpt-4o is in the price table
        assert total(m["llm_gateway_spans_recorded"]) >= 15 * 3
