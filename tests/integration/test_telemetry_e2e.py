"""Gateway telemetry -> NATS -> ``gateway-exporter`` process -> OTLP/HTTP receiver, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.telemetry.drain import Telemetry
from gateway.telemetry.wire import NatsConfig, TracingConfig
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver
from tests.records import chat_record

pytestmark = pytest.mark.nats

EXPORTER = str(Path(sys.executable).parent / "gateway-exporter")


def _config(tmp_path: Path, nats_url: str, traces_url: str, prefix: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""
tracing:
  service_name: e2e-gateway
  nats: {{url: "{nats_url}", subject_prefix: {prefix}}}
exporter:
  traces:
    - name: receiver
      endpoint: "${{RECEIVER_URL}}"
      headers: {{x-test-key: "${{TEST_KEY:-k-123}}"}}
"""
    )
    return path


async def test_spans_reach_an_otlp_backend_through_the_exporter_process(
    tmp_path: Path,
    nats_server: str,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    cfg_path = _config(tmp_path, nats_server, otlp_receiver.traces_url, "e2e")
    log_path = tmp_path / "exporter.log"
    env = {**os.environ, "RECEIVER_URL": otlp_receiver.traces_url}
    env.pop("TEST_KEY", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([EXPORTER, "--config", str(cfg_path)], stdout=log, stderr=log, env=env)
    tel = Telemetry.from_config(
        TracingConfig(service_name="e2e-gateway", nats=NatsConfig(url=nats_server, subject_prefix="e2e"))
    )
    try:
        await tel.start()
        deadline = time.monotonic() + 15
        while b"subscribed to" not in log_path.read_bytes():  # the exporter logs once subscribed
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)

        # A caller's trace context, auth, and one upstream call (model resolution never reached).
        tel.record(
            chat_record(
                b'{"model":"gpt-4o"}',
                trace_id=bytes.fromhex("ab" * 16),
                parent_id=bytes.fromhex("cd" * 8),
                resolved_pc=0,
            )
        )
        await otlp_receiver.wait_for(1, timeout_s=15)
        got = {s.name: s for s in otlp_receiver.spans()}
        assert set(got) == {"POST /v1/chat/completions", "auth", "chat gpt-4o"}
        root = got["POST /v1/chat/completions"]
        assert root.trace_id.hex() == "ab" * 16 and root.parent_span_id.hex() == "cd" * 8
        assert got["auth"].parent_span_id == root.span_id
        attrs = {a.key: a.value for a in got["chat gpt-4o"].attributes}
        assert attrs["gen_ai.request.model"].string_value == "gpt-4o"
        headers = otlp_receiver.received[0].headers
        assert headers.get("x-test-key") == "k-123"
    finally:
        await tel.stop(2)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, log_path.read_text()
    out = log_path.read_text()
    assert "destinations: receiver" in out and "stopped; received 1 batches" in out
