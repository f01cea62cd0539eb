"""Scenario load with locust: many users, each with its own API key, a realistic request mix.

Mix per user: non-streaming chat (5), streaming chat (3, time to first token reported as its own
``SSE ttft`` row), embeddings (2). The rate-limited slice of users (``limited`` in keys.json) runs
into 429 quickly; those 429s are counted as expected (successes named ``... [429 expected]``),
while a 429 for anyone else, or any other error, is a failure.

Run it headless against a gateway serving the generated config (all on 127.0.0.1):

    python -m bench.mock_upstream --port 8099 --no-record &
    python -m bench.scenario_config --users 50 --limited 5 --mock-url http://127.0.0.1:8099 --out bench/results/scenario
    gateway serve --config bench/results/scenario/gateway.yaml --host 127.0.0.1 --port 8000 --workers 1 &
    BENCH_KEYS=bench/results/scenario/keys.json \\
        locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8000

Or all of it in one command (free ports, pinned, bounded, CSV in ``bench/results/scenario``):

    python -m bench.scenario_config --run --users 50 --limited 5 --duration 30s

``-u`` users at ``BENCH_USER_RPS`` requests/s each (default 1) is the offered rate; ``-t`` the
duration; add ``--csv bench/results/scenario/locust`` for CSV output. Env: ``BENCH_KEYS`` (keys.json,
default ``bench/results/scenario/keys.json``), ``BENCH_MODEL`` (default ``mock/gpt-4o``),
``BENCH_EMBED_MODEL`` (default ``mock/text-embedding-3-small``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, constant_throughput, task

KEYS_PATH = Path(
    os.environ.get("BENCH_KEYS", Path(__file__).resolve().parent / "results" / "scenario" / "keys.json")
)
MODEL = os.environ.get("BENCH_MODEL", "mock/gpt-4o")
EMBED_MODEL = os.environ.get("BENCH_EMBED_MODEL", "mock/text-embedding-3-small")
USER_RPS = float(os.environ.get("BENCH_USER_RPS", "1"))


def _load_keys() -> list[dict[str, Any]]:
    if not KEYS_PATH.exists():
        raise SystemExit(
            f"{KEYS_PATH} not found: run `python -m bench.scenario_config` first (see the docstring)"
        )
    keys = json.loads(KEYS_PATH.read_text())
    if not keys:
        raise SystemExit(f"{KEYS_PATH} has no keys")
    return keys


_KEYS = _load_keys()
_next_key = itertools.count()  # users take keys round-robin; more users than keys share them


class GatewayUser(HttpUser):
    """One API client: its own key, ``USER_RPS`` requests/s, mixed endpoints."""

    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        """Claim the next key (and whether this user is in the rate-limited slice)."""
        entry = _KEYS[next(_next_key) % len(_KEYS)]
        self.limited = bool(entry["limited"])
        self.headers = {"authorization": f"Bearer {entry['key']}", "content-type": "application/json"}
        self.tag = " [limited]" if self.limited else ""

    def _judge(self, resp: Any, name: str) -> bool:
        """Mark the response; True when it is a 200 worth reading further."""
        if resp.status_code == 200:
            resp.success()
            return True
        if resp.status_code == 429 and self.limited:
            resp.success()  # expected: this user's limit is tiny on purpose
            resp.request_meta["name"] = name + " [429 expected]"
            return False
        resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return False

    @task(5)
    def chat(self) -> None:
        """Non-streaming chat completion."""
        name = "chat" + self.tag
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello in one word."}]}
        with self.client.post(
            "/v1/chat/completions", json=body, headers=self.headers, name=name, catch_response=True
        ) as resp:
            if self._judge(resp, name) and "choices" not in resp.text:
                resp.failure("no choices in the answer")

    @task(3)
    def chat_stream(self) -> None:
        """Streaming chat completion; reports time to first token as its own row."""
        name = "chat stream" + self.tag
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Count to five."}]}
        start = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=self.headers,
            name=name,
            stream=True,
            catch_response=True,
        ) as resp:
            if not self._judge(resp, name):
                return
            first: float | None = None
            done = False
            for line in resp.iter_lines():
                if not line:
                    continue
                if first is None:
                    first = time.perf_counter()
                if line.strip() == b"data: [DONE]":
                    done = True
            if first is not None:
                self.environment.events.request.fire(
                    request_type="SSE",
                    name="ttft" + self.tag,
                    response_time=(first - start) * 1000,
                    response_length=0,
                    exception=None,
                    context={},
                )
            if not done:
                resp.failure("stream ended without [DONE]")

    @task(2)
    def embeddings(self) -> None:
        """Embeddings for two short inputs."""
        name = "embeddings" + self.tag
        body = {"model": EMBED_MODEL, "input": ["hello", "world"]}
        with self.client.post(
            "/v1/embeddings", json=body, headers=self.headers, name=name, catch_response=True
        ) as resp:
            if self._judge(resp, name) and '"data"' not in resp.text:
                resp.failure("no data in the answer")
