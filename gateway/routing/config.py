"""Config of virtual models (filled in by the routing work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


class VirtualModelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A model name clients send that the gateway resolves to one of several targets."""

    name: str


def check_routing(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of the virtual_models section."""
    return iter(())
