"""A chat completion's output messages and response info in one typed decode (the common shape).

:func:`gateway.telemetry.genai.openai.chat_output` and ``chat_response_info`` read any response
from a generic decode, field by field, defensively; for the usual answer (text choices, no tool
calls, refusal, audio or reasoning) that costs ~56,000 instructions per response under callgrind,
more than a third of the exporter's work on a chat trace. :func:`chat_response` decodes the body
once into the :class:`_Completion` view and builds the same values directly (~4x cheaper), and
returns ``None`` for anything else, which the caller then maps the general way: a body that is
not an object of this shape, a choice whose message carries more than a role and text content.
``tests/unit/test_genai_fast_paths.py`` compares both ways on every response shape the tests know.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.telemetry.genai.common import DECODE_ERRORS, ResponseInfo, finish_reason
from gateway.telemetry.genai.parts import OutputMessage, Part, TextPart

__all__ = ["chat_response", "usage_info"]


class _Message(msgspec.Struct, gc=False):
    # Any: decoding never fails on a field's type; the checks below decide, as the general path.
    role: Any = None
    content: Any = None
    refusal: Any = None
    reasoning_content: Any = None
    tool_calls: Any = None
    function_call: Any = None
    audio: Any = None


class _Choice(msgspec.Struct, gc=False):
    index: Any = None
    message: _Message | None = None
    finish_reason: Any = None


class _Completion(msgspec.Struct, gc=False):
    id: Any = None
    model: Any = None
    choices: list[_Choice] | None = None
    usage: Any = None
    system_fingerprint: Any = None
    service_tier: Any = None


_decode = msgspec.json.Decoder(_Completion).decode


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def usage_info(usage: Any) -> dict[str, int | None]:
    """Token counts of a chat ``usage`` object (prompt/completion, else input/output names)."""
    if not isinstance(usage, dict):
        usage = {}
    inp = _int(usage.get("prompt_tokens"))
    out = _int(usage.get("completion_tokens"))
    if inp is None:  # embeddings name them as the Responses API does
        inp = _int(usage.get("input_tokens"))
    if out is None:
        out = _int(usage.get("output_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": _int(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, dict)
        else None,
        "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else None,
    }


def chat_response(body: bytes | str) -> tuple[list[OutputMessage] | None, ResponseInfo] | None:
    """``(output messages, response info)`` of a chat completion body, or ``None`` when its shape
    is not the common one (the caller then maps it with the general functions)."""
    try:
        doc = _decode(body)
    except (*DECODE_ERRORS, UnicodeDecodeError):
        return None
    choices = doc.choices
    outputs: list[OutputMessage] | None = None
    if choices:
        outputs = []
        for choice in choices if len(choices) == 1 else sorted(choices, key=_index):
            m = choice.message
            if m is None:
                return None
            role = m.role
            content = m.content
            if (
                (role is not None and not isinstance(role, str))
                or role == "tool"
                or role == "function"
                or (content is not None and not isinstance(content, str))
                or m.refusal is not None
                or m.reasoning_content is not None
                or m.tool_calls is not None
                or m.function_call is not None
                or m.audio is not None
            ):
                return None
            parts: list[Part] = [TextPart(content)] if content is not None else []
            outputs.append(
                OutputMessage(
                    role=role or "assistant", parts=parts, finish_reason=finish_reason(choice.finish_reason)
                )
            )
    info = ResponseInfo(
        id=_str(doc.id),
        model=_str(doc.model),
        finish_reasons=[c.finish_reason for c in choices or () if _str(c.finish_reason)],
        system_fingerprint=_str(doc.system_fingerprint),
        service_tier=_str(doc.service_tier),
        **usage_info(doc.usage),
    )
    return outputs, info


def _index(choice: _Choice) -> int:
    return _int(choice.index) or 0
