"""Config sections for authentication, access rules and rate limits (filled in by the access-control work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Credentials accepted by the gateway."""


class AccessRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which subjects may use which models."""

    subjects: list[str]
    models: list[str]


class RateLimitRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One rate-limit rule; the first matching rule applies."""

    id: str


def check_access(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of the auth, access and rate_limiting sections."""
    return iter(())
