"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models a caller may use, in its SDK's shape.

A request carrying ``anthropic-version`` (the anthropic SDK, Claude Code) gets Anthropic's
shapes (``{"data": [...], "has_more": false, ...}``, ``{"type": "model", ...}``) and error
body; any other gets OpenAI's. Visibility is the access rules' (``AccessControl.visible_models``):
a model the caller may not use is a 404, the same answer as one that does not exist, so the
model table is not disclosed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import msgspec

from gateway.errors import GatewayError, ModelNotFound
from gateway.runtime import Runtime
from gateway.surfaces import Surface
from gateway.surfaces.chat import CHAT
from gateway.surfaces.messages import MESSAGES

__all__ = ["PREFIX", "handle_models"]

PREFIX = "/v1/models/"
_EPOCH = "1970-01-01T00:00:00Z"  # models have no creation date here (OpenAI's ``created`` is 0 too)
_encode = msgspec.json.Encoder().encode
JSON = [("content-type", "application/json")]


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": _EPOCH}


def handle_models(rt: Runtime, scope: Any, proto: Any) -> None:
    """Answer ``GET /v1/models`` or ``GET /v1/models/{id}`` (the id may contain ``/``)."""
    anthropic = bool(scope.headers.get("anthropic-version"))
    surface: Surface = MESSAGES if anthropic else CHAT
    try:
        principal = rt.access.authenticate(scope.headers.get)
        if scope.path.startswith(PREFIX):
            model_id = unquote(scope.path[len(PREFIX) :])
            if (
                not model_id
                or not rt.access.visible_models(principal, [model_id])
                or not rt.has_model(model_id)
            ):
                raise ModelNotFound(
                    f"model '{model_id}' does not exist or is not available to you", param="model"
                )
            if anthropic:
                body = _encode(_anthropic_model(model_id))
            else:
                owner = rt.model_owner.get(model_id, "llm-gateway")
                body = _encode({"id": model_id, "object": "model", "created": 0, "owned_by": owner})
        elif anthropic:
            ids = rt.access.visible_models(principal, rt.all_model_ids)
            data = [_anthropic_model(m) for m in ids]
            first, last = (ids[0], ids[-1]) if ids else (None, None)
            body = _encode({"data": data, "has_more": False, "first_id": first, "last_id": last})
        else:
            body = rt.visible_models_body(principal)
    except GatewayError as exc:
        status, headers, err = surface.error_response(exc)
        proto.response_bytes(status, headers, err)
        return
    proto.response_bytes(200, JSON, body)
