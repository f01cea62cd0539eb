"""A strict reading of the GenAI content attributes, written from the semconv JSON schemas.

``gen-ai-input-messages.json``, ``gen-ai-output-messages.json``,
``gen-ai-system-instructions.json`` and the tool definitions schema (semconv v1.41.1): required
fields present, types right, generic parts only ``{"type": <str>, ...}``. Written by hand from
the schemas' ``required`` lists rather than from the gateway's Structs, so the tests do not
check the code against itself.
"""

from __future__ import annotations

import json
from typing import Any

_STR = (str,)
_OPT_STR = (str, type(None))
# part type -> {field: allowed types}; every listed field is required unless its types allow None
# and it is absent. "any" means present with any JSON value.
_PARTS: dict[str, dict[str, Any]] = {
    "text": {"content": _STR},
    "reasoning": {"content": _STR},
    "tool_call": {"name": _STR, "id?": _OPT_STR},
    "tool_call_response": {"response": "any", "id?": _OPT_STR},
    "blob": {"modality": _STR, "content": _STR, "mime_type?": _OPT_STR},
    "file": {"modality": _STR, "file_id": _STR, "mime_type?": _OPT_STR},
    "uri": {"modality": _STR, "uri": _STR, "mime_type?": _OPT_STR},
    "server_tool_call": {"name": _STR, "server_tool_call": (dict,), "id?": _OPT_STR},
    "server_tool_call_response": {"server_tool_call_response": (dict,), "id?": _OPT_STR},
}


def check_part(part: Any) -> str:
    """Assert one part is valid; returns its type."""
    assert isinstance(part, dict), part
    kind = part.get("type")
    assert isinstance(kind, str) and kind, part
    for field, types in _PARTS.get(kind, {}).items():
        optional = field.endswith("?")
        name = field.rstrip("?")
        if name not in part:
            assert optional, f"{kind} part without {name}: {part}"
            continue
        if types != "any":
            assert isinstance(part[name], types), f"{kind}.{name} has type {type(part[name]).__name__}"
    if kind == "blob":
        assert not part["content"].startswith("data:"), "a blob holds the base64 data, not the data URL"
    if kind == "uri":
        assert not part["uri"].startswith("data:"), "a data URL must be a blob part"
    return kind


def _check_message(m: Any, output: bool) -> list[str]:
    assert isinstance(m, dict), m
    assert isinstance(m.get("role"), str) and m["role"], m
    assert isinstance(m.get("parts"), list), m
    if "name" in m:
        assert isinstance(m["name"], _OPT_STR)
    if output:
        assert isinstance(m.get("finish_reason"), str), f"output message without finish_reason: {m}"
    return [check_part(p) for p in m["parts"]]


def input_messages(text: str) -> list[dict[str, Any]]:
    """Decode and check ``gen_ai.input.messages``."""
    doc = json.loads(text)
    assert isinstance(doc, list)
    for m in doc:
        _check_message(m, output=False)
    return doc


def output_messages(text: str) -> list[dict[str, Any]]:
    """Decode and check ``gen_ai.output.messages``."""
    doc = json.loads(text)
    assert isinstance(doc, list)
    for m in doc:
        _check_message(m, output=True)
    return doc


def system_instructions(text: str) -> list[dict[str, Any]]:
    """Decode and check ``gen_ai.system_instructions`` (a list of parts)."""
    doc = json.loads(text)
    assert isinstance(doc, list)
    for p in doc:
        check_part(p)
    return doc


def tool_definitions(text: str) -> list[dict[str, Any]]:
    """Decode and check ``gen_ai.tool.definitions`` (the flat shape)."""
    doc = json.loads(text)
    assert isinstance(doc, list)
    for t in doc:
        assert isinstance(t, dict) and isinstance(t.get("type"), str) and isinstance(t.get("name"), str), t
        assert "function" not in t, "OpenAI's nested shape, not the flat one"
        if "description" in t:
            assert isinstance(t["description"], str)
        if "parameters" in t:
            assert isinstance(t["parameters"], dict)
    return doc


CHECKS = {
    "gen_ai.input.messages": input_messages,
    "gen_ai.output.messages": output_messages,
    "gen_ai.system_instructions": system_instructions,
    "gen_ai.tool.definitions": tool_definitions,
}


def check_attributes(attrs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Check every content attribute present and the Logfire schema naming them; return them decoded."""
    found = {k: CHECKS[k](attrs[k]) for k in CHECKS if k in attrs}
    if found:
        schema = json.loads(attrs["logfire.json_schema"])
        assert schema["type"] == "object"
        assert schema["properties"] == {k: {"type": "array"} for k in found}
    return found
