"""``gateway-exporter``: config loading, exit codes, and a run against a real NATS."""

from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from exporter import cli
from gateway.telemetry.drain import make_resource
from gateway.telemetry.expand import expand_trace
from gateway.telemetry.wire import SCHEMA_VERSION, SpanBatch, TraceBatch, encode_batch
from tests.records import chat_record

CONFIG = """
server: {max_body_bytes: 1000}       # gateway-only sections are ignored
tracing:
  service_name: ${SVC:-tfy-llm-gateway}
  nats: {url: "${NATS_URL}", subject_prefix: exp}
exporter: {}
"""


def test_parse_settings_substitutes_env() -> None:
    s = cli.parse_settings(CONFIG, env={"NATS_URL": "nats://127.0.0.1:1"})
    assert s.tracing.nats is not None and s.tracing.nats.url == "nats://127.0.0.1:1"
    assert s.tracing.service_name == "tfy-llm-gateway"
    assert s.tracing.nats.spans_subject == "exp.spans"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tracing: {service_name: x}\n", "tracing.nats: required"),
        (CONFIG, "NATS_URL is not set"),
        ("tracing: {nats: {url: x, bogus: 1}}\n", "bogus"),
        ("tracing: [\n", "invalid YAML"),
    ],
)
def test_parse_settings_problems(text: str, needle: str) -> None:
    with pytest.raises(cli.ConfigProblem, match=needle):
        cli.parse_settings(text, env={})


def test_main_exits_2_on_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("tracing: {}\n")
    assert cli.main(["--config", str(path)]) == 2
    assert "tracing.nats" in capsys.readouterr().err
    assert cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.nats
async def test_run_consumes_and_stops(nats_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[SpanBatch] = []
    events: list[str] = []

    class FakePipeline:
        destinations = ["signoz"]

        def __init__(self, exporter_cfg: object, tracing_cfg: object, **kwargs: object) -> None:
            events.append("init")

        async def start(self) -> None:
            events.append("start")

        def submit(self, batch: SpanBatch, *, on_done: Any = None, **kwargs: object) -> None:
            got.append(batch)
            if on_done is not None:
                on_done(frozenset())

        async def stop(self, timeout_s: float) -> None:
            events.append("stop")

    # Until the OTLP side is merged, stand in for exporter.pipeline.
    module = types.ModuleType("exporter.pipeline")
    module.ExportPipeline = FakePipeline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exporter.pipeline", module)

    settings = cli.parse_settings(CONFIG, env={"NATS_URL": nats_server})
    stop = asyncio.Event()
    task = asyncio.create_task(cli.run(settings, 3.0, stop, prometheus_port=0))
    nc = NatsClient()
    await nc.connect(servers=[nats_server])
    record = chat_record()
    batch = TraceBatch(SCHEMA_VERSION, make_resource("svc"), [record])
    for _ in range(50):  # the subscription may not exist yet: publish until one arrives
        await nc.publish("exp.spans", encode_batch(batch))
        await nc.flush()
        if got:
            break
        await asyncio.sleep(0.1)
    assert got and got[0].resource == batch.resource
    assert [(s.trace_id, s.name) for s in got[0].spans] == [
        (s.trace_id, s.name) for s in expand_trace(record)
    ]
    stop.set()
    await asyncio.wait_for(task, 5)
    assert events == ["init", "start", "stop"]
    await nc.close()
