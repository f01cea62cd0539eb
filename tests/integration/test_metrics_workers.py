"""Multiprocess totals through granian's real worker processes: any worker's scrape sums all.

A minimal RSGI app (defined here, loaded by granian's workers by import path) records one
request per call with :class:`gateway.metrics.Metrics` and serves ``/metrics``; the runner
calls :func:`gateway.metrics.prepare_multiprocess_dir` before granian spawns two workers, as
``gateway serve`` does. The end-to-end scrape of the real gateway needs the gateway's wiring.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import MetricsConfig
from gateway.metrics import Metrics
from tests.conftest import Proc, _spawn, free_port, wait_http  # _spawn: cwd = repository root

pytestmark = pytest.mark.timeout(90)

_RUNNER = """
import sys
import prometheus_client  # imported before the variable is set, on purpose: workers must cope
from gateway.metrics import prepare_multiprocess_dir
prepare_multiprocess_dir(sys.argv[2])
from granian.constants import Interfaces, Loops
from granian.server import Server
Server(
    "tests.integration.test_metrics_workers:create_app", address="127.0.0.1", port=int(sys.argv[1]),
    interface=Interfaces.RSGI, loop=Loops.uvloop, workers=2, factory=True,
).serve()
"""


class _App:
    """One worker: records ``/req?user=..&tokens=..``, serves ``/metrics``."""

    def __init__(self) -> None:
        self.metrics: Metrics | None = None

    def __rsgi_init__(self, loop: Any) -> None:
        self.metrics = Metrics(MetricsConfig(metadata_label_keys=["env"]), flush_interval_s=0.1)

    def __rsgi_del__(self, loop: Any) -> None:
        if self.metrics is not None:
            loop.run_until_complete(self.metrics.aclose())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        m = self.metrics
        assert m is not None
        await m.start()
        if scope.path == "/metrics":
            ctype, body = m.render(scope.headers.get("accept"))
            proto.response_bytes(200, [("content-type", ctype)], body)
            return
        q = dict(parse_qsl(scope.query_string))
        m.inflight_inc()
        m.record_request(
            "openai/gpt-4o", q["user"], "acme", {"env": "prod"}, 200, None, int(q["tokens"]), 1, 0.001, 12.0
        )
        m.inflight_dec()
        proto.response_bytes(200, [("content-type", "text/plain")], str(os.getpid()).encode())


def create_app() -> _App:
    return _App()


def _total(body: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


def test_two_workers_scrape_reports_the_sum(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "granian.log"
    popen = _spawn(
        [sys.executable, "-c", _RUNNER, str(port), str(tmp_path / "mp")], log, start_new_session=True
    )
    proc = Proc(popen, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(proc.url + "/metrics", proc=popen, timeout_s=30)
        pids: set[str] = set()
        n = 0
        # A fresh connection per request lets the kernel hand requests to both workers.
        while n < 400 and (n < 60 or len(pids) < 2):
            r = httpx.get(f"{proc.url}/req?user=u{n % 3}&tokens={n}", headers={"connection": "close"})
            assert r.status_code == 200
            pids.add(r.text)
            n += 1
        assert len(pids) == 2, proc.output()
        time.sleep(0.5)  # > flush_interval_s: every worker's numbers are in the shared files
        for _ in range(6):  # whichever worker answers, the totals are the process group's
            body = httpx.get(proc.url + "/metrics", headers={"connection": "close"}).text
            assert _total(body, "llm_gateway_requests_total") == n
            assert _total(body, "llm_gateway_input_tokens_total") == sum(range(n))
            assert _total(body, "llm_gateway_request_processing_ms_count") == n
            assert _total(body, "llm_gateway_requests_in_flight") == 0
    finally:
        proc.stop()  # its exit status on SIGTERM is not what this test is about
