"""The wire contract between gateway and exporter (filled in by the tracing work).

Both sides import this one module; the exporter imports nothing else from the gateway.
"""

from __future__ import annotations

import msgspec


class NatsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "gateway"


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``tracing:`` section, read by both the gateway and the exporter."""

    enabled: bool = True
    service_name: str = "tfy-llm-gateway"
    ring_size: int = 65536
    nats: NatsConfig | None = None
