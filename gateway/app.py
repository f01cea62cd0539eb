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
import logging
import os
import signal
from typing import Any

from gateway.config import GatewayConfig, load_config
from gateway.errors import MethodNotAllowed, NotFound, error_response
from gateway.proxy import handle_llm, respond_json
from gateway.runtime import Runtime

log = logging.getLogger("gateway")

LLM_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
GET_ROUTES = {"/v1/models", "/healthz", "/readyz"}


class GatewayApp:
    """The RSGI application of one worker process."""

    def __init__(self, config: GatewayConfig | None = None, config_path: str | None = None) -> None:
        self._config = config
        self._config_path = config_path
        self.runtime: Runtime | None = None
        self.draining = False

    # --- lifecycle ----------------------------------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        config = self._config or load_config(self._config_path or os.environ["GATEWAY_CONFIG"])
        self.runtime = Runtime(config)
        try:
            loop.add_signal_handler(signal.SIGUSR1, self.start_draining)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass

    def start_draining(self) -> None:
        """Readiness goes false; requests are still served until the listener closes."""
        if not self.draining:
            self.draining = True
            log.info("draining: /readyz now answers 503")

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.runtime is not None:
            loop.run_until_complete(self.runtime.aclose())

    # --- routing ------------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        rt = self.runtime
        assert rt is not None, "__rsgi_init__ was not called"
        path, method = scope.path, scope.method
        endpoint = LLM_ROUTES.get(path)
        if endpoint is not None:
            if method == "POST":
                await handle_llm(rt, scope, proto, endpoint)
            else:
                self._error(
                    proto,
                    MethodNotAllowed(f"{method} is not allowed on {path}; use POST"),
                    [("allow", "POST")],
                )
            return
        if path in GET_ROUTES:
            if method not in ("GET", "HEAD"):
                self._error(
                    proto, MethodNotAllowed(f"{method} is not allowed on {path}; use GET"), [("allow", "GET")]
                )
            elif path == "/v1/models":
                respond_json(proto, 200, rt.models_body)
            elif path == "/healthz":
                respond_json(proto, 200, b'{"status":"ok"}')
            elif self.draining:
                respond_json(proto, 503, b'{"status":"draining"}')
            else:
                respond_json(proto, 200, b'{"status":"ready"}')
            return
        self._error(proto, NotFound(f"no route for {method} {path}", code="unknown_url"), [])

    @staticmethod
    def _error(proto: Any, exc: Any, extra: list[tuple[str, str]]) -> None:
        status, headers, body = error_response(exc)
        proto.response_bytes(status, [*headers, *extra], body)


def create_app() -> GatewayApp:
    """granian factory: the config path comes from ``GATEWAY_CONFIG`` (set by ``gateway serve``)."""
    return GatewayApp(config_path=os.environ["GATEWAY_CONFIG"])
