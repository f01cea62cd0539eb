"""Shared fixtures of the routing tests: a config with three providers and a hand-driven clock."""

from __future__ import annotations

import random

from gateway.config import GatewayConfig, parse_config
from gateway.routing import BreakerPolicy, Router

PROVIDERS = """
providers:
  - {name: openai-main, base_url: "http://127.0.0.1:1", models: [gpt-4o, gpt-4o-mini]}
  - {name: azure-eu, base_url: "http://127.0.0.1:2", models: [gpt-4o]}
  - {name: anthropic-main, base_url: "http://127.0.0.1:3", type: anthropic, models: [claude-sonnet-4-5]}
"""


def config(virtual_models: str) -> GatewayConfig:
    return parse_config(PROVIDERS + "virtual_models:\n" + virtual_models, env={})


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def router(virtual_models: str, clock: Clock | None = None, breaker: BreakerPolicy | None = None) -> Router:
    return Router(config(virtual_models), clock=clock or Clock(), rng=random.Random(7), breaker=breaker)
