"""Fixtures of the access-control unit tests."""

from __future__ import annotations

import pytest
from access_helpers import CONFIG

from gateway.config import GatewayConfig, parse_config


@pytest.fixture
def cfg() -> GatewayConfig:
    return parse_config(CONFIG, env={})
