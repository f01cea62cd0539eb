"""SDK clients that are closed after each test (an unclosed socket warns, and warnings fail).

from tests.sdk_clients import close_sdk_clients, opened  # noqa: F401  (autouse fixture)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_OPEN: list[Any] = []


def opened(sdk_client: Any) -> Any:
    """Register ``sdk_client`` (anything with ``close()``) to be closed after the test."""
    _OPEN.append(sdk_client)
    return sdk_client


@pytest.fixture(autouse=True)
def close_sdk_clients() -> Iterator[None]:
    """Close the clients :func:`opened` registered during the test."""
    yield
    while _OPEN:
        _OPEN.pop().close()
