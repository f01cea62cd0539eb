"""Helpers every API mapping shares: reading decoded JSON defensively, media, finish reasons."""

from __future__ import annotations

import base64
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import msgspec

from gateway.telemetry.genai.parts import BlobPart, FilePart, Part, UriPart, degraded

_decode = msgspec.json.decode
# What decoding untrusted JSON raises: malformed text, or nesting deeper than msgspec recurses.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


class ResponseInfo(msgspec.Struct, kw_only=True):
    """What a model call's response says about itself (``gen_ai.response.*``, ``gen_ai.usage.*``)."""

    id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = []  # as the provider spelled them
    input_tokens: int | None = None  # every input token, cached ones included
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


def decode_object(body: bytes | str | None) -> dict[str, Any] | None:
    """``body`` as a JSON object, or ``None`` (counted) when it is not one."""
    if not body:
        return None
    try:
        doc = _decode(body)
    except (*DECODE_ERRORS, UnicodeDecodeError):
        degraded("body")
        return None
    if not isinstance(doc, dict):
        degraded("body")
        return None
    return doc


def as_str(value: Any) -> str | None:
    """``value`` when it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def as_int(value: Any) -> int | None:
    """``value`` when it is an integer (never a bool)."""
    return value if type(value) is int else None


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments: the JSON value when ``raw`` is a JSON text, else ``raw`` itself."""
    if isinstance(raw, str):
        text = raw.strip()
        if text[:1] in ("{", "["):
            try:
                return _decode(text)
            except DECODE_ERRORS:
                return raw
    return raw


# Audio formats OpenAI names by extension -> IANA MIME type.
_AUDIO_MIME: Final = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "pcm16": "audio/pcm",
    "ogg": "audio/ogg",
    "webm": "audio/webm",
    "m4a": "audio/mp4",
}
_EXT_MIME: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    **{k: v for k, v in _AUDIO_MIME.items() if k not in ("pcm16",)},
}


def audio_mime(fmt: Any) -> str | None:
    """The MIME type of an OpenAI audio ``format`` (``wav``, ``mp3``, ...)."""
    return _AUDIO_MIME.get(fmt) if isinstance(fmt, str) else None


def modality_of(mime: str | None, default: str) -> str:
    """The spec's modality for a MIME type (image, audio, video, else ``default``)."""
    if mime:
        head = mime.split("/", 1)[0]
        if head in ("image", "audio", "video"):
            return head
        if mime == "application/pdf" or head == "text":
            return "document"
    return default


def _mime_from_uri(uri: str) -> str | None:
    path = uri.split("?", 1)[0].split("#", 1)[0]
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return _EXT_MIME.get(path[dot + 1 :].lower())


def media_part(url: str, modality: str, mime: str | None = None) -> Part:
    """A ``blob`` for a data URL (base64 kept as received), else a ``uri`` part."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        if sep:
            fields = header.split(";")
            mime = fields[0] or mime
            if "base64" not in fields[1:]:
                # Percent-encoded text: the schema wants base64 bytes in a blob.
                data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
            return BlobPart(modality=modality_of(mime, modality), mime_type=mime, content=data)
        degraded("data_url")  # no comma: not a data URL the provider could read either
        return {"type": "data_url", "modality": modality, "content": url}
    return UriPart(modality=modality_of(mime, modality), mime_type=mime or _mime_from_uri(url), uri=url)


def file_part(file_id: str, modality: str, mime: str | None = None) -> FilePart:
    """A ``file`` part for a file uploaded to the provider."""
    return FilePart(modality=modality_of(mime, modality), mime_type=mime, file_id=file_id)


# Provider finish reasons -> the spec's FinishReason values (others are kept as spelled).
FINISH_REASONS: Final = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    # Anthropic stop_reason
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
    # Responses incomplete_details.reason
    "max_output_tokens": "length",
}


def finish_reason(raw: Any) -> str:
    """The output message's ``finish_reason`` for a provider's value (``error`` when absent)."""
    if isinstance(raw, str) and raw:
        return FINISH_REASONS.get(raw, raw)
    return "error"
