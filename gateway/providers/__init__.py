"""Provider adapters: what each provider type serves natively, and hub ↔ provider translation.

The *hub* is the OpenAI chat completions shape (see :mod:`gateway.surfaces`). An adapter says
which inbound APIs a provider serves as they are (``urls``: API name → URL) and translates hub
requests, responses, stream chunks and errors into and out of the provider's own API when a
surface's API is not one of them. Pure: no I/O; the attempt (``gateway.attempt``) sends.

    openai     serves chat, completions, embeddings   hub == its own API (model rewritten only)
    anthropic  serves messages, count_tokens         hub ↔ Messages (gateway.providers.anthropic)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.providers import anthropic

__all__ = ["ADAPTERS", "AnthropicAdapter", "OpenAIAdapter", "ProviderAdapter"]

_encode = msgspec.json.Encoder().encode
_INCLUDE_USAGE = {"include_usage": True}


class ProviderAdapter:
    """One provider type. ``hub_api`` names the URL (in :meth:`urls`) hub requests go to."""

    type: str = ""
    hub_api: str = "chat"

    def urls(self, base_url: str) -> dict[str, str]:
        """API name → URL, for every API this provider serves natively."""
        raise NotImplementedError

    def headers(self, api_key: str | None, extra: Mapping[str, str]) -> list[tuple[str, str]]:
        """Headers sent on every request to this provider (credentials included)."""
        raise NotImplementedError

    def from_hub(
        self, hub: dict[str, Any], model: str, overrides: Mapping[str, Any] | None, stream: bool
    ) -> bytes:
        """A hub (chat completions) request → the body to send to this provider.

        Raises:
            InvalidRequest: the request cannot be expressed for this provider.
        """
        raise NotImplementedError

    def to_hub(self, body: bytes) -> bytes:
        """A non-streamed 2xx response body → a hub ``chat.completion`` body."""
        raise NotImplementedError

    def stream_to_hub(self) -> Any:
        """A stage turning this provider's stream into hub SSE chunks, or None (already hub)."""
        return None


class OpenAIAdapter(ProviderAdapter):
    """OpenAI-compatible providers: the hub is their own chat API."""

    type = "openai"
    hub_api = "chat"
    PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}

    def urls(self, base_url: str) -> dict[str, str]:
        base = base_url.rstrip("/")
        return {api: base + path for api, path in self.PATHS.items()}

    def headers(self, api_key: str | None, extra: Mapping[str, str]) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json"), *extra.items()]
        if api_key:
            headers.append(("authorization", f"Bearer {api_key}"))
        return headers

    def from_hub(
        self, hub: dict[str, Any], model: str, overrides: Mapping[str, Any] | None, stream: bool
    ) -> bytes:
        hub["model"] = model
        if stream:
            # The usage chunk is how the gateway learns a stream's tokens; the surface decides
            # whether its client sees it.
            opts = hub.get("stream_options")
            hub["stream_options"] = {**opts, **_INCLUDE_USAGE} if isinstance(opts, dict) else _INCLUDE_USAGE
        if overrides:
            hub.update(overrides)
        return _encode(hub)

    def to_hub(self, body: bytes) -> bytes:
        return body


class AnthropicAdapter(ProviderAdapter):
    """Anthropic: hub ↔ Messages through :mod:`gateway.providers.anthropic`."""

    type = "anthropic"
    hub_api = "messages"

    def urls(self, base_url: str) -> dict[str, str]:
        url = anthropic.messages_url(base_url)
        return {"messages": url, "count_tokens": url + "/count_tokens"}

    def headers(self, api_key: str | None, extra: Mapping[str, str]) -> list[tuple[str, str]]:
        return [*anthropic.request_headers(api_key), *extra.items()]

    def from_hub(
        self, hub: dict[str, Any], model: str, overrides: Mapping[str, Any] | None, stream: bool
    ) -> bytes:
        # Overrides use OpenAI names (max_tokens, stop, ...): merged before translation.
        if overrides:
            hub.update(overrides)
        return _encode(anthropic.to_anthropic_request(hub, model))

    def to_hub(self, body: bytes) -> bytes:
        return anthropic.translate_response(body)

    def stream_to_hub(self) -> Any:
        # Always with the usage chunk: the hub relay after it reads (and maybe strips) it.
        return anthropic.AnthropicStreamTranslator(include_usage=True)


ADAPTERS: dict[str, ProviderAdapter] = {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}
