"""The JetStream stream span batches travel on: its configuration, created idempotently.

Gateways and exporters both call :func:`ensure_stream` when they connect, so whichever starts
first creates the stream, and a changed limit in the config is applied by the next one to start.
Work-queue retention removes a batch once an exporter acks it; ``discard: new`` makes a full
stream refuse batches (the gateway keeps them in its ring, and counts what a full ring drops)
rather than silently delete the oldest.
"""

from __future__ import annotations

import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
from nats.js.api import StreamConfig as JsStreamConfig

from gateway.telemetry.wire import NatsConfig

__all__ = ["MSG_ID_HEADER", "ensure_stream", "stream_config"]

log = logging.getLogger("gateway.telemetry")

MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream de-duplicates re-sent batches by this header


def stream_config(cfg: NatsConfig) -> JsStreamConfig:
    """The stream as ``cfg`` describes it (one subject: ``<subject_prefix>.spans``)."""
    s = cfg.stream
    return JsStreamConfig(
        name=cfg.stream_name,
        subjects=[cfg.spans_subject],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_bytes=s.max_bytes,
        max_age=s.max_age_s,
        storage=StorageType.FILE,
        num_replicas=s.replicas,
        duplicate_window=s.duplicate_window_s,
    )


async def ensure_stream(js: JetStreamContext, cfg: NatsConfig) -> None:
    """Create the stream, or bring an existing one to the configured limits.

    Raises ``nats.errors.Error`` (and subclasses) when JetStream is not reachable or refuses
    the configuration; callers retry later.
    """
    want = stream_config(cfg)
    try:
        info = await js.stream_info(cfg.stream_name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(want)
            log.info("telemetry: created JetStream stream %s on %s", want.name, cfg.spans_subject)
            return
        except nats.js.errors.BadRequestError:
            # Another gateway or exporter created it between our two calls: update it below.
            info = await js.stream_info(cfg.stream_name)
    have = info.config
    if (
        have.max_bytes != want.max_bytes
        or have.max_age != want.max_age
        or have.num_replicas != want.num_replicas
        or sorted(have.subjects or []) != sorted(want.subjects or [])
        or have.duplicate_window != want.duplicate_window
    ):
        await js.update_stream(want)
        log.info("telemetry: updated JetStream stream %s to the configured limits", want.name)
