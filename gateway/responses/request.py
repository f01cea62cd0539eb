"""The request view of ``POST /v1/responses`` and the per-target bodies built from it.

Decoded once: the gateway needs ``input`` as items anyway (to store them and to continue a
chain), so the body is decoded whole, then the bodies sent upstream are built per target kind:

- native (the target speaks Responses): the client's bytes with ``model`` rewritten; a
  ``previous_response_id`` the gateway stored is expanded into ``input`` (the chain may have
  started on another provider, so the provider's own state cannot be relied on);
- translated: the chat-completions hub request (:func:`.translate.to_chat_request`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.body import ParsedRequest, check_json_bytes
from gateway.errors import InvalidRequest
from gateway.responses.translate import new_id, normalize_input, to_chat_request

_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _typed(body: dict[str, Any], key: str, typ: type | tuple[type, ...], name: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, typ):
        raise InvalidRequest(f"'{key}' must be {name}", param=key, code="invalid_type")
    return value


class ResponsesRequest(ParsedRequest):
    """The request view of a Responses call: what the gateway reads, and the bodies it sends.

    ``history`` and ``conversation_id`` are filled by the handler from the stored
    ``previous_response_id`` chain; ``drop_tools`` from the operator's config."""

    def __init__(self, raw: bytes, fields: dict[str, msgspec.Raw], body: dict[str, Any]) -> None:
        model = _typed(body, "model", str, "a string")
        if not model:
            raise InvalidRequest(
                "missing required parameter: 'model'", param="model", code="missing_required_parameter"
            )
        stream = bool(_typed(body, "stream", bool, "a boolean"))
        # wants_usage: nothing is stripped from the hub stream, its usage chunk ends a response.
        super().__init__(raw, fields, model, stream, True)
        self.obj = body
        self.store = _typed(body, "store", bool, "a boolean") is not False
        self.previous_id: str | None = _typed(body, "previous_response_id", str, "a string")
        if body.get("background"):
            raise InvalidRequest(
                "background responses are not supported", param="background", code="unsupported_parameter"
            )
        if "input" not in body:
            raise InvalidRequest(
                "missing required parameter: 'input'", param="input", code="missing_required_parameter"
            )
        self.items = normalize_input(body["input"])
        tools = _typed(body, "tools", list, "an array") or []
        self.mcp_tools = [t for t in tools if isinstance(t, dict) and t.get("type") == "mcp"]
        _typed(body, "metadata", dict, "an object")
        _typed(body, "max_output_tokens", int, "an integer")
        self.resp_id = new_id("resp")  # the id of a translated response
        self.history: list[dict[str, Any]] = []  # the stored chain before this request
        self.conversation_id: str | None = None
        self.drop_tools: frozenset[str] = frozenset()
        self.dropped_tools: list[str] = []
        self._hub: dict[str, Any] | None = None
        self._native: dict[str, msgspec.Raw] | None = None

    @classmethod
    def parse(cls, raw: bytes) -> ResponsesRequest:
        """Validate the envelope of a Responses request body.

        Raises:
            InvalidRequest: empty or malformed JSON, not an object, a mistyped or missing field,
                malformed input items.
        """
        if not raw or raw.isspace():
            raise InvalidRequest("request body is empty; expected a JSON object", code="empty_body")
        check_json_bytes(raw)  # invalid UTF-8 or nesting past MAX_JSON_DEPTH: a 400, never a 500
        try:
            fields = _decode_fields(raw)
        except msgspec.ValidationError:
            raise InvalidRequest("request body must be a JSON object", code="invalid_json") from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        return cls(raw, fields, {k: _decode(v) for k, v in fields.items()})

    def native_body(self, model: str, overrides: Mapping[str, Any] | None) -> bytes:
        """The body for a target that speaks Responses: the client's, ``model`` rewritten, a
        stored chain expanded into ``input``; ``stream_options`` is never injected."""
        if self._native is None:
            fields = dict(self.fields)
            if self.previous_id is not None:
                del fields["previous_response_id"]
                given = self.obj["input"]
                current = given if isinstance(given, list) else [{"role": "user", "content": given}]
                fields["input"] = msgspec.Raw(_encode(native_items(self.history) + current))
            self._native = fields
        fields = dict(self._native)
        fields["model"] = msgspec.Raw(_encode(model))
        if overrides:
            for key, value in overrides.items():
                fields[key] = msgspec.Raw(_encode(value))
        return _encode(fields)

    def hub_request(self) -> dict[str, Any]:
        """The chat-completions hub request (translated once; a fresh copy per attempt, which
        the provider adapter may change).

        Raises:
            InvalidRequest: a field chat completions cannot honour, named.
        """
        if self._hub is None:
            self._hub, self.dropped_tools = to_chat_request(
                self.obj, self.history, self.items, self.model, self.drop_tools
            )
        return dict(self._hub)


def native_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored items as input for a Responses provider: without the gateway's item ids (the
    provider would look them up) and without reasoning the provider cannot resolve."""
    out = []
    for item in items:
        kind = item.get("type")
        if kind == "reasoning" and not item.get("encrypted_content"):
            continue
        if kind in ("mcp_list_tools", "mcp_approval_request", "mcp_approval_response"):
            continue
        if kind == "mcp_call":
            # The gateway ran it: the provider sees a function call and its output.
            out.append({"type": "function_call", "call_id": item.get("id", ""), "name": item.get("name", ""),
                        "arguments": item.get("arguments") or "{}"})  # fmt: skip
            result = item.get("output")
            if result is None:
                result = f"error: {item.get('error')}"
            out.append({"type": "function_call_output", "call_id": item.get("id", ""), "output": str(result)})
            continue
        copy = {k: v for k, v in item.items() if k not in ("id", "status")}
        if kind == "message" and copy.get("role") == "assistant":
            # output_text parts carry annotations/logprobs the input schema does not take
            copy["content"] = [
                {"type": "output_text", "text": p.get("text", "")} if p.get("type") == "output_text" else p
                for p in copy.get("content") or []
            ]
        out.append(copy)
    return out
