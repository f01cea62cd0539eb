"""pytest fixtures around :class:`tests.otlp_receiver.OtlpReceiver`.

Import them into a conftest (or a test module) to use them::

    from tests.otlp_fixtures import otlp_receiver  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.otlp_receiver import OtlpReceiver


@pytest_asyncio.fixture
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """A started receiver (OTLP/HTTP and OTLP/gRPC on free 127.0.0.1 ports), stopped afterwards."""
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest_asyncio.fixture
async def second_otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """Another independent receiver, for tests with two backends."""
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
