"""The GenAI message parts as msgspec Structs: the types are the schema, encoding is fast.

Shapes follow the OpenTelemetry GenAI semantic conventions (semconv v1.41.1, maintained in
``open-telemetry/semantic-conventions-genai``): ``gen-ai-input-messages.json``,
``gen-ai-output-messages.json``, ``gen-ai-system-instructions.json`` and the tool definitions.
Each part is a tagged Struct (``tag_field="type"``); the spec's catch-all *generic part* is a
plain ``dict`` holding at least a string ``"type"``. Optional fields left at their default are
omitted from the JSON, so a part carries only what the call had.

A mapper that meets an input it cannot read never raises: it emits a generic part (or no
attribute at all) and counts it in :data:`COUNTERS`.

These types are for encoding: msgspec cannot decode a union of Structs and ``dict``, so a reader
of the attributes decodes plain JSON (see ``tests/genai_schema.py`` for a strict reading).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import msgspec

__all__ = [
    "COUNTERS",
    "BlobPart",
    "Content",
    "FilePart",
    "InputMessage",
    "OutputMessage",
    "Part",
    "ReasoningPart",
    "TextPart",
    "ToolCallRequestPart",
    "ToolCallResponsePart",
    "ToolDefinition",
    "UriPart",
    "degraded",
    "generic",
]

# What the mappers could not read, by reason (read by the exporter's own metrics): a part or
# message that became a generic part, a body that gave no attribute at all.
COUNTERS: Final[Counter[str]] = Counter()


def degraded(reason: str) -> None:
    """Count one input the mapping could not read as its API defines it."""
    COUNTERS[reason] += 1


class TextPart(msgspec.Struct, tag_field="type", tag="text", gc=False):
    """Text sent to or received from the model."""

    content: str


class ToolCallRequestPart(
    msgspec.Struct, tag_field="type", tag="tool_call", kw_only=True, omit_defaults=True
):
    """A tool call the model asked for; ``arguments`` is an object when they were valid JSON."""

    id: str | None = None
    name: str
    arguments: Any = None


class ToolCallResponsePart(
    msgspec.Struct, tag_field="type", tag="tool_call_response", kw_only=True, omit_defaults=True
):
    """A tool's result sent back to the model."""

    id: str | None = None
    response: Any


class BlobPart(msgspec.Struct, tag_field="type", tag="blob", kw_only=True, omit_defaults=True, gc=False):
    """Inline data (a data URL, base64 audio): ``content`` is the base64 text as received."""

    modality: str  # image | video | audio | document
    mime_type: str | None = None
    content: str


class FilePart(msgspec.Struct, tag_field="type", tag="file", kw_only=True, omit_defaults=True, gc=False):
    """A file uploaded to the provider beforehand, referenced by id."""

    modality: str
    mime_type: str | None = None
    file_id: str


class UriPart(msgspec.Struct, tag_field="type", tag="uri", kw_only=True, omit_defaults=True, gc=False):
    """Data referenced by URI (never a data URL: that is a :class:`BlobPart`)."""

    modality: str
    mime_type: str | None = None
    uri: str


class ReasoningPart(msgspec.Struct, tag_field="type", tag="reasoning", gc=False):
    """Reasoning / thinking text the model returned."""

    content: str


# The generic part: ``{"type": <str>, ...}`` for anything else (a refusal, a provider's own block).
Part = (
    TextPart
    | ToolCallRequestPart
    | ToolCallResponsePart
    | BlobPart
    | FilePart
    | UriPart
    | ReasoningPart
    | dict[str, Any]
)


class InputMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of ``gen_ai.input.messages``, in the order it was sent."""

    role: str
    parts: list[Part]
    name: str | None = None


class OutputMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One choice of ``gen_ai.output.messages``; ``finish_reason`` is required by the schema."""

    role: str
    parts: list[Part]
    name: str | None = None
    finish_reason: str


class ToolDefinition(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of ``gen_ai.tool.definitions``: the flat shape, not OpenAI's nested one."""

    type: str
    name: str
    description: str | None = None
    parameters: Any = None


class Content(msgspec.Struct, kw_only=True):
    """The content of one model call; ``None`` where the API had nothing of the kind."""

    input_messages: list[InputMessage] | None = None
    system_instructions: list[Part] | None = None
    tool_definitions: list[ToolDefinition] | None = None
    output_messages: list[OutputMessage] | None = None


def generic(value: Any, fallback_type: str = "unknown") -> dict[str, Any]:
    """The spec's generic part for ``value``: the object itself when it names its ``type``."""
    if isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"]:
        return value
    degraded("part")
    return {"type": fallback_type, "value": value}
