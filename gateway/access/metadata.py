"""The ``x-tfy-metadata`` header: a JSON object of string → string, parsed once per request.

Rules match on it (``when.metadata``, ``rate_limit_applies_per: [metadata.<key>]``) and spans carry
it. It is bounded so that a client cannot make rule keys or span attributes grow without limit.
"""

from __future__ import annotations

import msgspec

from gateway.errors import InvalidRequest

__all__ = ["HEADER", "MAX_HEADER_BYTES", "MAX_KEYS", "MAX_VALUE_CHARS", "parse_metadata"]

HEADER = "x-tfy-metadata"
MAX_KEYS = 32
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 128
MAX_HEADER_BYTES = 8192

_decode = msgspec.json.Decoder(dict[str, str]).decode


def parse_metadata(value: str | None) -> dict[str, str]:
    """The header as a dict; empty when absent.

    Raises:
        InvalidRequest: not a JSON object of strings, too many keys, or a value over 128 chars.
    """
    if not value:
        return {}
    if len(value) > MAX_HEADER_BYTES:
        raise InvalidRequest(f"{HEADER} header is longer than {MAX_HEADER_BYTES} bytes", param=HEADER)
    try:
        meta = _decode(value)
    except msgspec.ValidationError:
        raise InvalidRequest(
            f"{HEADER} header must be a JSON object whose values are strings", param=HEADER
        ) from None
    except msgspec.DecodeError:
        raise InvalidRequest(f"{HEADER} header is not valid JSON", param=HEADER) from None
    if len(meta) > MAX_KEYS:
        raise InvalidRequest(f"{HEADER} header has more than {MAX_KEYS} keys", param=HEADER)
    for k, v in meta.items():
        if not k or len(k) > MAX_KEY_CHARS:
            raise InvalidRequest(f"{HEADER} keys must be 1 to {MAX_KEY_CHARS} characters", param=HEADER)
        if len(v) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"{HEADER} value of {k!r} is longer than {MAX_VALUE_CHARS} characters", param=HEADER
            )
    return meta
