"""Decode only what the gateway needs from a request body; forward the rest as received.

The body is decoded as ``dict[str, msgspec.Raw]``: msgspec scans the document once, but only
top-level keys are materialised; every value stays a slice of the original bytes. The few
fields the gateway reads (``model``, ``stream``, ``stream_options``) are decoded from their
slices, and the upstream body is re-encoded from the same slices with ``model`` replaced,
so messages, tools and images are never parsed into Python objects.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import msgspec

from gateway.errors import InvalidRequest

_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_str = msgspec.json.Decoder(str).decode
_decode_bool = msgspec.json.Decoder(bool).decode
_decode_obj = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode

_INCLUDE_USAGE = msgspec.Raw(b'{"include_usage":true}')

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects a request body may have (the top-level object is 1).

Real requests nest less than 20 levels (tool schemas included); past this, bodies get a 400
before any code that recurses over them (Anthropic translation, the exporter's span building)
sees them, so none of it can hit Python's recursion limit."""

# Only the bytes that shape nesting survive the projection; quotes delimit the strings whose
# brackets do not count.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = tuple(1 if c == 40 else -1 for c in range(256))  # "(" opens, ")" closes
_TO_PARENS = bytes.maketrans(b"[]{}", b"()()")
_PASSES_MAX_BYTES = 64 * 1024  # longer projections use the linear scan (bounded worst case)

# What each endpoint requires beyond ``model``, and the JSON type it must have.
REQUIRED_FIELDS: dict[str, tuple[str, bytes]] = {
    "chat": ("messages", b"["),
    "completions": ("prompt", b""),
    "embeddings": ("input", b""),
    "messages": ("messages", b"["),  # Anthropic Messages (gateway.surfaces.messages)
}


class ParsedRequest:
    """The parts of a request the gateway acts on; ``fields`` keeps every value's raw bytes."""

    __slots__ = ("body", "fields", "model", "stream", "client_wants_usage")

    def __init__(
        self, body: bytes, fields: dict[str, msgspec.Raw], model: str, stream: bool, wants_usage: bool
    ):
        self.body = body
        self.fields = fields
        self.model = model
        self.stream = stream
        self.client_wants_usage = wants_usage

    def upstream_body(self, upstream_model: str, overrides: dict[str, Any] | None = None) -> bytes:
        """The body to send upstream: ``model`` rewritten, usage requested for streams,
        ``overrides`` (routing's ``override_params``) applied; all other bytes as received."""
        fields = dict(self.fields)
        fields["model"] = msgspec.Raw(_encode(upstream_model))
        if self.stream and not self.client_wants_usage:
            opts = fields.get("stream_options")
            if opts is None:
                fields["stream_options"] = _INCLUDE_USAGE
            else:
                merged = _decode_obj(opts)
                merged["include_usage"] = True
                fields["stream_options"] = msgspec.Raw(_encode(merged))
        if overrides:
            for key, value in overrides.items():
                fields[key] = msgspec.Raw(_encode(value))
        return _encode(fields)


def _is_null(raw: msgspec.Raw) -> bool:
    return len(raw) == 4 and memoryview(raw) == b"null"


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the (valid) JSON document ``body`` nests arrays/objects deeper than ``limit``.

    C-speed byte operations, no parsing: escapes are dropped, then everything but quotes and
    brackets, then the strings; what is left is brackets only. Bodies with at most ``limit``
    brackets are answered from one count (every small request).
    """
    if len(body.translate(None, _NOT_BRACKET)) <= 2 * limit:  # depth <= brackets / 2
        return False
    if b"\\" in body:  # escaped backslashes first, so that ``\\"`` stays a closing quote
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    proj = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")  # bracket-free strings gone
    if b'"' in proj:
        proj = b"".join(proj.split(b'"')[::2])  # strings that held brackets
    proj = proj.translate(_TO_PARENS)
    if len(proj) <= _PASSES_MAX_BYTES:
        # Each pass removes every innermost pair: the number of passes is the depth.
        for _ in range(limit):
            if not proj:
                return False
            proj = proj.replace(b"()", b"")
        return bool(proj)
    return max(accumulate(map(_STEP.__getitem__, proj))) > limit


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep"
    )


def check_json_bytes(body: bytes) -> None:
    """Refuse what no JSON decoder of ours should see: invalid UTF-8 and excessive nesting.

    Every surface calls it on a raw JSON body before decoding it (:func:`parse_request` does).
    The depth verdict assumes well-formed JSON: a malformed body with hundreds of brackets may
    get ``json_too_deep`` where a decoder would have said ``invalid_json`` (a 400 either way).

    Raises:
        InvalidRequest: ``invalid_utf8``, or ``json_too_deep`` past :data:`MAX_JSON_DEPTH`.
    """
    if not body.isascii():  # the common ASCII body skips the decode
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"request body is not valid UTF-8 (byte {exc.start})", code="invalid_utf8"
            ) from None
    if json_depth_exceeds(body):
        raise _too_deep()


def parse_request(body: bytes, endpoint: str) -> ParsedRequest:
    """Validate the envelope of an OpenAI request body.

    Raises:
        InvalidRequest: empty body, malformed JSON or UTF-8, not an object, nested deeper than
            :data:`MAX_JSON_DEPTH`, missing or mistyped ``model``/``stream``/``stream_options``
            or the endpoint's required field.
    """
    if not body or body.isspace():
        raise InvalidRequest("request body is empty; expected a JSON object", code="empty_body")
    check_json_bytes(body)
    try:
        fields = _decode_fields(body)
    except msgspec.ValidationError:
        raise InvalidRequest("request body must be a JSON object", code="invalid_json") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # unreachable after the depth check; never a 500 all the same
        raise _too_deep() from None

    raw_model = fields.get("model")
    if raw_model is None:
        raise InvalidRequest(
            "missing required parameter: 'model'", param="model", code="missing_required_parameter"
        )
    try:
        model = _decode_str(raw_model)
    except msgspec.ValidationError:
        raise InvalidRequest("'model' must be a string", param="model", code="invalid_type") from None
    if not model:
        raise InvalidRequest("'model' must not be empty", param="model", code="invalid_value")

    stream = False
    raw_stream = fields.get("stream")
    if raw_stream is not None:
        try:
            stream = _decode_bool(raw_stream) if not _is_null(raw_stream) else False
        except msgspec.ValidationError:
            raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type") from None
    if stream and endpoint == "embeddings":
        raise InvalidRequest("embeddings do not support 'stream'", param="stream", code="invalid_value")

    wants_usage = False
    raw_opts = fields.get("stream_options")
    if raw_opts is not None and not _is_null(raw_opts):
        try:
            opts = _decode_obj(raw_opts)
        except msgspec.ValidationError:
            raise InvalidRequest(
                "'stream_options' must be an object", param="stream_options", code="invalid_type"
            ) from None
        usage = opts.get("include_usage", False)
        if not isinstance(usage, bool):
            raise InvalidRequest(
                "'stream_options.include_usage' must be a boolean",
                param="stream_options.include_usage",
                code="invalid_type",
            )
        wants_usage = usage

    required, json_type = REQUIRED_FIELDS[endpoint]
    raw_required = fields.get(required)
    if raw_required is None:
        raise InvalidRequest(
            f"missing required parameter: '{required}'", param=required, code="missing_required_parameter"
        )
    if json_type and memoryview(raw_required)[:1] != json_type:
        raise InvalidRequest(f"'{required}' must be an array", param=required, code="invalid_type")
    return ParsedRequest(body, fields, model, stream, wants_usage)
