"""The Prometheus catalog of one gateway worker, and the hot-path recorder in front of it.

Names are the ones users of the original product already chart (``prometheus_client`` adds
``_total`` to counters and ``_bucket``/``_sum``/``_count`` to histograms in the text format):

=====================================  =========  =============================================
metric                                 type       labels
=====================================  =========  =============================================
llm_gateway_input_tokens               counter    model_name, tenant_name, username, metadata…
llm_gateway_output_tokens              counter    model_name, tenant_name, username, metadata…
llm_gateway_request_cost               counter    model_name, tenant_name, username, metadata… (USD)
llm_gateway_request_processing_ms      histogram  model_name, tenant_name, username, metadata…
llm_gateway_first_token_latency_ms     histogram  model_name, tenant_name, username, metadata…
llm_gateway_inter_token_latency_ms     histogram  model_name, tenant_name, username, metadata…
llm_gateway_requests                   counter    model_name, tenant_name, username, metadata…, status_code
llm_gateway_errors                     counter    model_name, error_type
llm_gateway_rate_limit_rejections      counter    rule_id
llm_gateway_fallbacks                  counter    target
llm_gateway_retries                    counter    target
llm_gateway_requests_in_flight         gauge      (multiprocess: livesum)
llm_gateway_spans_recorded             counter
llm_gateway_spans_published            counter
llm_gateway_spans_dropped              counter    reason
llm_gateway_nats_connected             gauge      (multiprocess: livemin)
llm_gateway_traces_truncated           counter
llm_gateway_telemetry_buffer_bytes     gauge      (multiprocess: livesum)
=====================================  =========  =============================================

"metadata…" is one ``llm_gateway_metadata_<key>`` label per key in ``metrics.metadata_label_keys``
and nothing else: other ``x-tfy-metadata`` keys never become labels. Cardinality is bounded
(see :mod:`gateway.metrics.labels`): the caller passes only bounded values (configured models,
else ``unknown``; authenticated subjects, else one empty label), each metadata key keeps at most
``max_metadata_values`` distinct values (later ones become ``__other__``), and every metric
creates at most ``max_label_sets`` label sets per worker: later ones fold into one overflow set
whose every label (status code included) is ``__other__``.

Speed: :meth:`Metrics.record_request` finds its label set in a dict keyed by the label tuple and
adds to plain Python numbers; :meth:`Metrics.flush` (periodic, and before every scrape) moves the
sums into ``prometheus_client``. A ``prometheus_client`` increment costs ~1 µs in memory and
several µs in multiprocess mode (lock, pid check, mmap write); a request touches ~12 of them,
which would blow the 10 µs budget (see ``bench/micro_metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from bisect import bisect_left as _bisect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.metrics import multiproc
from gateway.metrics.labels import OTHER
from gateway.telemetry.wire import FIRST_TOKEN_MS_BUCKETS, INTER_TOKEN_MS_BUCKETS, PROCESSING_MS_BUCKETS

if TYPE_CHECKING:
    from gateway.config import MetricsConfig

__all__ = [
    "FIRST_TOKEN_MS_BUCKETS",
    "INTER_TOKEN_MS_BUCKETS",
    "LABELS",
    "OTHER",
    "PROCESSING_MS_BUCKETS",
    "Metrics",
    "mean_inter_token_ms",
    "metadata_label_name",
    "render_multiprocess",
]

LABELS: Final = ("model_name", "tenant_name", "username")
log = logging.getLogger("gateway.metrics")

_METADATA_VALUE_MAX_CHARS: Final = 64
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metadata_label_name(key: str) -> str:
    """``llm_gateway_metadata_<key>`` with characters Prometheus does not allow replaced by ``_``."""
    return "llm_gateway_metadata_" + _INVALID_LABEL_CHARS.sub("_", key)


def render_multiprocess(path: str, accept: str | None = None) -> tuple[str, bytes]:
    """Merge the samples of every worker in ``path``: ``(content_type, body)``."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)
    encoder, content_type = choose_encoder(accept or "")
    return content_type, encoder(registry)


class _Series:
    """One label set (model, tenant, user, metadata values): its children and pending sums.

    The request path only adds to the plain numbers here; :meth:`Metrics.flush` moves them
    into the ``prometheus_client`` values (mmap writes in multiprocess mode, which cost
    microseconds each, so they are paid once per label set per flush, not per request).
    """

    __slots__ = (
        "children",
        "cost",
        "dirty",
        "first_token",
        "input_tokens",
        "inter_token",
        "key",
        "output_tokens",
        "processing",
        "status",
        "status_children",
    )

    def __init__(self, key: tuple[str, ...]) -> None:
        self.key = key
        self.children: tuple[Any, ...] = ()  # created on first flush
        self.dirty = False
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        # [sum, count per bucket (the last one is +Inf)...], the layout Histogram keeps too.
        self.processing = [0.0] * (len(PROCESSING_MS_BUCKETS) + 2)
        self.first_token = [0.0] * (len(FIRST_TOKEN_MS_BUCKETS) + 2)
        self.inter_token = [0.0] * (len(INTER_TOKEN_MS_BUCKETS) + 2)
        self.status: dict[int, int] = {}
        self.status_children: dict[int, Any] = {}  # status code -> llm_gateway_requests child


class Metrics:
    """The catalog of one worker process; see the module docstring.

    Build one per worker (after ``gateway serve`` prepared the multiprocess directory) and keep
    it for the life of the worker, across config reloads: metric objects are process-wide.
    Recording methods are synchronous, O(1), never raise on odd input and never await; call
    them, :meth:`flush` and :meth:`render` from the worker's event-loop thread.

    Recorded numbers reach ``prometheus_client`` on :meth:`flush`: run :meth:`start` (a task
    flushing every ``flush_interval_s``) or call :meth:`flush` yourself. :meth:`render` flushes
    this worker first, so a scrape sees this worker exactly and the others as of their last
    flush (at most ``flush_interval_s`` ago).
    """

    def __init__(
        self,
        cfg: MetricsConfig | None = None,
        *,
        multiprocess_dir: str | None = None,
        max_label_sets: int | None = None,
        max_metadata_values: int = 100,
        flush_interval_s: float = 1.0,
    ) -> None:
        """Create the metrics.

        Args:
            cfg: the ``metrics:`` section (``enabled``, ``metadata_label_keys``); ``None`` = defaults.
            multiprocess_dir: the shared samples directory; default ``$PROMETHEUS_MULTIPROC_DIR``.
                With none, the metrics live in a private in-memory registry (one process).
            max_label_sets: label sets per metric before new ones fold into ``__other__``;
                default ``cfg.max_series``.
            max_metadata_values: distinct values kept per metadata label key.
            flush_interval_s: period of the flush task started by :meth:`start`.
        """
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.enabled = True if cfg is None else bool(cfg.enabled)
        keys = [] if cfg is None else list(cfg.metadata_label_keys)
        self.metadata_keys: tuple[str, ...] = tuple(dict.fromkeys(keys))  # unique, in order
        self.multiprocess_dir = multiprocess_dir or multiproc.multiprocess_dir()
        self.flush_interval_s = flush_interval_s
        if max_label_sets is None:
            max_label_sets = 500 if cfg is None else cfg.max_series
        self._max_label_sets = max_label_sets
        self._n_status_children = 0
        self._render_task: asyncio.Future[tuple[str, bytes]] | None = None
        self._max_metadata_values = max_metadata_values
        self._metadata_seen: dict[str, set[str]] = {k: set() for k in self.metadata_keys}
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._n_series = 0  # distinct label sets (``_series`` also holds raw-key aliases)
        self._dirty: list[_Series] = []
        self._pending: dict[Any, float] = {}  # child of a one-off counter -> amount to add
        self._errors: dict[tuple[str, str], Any] = {}
        self._by_name: dict[Any, dict[str, Any]] = {}  # metric -> rule id | target | reason -> child
        self._pipeline_last: dict[str, int] = {}
        self._inflight = 0
        self._inflight_written: int | None = None
        self._flush_hooks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

        if self.multiprocess_dir:
            multiproc.use_multiprocess_values(self.multiprocess_dir)
            # Unregistered metrics: the scrape reads every worker's files instead (a registry
            # holding them as well would report this worker's samples twice).
            registry: CollectorRegistry | None = None
            self._registry = None
        else:
            registry = self._registry = CollectorRegistry(auto_describe=True)

        labels = (*LABELS, *(metadata_label_name(k) for k in self.metadata_keys))
        self.labelnames = labels

        def counter(name: str, doc: str, names: Iterable[str] = labels) -> Counter:
            return Counter(name, doc, labelnames=tuple(names), registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labelnames=labels, buckets=buckets, registry=registry)

        self.input_tokens = counter(
            "llm_gateway_input_tokens", "Input (prompt) tokens reported by providers."
        )
        self.output_tokens = counter(
            "llm_gateway_output_tokens", "Output (completion) tokens reported by providers."
        )
        self.request_cost = counter("llm_gateway_request_cost", "Cost of requests in USD (price table).")
        self.request_processing_ms = histogram(
            "llm_gateway_request_processing_ms", "Request latency in the gateway, ms.", PROCESSING_MS_BUCKETS
        )
        self.first_token_latency_ms = histogram(
            "llm_gateway_first_token_latency_ms",
            "Time to the first token (streams), ms.",
            FIRST_TOKEN_MS_BUCKETS,
        )
        self.inter_token_latency_ms = histogram(
            "llm_gateway_inter_token_latency_ms",
            "Mean time between tokens of a stream, ms.",
            INTER_TOKEN_MS_BUCKETS,
        )
        self.requests = counter(
            "llm_gateway_requests", "Requests answered, by HTTP status.", (*labels, "status_code")
        )
        self.errors = counter(
            "llm_gateway_errors", "Failed requests, by error type.", ("model_name", "error_type")
        )
        self.rate_limit_rejections = counter(
            "llm_gateway_rate_limit_rejections", "Requests refused by a rate-limit rule.", ("rule_id",)
        )
        self.fallbacks = counter("llm_gateway_fallbacks", "Fallbacks to another target.", ("target",))
        self.retries = counter("llm_gateway_retries", "Retries of an upstream call.", ("target",))
        self.requests_in_flight = Gauge(
            "llm_gateway_requests_in_flight",
            "Requests being served.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spans_recorded = Counter(
            "llm_gateway_spans_recorded", "Spans accepted into the telemetry ring.", registry=registry
        )
        self.spans_published = Counter(
            "llm_gateway_spans_published", "Spans handed to NATS or the embedded exporter.", registry=registry
        )
        self.spans_dropped = counter("llm_gateway_spans_dropped", "Spans dropped, by reason.", ("reason",))
        self.traces_truncated = Counter(
            "llm_gateway_traces_truncated",
            "Traces over the NATS message limit, sent with their bodies cut (kept, not dropped).",
            registry=registry,
        )
        self.telemetry_buffer_bytes = Gauge(
            "llm_gateway_telemetry_buffer_bytes",
            "Bytes of traces waiting in the telemetry ring.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.nats_connected = Gauge(
            "llm_gateway_nats_connected",
            "1 when every worker's span publisher is connected to NATS (0 if any is not).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._other_key = (OTHER,) * len(labels)

    # --- hot path ---------------------------------------------------------------------------

    def record_request(
        self,
        model_name: str,
        username: str,
        tenant: str,
        metadata: Mapping[str, Any] | None,
        status: int,
        error_type: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cost_usd: float | None,
        latency_ms: float,
        ttft_ms: float | None = None,
        inter_token_ms: float | None = None,
    ) -> None:
        """Count one finished request (any outcome). Call once, after the response was sent.

        ``metadata`` is the decoded ``x-tfy-metadata`` object; only configured keys are read.
        ``ttft_ms`` and ``inter_token_ms`` are for streams (``None`` otherwise).
        """
        if not self.enabled:
            return
        if self.metadata_keys:
            # The raw values as the key (C-level map): sanitising runs once per new label set.
            get = metadata.get if metadata else _no_metadata
            raw = (model_name, tenant, username, *map(get, self.metadata_keys))
            try:
                s = self._series.get(raw)
                hashable = True
            except TypeError:  # an unhashable metadata value (a JSON list or object)
                s, hashable = None, False
            if s is None:
                s = self._series_for(raw if hashable else None, model_name, tenant, username, metadata)
        else:
            key = (model_name, tenant, username)
            s = self._series.get(key)
            if s is None:
                s = self._new_series(key)
        if input_tokens:
            s.input_tokens += input_tokens
        if output_tokens:
            s.output_tokens += output_tokens
        if cost_usd:
            s.cost += cost_usd
        h = s.processing
        h[0] += latency_ms
        h[_bisect(PROCESSING_MS_BUCKETS, latency_ms) + 1] += 1
        if ttft_ms is not None:
            h = s.first_token
            h[0] += ttft_ms
            h[_bisect(FIRST_TOKEN_MS_BUCKETS, ttft_ms) + 1] += 1
        if inter_token_ms is not None:
            h = s.inter_token
            h[0] += inter_token_ms
            h[_bisect(INTER_TOKEN_MS_BUCKETS, inter_token_ms) + 1] += 1
        st = s.status
        st[status] = st.get(status, 0) + 1
        if not s.dirty:
            s.dirty = True
            self._dirty.append(s)
        if error_type:
            err = self._errors.get((model_name, error_type))
            if err is None:
                err = self._child(self._errors, self.errors, (model_name, error_type))
            self._add(err, 1)

    def inflight_inc(self) -> None:
        """A request started (pair with :meth:`inflight_dec` in a ``finally``)."""
        self._inflight += 1

    def inflight_dec(self) -> None:
        """A request finished."""
        self._inflight -= 1

    def rate_limited(self, rule_id: str) -> None:
        """A request was refused (429) by rate-limit rule ``rule_id``."""
        self._add(self._named(self.rate_limit_rejections, rule_id), 1)

    def retry(self, target: str) -> None:
        """An upstream call to ``target`` is being retried."""
        self._add(self._named(self.retries, target), 1)

    def fallback(self, target: str) -> None:
        """The request falls back to ``target`` after the previous target failed."""
        self._add(self._named(self.fallbacks, target), 1)

    def _add(self, child: Any, amount: float) -> None:
        pending = self._pending
        pending[child] = pending.get(child, 0) + amount

    # --- tracing pipeline -------------------------------------------------------------------

    def update_pipeline(
        self, recorded: int, published: int, dropped: Mapping[str, int], nats_connected: bool | None
    ) -> None:
        """Fold in the tracing pipeline's running totals (call periodically or at scrape time).

        Takes totals, as ``gateway.telemetry.ring.TelemetryCounters`` keeps them, and adds the
        change since the last call. A total that went down (a new pipeline after a reload)
        counts from zero again. ``nats_connected=None`` means no NATS (embedded exporter).
        """
        self._add_delta("recorded", recorded, self.spans_recorded)
        self._add_delta("published", published, self.spans_published)
        for reason, total in dropped.items():
            self._add_delta(f"dropped:{reason}", total, self._named(self.spans_dropped, reason))
        if nats_connected is not None:
            self.nats_connected.set(1 if nats_connected else 0)

    def update_from_telemetry(self, counters: Any, nats_connected: bool | None) -> None:
        """:meth:`update_pipeline` from a ``TelemetryCounters`` (``recorded``, ``published``, ``dropped``)."""
        self.update_pipeline(counters.recorded, counters.published, dict(counters.dropped), nats_connected)
        self._add_delta("truncated", getattr(counters, "truncated", 0), self.traces_truncated)

    def update_buffer_bytes(self, pending_bytes: int) -> None:
        """The telemetry ring's bytes waiting now (a gauge)."""
        self.telemetry_buffer_bytes.set(pending_bytes)

    def _add_delta(self, name: str, total: int, metric: Any) -> None:
        last = self._pipeline_last.get(name, 0)
        delta = total - last if total >= last else total
        self._pipeline_last[name] = total
        if delta > 0:
            metric.inc(delta)

    # --- flushing and exposition ------------------------------------------------------------

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the start of every flush, e.g. to fold in the tracing pipeline's counters::

            metrics.add_flush_hook(lambda: metrics.update_from_telemetry(tel.counters, tel.connected))

        Every worker then publishes its own pipeline numbers each flush, not only the one scraped.
        A hook that raises is logged and skipped; the flush goes on.
        """
        self._flush_hooks.append(hook)

    def flush(self) -> None:
        """Move everything recorded since the last flush into ``prometheus_client``."""
        for hook in self._flush_hooks:
            try:
                hook()
            except Exception:
                log.exception("metrics flush hook failed")
        dirty, self._dirty = self._dirty, []
        for s in dirty:
            s.dirty = False
            if not s.children:
                s.children = self._children(s.key)
            c_in, c_out, c_cost, h_proc, h_first, h_inter = s.children
            if s.input_tokens:
                c_in.inc(s.input_tokens)
                s.input_tokens = 0
            if s.output_tokens:
                c_out.inc(s.output_tokens)
                s.output_tokens = 0
            if s.cost:
                c_cost.inc(s.cost)
                s.cost = 0.0
            _flush_histogram(h_proc, s.processing)
            _flush_histogram(h_first, s.first_token)
            _flush_histogram(h_inter, s.inter_token)
            for status, n in s.status.items():
                if n:
                    self._status_child(s, status).inc(n)
            s.status.clear()
        if self._pending:
            pending, self._pending = self._pending, {}
            for child, amount in pending.items():
                child.inc(amount)
        if self._inflight != self._inflight_written:
            self.requests_in_flight.set(self._inflight)
            self._inflight_written = self._inflight

    def render(self, accept: str | None = None) -> tuple[str, bytes]:
        """The ``/metrics`` response: ``(content_type, body)``; OpenMetrics if ``accept`` asks.

        Flushes this worker first. In multiprocess mode the body merges every worker's files
        (a few ms per scrape; file reads, no network).
        """
        self.flush()
        if self.multiprocess_dir:
            return render_multiprocess(self.multiprocess_dir, accept)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        assert self._registry is not None
        return content_type, encoder(self._registry)

    async def render_async(self, accept: str | None = None) -> tuple[str, bytes]:
        """:meth:`render` for the event loop: the merge of every worker's files runs in a thread,
        and concurrent scrapes share one merge, so a scrape never holds up requests."""
        self.flush()  # on the loop thread: the pending sums belong to it
        if not self.multiprocess_dir:
            return self.render(accept)
        task = self._render_task
        if task is None or task.done():
            task = self._render_task = asyncio.ensure_future(
                multiproc.beside_the_loop(render_multiprocess, self.multiprocess_dir, accept)
            )
            return await asyncio.shield(task)
        content_type, body = await asyncio.shield(task)
        if content_type != _content_type_for(accept):  # another format is running: our own merge
            return await multiproc.beside_the_loop(render_multiprocess, self.multiprocess_dir, accept)
        return content_type, body

    async def start(self) -> None:
        """Start the periodic flush task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_forever(), name="metrics-flush")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                self.flush()
            except Exception:  # never let a metrics bug end the task; say it once per interval
                log.exception("metrics flush failed")

    async def aclose(self) -> None:
        """Stop the flush task and flush a last time (worker shutdown: the files outlive it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    # --- label bookkeeping (first request of a label set only) ------------------------------

    def _children(self, key: tuple[str, ...]) -> tuple[Any, ...]:
        return (
            self.input_tokens.labels(*key),
            self.output_tokens.labels(*key),
            self.request_cost.labels(*key),
            self.request_processing_ms.labels(*key),
            self.first_token_latency_ms.labels(*key),
            self.inter_token_latency_ms.labels(*key),
        )

    def _status_child(self, s: _Series, status: int) -> Any:
        child = s.status_children.get(status)
        if child is None:
            if self._n_status_children < self._max_label_sets:
                self._n_status_children += 1
                child = self.requests.labels(*s.key, str(status))
            else:  # the cap covers the status label too
                child = self.requests.labels(*self._other_key, OTHER)
            s.status_children[status] = child
        return child

    def _metadata_values(self, metadata: Mapping[str, Any] | None) -> list[str]:
        if not metadata:
            return [""] * len(self.metadata_keys)
        out = []
        for k in self.metadata_keys:
            v = metadata.get(k)
            if v is None:
                out.append("")
                continue
            s = v if isinstance(v, str) else msgspec.json.encode(v).decode()
            seen = self._metadata_seen[k]
            if s not in seen:
                if len(seen) >= self._max_metadata_values or len(s) > _METADATA_VALUE_MAX_CHARS:
                    s = OTHER
                else:
                    seen.add(s)
            out.append(s)
        return out

    def _series_for(
        self,
        raw: tuple[Any, ...] | None,
        model_name: str,
        tenant: str,
        username: str,
        metadata: Mapping[str, Any] | None,
    ) -> _Series:
        """Sanitise the metadata values, find or create the series, remember ``raw`` as an alias."""
        key = (model_name, tenant, username, *self._metadata_values(metadata))
        series = self._series.get(key) or self._new_series(key)
        if raw is not None and raw != key and len(self._series) < 2 * self._max_label_sets:
            self._series[raw] = series  # aliases are bounded too: past the cap, sanitise each time
        return series

    def _new_series(self, key: tuple[str, ...]) -> _Series:
        if self._n_series >= self._max_label_sets:
            # One overflow set for every label: no label of a request can add series past the cap.
            key = self._other_key
            existing = self._series.get(key)
            if existing is not None:
                return existing
        series = _Series(key)
        self._series[key] = series
        self._n_series += 1
        return series

    def _child(self, cache: dict[Any, Any], metric: Any, key: tuple[str, ...]) -> Any:
        if len(cache) >= self._max_label_sets:
            key = tuple(OTHER for _ in key)
        child = cache.get(key)
        if child is None:
            child = cache[key] = metric.labels(*key)
        return child

    def _named(self, metric: Any, value: str) -> Any:
        """The child of a one-label metric (rule id, target, drop reason), cached per metric."""
        cache = self._by_name.get(metric)
        if cache is None:
            cache = self._by_name[metric] = {}
        child = cache.get(value)
        if child is None:
            child = self._child(cache, metric, (value,))
            cache[value] = child
        return child


def mean_inter_token_ms(latency_ms: float, ttft_ms: float | None, output_tokens: int | None) -> float | None:
    """Mean time between output tokens of a stream: the time after the first token over the
    remaining tokens; ``None`` when it cannot be known (no first token, fewer than two tokens)."""
    if ttft_ms is None or not output_tokens or output_tokens < 2:
        return None
    return max(0.0, latency_ms - ttft_ms) / (output_tokens - 1)


def _content_type_for(accept: str | None) -> str:
    from prometheus_client.exposition import choose_encoder

    return choose_encoder(accept or "")[1]


def _no_metadata(_key: str) -> None:
    return None


def _flush_histogram(child: Any, pending: list[float]) -> None:
    """Add pending ``[sum, bucket counts...]`` to a Histogram child and zero them.

    Reaches into ``Histogram._sum`` / ``._buckets`` (per-bucket, non-cumulative values, the
    layout prometheus_client has kept since 0.1): ``observe()`` per request is what we avoid.
    The tests pin the exposed result.
    """
    if not any(pending[1:]):
        return
    child._sum.inc(pending[0])
    buckets = child._buckets
    for i in range(1, len(pending)):
        n = pending[i]
        if n:
            buckets[i - 1].inc(n)
            pending[i] = 0
    pending[0] = 0.0
