"""``max_attribute_chars``: cut long attribute values per destination, keeping JSON valid.

A backend caps attribute sizes (or rejects whole batches over them), and OpenTelemetry's
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` says the same for SDKs. Cutting a JSON attribute at a
character count would leave half a document, so JSON-valued attributes (the GenAI content
attributes, the request and response bodies, the short hand, the metadata) are cut *inside*:
the long strings (message text, tool arguments, inline data) are shortened, all by the same
cap, until the document fits; a shortened string ends with ``…`` and the GenAI part holding it
gets ``"truncated": true`` (parts allow extra properties). Structural strings (``type``,
``role``, ``id``, ``name``, ...) are never cut. If the structure alone is too big, whole
messages go, oldest first; if even one does not fit, the attribute goes. Any other string is
cut plainly with a trailing ``…``.

Pure: spans whose attributes change are copied, never edited (a batch is shared by every
destination). Runs only for destinations with a limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from gateway.telemetry.genai.common import DECODE_ERRORS
from gateway.telemetry.spans import (
    GEN_AI_CONTENT,
    TFY_INPUT,
    TFY_INPUT_SHORT_HAND,
    TFY_METADATA,
    TFY_OUTPUT,
)
from gateway.telemetry.wire import Span

__all__ = ["JSON_ATTRIBUTES", "MARK", "truncate_json", "truncate_spans"]

MARK: Final = "…"
# Attributes whose value is a JSON document (text or UTF-8 bytes).
JSON_ATTRIBUTES: Final = frozenset(
    {*GEN_AI_CONTENT, TFY_INPUT, TFY_OUTPUT, TFY_INPUT_SHORT_HAND, TFY_METADATA}
)
_PARTS_ATTRIBUTES: Final = frozenset(GEN_AI_CONTENT)
# Values that give a document its meaning: never shortened.
_STRUCTURAL: Final = frozenset(
    {
        "type",
        "role",
        "id",
        "name",
        "finish_reason",
        "modality",
        "mime_type",
        "tool_call_id",
        "call_id",
        "model",
    }
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def _chars(value: str | bytes) -> int:
    return len(value) if isinstance(value, str) else len(value.decode("utf-8", "replace"))


def _longest(node: Any) -> int:
    """The length of the longest cuttable string in a decoded document."""
    if isinstance(node, str):
        return len(node)
    if isinstance(node, dict):
        return max(
            (len(v) if isinstance(v, str) else _longest(v) for k, v in node.items() if k not in _STRUCTURAL),
            default=0,
        )
    if isinstance(node, list):
        return max((_longest(v) for v in node), default=0)
    return 0


def _shorten(doc: Any, cap: int, mark_parts: bool) -> Any:
    """A copy of ``doc`` with every cuttable string longer than ``cap`` cut to it."""
    if isinstance(doc, list):
        return [_shorten(v, cap, mark_parts) for v in doc]
    if not isinstance(doc, dict):
        return doc[:cap] + MARK if isinstance(doc, str) and len(doc) > max(cap, 1) else doc
    out: dict[str, Any] = {}
    cut = False
    for k, v in doc.items():
        if isinstance(v, str) and k not in _STRUCTURAL and len(v) > max(cap, 1):
            out[k] = v[:cap] + MARK
            cut = True
        elif isinstance(v, dict | list):
            out[k] = _shorten(v, cap, mark_parts)
        else:
            out[k] = v
    if cut and mark_parts and isinstance(doc.get("type"), str):
        out["truncated"] = True
    return out


def _cut(value: str | bytes, limit: int) -> str | None:
    """Plain text cut to ``limit`` characters, the mark included (``None`` if only the mark fits)."""
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return text[: limit - len(MARK)] + MARK if limit > len(MARK) else None


def _fits(doc: Any, limit: int) -> str | None:
    text = _encode(doc).decode()
    return text if len(text) <= limit else None


def truncate_json(value: str | bytes, limit: int, parts: bool = False) -> str | None:
    """``value`` (a JSON document) as JSON text of at most ``limit`` characters, or ``None``.

    Args:
        value: the attribute's value.
        limit: characters allowed.
        parts: the value is a GenAI content attribute (a list of messages or parts): cut parts
            are marked, and whole entries go (oldest first) when cutting strings is not enough.

    Returns ``None`` when nothing valid fits (the caller drops the attribute). A value that is
    not JSON at all is cut as plain text.
    """
    try:
        doc = _decode(value)
    except DECODE_ERRORS:
        return _cut(value, limit)
    while True:
        whole = _fits(doc, limit)
        if whole is not None:
            return whole
        longest = _longest(doc)
        best = _fits(_shorten(doc, 0, parts), limit) if longest > 1 else None
        if best is not None:
            # The largest cap that fits, by bisection: exact whatever the escapes cost.
            lo, hi = 0, longest
            while lo < hi:
                mid = (lo + hi + 1) // 2
                shorter = _fits(_shorten(doc, mid, parts), limit)
                if shorter is not None:
                    lo, best = mid, shorter
                else:
                    hi = mid - 1
            return best
        if parts and isinstance(doc, list) and len(doc) > 1:
            doc = doc[1:]  # the oldest message goes; the rest is tried again
            continue
        return None


def truncate_spans(
    spans: Iterable[Span], limit: int, skip: frozenset[str] = frozenset()
) -> tuple[list[Span], int, int]:
    """Spans with every string attribute within ``limit`` characters.

    Returns ``(spans, truncated, dropped)``: how many attribute values were cut and how many
    had to go entirely. Attributes in ``skip`` (about to be excluded anyway) are left alone.
    """
    out: list[Span] = []
    truncated = dropped = 0
    for span in spans:
        changed: dict[str, Any] | None = None
        for key, value in span.attributes.items():
            if key in skip or not isinstance(value, str | bytes) or len(value) <= limit:
                continue
            if _chars(value) <= limit:
                continue
            if key in JSON_ATTRIBUTES:
                new: str | None = truncate_json(value, limit, key in _PARTS_ATTRIBUTES)
            else:
                new = _cut(value, limit)
            if changed is None:
                changed = dict(span.attributes)
            if new is None:
                del changed[key]
                dropped += 1
            else:
                changed[key] = new
                truncated += 1
        out.append(span if changed is None else msgspec.structs.replace(span, attributes=changed))
    return out, truncated, dropped
