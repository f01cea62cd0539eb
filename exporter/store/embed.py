"""Wiring the store into the two processes that can own it.

One process owns the store (a DuckDB file admits one writer; ClickHouse would admit many, but
one owner per pipeline keeps the rule simple):

- **embedded** (no ``tracing.nats``), ``gateway serve --workers 1``: the gateway worker. Its
  export pipeline gets the store as one more destination, and it serves ``/api/v1`` and ``/ui``.
- **embedded with ``--workers N > 1``**: workers do not share an in-process pipeline and only one
  process may open the file, so no worker opens the store. ``/ui`` still loads and says why;
  the answer is NATS: set ``tracing.nats`` and run ``gateway-exporter``, which owns the store for
  every worker of every gateway.
- **NATS**: the ``gateway-exporter`` process. It reads the gateway's own config file (the same
  ``auth``, ``ui`` and ``store`` sections), so the API and UI run under the gateway's auth, and
  serves them on ``store.listen``. The gateway's ``/ui`` points there.

A store that cannot open (file locked by another process, ClickHouse unreachable) never stops
the gateway or the exporter: it logs once, and ``/ui`` shows the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from exporter.store.config import StoreConfig, UiConfig
from exporter.store.service import TraceStore
from exporter.store.web import StoreWeb
from gateway.access.credentials import Principal

__all__ = ["attach_to_pipeline", "embedded_store", "rsgi_respond", "serve_http", "start_exporter_store"]

log = logging.getLogger("exporter.store")

WORKERS_ENV = "GATEWAY_WORKERS"  # set by ``gateway serve`` for its workers


def _addable(pipeline: Any) -> Any:
    """The ``ExportPipeline`` inside ``pipeline`` (which may wrap it, e.g. ``SpanFanout``), or None."""
    for _ in range(4):
        if pipeline is None:
            return None
        if hasattr(pipeline, "add") and hasattr(pipeline, "destinations"):
            return pipeline
        pipeline = getattr(pipeline, "pipeline", None) or getattr(pipeline, "_pipeline", None)
    return None


def attach_to_pipeline(pipeline: Any, store: TraceStore) -> bool:
    """Add ``store`` as a destination of ``pipeline`` (before it starts); False if it cannot."""
    target = _addable(pipeline)
    if target is None:
        return False
    target.add(store, store.cfg.queue_size)
    return True


def open_store(cfg: StoreConfig) -> tuple[TraceStore | None, str]:
    """The open store, or ``None`` and why not."""
    if not cfg.enabled:
        return None, "the trace store is disabled (store.enabled: false)"
    try:
        store = TraceStore(cfg)
    except Exception as exc:  # never fatal: log once, serve the reason
        where = cfg.path if cfg.engine == "duckdb" else cfg.url.rpartition("@")[2]
        log.error("store: cannot open the %s store at %s: %s", cfg.engine, where, exc)
        return None, f"the {cfg.engine} store could not be opened: {type(exc).__name__}"
    where = os.path.abspath(cfg.path) if cfg.engine == "duckdb" else cfg.database
    log.info("store: %s store open at %s", cfg.engine, where)
    return store, ""


def embedded_store(
    config: Any,
    telemetry: Any,
    authenticate: Callable[..., Principal],
    open_access: Callable[[], bool],
    current: Callable[[], Any] | None = None,
) -> StoreWeb:
    """The gateway worker's store and web layer (see the module docstring for who owns it).

    ``current`` returns the live runtime (``config``, ``access``): a config reload then changes
    ``ui.admins`` and ends sessions opened under the old credentials."""
    store_cfg: StoreConfig = config.store
    store: TraceStore | None = None
    if not config.tracing.enabled:
        reason = "tracing is disabled (tracing.enabled: false), so nothing is stored"
    elif config.tracing.nats is not None:
        reason = f"with tracing.nats the gateway-exporter owns the store: open its /ui on {store_cfg.listen}"
    elif int(os.environ.get(WORKERS_ENV, "1") or 1) > 1:
        reason = (
            "the embedded store needs a single gateway worker; with --workers N set tracing.nats "
            "and run gateway-exporter, which owns the store for every worker"
        )
        if store_cfg.enabled:
            log.warning("store: %s", reason)
    else:
        pipeline = getattr(getattr(getattr(telemetry, "drainer", None), "sink", None), "_pipeline", None)
        if _addable(pipeline) is None:  # a test's stand-in pipeline: nothing would feed the store
            reason = "no export pipeline in this process feeds a store"
        else:
            store, reason = open_store(store_cfg)
            if store is not None:
                attach_to_pipeline(pipeline, store)
    if current is None:
        return StoreWeb(store, config.ui, authenticate, open_access, reason)
    return StoreWeb(
        store,
        lambda: current().config.ui,
        authenticate,
        open_access,
        reason,
        auth_generation=lambda: current().access.authenticator,
    )


async def rsgi_respond(web: StoreWeb, scope: Any, proto: Any) -> None:
    """Serve one RSGI request under ``/api/v1`` or ``/ui`` (the gateway's app calls this)."""

    async def read_body() -> bytes:
        return bytes(await proto())

    resp = await web.handle(
        scope.method, scope.path, scope.query_string, scope.headers.get, read_body, scope.scheme == "https"
    )
    if resp.stream is None:
        proto.response_bytes(resp.status, resp.headers, resp.body)
        return
    transport = proto.response_stream(resp.status, resp.headers)
    async for chunk in resp.stream:
        await transport.send_bytes(chunk)


async def serve_http(web: StoreWeb, listen: str) -> Any:
    """Serve ``web`` on ``host:port`` with aiohttp (the exporter process); returns the runner."""
    from aiohttp import web as aioweb
    from multidict import CIMultiDict

    async def handler(request: aioweb.Request) -> aioweb.StreamResponse:
        resp = await web.handle(
            request.method,
            request.path,
            request.query_string,
            request.headers.get,
            request.read,
            request.secure,
        )
        headers = CIMultiDict(resp.headers)
        if resp.stream is None:
            return aioweb.Response(status=resp.status, headers=headers, body=resp.body)
        out = aioweb.StreamResponse(status=resp.status, headers=headers)
        await out.prepare(request)
        async for chunk in resp.stream:
            await out.write(chunk)
        await out.write_eof()
        return out

    app = aioweb.Application(client_max_size=64 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = aioweb.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await aioweb.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner


async def start_exporter_store(config_text: str, store_cfg: StoreConfig, ui: UiConfig, pipeline: Any) -> Any:
    """In ``gateway-exporter``: open the store, attach it, serve the API and UI under the
    gateway's auth (read from the same config file). Returns an object with ``aclose()``."""
    import asyncio

    from gateway.access import AccessControl
    from gateway.config import ConfigError, parse_config

    if not store_cfg.enabled or _addable(pipeline) is None:
        return None
    try:
        gw_cfg = parse_config(config_text, source="gateway-exporter")
    except ConfigError as exc:
        log.error("store: the gateway config does not load, so the store API stays off: %s", exc)
        return None
    access = AccessControl.from_config(gw_cfg)
    access.start_soon(asyncio.get_running_loop())  # JWKS refresh for JWT sign-in
    store, reason = open_store(store_cfg)
    if store is not None:
        attach_to_pipeline(pipeline, store)
    web = StoreWeb(store, ui, access.authenticate, lambda: access.authenticator is None, reason)
    try:
        runner = await serve_http(web, store_cfg.listen)
    except OSError as exc:
        log.error("store: cannot listen on %s: %s; the API and UI are off", store_cfg.listen, exc)
        runner = None
    else:
        log.info("store: /api/v1 and /ui on http://%s", store_cfg.listen)

    class _Handle:
        async def aclose(self) -> None:
            if runner is not None:
                await runner.cleanup()
            await access.stop()

    return _Handle()
