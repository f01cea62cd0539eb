"""Query-string parameters of ``/api/v1`` → typed queries (pure): every bad value is a 400 naming it.

```
TraceQuery   GET /api/v1/traces, /api/v1/traces/export   filters + limit + cursor
StatsQuery   GET /api/v1/stats                             filters + bucket + group_by
```
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

__all__ = [
    "BadParam",
    "Filters",
    "StatsQuery",
    "TraceQuery",
    "parse_stats",
    "parse_traces",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_EXPORT: Final = 100_000
MAX_BUCKETS: Final = 500
GROUPS: Final = ("model", "target", "subject", "team", "status", "span_type", "provider")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FILTERS: Final = (
    "since", "until", "model", "target", "subject", "team", "status", "error_code", "span_type",
    "min_latency_ms", "q",
)  # fmt: skip
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class BadParam(ValueError):
    """A query parameter that cannot be used; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


class Filters(msgspec.Struct, kw_only=True):
    """What every list, export and stats query filters on (all optional)."""

    since_us: int | None = None
    until_us: int | None = None
    model: str | None = None
    target: str | None = None
    subject: str | None = None
    team: str | None = None
    status: str | None = None  # "200", "4xx", "5xx", "error", "ok"
    error_code: str | None = None
    span_type: str | None = None
    min_latency_ms: float | None = None
    q: str | None = None
    metadata: dict[str, str] = {}


class TraceQuery(msgspec.Struct, kw_only=True):
    filters: Filters
    limit: int = DEFAULT_LIMIT
    cursor: tuple[int, str] | None = None  # (ts, trace_id) of the last row already seen


class StatsQuery(msgspec.Struct, kw_only=True):
    filters: Filters
    bucket_s: int
    group_by: Literal["model", "target", "subject", "team", "status", "span_type", "provider"] | None = None


def parse_time(value: str, param: str, now: float | None = None) -> int:
    """Epoch microseconds from ISO 8601, epoch seconds, or a duration ago (``15m``, ``24h``, ``7d``)."""
    value = value.strip()
    m = _DURATION.match(value)
    if m:
        now = time.time() if now is None else now
        return int((now - int(m.group(1)) * _UNITS[m.group(2)]) * 1_000_000)
    try:
        return int(float(value) * 1_000_000)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(
            param, "expected an ISO 8601 time, epoch seconds or a duration like 15m, 24h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1_000_000)


def encode_cursor(ts: int, trace_id: str) -> str:
    """An opaque cursor for the row after which the next page starts."""
    return base64.urlsafe_b64encode(f"{ts}:{trace_id}".encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        ts, trace_id = raw.split(":", 1)
        if not re.fullmatch(r"[0-9a-f]{32}", trace_id):
            raise ValueError
        return int(ts), trace_id
    except (ValueError, UnicodeDecodeError):
        raise BadParam("cursor", "not a cursor returned by this API") from None


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParam(name, "given more than once")
    return values[0]


def _text_param(params: dict[str, list[str]], name: str, max_len: int = 256) -> str | None:
    value = _one(params, name)
    if value is None or value == "":
        return None
    if len(value) > max_len:
        raise BadParam(name, f"longer than {max_len} characters")
    return value


def _filters(params: dict[str, list[str]], now: float | None) -> Filters:
    f = Filters()
    since, until = _one(params, "since"), _one(params, "until")
    if since:
        f.since_us = parse_time(since, "since", now)
    if until:
        f.until_us = parse_time(until, "until", now)
    if f.since_us is not None and f.until_us is not None and f.since_us > f.until_us:
        raise BadParam("since", "is after until")
    f.model = _text_param(params, "model")
    f.target = _text_param(params, "target")
    f.subject = _text_param(params, "subject")
    f.team = _text_param(params, "team")
    f.error_code = _text_param(params, "error_code")
    f.span_type = _text_param(params, "span_type", 64)
    f.q = _text_param(params, "q", 200)
    status = _text_param(params, "status", 8)
    if status is not None:
        if not (re.fullmatch(r"[1-5](\d\d|xx)", status) or status in ("ok", "error")):
            raise BadParam("status", "expected an HTTP status (404), a class (4xx) or ok / error")
        f.status = status
    lat = _one(params, "min_latency_ms")
    if lat:
        try:
            f.min_latency_ms = float(lat)
        except ValueError:
            raise BadParam("min_latency_ms", "expected a number of milliseconds") from None
        if not 0 <= f.min_latency_ms < 1e9:
            raise BadParam("min_latency_ms", "out of range")
    for name, values in params.items():
        if name.startswith("metadata."):
            key = name[len("metadata.") :]
            if not _METADATA_KEY.match(key):
                raise BadParam(name, "metadata keys are 1-64 characters of letters, digits, _ . -")
            value = _text_param(params, name)
            if value is not None:
                f.metadata[key] = value
            if len(values) > 1:
                raise BadParam(name, "given more than once")
    if len(f.metadata) > 8:
        raise BadParam("metadata", "at most 8 metadata filters")
    return f


def _check_known(params: dict[str, list[str]], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for name in params:
        if name not in allowed and not name.startswith("metadata."):
            raise BadParam(name, "unknown parameter")


def parse_traces(
    params: dict[str, list[str]], *, export: bool = False, now: float | None = None
) -> TraceQuery:
    """A list (or export) query; raises :class:`BadParam`."""
    _check_known(params, (*_FILTERS, "limit", "cursor"))
    query = TraceQuery(filters=_filters(params, now))
    cap = MAX_EXPORT if export else MAX_LIMIT
    limit = _one(params, "limit")
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= cap:
            raise BadParam("limit", f"expected an integer from 1 to {cap}")
        query.limit = int(limit)
    elif export:
        query.limit = 10_000
    cursor = _one(params, "cursor")
    if cursor:
        query.cursor = _decode_cursor(cursor)
    return query


def parse_stats(params: dict[str, list[str]], now: float | None = None) -> StatsQuery:
    """A stats query (default: the last 24 h in hourly buckets); raises :class:`BadParam`."""
    _check_known(params, (*_FILTERS, "bucket", "group_by"))
    filters = _filters(params, now)
    now_us = int((time.time() if now is None else now) * 1_000_000)
    if filters.since_us is None:
        filters.since_us = now_us - 86_400_000_000
    span_s = ((filters.until_us or now_us) - filters.since_us) / 1e6
    bucket = _one(params, "bucket")
    if bucket:
        m = _DURATION.match(bucket)
        if not m or int(m.group(1)) == 0:
            raise BadParam("bucket", "expected a duration like 1m, 1h, 1d")
        bucket_s = int(m.group(1)) * _UNITS[m.group(2)]
    else:  # about 60 buckets over the range, on a round step
        steps = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
        bucket_s = next((s for s in steps if span_s / s <= 96), steps[-1])
    if span_s / bucket_s > MAX_BUCKETS:
        raise BadParam("bucket", f"more than {MAX_BUCKETS} buckets over the time range")
    group = _one(params, "group_by")
    if group is not None and group not in GROUPS:
        raise BadParam("group_by", f"expected one of {', '.join(GROUPS)}")
    return StatsQuery(filters=filters, bucket_s=bucket_s, group_by=group)  # type: ignore[arg-type]
