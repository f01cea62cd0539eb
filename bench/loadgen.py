"""Open-loop constant-rate load generator (asyncio + pyreqwest, or aiohttp).

Requests are scheduled at uniform times ``start + i / rate`` whatever the target does, and each
latency is measured from its *scheduled* send time, not from when it was actually sent. A target
that stalls therefore pays for every request queued behind the stall (coordinated omission is not
hidden, unlike closed-loop tools such as wrk). The generator's own lateness (actual send minus
scheduled) is reported as ``send_lag_ms`` so a saturated generator shows up instead of passing for
a slow target; it is the same machinery for every target in a run, so comparing targets against
the mock served directly cancels it out. pyreqwest is the default client because it costs about
half of aiohttp's CPU per request, and the generator shares its core with the mock.

Standalone use:

    python -m bench.loadgen --url http://127.0.0.1:8099/v1/chat/completions --rate 250 --duration 5 [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from time import perf_counter
from typing import Any

import aiohttp

# One sample: scheduled send, actual send, first body bytes, end, HTTP status (-1 transport error).
Sample = tuple[float, float, float, float, int]


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of ``values`` (any order), keyed ``p50`` etc; empty input → {}."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float] = {}
    for q in qs:
        rank = max(1, math.ceil(q / 100 * n))
        out[f"p{q:g}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / n
    return out


@dataclass
class OpenLoopResult:
    """Outcome of one constant-rate run. Times in milliseconds."""

    rate: float
    duration_s: float
    scheduled: int = 0
    completed: int = 0
    ok: int = 0
    transport_errors: int = 0
    unfinished: int = 0
    status: dict[str, int] = field(default_factory=dict)
    achieved_rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    send_lag_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with values rounded to microseconds."""
        data = asdict(self)
        for key in ("latency_ms", "ttft_ms", "send_lag_ms"):
            data[key] = {k: round(v, 3) for k, v in data[key].items()}
        data["achieved_rps"] = round(self.achieved_rps, 1)
        return data


def summarize(
    samples: list[Sample], rate: float, duration_s: float, scheduled: int, timeout_s: float
) -> OpenLoopResult:
    """Fold raw samples into an :class:`OpenLoopResult`.

    Requests that never finished count as ``unfinished`` with latency ``timeout_s`` (a lower bound),
    so a target that drops requests cannot look fast by omission.
    """
    result = OpenLoopResult(rate=rate, duration_s=duration_s, scheduled=scheduled)
    result.completed = len(samples)
    result.unfinished = max(0, scheduled - len(samples))
    latencies, ttfts, lags = [], [], []
    first_sched, last_end = math.inf, -math.inf
    for sched, sent, first, end, status in samples:
        key = str(status) if status >= 0 else "error"
        result.status[key] = result.status.get(key, 0) + 1
        if status < 0:
            result.transport_errors += 1
        elif 200 <= status < 300:
            result.ok += 1
            ttfts.append((first - sched) * 1000)
        latencies.append((end - sched) * 1000)
        lags.append((sent - sched) * 1000)
        first_sched, last_end = min(first_sched, sched), max(last_end, end)
    latencies.extend([timeout_s * 1000] * result.unfinished)
    result.latency_ms = percentiles(latencies)
    result.ttft_ms = percentiles(ttfts)
    result.send_lag_ms = percentiles(lags)
    if samples and last_end > first_sched:
        result.achieved_rps = result.ok / (last_end - first_sched)
    return result


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    sched: float,
    out: list[Sample],
) -> None:
    sent = perf_counter()
    first = sent
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            # The first bytes of the body are the first token for SSE; for JSON it is the whole answer.
            chunk = await resp.content.readany()
            first = perf_counter()
            while chunk:
                chunk = await resp.content.readany()
            out.append((sched, sent, first, perf_counter(), resp.status))
    except (aiohttp.ClientError, TimeoutError, OSError):
        out.append((sched, sent, first, perf_counter(), -1))


async def _one_pyreqwest(
    client: Any, url: str, body: bytes, headers: dict[str, str], sched: float, out: list[Sample]
) -> None:
    from pyreqwest.exceptions import PyreqwestError

    sent = perf_counter()
    first = sent
    try:
        request = (
            client.post(url).headers(headers).body_bytes(body).streamed_read_buffer_limit(0).build_streamed()
        )
        async with request as resp:
            reader = resp.body_reader
            chunk = await reader.read_chunk()
            first = perf_counter()
            while chunk is not None:
                chunk = await reader.read_chunk()
            out.append((sched, sent, first, perf_counter(), resp.status))
    except (PyreqwestError, TimeoutError, OSError):
        out.append((sched, sent, first, perf_counter(), -1))


async def _schedule(
    session: Any,
    url: str,
    body: bytes,
    headers: dict[str, str],
    rate: float,
    duration_s: float,
    timeout_s: float,
) -> tuple[list[Sample], int]:
    """Send at uniform times for ``duration_s``; wait at most ``timeout_s`` more for stragglers."""
    out: list[Sample] = []
    n = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    tasks: list[asyncio.Task[None]] = []
    start = perf_counter() + 0.005
    for i in range(n):
        sched = start + i * interval
        delay = sched - perf_counter()
        if delay > 0:
            # Timers are coarse (uvloop: 1 ms); when we wake late, every overdue request goes out at
            # once and still carries its own scheduled time.
            await asyncio.sleep(delay)
        one = _one if isinstance(session, aiohttp.ClientSession) else _one_pyreqwest
        tasks.append(asyncio.create_task(one(session, url, body, headers, sched, out)))
    _, pending = await asyncio.wait(tasks, timeout=timeout_s + 1.0)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2.0)
    return out, n


async def run_open_loop_async(
    url: str,
    body: bytes,
    *,
    rate: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
    warmup_s: float = 1.0,
    timeout_s: float = 10.0,
    max_connections: int = 1024,
    client: str = "pyreqwest",
) -> OpenLoopResult:
    """Run a warm-up (discarded) then a measured open-loop phase at ``rate`` req/s.

    Args:
        max_connections: pool cap; requests beyond it wait for a connection, and that wait counts
            in their latency because latency starts at the scheduled time.
    """
    hdrs = {"content-type": "application/json", **(headers or {})}
    if client == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        builder = ClientBuilder().follow_redirects(False).gzip(False).brotli(False).zstd(False).deflate(False)
        builder = builder.timeout(timedelta(seconds=timeout_s)).max_connections(max_connections)
        async with builder.build() as prclient:
            if warmup_s > 0:
                await _schedule(prclient, url, body, hdrs, rate, warmup_s, timeout_s)
            samples, scheduled = await _schedule(prclient, url, body, hdrs, rate, duration_s, timeout_s)
        return summarize(samples, rate, duration_s, scheduled, timeout_s)
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        if warmup_s > 0:
            await _schedule(session, url, body, hdrs, rate, warmup_s, timeout_s)
        samples, scheduled = await _schedule(session, url, body, hdrs, rate, duration_s, timeout_s)
    return summarize(samples, rate, duration_s, scheduled, timeout_s)


def run_open_loop(url: str, body: bytes, **kwargs: Any) -> OpenLoopResult:
    """Synchronous wrapper: a fresh uvloop event loop per run (see :func:`run_open_loop_async`)."""
    try:
        import uvloop

        return uvloop.run(run_open_loop_async(url, body, **kwargs))
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.run(run_open_loop_async(url, body, **kwargs))


def main(argv: list[str] | None = None) -> None:
    """CLI: one open-loop run, result as JSON on stdout."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--client", choices=["pyreqwest", "aiohttp"], default="pyreqwest")
    parser.add_argument("--header", action="append", default=[], help="extra header 'Name: value'")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("traffic goes to 127.0.0.1 only")
    payload: dict[str, Any] = {"model": args.model, "messages": [{"role": "user", "content": "hi"}]}
    if args.stream:
        payload["stream"] = True
    headers = dict(h.split(":", 1) for h in args.header)
    result = run_open_loop(
        args.url,
        json.dumps(payload, separators=(",", ":")).encode(),
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        headers={k.strip(): v.strip() for k, v in headers.items()},
        client=args.client,
    )
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
