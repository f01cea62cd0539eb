"""OpenAI chat completion bodies and stream chunks shaped as the real API sends them.

Pure (no server): ``bench/mock_upstream.py`` serves these, ``bench/micro_relay.py`` feeds them to
the relay. Shapes follow what ``api.openai.com`` returns today for ``/v1/chat/completions``:

- every chunk carries ``service_tier``, ``system_fingerprint``, ``logprobs: null`` in its choice,
  and a random-length ``obfuscation`` string (padding against length side channels);
- once the request sets ``stream_options.include_usage`` (the gateway always does), every chunk
  also carries ``"usage": null``, and a final chunk with ``"choices": []`` carries the usage
  object (with its ``*_tokens_details``);
- one token per content chunk, after a first chunk with the role, ``content: ""`` and
  ``refusal: null``; then a chunk with an empty delta and the ``finish_reason``.

The ids, timestamps and obfuscation strings are deterministic, so runs are comparable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgspec

_json = msgspec.json.Encoder()

ID = "chatcmpl-mock"  # short: tests of every branch look for it (real ids are ~38 characters)
CREATED = 1_741_570_283
FINGERPRINT = "fp_07871e2ad8"
SERVICE_TIER = "default"
_OBFUSCATION = [
    "".join(
        random.Random(i).choices(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=4 + i % 12
        )
    )
    for i in range(64)
]


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """``usage`` as the API reports it, details included."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_body(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    """A non-streamed ``chat.completion``."""
    return _json.encode(
        {
            "id": ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage_object(prompt_tokens, completion_tokens),
            "service_tier": SERVICE_TIER,
            "system_fingerprint": FINGERPRINT,
        }
    )


def chunk(model: str, n: int, choices: list[dict[str, Any]], usage: Any, with_usage: bool) -> bytes:
    """One ``data:`` event; ``n`` picks the obfuscation string."""
    payload: dict[str, Any] = {
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": SERVICE_TIER,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    if with_usage:
        payload["usage"] = usage
    payload["obfuscation"] = _OBFUSCATION[n % len(_OBFUSCATION)]
    return b"data: " + _json.encode(payload) + b"\n\n"


def _choice(delta: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


def chat_stream(
    model: str, tokens: list[str], prompt_tokens: int, include_usage: bool, role_chunk: bool = True
) -> Iterator[bytes]:
    """The events of a streamed answer, ``data: [DONE]`` included."""
    n = 0
    if role_chunk:
        yield chunk(
            model,
            n,
            _choice({"role": "assistant", "content": "", "refusal": None}, None),
            None,
            include_usage,
        )
        n += 1
    for token in tokens:
        yield chunk(model, n, _choice({"content": token}, None), None, include_usage)
        n += 1
    yield chunk(model, n, _choice({}, "stop"), None, include_usage)
    if include_usage:
        yield chunk(model, n + 1, [], usage_object(prompt_tokens, len(tokens)), True)
    yield b"data: [DONE]\n\n"
