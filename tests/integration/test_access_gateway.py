"""Access control through the real gateway: keys, rules, limits, reload, and a two-process fleet."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
import yaml

from tests.conftest import Proc, provider, start_gateway
from tests.nats_fixtures import NatsServer

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"

ALICE, BOB, CI = "sk-alice-0123456789", "sk-bob-0123456789", "sk-ci-0123456789"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def base_config(mock: Proc) -> dict:
    return {
        "providers": [
            provider("mock", mock.url, ["gpt-4o", "gpt-4o-mini", "slow-800"]),
            provider("other", mock.url, ["gpt-4o"]),
        ],
        "virtual_models": [
            {
                "name": "chat-default",
                "type": "weight-based-routing",
                "load_balance_targets": [{"target": "mock/gpt-4o"}],
            }
        ],
        "auth": {
            "api_keys": [
                {"subject": "user:alice", "teams": ["ml"], "key_sha256": sha(ALICE)},
                {"subject": "user:bob", "key_sha256": sha(BOB)},
                {"subject": "virtualaccount:ci", "key_sha256": sha(CI)},
            ]
        },
        "access": [
            {"subjects": ["team:ml"], "models": ["mock/*", "chat-default"]},
            {"subjects": ["user:bob"], "models": ["mock/gpt-4o-mini"]},
            {"subjects": ["virtualaccount:ci"], "models": ["*"]},
        ],
        "rate_limiting": [
            {
                "id": "ci-three-per-minute",
                "when": {"subjects": ["virtualaccount:ci"], "models": ["*"]},
                "limit_to": 3,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ],
        "metrics": {"metadata_label_keys": ["team"]},
    }


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_gateway(base_config(mock), tmp_path_factory.mktemp("access"))
    yield proc
    proc.stop()


def chat(
    gw: Proc, key: str | None, model: str = "mock/gpt-4o", header: str = "authorization", **headers: str
) -> httpx.Response:
    h = dict(headers)
    if key is not None:
        h[header] = f"Bearer {key}" if header == "authorization" else key
    return httpx.post(gw.url + CHAT, json={"model": model, "messages": []}, headers=h)


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["code"]
    return err


def test_missing_wrong_and_right_keys(gw: Proc) -> None:
    assert "missing" in error(chat(gw, None), 401)["message"].lower()
    err = error(chat(gw, "sk-wrong"), 401)
    assert "sk-wrong" not in err["message"]  # credentials never echoed
    assert chat(gw, ALICE).status_code == 200
    assert chat(gw, ALICE, header="x-api-key").status_code == 200


def test_openai_sdk_with_a_key(gw: Proc) -> None:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE, max_retries=0) as client:
        assert client.chat.completions.create(
            model="chat-default", messages=[{"role": "user", "content": "x"}]
        ).choices
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_model_outside_the_rules_403_naming_it(gw: Proc) -> None:
    err = error(chat(gw, BOB, "mock/gpt-4o"), 403)
    assert "mock/gpt-4o" in err["message"]
    assert chat(gw, BOB, "mock/gpt-4o-mini").status_code == 200
    assert error(chat(gw, ALICE, "other/gpt-4o"), 403)


def test_models_list_only_what_the_caller_may_use(gw: Proc) -> None:
    def ids(key: str) -> set[str]:
        return {
            m["id"]
            for m in httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).json()[
                "data"
            ]
        }

    assert ids(BOB) == {"mock/gpt-4o-mini"}
    assert ids(ALICE) == {"mock/gpt-4o", "mock/gpt-4o-mini", "mock/slow-800", "chat-default"}
    assert "other/gpt-4o" in ids(CI)
    assert httpx.get(gw.url + "/v1/models").status_code == 401


@pytest.mark.parametrize("value", ["not json", "[1]", '{"team": 5}', '{"team": "' + "x" * 200 + '"}'])
def test_malformed_metadata_400(gw: Proc, value: str) -> None:
    error(chat(gw, ALICE, **{"x-tfy-metadata": value}), 400)


def test_good_metadata_accepted(gw: Proc) -> None:
    assert chat(gw, ALICE, **{"x-tfy-metadata": '{"team": "search"}'}).status_code == 200


def test_rate_limit_429_with_headers(gw: Proc) -> None:
    ok = [chat(gw, CI) for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert ok[0].headers["x-ratelimit-limit-requests"] == "3"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["2", "1", "0"]
    r = chat(gw, CI)
    err = error(r, 429)
    assert "ci-three-per-minute" in err["message"]
    assert (
        0 < int(r.headers["retry-after"]) <= 120
    )  # sliding window: the estimate decays through the next bucket
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert chat(gw, ALICE).status_code == 200  # other subjects are not limited by that rule


def test_reload_swaps_a_key_without_dropping_in_flight(
    gateway_factory: Callable[..., Proc], mock: Proc
) -> None:
    config = {**base_config(mock), "reload": {"poll_interval_s": 0.2}}
    gw = gateway_factory(config)
    statuses: list[int] = []

    def slow() -> None:
        r = httpx.post(
            gw.url + CHAT,
            json={"model": "mock/slow-800", "messages": []},
            headers={"authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    new_key = "sk-alice-rotated-999"
    rotated = base_config(mock)
    rotated["auth"]["api_keys"][0]["key_sha256"] = sha(new_key)
    config_path = gw.log_path.with_suffix(".yaml")
    config_path.write_text(yaml.safe_dump({**rotated, "reload": {"poll_interval_s": 0.2}}))
    deadline = time.monotonic() + 10
    while chat(gw, new_key).status_code != 200:
        assert time.monotonic() < deadline, "the new key was never accepted"
        time.sleep(0.1)
    assert chat(gw, ALICE).status_code == 401  # the old key is gone
    for t in threads:
        t.join(10)
    assert statuses == [200, 200, 200]  # admitted with the old key, finished after the swap


def test_nats_kv_config_reload(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    nats = NatsServer(jetstream=True)
    nats.start()
    try:
        config = {**base_config(mock), "cluster": {"nats_url": nats.url, "config_bucket": "gateway-config"}}
        gw = gateway_factory(config)
        rotated = base_config(mock)
        rotated["auth"]["api_keys"][1]["key_sha256"] = sha("sk-bob-from-kv")
        text = yaml.safe_dump({**rotated, "cluster": config["cluster"]})

        async def put(value: bytes) -> None:
            import nats as nats_py

            nc = await nats_py.connect(nats.url)
            js = nc.jetstream()
            try:
                kv = await js.key_value("gateway-config")
            except Exception:
                kv = await js.create_key_value(bucket="gateway-config")
            await kv.put("gateway.yaml", value)
            await nc.close()

        asyncio.run(put(b"providers: [{name: broken}]\n"))  # invalid: rejected, old config stays
        time.sleep(0.5)
        assert chat(gw, BOB, "mock/gpt-4o-mini").status_code == 200
        asyncio.run(put(text.encode()))
        deadline = time.monotonic() + 10
        while chat(gw, "sk-bob-from-kv", "mock/gpt-4o-mini").status_code != 200:
            assert time.monotonic() < deadline, "the KV config never arrived"
            time.sleep(0.1)
        assert chat(gw, BOB, "mock/gpt-4o-mini").status_code == 401
        assert "rejected" in gw.output()
    finally:
        nats.close()


def test_two_gateways_share_one_limit_through_nats(gateway_factory: Callable[..., Proc], mock: Proc) -> None:
    """A 100 requests/minute limit across two processes lets at most 110 through in total."""
    nats = NatsServer()
    nats.start()
    try:
        config = base_config(mock)
        config["rate_limiting"] = [
            {
                "id": "fleet-100",
                "when": {"subjects": ["*"], "models": ["*"]},
                "limit_to": 100,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ]
        config["cluster"] = {"nats_url": nats.url, "subject_prefix": "fleet-test", "config_bucket": None}
        gws = [gateway_factory(config), gateway_factory(config)]
        time.sleep(1.0)  # both workers connect to NATS (start-up never waits for it)
        counts = {200: 0, 429: 0}
        lock = threading.Lock()

        def drive(gw: Proc) -> None:
            with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {CI}"}) as client:
                for _ in range(120):
                    status = client.post(CHAT, json={"model": "mock/gpt-4o", "messages": []}).status_code
                    with lock:
                        counts[status] = counts.get(status, 0) + 1

        threads = [threading.Thread(target=drive, args=(g,)) for g in gws]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert counts[200] + counts[429] == 240
        assert 100 <= counts[200] <= 110, counts
    finally:
        nats.close()
