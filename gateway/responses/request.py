"""The request view of ``POST /v1/responses`` and the per-target bodies built from it.

Decoded once: the gateway needs ``input`` as items anyway (to store them and to continue a
chain), so the body is decoded whole, then the bodies sent upstream are built per target kind:

- native (the target speaks Responses): the client's bytes with ``model`` rewritten; a
  ``previous_response_id`` the gateway stored is expanded into ``input`` (the chain may have
  started on another provider, so the provider's own state cannot be relied on);
- translated: the chat-completions hub request (:func:`.translate.to_chat_request`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.body import ParsedRequest, parse_request
from gateway.errors import InvalidRequest
from gateway.responses.translate import normalize_input, to_chat_request

_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _typed(body: dict[str, Any], key: str, typ: type | tuple[type, ...], name: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, typ):
        raise InvalidRequest(f"'{key}' must be {name}", param=key, code="invalid_type")
    return value


class ResponsesRequest:
    """What the gateway reads from a Responses request, and the bodies it sends for it."""

    def __init__(self, raw: bytes, fields: dict[str, msgspec.Raw], body: dict[str, Any]) -> None:
        self.raw = raw
        self.fields = fields
        self.body = body
        model = _typed(body, "model", str, "a string")
        if not model:
            raise InvalidRequest(
                "missing required parameter: 'model'", param="model", code="missing_required_parameter"
            )
        self.model: str = model
        self.stream = bool(_typed(body, "stream", bool, "a boolean"))
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
        self.history: list[dict[str, Any]] = []  # the stored chain before this request
        self.conversation_id: str | None = None
        self.dropped_tools: list[str] = []
        self._hub: ParsedRequest | None = None
        self._native: ParsedRequest | None = None

    @classmethod
    def parse(cls, raw: bytes) -> ResponsesRequest:
        """Validate the envelope of a Responses request body.

        Raises:
            InvalidRequest: empty or malformed JSON, not an object, a mistyped or missing field,
                malformed input items.
        """
        if not raw or raw.isspace():
            raise InvalidRequest("request body is empty; expected a JSON object", code="empty_body")
        try:
            fields = _decode_fields(raw)
        except msgspec.ValidationError:
            raise InvalidRequest("request body must be a JSON object", code="invalid_json") from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        return cls(raw, fields, {k: _decode(v) for k, v in fields.items()})

    def view(self) -> ParsedRequest:
        """The request as the proxy's bookkeeping sees it (model, stream, the client's bytes)."""
        return ParsedRequest(self.raw, self.fields, self.model, self.stream, True)

    def native(self) -> ParsedRequest:
        """The body for a target that speaks Responses (``model`` is rewritten per attempt).

        ``stream_options`` is never injected (Responses streams always end with usage)."""
        if self._native is None:
            if self.previous_id is None:
                self._native = ParsedRequest(self.raw, self.fields, self.model, self.stream, True)
            else:
                fields = dict(self.fields)
                del fields["previous_response_id"]
                given = self.body["input"]
                current = given if isinstance(given, list) else [{"role": "user", "content": given}]
                fields["input"] = msgspec.Raw(_encode(native_items(self.history) + current))
                raw = _encode(fields)
                self._native = ParsedRequest(raw, fields, self.model, self.stream, True)
        return self._native

    def hub(self, drop_tools: frozenset[str]) -> ParsedRequest:
        """The chat-completions hub body (translated once; ``model`` is rewritten per attempt).

        Raises:
            InvalidRequest: a field chat completions cannot honour, named.
        """
        if self._hub is None:
            chat, self.dropped_tools = to_chat_request(
                self.body, self.history, self.items, self.model, drop_tools
            )
            self._hub = parse_request(_encode(chat), "chat")
        return self._hub


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
