"""Everything a request needs, built once from a config and swapped whole on reload.

A handler reads ``app.runtime`` once at its start and uses only that object, so a config
reload (which builds a new :class:`Runtime` and swaps the reference) never changes the rules
under a request that is already running.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import msgspec

from gateway.access import AccessControl, Principal
from gateway.config import GatewayConfig, ProviderConfig
from gateway.metrics import PriceTable
from gateway.providers import ADAPTERS
from gateway.routing import Router
from gateway.telemetry.wire import TargetInfo
from gateway.upstream import UpstreamClient, make_client

log = logging.getLogger("gateway")


class ModelTarget:
    """A concrete ``<provider>/<model>``: where and how to call it, precomputed."""

    __slots__ = (
        "model_id",
        "provider",
        "upstream_model",
        "client",
        "adapter",
        "urls",
        "headers",
        "server_address",
        "server_port",
        "trace_info",
    )

    def __init__(self, provider: ProviderConfig, upstream_model: str, client: UpstreamClient) -> None:
        self.model_id = f"{provider.name}/{upstream_model}"
        self.provider = provider
        self.upstream_model = upstream_model
        self.client = client
        # The provider type's adapter: the APIs it serves natively (API name → URL) and its
        # hub translation (gateway.providers, gateway.surfaces).
        self.adapter = ADAPTERS[provider.type]
        self.urls = self.adapter.urls(provider.base_url)
        self.headers: list[tuple[str, str]] = self.adapter.headers(provider.api_key, provider.headers)
        parts = urlsplit(provider.base_url)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        # /v1/responses is passed through to an openai provider that speaks it (api.openai.com
        # unless the config says otherwise); every other target gets it through the chat hub.
        if provider.type == "openai" and (
            provider.responses == "native" if provider.responses else self.server_address == "api.openai.com"
        ):
            self.urls["responses"] = provider.base_url.rstrip("/") + "/responses"
        # What a trace record says about an attempt at this target (the exporter builds the
        # CLIENT span's attributes from it).
        self.trace_info = TargetInfo(
            self.model_id, provider.type, upstream_model, self.server_address, self.server_port
        )


class _ModelEntry(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "llm-gateway"


class _ModelList(msgspec.Struct):
    data: list[_ModelEntry]
    object: str = "list"


class Runtime:
    """The per-config state of one worker: model table, pooled clients, compiled policies."""

    def __init__(self, config: GatewayConfig, previous: Runtime | None = None) -> None:
        self.config = config
        self.max_body_bytes = config.server.max_body_bytes
        self.clients: dict[str, UpstreamClient] = {
            p.name: make_client(config.server.upstream_client, p) for p in config.providers
        }
        self.models: dict[str, ModelTarget] = {}
        for p in config.providers:
            for m in p.models:
                target = ModelTarget(p, m, self.clients[p.name])
                self.models[target.model_id] = target
        # Routing health (latency data, open breakers), rate-limit counts and JWKS keys
        # survive a config reload.
        self.router: Router = Router(config, previous=previous.router if previous is not None else None)
        self.access: AccessControl = AccessControl.from_config(
            config, previous=previous.access if previous is not None else None
        )
        self.open_access = self.access.authenticator is None
        from gateway.mcp.core import McpGateway  # the MCP registry lives and reloads with the rest

        self.mcp: McpGateway = McpGateway(
            config, self.access, previous=previous.mcp if previous is not None else None
        )
        self.prices = PriceTable.from_config(config.metrics.prices_file, config.metrics.prices)
        self.model_owner = {t.model_id: t.provider.name for t in self.models.values()}
        self.all_model_ids = [*self.models, *self.router.virtual_models()]
        self.known_models = frozenset(self.all_model_ids)  # the only model names metrics label
        self.models_body = self.render_models(self.all_model_ids)
        self._models_bodies: dict[frozenset[str], bytes] = {}

    def render_models(self, model_ids: list[str]) -> bytes:
        """``GET /v1/models`` body for the given ids."""
        entries = [_ModelEntry(id=m, owned_by=self.model_owner.get(m, "llm-gateway")) for m in model_ids]
        return msgspec.json.encode(_ModelList(data=entries))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start background work (JWKS refresh, fleet rate-limit sync) on ``loop``."""
        cluster = self.config.cluster
        if cluster is not None:
            self.access.start_soon(loop, cluster.nats_url, cluster.subject_prefix)
        else:
            self.access.start_soon(loop)

    def has_model(self, model_id: str) -> bool:
        """Whether ``model_id`` is a concrete or virtual model of this config."""
        return model_id in self.known_models

    def visible_models_body(self, principal: Principal) -> bytes:
        """``GET /v1/models`` for one caller: only what the access rules let it use."""
        if self.open_access:
            return self.models_body
        # Rules and models are fixed for this runtime: one body per distinct set of subject names.
        body = self._models_bodies.get(principal.matches)
        if body is None:
            body = self.render_models(self.access.visible_models(principal, self.all_model_ids))
            if len(self._models_bodies) < 4096:  # bounded: JWT subjects are unbounded
                self._models_bodies[principal.matches] = body
        return body

    async def aclose(self) -> None:
        """Stop background work and close the pooled clients (after in-flight requests finished)."""
        try:
            await self.access.stop()
        except Exception:
            log.exception("stopping access control failed")
        await self.mcp.aclose()
        for client in self.clients.values():
            try:
                await client.aclose()
            except Exception:  # closing must not stop the rest of shutdown
                log.exception("closing an upstream client failed")
