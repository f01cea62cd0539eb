"""NATS mode: ``gateway-exporter`` owns the store (here the ClickHouse engine, run by chDB) and
serves /api/v1 and /ui under the gateway's auth; the gateway's own /api/v1 says where to look."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Proc, free_port, provider, start_exporter, start_gateway
from tests.integration.store_browser import wait_for

pytestmark = pytest.mark.nats

KEY = "sk-nats-store-alice-000000000"
OTHER = "sk-nats-store-dave-000000000"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_exporter_serves_the_store_over_clickhouse(nats_server: str, mock: Proc, tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "auth": {
            "api_keys": [
                {"subject": "user:alice", "teams": ["platform"], "key_sha256": sha(KEY)},
                {"subject": "user:dave", "key_sha256": sha(OTHER)},
            ]
        },
        "ui": {"admins": ["user:alice"]},
        "tracing": {"flush_interval_ms": 50, "nats": {"url": nats_server, "subject_prefix": "storetest"}},
        "store": {"engine": "clickhouse", "url": f"chdb://{tmp_path / 'chdb'}", "database": "traces",
                  "listen": listen},
    }  # fmt: skip
    exporter = start_exporter(config, tmp_path)
    gw = start_gateway(config, tmp_path)
    try:
        base = f"http://{listen}"
        wait_for(lambda: httpx.get(base + "/ui", timeout=2).status_code == 200, what="the exporter's UI")
        # the gateway says the exporter owns the store
        me = httpx.get(gw.url + "/api/v1/me", headers={"authorization": f"Bearer {KEY}"}, timeout=5).json()
        assert me["store"] is False and listen in me["store_reason"]
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        total = 0
        for i in range(3):
            r = client.chat.completions.create(
                model="mock/gpt-4o", messages=[{"role": "user", "content": f"n{i}"}]
            )
            total += r.usage.total_tokens
        openai.OpenAI(base_url=gw.url + "/v1", api_key=OTHER, max_retries=0).chat.completions.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": "dave"}]
        )
        auth = {"authorization": f"Bearer {KEY}"}

        def listed() -> list[dict]:
            return httpx.get(base + "/api/v1/traces", headers=auth, timeout=5).json()["data"]

        wait_for(lambda: len(listed()) == 4, timeout_s=30, what="4 traces in the exporter's store")
        assert httpx.get(base + "/api/v1/traces", timeout=5).status_code == 401  # the gateway's auth
        me = httpx.get(base + "/api/v1/me", headers=auth, timeout=5).json()
        assert me["engine"] == "clickhouse" and me["admin"] is True
        dave = httpx.get(base + "/api/v1/traces", headers={"x-api-key": OTHER}, timeout=5).json()["data"]
        assert [r["subject"] for r in dave] == ["user:dave"]
        stats = httpx.get(
            base + "/api/v1/stats", params={"subject": "user:alice"}, headers=auth, timeout=5
        ).json()
        assert stats["totals"][0]["input_tokens"] + stats["totals"][0]["output_tokens"] == total
        tid = listed()[-1]["trace_id"]
        detail = httpx.get(f"{base}/api/v1/traces/{tid}", headers=auth, timeout=5).json()
        assert detail["spans"][0]["name"] == "POST /v1/chat/completions"
        assert len(detail["spans"][0]["children"]) == 3
        r = httpx.post(base + "/api/v1/session", json={"credential": KEY}, timeout=5)
        assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
    finally:
        gw.stop()
        exporter.stop()
    assert "Traceback" not in exporter.output()
