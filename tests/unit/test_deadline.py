"""The body-read deadline sweep (gateway.deadline) and read_body's use of it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.deadline import TICK_S, sweeper
from gateway.errors import RequestTimeout
from gateway.proxy import read_body


class _Headers(dict[str, str]):
    pass


class _Scope:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = _Headers(headers)


class _Proto:
    """Answers the body after ``delay_s`` (never, when None)."""

    def __init__(self, body: bytes, delay_s: float | None) -> None:
        self.body, self.delay_s = body, delay_s

    async def __call__(self) -> bytes:
        if self.delay_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.delay_s)
        return self.body


def _read(delay_s: float | None, timeout_s: float) -> Any:
    scope = _Scope({"content-length": "2"})
    return read_body(scope, _Proto(b"{}", delay_s), 1000, timeout_s)


def test_body_in_time_is_returned_and_nothing_stays_registered() -> None:
    async def main() -> None:
        assert await _read(0.0, 1.0) == b"{}"
        assert await _read(0.01, 1.0) == b"{}"
        sw, _ = sweeper()
        assert not sw._deadlines and not sw._expired
        await asyncio.sleep(TICK_S * 2)
        assert sw._handle is None  # no ticks while nothing is in flight

    asyncio.run(main())


def test_body_too_slow_times_out_within_a_tick() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RequestTimeout) as info:
            await _read(None, 0.2)
        took = loop.time() - start
        assert 0.2 <= took < 0.2 + 3 * TICK_S
        assert ("connection", "close") in info.value.headers
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the sweep's cancel was absorbed
        await asyncio.sleep(0)  # no cancellation left pending for the next await

    asyncio.run(main())


def test_outside_cancel_propagates_and_many_readers_time_out_independently() -> None:
    async def main() -> None:
        slow = asyncio.ensure_future(_read(None, 30.0))
        await asyncio.sleep(0.01)
        slow.cancel()  # shutdown, not the deadline
        with pytest.raises(asyncio.CancelledError):
            await slow
        results = await asyncio.gather(
            _read(None, 0.1), _read(0.0, 0.1), _read(None, 0.3), return_exceptions=True
        )
        assert isinstance(results[0], RequestTimeout)
        assert results[1] == b"{}"
        assert isinstance(results[2], RequestTimeout)

    asyncio.run(main())


def test_a_new_loop_gets_a_new_sweeper() -> None:
    async def loop_of() -> object:
        return sweeper()[0].loop

    first = asyncio.run(loop_of())
    second = asyncio.run(loop_of())
    assert first is not second
