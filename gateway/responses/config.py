"""The ``responses:`` section of the gateway config (Responses API surface and its store)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

DAY_S = 86_400.0


class ResponsesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Stored responses (``store: true``) and what translated targets may drop.

    The store is in process memory without ``cluster``; with ``cluster.nats_url`` it is a NATS
    JetStream key-value bucket every replica reads (responses over the value limit go to a
    JetStream object store of the same name), with a local cache of recent ones.
    """

    # Seven days: agent chains resume within hours, and a week bounds the bucket's size while
    # outliving any reasonable client session (OpenAI keeps 30 days; set that if you need it).
    store_ttl_s: float = 7 * DAY_S
    memory_max_entries: int = 10_000  # embedded store, and the fleet's local cache of recent ones
    memory_max_bytes: int = 256 * 1024 * 1024
    cache_max_entries: int = 1_024  # fleet: recent responses kept in process
    kv_bucket: str = "gateway-responses"
    kv_max_bytes: int = -1  # JetStream bucket size cap (-1: unlimited, the TTL bounds it)
    # Built-in tools (``web_search`` …) that targets served through chat completions drop
    # instead of refusing the request with a 400; the response says so in
    # ``x-tfy-dropped-tools``. Codex CLI sends ``web_search`` with every request.
    drop_builtin_tools: list[str] = []
    # Gateway-wide cap on model calls of one Responses request running MCP tools.
    max_tool_calls: int = 16


def check_responses(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of the ``responses:`` section."""
    r: ResponsesConfig = cfg.responses
    if r.store_ttl_s <= 0:
        yield "responses.store_ttl_s: must be > 0"
    if r.memory_max_entries < 1:
        yield "responses.memory_max_entries: must be >= 1"
    if r.memory_max_bytes < 1024:
        yield "responses.memory_max_bytes: must be >= 1024"
    if r.cache_max_entries < 0:
        yield "responses.cache_max_entries: must be >= 0"
    if not r.kv_bucket or not all(c.isalnum() or c in "-_" for c in r.kv_bucket):
        yield "responses.kv_bucket: letters, digits, '-' and '_' only"
    if r.max_tool_calls < 1:
        yield "responses.max_tool_calls: must be >= 1"
    for i, p in enumerate(cfg.providers):
        if p.type != "openai" and p.responses == "native":
            yield f"providers[{i}].responses: only openai-type providers can serve Responses natively"
