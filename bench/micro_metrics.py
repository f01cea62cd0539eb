"""Micro-benchmark: µs per ``Metrics.record_request`` (and in-flight inc/dec), single and multiprocess.

Run: ``python -m bench.micro_metrics``. Each mode runs in a fresh interpreter because
``prometheus_client`` fixes its value class (in-memory or mmap) at import time. The budget is
10 µs per request on the hot path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit
from typing import Any

N = 200_000


def _measure() -> None:
    from gateway.config import MetricsConfig
    from gateway.metrics import Metrics

    for keys in ([], ["env", "team"]):
        _run(Metrics(MetricsConfig(metadata_label_keys=keys)), len(keys))


def _run(m: Any, n_keys: int) -> None:
    meta = {"env": "prod", "team": "ml", "ignored": "x"}
    users = [f"user{i}" for i in range(16)]  # a realistic spread of warm label sets

    def record(i: list[int] = [0]) -> None:  # noqa: B006 - a cheap counter
        i[0] += 1
        m.record_request(
            "openai-main/gpt-4o", users[i[0] & 15], "acme", meta, 200, None,
            120, 380, 0.0041, 812.5, 95.0, 11.2,
        )  # fmt: skip

    def noop(*_: object) -> None:
        pass

    def baseline(i: list[int] = [0]) -> None:  # noqa: B006 - the same loop, recording nothing
        i[0] += 1
        noop(
            "openai-main/gpt-4o", users[i[0] & 15], "acme", meta, 200, None,
            120, 380, 0.0041, 812.5, 95.0, 11.2,
        )  # fmt: skip

    def inflight() -> None:
        m.inflight_inc()
        m.inflight_dec()

    for _ in range(2000):
        record()
    best = min(timeit.repeat(record, number=N, repeat=5)) / N * 1e6
    base = min(timeit.repeat(baseline, number=N, repeat=5)) / N * 1e6
    best_if = min(timeit.repeat(inflight, number=N, repeat=5)) / N * 1e6
    m.flush()
    for _ in range(1000):
        record()
    t0 = timeit.default_timer()
    m.flush()  # off the request path: the periodic task, or the start of a scrape
    flush_ms = (timeit.default_timer() - t0) * 1e3
    mode = "multiprocess" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "single-process"
    print(
        f"{mode:15s} metadata_keys={n_keys}  record_request {best:6.2f} µs "
        f"(loop+call overhead {base:4.2f} µs)   inflight inc+dec {best_if:5.2f} µs   "
        f"flush of 16 label sets {flush_ms:5.2f} ms"
    )


def _measure_spans() -> None:
    """The exporter side: folding one request's spans (root, auth, one CLIENT span) into metrics."""
    from exporter.metrics import SpanMetrics
    from tests.unit.test_metrics_spans import batch, trace

    agg = SpanMetrics(metadata_label_keys=["env"])
    b = batch(*[trace(user=f"user{i & 15}") for i in range(512)])
    agg.observe(b)
    best = min(timeit.repeat(lambda: agg.observe(b), number=20, repeat=5)) / 20 / 512 * 1e6
    print(f"exporter        SpanMetrics.observe {best:6.2f} µs per request (3 spans), 512-trace batches")


def main() -> int:
    if os.environ.get("_MICRO_METRICS_CHILD"):
        _measure()
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _measure_spans()
        return 0
    env = {**os.environ, "_MICRO_METRICS_CHILD": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "-m", "bench.micro_metrics"], env=env, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as d:
        subprocess.run(
            [sys.executable, "-m", "bench.micro_metrics"],
            env={**env, "PROMETHEUS_MULTIPROC_DIR": d},
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
