"""``gateway-exporter --config FILE``: NATS span batches in, OTLP out.

Reads the gateway's YAML file but only its ``tracing:`` and ``exporter:`` sections (the
exporter imports nothing from the gateway but the wire module), substitutes ``${ENV}`` /
``${ENV:-default}`` in string values, and requires ``tracing.nats``. Pulls span batches from
the JetStream stream through the shared durable consumer (:mod:`exporter.subscriber`) and
serves its own Prometheus metrics on ``--prometheus-port`` (:mod:`exporter.prom`). Shutdown on
SIGTERM or SIGINT, in order: stop pulling and let the batches in flight finish (what does not
finish is nak'ed, so another replica takes it at once), then let the pipeline flush its
destination queues, all within ``--shutdown-timeout`` seconds.

Exit codes: 0 after a clean shutdown, 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import yaml

from exporter.config import ExporterConfig
from exporter.store.config import StoreConfig, UiConfig
from exporter.subscriber import SpanSubscriber
from gateway.telemetry import genai
from gateway.telemetry.wire import TracingConfig, substitute_env

__all__ = ["ExporterSettings", "load_settings", "main"]

log = logging.getLogger("exporter")


class ConfigProblem(Exception):
    """The configuration file cannot be used; the message says why and where."""


class ExporterSettings(msgspec.Struct, frozen=True):
    """The two sections the exporter reads."""

    tracing: TracingConfig
    exporter: ExporterConfig
    metadata_label_keys: tuple[str, ...] = ()  # the gateway's metrics.metadata_label_keys
    store: StoreConfig = StoreConfig()
    ui: UiConfig = UiConfig()
    config_text: str = ""  # the whole file: the store API authenticates as the gateway does


def parse_settings(text: str, env: Mapping[str, str] | None = None) -> ExporterSettings:
    """Decode the ``tracing:`` and ``exporter:`` sections of a gateway YAML document.

    Raises:
        ConfigProblem: invalid YAML, an unknown key or bad value (with its path), a missing
            environment variable, or no ``tracing.nats`` section.
    """
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigProblem(f"invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigProblem("<root>: expected a mapping")
    problems: list[str] = []
    sections = {
        key: substitute_env(raw.get(key) or {}, key, os.environ if env is None else env, problems)
        for key in ("tracing", "exporter", "store", "ui")
    }
    if problems:
        raise ConfigProblem("; ".join(problems))
    try:
        tracing = msgspec.convert(sections["tracing"], TracingConfig)
    except msgspec.ValidationError as exc:
        raise ConfigProblem(f"tracing: {exc}") from None
    try:
        exporter = msgspec.convert(sections["exporter"], ExporterConfig)
    except msgspec.ValidationError as exc:
        raise ConfigProblem(f"exporter: {exc}") from None
    try:
        store = msgspec.convert(sections["store"], StoreConfig)
        ui = msgspec.convert(sections["ui"], UiConfig)
    except msgspec.ValidationError as exc:
        raise ConfigProblem(f"store/ui: {exc}") from None
    if tracing.nats is None:
        raise ConfigProblem(
            "tracing.nats: required by gateway-exporter (without it the gateway exports in-process)"
        )
    metrics = raw.get("metrics") or {}
    keys = metrics.get("metadata_label_keys") or [] if isinstance(metrics, dict) else []
    return ExporterSettings(tracing, exporter, tuple(str(k) for k in keys), store, ui, text)


def load_settings(path: str, env: Mapping[str, str] | None = None) -> ExporterSettings:
    """:func:`parse_settings` on a file; ``ConfigProblem`` if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigProblem(f"cannot read {path}: {exc.strerror}") from None
    return parse_settings(text, env)


def _destination_names(exporter_cfg: ExporterConfig, pipeline: Any) -> list[str]:
    # Prefer what the pipeline actually built (it adds OTEL_EXPORTER_OTLP_* destinations).
    for source in (getattr(pipeline, "destinations", None), getattr(exporter_cfg, "traces", None)):
        if source:
            return [str(getattr(d, "name", d)) for d in source]
    return []


async def run(
    settings: ExporterSettings,
    shutdown_timeout_s: float,
    stop: asyncio.Event | None = None,
    prometheus_port: int | None = None,
) -> None:
    """Run pipeline and subscriber until ``stop`` is set (by SIGTERM/SIGINT when ``None``)."""
    from exporter.pipeline import ExportPipeline  # the OTLP side, imported only when running

    assert settings.tracing.nats is not None
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    nats_cfg = settings.tracing.nats
    assert nats_cfg is not None
    # The queues may hold what the consumer has in flight, and a little more.
    queue_bytes = max(settings.tracing.max_buffer_bytes, nats_cfg.consumer.max_in_flight_bytes * 2)
    pipeline: Any = ExportPipeline(
        settings.exporter, settings.tracing, max_queue_bytes=queue_bytes, trim_memory=True
    )
    if settings.exporter.metrics:
        from exporter.metrics_export import MetricsExporter, SpanFanout

        pipeline = SpanFanout(
            pipeline,
            MetricsExporter(settings.exporter.metrics, metadata_label_keys=settings.metadata_label_keys),
        )
    from exporter.store.embed import start_exporter_store

    store = await start_exporter_store(settings.config_text, settings.store, settings.ui, pipeline)
    await pipeline.start()
    names = _destination_names(settings.exporter, pipeline)
    subscriber = SpanSubscriber(
        nats_cfg, pipeline, name=f"gateway-exporter {os.getpid()}", destinations=names
    )
    port = settings.exporter.prometheus_port if prometheus_port is None else prometheus_port
    if port:
        from exporter.prom import serve_metrics

        serve_metrics(subscriber, pipeline, settings.exporter.prometheus_host, port)
    await subscriber.start()
    log.info(
        "gateway-exporter: consuming %s from %s; destinations: %s",
        subscriber.subject,
        settings.tracing.nats.url,
        ", ".join(names) or "(none)",
    )
    await stop.wait()
    deadline = time.monotonic() + shutdown_timeout_s
    log.info("gateway-exporter: shutting down (%.1fs deadline)", shutdown_timeout_s)
    await subscriber.stop(max(deadline - time.monotonic(), 0.1) / 2)
    await pipeline.stop(max(deadline - time.monotonic(), 0.1))
    if store is not None:
        await store.aclose()
    log.info(
        "gateway-exporter: stopped; received %d batches (%d spans), %d undecodable, %d acked, %d nak'ed",
        subscriber.batches,
        subscriber.spans,
        subscriber.bad_messages,
        subscriber.acked,
        subscriber.nacked,
    )
    if genai.COUNTERS:  # inputs the GenAI mapping could not read (sent as generic parts or left out)
        log.info("gateway-exporter: GenAI content degraded: %s", dict(genai.COUNTERS))


def main(argv: list[str] | None = None) -> int:
    """Console script entry point."""
    parser = argparse.ArgumentParser(prog="gateway-exporter", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG"),
        help="gateway YAML file (env GATEWAY_CONFIG)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(os.environ.get("EXPORTER_SHUTDOWN_TIMEOUT", "10")),
        help="seconds to drain and flush on SIGTERM (env EXPORTER_SHUTDOWN_TIMEOUT)",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("EXPORTER_LOG_LEVEL", "INFO"), help="env EXPORTER_LOG_LEVEL"
    )
    env_port = os.environ.get("EXPORTER_PROMETHEUS_PORT")
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=int(env_port) if env_port else None,
        help="port of the exporter's own /metrics, 0 for none (env EXPORTER_PROMETHEUS_PORT; "
        "default exporter.prometheus_port, 9464)",
    )
    args = parser.parse_args(argv)
    level = args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # httpx logs each export request at INFO; ours are at DEBUG (exporter.destinations).
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from gateway.redact import install_log_redaction

    install_log_redaction()  # endpoints and NATS URLs may carry credentials
    if not args.config:
        print("gateway-exporter: --config FILE (or GATEWAY_CONFIG) is required", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigProblem as exc:
        print(f"gateway-exporter: {args.config}: {exc}", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(run(settings, args.shutdown_timeout, prometheus_port=args.prometheus_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
