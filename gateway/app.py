"""Composition root: builds the gateway from typed settings and routes RSGI calls.

granian calls ``__rsgi_init__`` in each worker before serving (start background work there)
and ``__rsgi_del__`` after the server stopped accepting and in-flight requests finished
(flush and close there). Shutdown order, like uvicorn's ``Server.shutdown()``:

1. SIGUSR1 from the ``gateway serve`` supervisor: ``/readyz`` answers 503 (draining), traffic
   still served for ``server.shutdown_delay_s`` so load balancers notice;
2. SIGTERM: granian stops accepting; in-flight requests get ``server.drain_timeout_s``;
3. ``__rsgi_del__``: close upstream clients, flush telemetry.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import Any

from exporter.store.embed import embedded_store, rsgi_respond
from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, error_response
from gateway.mcp.http import handle_mcp
from gateway.metrics import Metrics
from gateway.models_api import PREFIX as MODELS_PREFIX
from gateway.models_api import handle_models
from gateway.proxy import handle_llm, respond_json
from gateway.redact import install_log_redaction
from gateway.reload import ConfigReloader
from gateway.responses import handler as responses
from gateway.responses.store import ResponseStore, make_store
from gateway.runtime import Runtime
from gateway.surfaces import Surface
from gateway.surfaces.chat import CHAT, COMPLETIONS, EMBEDDINGS
from gateway.surfaces.messages import COUNT_TOKENS, MESSAGES
from gateway.telemetry.drain import Telemetry

log = logging.getLogger("gateway")

# path → the surface (inbound API) that serves it
LLM_ROUTES: dict[str, Surface] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": COUNT_TOKENS,
}
GET_ROUTES = {"/v1/models", "/healthz", "/readyz", "/metrics"}


class GatewayApp:
    """The RSGI application of one worker process."""

    def __init__(self, config: GatewayConfig | None = None, config_path: str | None = None) -> None:
        self._config = config
        self._config_path = config_path
        self.runtime: Runtime | None = None
        self.reloader: ConfigReloader | None = None
        self.telemetry: Telemetry | None = None
        self.metrics: Metrics | None = None
        self.store_web: Any = None  # /api/v1 and /ui (exporter.store)
        self.draining = False
        self.responses_store: ResponseStore | None = None
        self._retired: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        path = self._config_path or os.environ.get("GATEWAY_CONFIG")
        config = self._config or load_config(path)  # type: ignore[arg-type]
        self.runtime = Runtime(config)
        self.runtime.start(loop)
        # Process wiring, not per-config: the ring and its drain task survive config reloads.
        self.telemetry = Telemetry.from_config(
            config.tracing, config.exporter, metadata_label_keys=tuple(config.metrics.metadata_label_keys)
        )
        # Before the pipeline starts: the store is one more destination of it.
        self.store_web = embedded_store(
            config, self.telemetry, self._authenticate, self._open_access, lambda: self.runtime
        )
        self.telemetry.start_on(loop)
        # One catalog per process, kept across reloads: Prometheus metrics are process-wide.
        metrics = self.metrics = Metrics(config.metrics)
        tel, nats_mode = self.telemetry, config.tracing.nats is not None
        metrics.add_flush_hook(
            lambda: metrics.update_from_telemetry(tel.counters, tel.connected if nats_mode else None)
        )
        metrics.add_flush_hook(lambda: metrics.update_buffer_bytes(tel.ring.pending_bytes))
        loop.create_task(self.metrics.start())
        # Stored responses outlive config reloads (the store is built from the start-up config).
        self.responses_store = make_store(
            config.responses, config.cluster.nats_url if config.cluster else None
        )
        loop.create_task(self.responses_store.start())
        self.reloader = ConfigReloader(config, self.swap_runtime, path, config.reload.poll_interval_s)
        cluster = config.cluster
        kv = None
        if cluster is not None and cluster.config_bucket:
            kv = (cluster.nats_url, cluster.config_bucket, cluster.config_key)
        self.reloader.start(loop, config.reload.watch_file, kv)
        # Start-up objects (config, clients, imported modules) never become garbage: freezing
        # them keeps the collector from rescanning them on every full collection.
        gc.collect()
        gc.freeze()
        try:
            loop.add_signal_handler(signal.SIGUSR1, self.start_draining)
            loop.add_signal_handler(signal.SIGHUP, self.reloader.reload_file)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass

    def _authenticate(self, headers_get: Any) -> Any:
        assert self.runtime is not None
        return self.runtime.access.authenticate(headers_get)  # the current config's keys

    def _open_access(self) -> bool:
        return self.runtime is not None and self.runtime.open_access

    def swap_runtime(self, config: GatewayConfig) -> None:
        """Build a runtime for ``config`` and make it current; the old one closes after the drain timeout."""
        new = Runtime(config, previous=self.runtime)
        new.start(asyncio.get_running_loop())
        old, self.runtime = self.runtime, new
        if old is not None:
            task = asyncio.ensure_future(self._retire(old, config.server.drain_timeout_s))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    @staticmethod
    async def _retire(old: Runtime, after_s: float) -> None:
        # Requests that started on the old runtime keep using it; give them the drain timeout.
        await asyncio.sleep(after_s)
        await old.aclose()

    def start_draining(self) -> None:
        """Readiness goes false; requests are still served until the listener closes."""
        if not self.draining:
            self.draining = True
            log.info("draining: /readyz now answers 503")

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._shutdown())

    async def _shutdown(self) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
        for task in list(self._retired):
            task.cancel()
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.responses_store is not None:
            await self.responses_store.aclose()
        if self.telemetry is not None:
            await self.telemetry.stop(5.0)  # final flush of the ring, then drain NATS / the exporter
        if self.metrics is not None:
            await self.metrics.aclose()

    # --- routing ------------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        rt = self.runtime
        assert rt is not None, "__rsgi_init__ was not called"
        path, method = scope.path, scope.method
        if path.startswith("/mcp/"):
            await handle_mcp(self, scope, proto)
            return
        surface = LLM_ROUTES.get(path)
        if surface is not None:
            if method == "POST":
                assert self.telemetry is not None and self.metrics is not None
                await handle_llm(rt, self.telemetry, self.metrics, scope, proto, surface)
            else:
                status, headers, body = surface.error_response(
                    MethodNotAllowed(f"{method} is not allowed on {path}; use POST")
                )
                proto.response_bytes(status, [*headers, ("allow", "POST")], body)
            return
        if path.startswith(responses.PREFIX):
            await self._responses(rt, scope, proto)
            return
        if path in GET_ROUTES:
            if method not in ("GET", "HEAD"):
                self._error(
                    proto, MethodNotAllowed(f"{method} is not allowed on {path}; use GET"), [("allow", "GET")]
                )
            elif path == "/v1/models":
                handle_models(rt, scope, proto)
            elif path == "/metrics":
                if self.metrics is None or not self.metrics.enabled:
                    self._error(
                        proto,
                        NotFound("metrics are disabled (metrics.enabled: false)", code="unknown_url"),
                        [],
                    )
                else:
                    await self._metrics(rt, scope, proto)
            elif path == "/healthz":
                respond_json(proto, 200, b'{"status":"ok"}')
            elif self.draining:
                respond_json(proto, 503, b'{"status":"draining"}')
            else:
                respond_json(proto, 200, b'{"status":"ready"}')
            return
        if path.startswith(MODELS_PREFIX) and method in ("GET", "HEAD"):
            handle_models(rt, scope, proto)
            return
        if self.store_web is not None and (path == "/ui" or path.startswith(("/ui/", "/api/v1/"))):
            await rsgi_respond(self.store_web, scope, proto)
            return
        self._error(proto, NotFound(f"no route for {method} {path}", code="unknown_url"), [])

    async def _responses(self, rt: Runtime, scope: Any, proto: Any) -> None:
        store, path = self.responses_store, scope.path
        assert store is not None and self.telemetry is not None and self.metrics is not None
        if path == responses.PREFIX:
            if scope.method == "POST":
                await responses.handle_create(rt, self.telemetry, self.metrics, store, scope, proto)
            else:
                self._error(
                    proto,
                    MethodNotAllowed(f"{scope.method} is not allowed on {path}; use POST"),
                    [("allow", "POST")],
                )
        elif path.startswith(responses.PREFIX + "/"):
            await responses.handle_stored(rt, store, scope, proto)
        else:
            self._error(proto, NotFound(f"no route for {scope.method} {path}", code="unknown_url"), [])

    async def _metrics(self, rt: Runtime, scope: Any, proto: Any) -> None:
        """``GET /metrics``: credentials first when ``metrics.require_auth``; the merge of every
        worker's samples runs off the event loop."""
        assert self.metrics is not None
        if rt.config.metrics.require_auth:
            try:
                rt.access.authenticate(scope.headers.get)
            except GatewayError as exc:
                self._error(proto, exc, [("www-authenticate", "Bearer")])
                return
        try:
            content_type, body = await self.metrics.render_async(scope.headers.get("accept"))
        except Exception:  # a damaged samples file, say: an OpenAI-shaped 500, never granian's empty one
            log.exception("rendering /metrics failed")
            self._error(proto, GatewayError("metrics could not be rendered"), [])
            return
        proto.response_bytes(200, [("content-type", content_type)], body)

    @staticmethod
    def _error(proto: Any, exc: Any, extra: list[tuple[str, str]]) -> None:
        status, headers, body = error_response(exc)
        proto.response_bytes(status, [*headers, *extra], body)


def create_app() -> GatewayApp:
    """granian factory: the config path comes from ``GATEWAY_CONFIG`` (set by ``gateway serve``)."""
    install_log_redaction()  # each worker process: no URL credentials in any log line
    return GatewayApp(config_path=os.environ["GATEWAY_CONFIG"])
