"""The exporter's own Prometheus metrics, served on ``exporter.prometheus_port`` (``/metrics``).

Read at scrape time from the counters the consumer and the pipeline keep anyway (plain ints,
no per-batch cost), on prometheus_client's HTTP server thread. Spans are the unit everywhere,
so, per destination and once its queue is empty, ``in = exported + dropped + sampled_out +
rejected + redelivered`` (a batch handed back for redelivery is counted again when it returns;
``received`` counts every delivery from the stream, redeliveries included).

| metric | type | labels |
|---|---|---|
| ``llm_gateway_exporter_received_spans_total`` / ``..._batches_total`` | counter | |
| ``llm_gateway_exporter_undecodable_messages_total`` | counter | |
| ``llm_gateway_exporter_newer_schema_messages_total`` | counter | |
| ``llm_gateway_exporter_destination_spans_total`` (in) | counter | destination |
| ``llm_gateway_exporter_exported_spans_total`` | counter | destination |
| ``llm_gateway_exporter_dropped_spans_total`` | counter | destination, reason |
| ``llm_gateway_exporter_sampled_out_spans_total`` / ``..._rejected_spans_total`` | counter | destination |
| ``llm_gateway_exporter_retries_total`` | counter | destination |
| ``llm_gateway_exporter_redeliveries_total`` / ``..._redelivered_spans_total`` | counter | destination |
| ``llm_gateway_exporter_acks_total`` | counter | result (ack, nak) |
| ``llm_gateway_exporter_redelivered_messages_total`` | counter | |
| ``llm_gateway_exporter_queue_bytes`` / ``..._queue_batches`` | gauge | destination |
| ``llm_gateway_exporter_in_flight_bytes`` / ``..._in_flight_messages`` | gauge | |
| ``llm_gateway_exporter_consumer_pending_messages`` | gauge (lag) | |
| ``llm_gateway_exporter_consumer_ack_pending_messages`` | gauge | |
| ``llm_gateway_exporter_nats_connected`` | gauge | |
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ExporterCollector", "serve_metrics"]

log = logging.getLogger("exporter")

P = "llm_gateway_exporter_"


class ExporterCollector(Collector):
    """Turns the consumer's and the pipeline's counters into metric families at scrape time."""

    def __init__(self, subscriber: Any, pipeline: Any) -> None:
        self.subscriber = subscriber
        self.pipeline = pipeline

    def collect(self) -> Iterator[Any]:
        """One family per metric of the module table."""
        sub = self.subscriber
        yield CounterMetricFamily(P + "received_spans", "Spans received from the stream.", value=sub.spans)
        yield CounterMetricFamily(
            P + "received_batches", "Batches received from the stream.", value=sub.batches
        )
        yield CounterMetricFamily(
            P + "undecodable_messages", "Messages that did not decode (terminated).", value=sub.bad_messages
        )
        yield CounterMetricFamily(
            P + "newer_schema_messages",
            "Batches of a newer wire schema, handed back for an upgraded exporter.",
            value=sub.newer_version,
        )
        yield CounterMetricFamily(
            P + "redelivered_messages",
            "Messages received again after a nak or an ack timeout.",
            value=sub.redelivered,
        )
        acks = CounterMetricFamily(P + "acks", "Acknowledgements sent to the stream.", labels=["result"])
        acks.add_metric(["ack"], sub.acked)
        acks.add_metric(["nak"], sub.nacked)
        yield acks
        dest = ["destination"]
        spans_in = CounterMetricFamily(P + "destination_spans", "Spans handed to a destination.", labels=dest)
        exported = CounterMetricFamily(P + "exported_spans", "Spans the backend accepted.", labels=dest)
        dropped = CounterMetricFamily(
            P + "dropped_spans", "Spans dropped for good, by reason.", labels=["destination", "reason"]
        )
        sampled = CounterMetricFamily(P + "sampled_out_spans", "Spans left out by sampling.", labels=dest)
        rejected = CounterMetricFamily(
            P + "rejected_spans", "Spans refused in a partial success.", labels=dest
        )
        retries = CounterMetricFamily(P + "retries", "Export requests retried.", labels=dest)
        redeliveries = CounterMetricFamily(
            P + "redeliveries", "Batches handed back for redelivery after a transient failure.", labels=dest
        )
        redelivered = CounterMetricFamily(
            P + "redelivered_spans",
            "Spans handed back for redelivery after a transient failure.",
            labels=dest,
        )
        queue_bytes = GaugeMetricFamily(
            P + "queue_bytes", "Bytes of batches queued or in flight.", labels=dest
        )
        queue_batches = GaugeMetricFamily(P + "queue_batches", "Batches waiting.", labels=dest)
        by_bytes = self.pipeline.queued_bytes_by_destination() if hasattr(self.pipeline, "counters") else {}
        queued = self.pipeline.queued() if hasattr(self.pipeline, "counters") else {}
        for name, c in getattr(self.pipeline, "counters", {}).items():
            spans_in.add_metric([name], c.spans_in)
            exported.add_metric([name], c.spans_exported)
            for reason, spans in list(c.spans_dropped.items()):
                dropped.add_metric([name, reason], spans)
            sampled.add_metric([name], c.spans_sampled_out)
            rejected.add_metric([name], c.spans_rejected)
            retries.add_metric([name], c.retries)
            redeliveries.add_metric([name], c.batches_redelivered)
            redelivered.add_metric([name], c.spans_redelivered)
            queue_bytes.add_metric([name], by_bytes.get(name, 0))
            queue_batches.add_metric([name], queued.get(name, 0))
        yield from (spans_in, exported, dropped, sampled, rejected, retries, redeliveries, redelivered)
        yield from (queue_bytes, queue_batches)
        yield GaugeMetricFamily(
            P + "in_flight_bytes", "Bytes of messages not yet acked.", value=sub.in_flight_bytes
        )
        yield GaugeMetricFamily(P + "in_flight_messages", "Messages not yet acked.", value=sub.in_flight)
        lag = GaugeMetricFamily(
            P + "consumer_pending_messages", "Messages in the stream not yet delivered (lag)."
        )
        if sub.lag is not None:
            lag.add_metric([], sub.lag)
        yield lag
        pending = GaugeMetricFamily(P + "consumer_ack_pending_messages", "Messages delivered, not yet acked.")
        if sub.ack_pending is not None:
            pending.add_metric([], sub.ack_pending)
        yield pending
        yield GaugeMetricFamily(P + "nats_connected", "1 when connected to NATS.", value=int(sub.connected))


def serve_metrics(subscriber: Any, pipeline: Any, host: str, port: int) -> CollectorRegistry:
    """Serve ``/metrics`` on ``host:port`` from a background thread; returns the registry.

    A port that cannot be bound is logged as an error and the exporter runs on without it:
    spans matter more than their metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(subscriber, pipeline))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("gateway-exporter: cannot serve Prometheus metrics on %s:%d: %s", host, port, exc)
        return registry
    log.info("gateway-exporter: Prometheus metrics on http://%s:%d/metrics", host, port)
    return registry
