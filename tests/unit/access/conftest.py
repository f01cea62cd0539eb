"""Fixtures of the access-control unit tests."""

from __future__ import annotations

import pytest

from gateway.config import GatewayConfig, parse_config
from tests.unit.access.helpers import CONFIG


@pytest.fixture
def cfg() -> GatewayConfig:
    return parse_config(CONFIG, env={})
