"""Every ```yaml block of docs/backends.md decodes into the config structs without problems."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from exporter.config import ExporterConfig, check_exporter
from gateway.telemetry.wire import TracingConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.md"
BLOCKS = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}")


def substitute(value: object) -> object:
    """Dummy values for ``${NAME}`` references, in parsed scalars as the config loader does."""
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: f"dummy-{m.group(1).lower().replace('_', '-')}", value)
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v) for v in value]
    return value


def test_every_backend_has_a_snippet() -> None:
    sections = DOC.read_text(encoding="utf-8").split("\n## ")[1:]
    for backend in ("SigNoz", "Middleware", "Logfire", "Phoenix", "Langfuse", "Elastic", "Grafana", "Datadog"):
        (section,) = [s for s in sections if backend in s.splitlines()[0]]
        assert "```yaml" in section, backend


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_snippet_decodes_and_checks_clean(block: str) -> None:
    doc = substitute(yaml.safe_load(block))
    assert isinstance(doc, dict) and set(doc) <= {"exporter", "tracing"} and "exporter" in doc
    cfg = msgspec.convert(doc["exporter"], ExporterConfig)
    assert cfg.traces or cfg.metrics
    assert list(check_exporter(cfg)) == []
    if "tracing" in doc:
        msgspec.convert(doc["tracing"], TracingConfig)
    for dest in cfg.traces:
        for value in dest.headers.values():
            assert "${" not in value
