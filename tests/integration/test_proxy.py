"""The OpenAI API through the real gateway, with the official openai SDK, for both upstream clients."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import Proc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10) as c:
        yield c


def test_chat_non_streaming(client: openai.OpenAI, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    resp = client.chat.completions.create(
        model="mock/gpt-4o", messages=[{"role": "user", "content": "hi"}], temperature=0.3
    )
    assert resp.choices[0].message.content.startswith("tok0")
    assert resp.usage is not None and resp.usage.total_tokens == 20
    seen = httpx.get(mock.url + "/_mock/requests").json()[-1]
    assert seen["path"] == "/v1/chat/completions"
    # model rewritten to the provider's name, the rest forwarded untouched
    assert '"model":"gpt-4o"' in seen["body"]
    assert '"temperature":0.3' in seen["body"]
    assert seen["headers"]["authorization"] == "Bearer sk-test"


def test_chat_stream_without_usage_hides_injected_usage(client: openai.OpenAI, mock: Proc) -> None:
    httpx.delete(mock.url + "/_mock/requests")
    chunks = list(
        client.chat.completions.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(8))
    assert all(c.usage is None for c in chunks), (
        "the usage chunk the gateway asked for must not reach this client"
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # ...but the gateway did ask the provider for usage
    assert '"include_usage":true' in httpx.get(mock.url + "/_mock/requests").json()[-1]["body"]


def test_chat_stream_with_usage_keeps_it(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="mock/gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 8 and usage[0].prompt_tokens == 12


def test_stream_arrives_chunk_by_chunk(gateway: Proc) -> None:
    """Each event is forwarded when it arrives, not when the stream ends."""
    events = 0
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "mock/stall-2", "messages": [], "stream": True},
        timeout=httpx.Timeout(10, read=1.0),
    ) as resp:
        assert resp.status_code == 200
        try:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    events += 1
        except httpx.ReadTimeout:
            pass  # the mock stalls after 2 content chunks; what came before must have arrived
    assert events == 2  # role chunk + 1 content chunk, delivered before the stall


def test_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="mock/gpt-4o", prompt="say hi")
    assert resp.choices[0].text.startswith("tok0")
    stream = list(client.completions.create(model="mock/gpt-4o", prompt="say hi", stream=True))
    assert "".join(c.choices[0].text for c in stream if c.choices).startswith("tok0 tok1")


def test_embeddings(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="mock/text-embedding-3-small", input=["a", "b"])
    assert len(resp.data) == 2 and resp.data[0].embedding == [0.1, 0.2, 0.3, 0.4]


def test_models_lists_provider_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"mock/gpt-4o", "mock/text-embedding-3-small"} <= ids


def test_request_id_header(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "mock/gpt-4o", "messages": []})
    assert r.status_code == 200
    assert len(r.headers["x-request-id"]) == 32
    assert r.headers["x-tfy-resolved-model"] == "mock/gpt-4o"


def test_health_and_readiness(gateway: Proc) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").json() == {"status": "ready"}
