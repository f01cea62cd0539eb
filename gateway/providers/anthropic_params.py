"""The chat completions parameters beyond messages and tools, for an Anthropic target.

:func:`apply_params` is the audit the translator runs on every request: each top-level field of
a chat completions request is mapped here or in :func:`gateway.providers.anthropic.to_anthropic_request`,
or refused with a 400 naming it. Nothing is dropped without a reason written down below.

    translated   response_format json_schema/json_object → a forced tool whose input is the
                 answer (:data:`~gateway.providers.anthropic.JSON_TOOL`; the response carries it
                 as message content); reasoning_effort → thinking with a token budget;
                 service_tier auto/default → auto/standard_only; top_k; safety_identifier →
                 metadata.user_id (when ``user`` is absent)
    no effect    logprobs false, top_logprobs 0, penalties 0, modalities ["text"], store false,
                 response_format text, prompt_cache_key (a routing hint for OpenAI's cache;
                 Anthropic caches by cache_control), metadata (OpenAI keeps it with stored
                 completions only, and nothing is stored here)
    refused      logprobs, top_logprobs, frequency_penalty, presence_penalty, seed, logit_bias,
                 audio and audio modalities, prediction, web_search_options, verbosity,
                 store true, functions/function_call (legacy: use tools), and unknown fields
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest

__all__ = ["HANDLED", "THINKING_BUDGETS", "apply_params"]

# Fields to_anthropic_request maps itself.
HANDLED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user", "n",
    }
)  # fmt: skip
# reasoning_effort → thinking.budget_tokens (Anthropic's minimum budget is 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
_NO_EFFECT = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "store": (False,),
}
_IGNORED = frozenset({"prompt_cache_key", "metadata"})


def _refuse(field: str, why: str = "") -> InvalidRequest:
    return InvalidRequest(
        f"'{field}' is not supported by anthropic models{': ' + why if why else ''}",
        param=field,
        code="unsupported_parameter",
    )


def apply_params(body: Mapping[str, Any], out: dict[str, Any], json_tool: str) -> None:
    """Map every field of ``body`` that ``to_anthropic_request`` does not, into ``out``.

    Raises:
        InvalidRequest: a field Anthropic cannot honour (``param`` names it).
    """
    for key, value in body.items():
        if key in HANDLED or value is None or key in _IGNORED:
            continue
        if key in _NO_EFFECT:
            if value not in _NO_EFFECT[key]:
                raise _refuse(key, "the model cannot honour it")
        elif key == "response_format":
            _response_format(value, out, json_tool)
        elif key == "reasoning_effort":
            _reasoning(value, body, out)
        elif key == "service_tier":
            if value not in ("auto", "default"):
                raise _refuse(key, f"{value!r} has no Anthropic equivalent (use auto or default)")
            out["service_tier"] = "auto" if value == "auto" else "standard_only"
        elif key == "top_k":
            out["top_k"] = value
        elif key == "safety_identifier":
            out.setdefault("metadata", {"user_id": value})
        elif key == "modalities":
            if value != ["text"]:
                raise _refuse(key, "anthropic models answer in text only")
        else:
            raise _refuse(key)


def _response_format(value: Any, out: dict[str, Any], json_tool: str) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind not in ("json_object", "json_schema"):
        raise InvalidRequest(f"'response_format.type' {kind!r} is not valid", param="response_format")
    if out.get("tools"):
        # The answer comes from a forced tool: it cannot be combined with the client's own.
        raise _refuse("response_format", "it cannot be combined with tools through an anthropic model")
    schema: Any = {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object schema for anthropic models",
                param="response_format.json_schema.schema",
            )
    out["tools"] = [
        {"name": json_tool, "description": "Respond with the JSON answer.", "input_schema": schema}
    ]
    out["tool_choice"] = {"type": "tool", "name": json_tool}


def _reasoning(value: Any, body: Mapping[str, Any], out: dict[str, Any]) -> None:
    if value == "none":
        return
    budget = THINKING_BUDGETS.get(value)
    if budget is None:
        raise InvalidRequest(f"'reasoning_effort' {value!r} is not valid", param="reasoning_effort")
    if out.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise _refuse("reasoning_effort", "thinking cannot be combined with a forced tool or response_format")
    if body.get("max_completion_tokens") or body.get("max_tokens"):
        # OpenAI counts reasoning inside max_completion_tokens; Anthropic wants the budget below it.
        limit = out["max_tokens"]
        if limit <= 1024:
            raise _refuse(
                "reasoning_effort", "max_completion_tokens must exceed 1024 to leave room for thinking"
            )
        budget = min(budget, limit - 1)
    else:
        out["max_tokens"] = budget + out["max_tokens"]
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
