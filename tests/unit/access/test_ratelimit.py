"""Rate-limit arithmetic with a fake clock: windows, token charging, headers, retry-after, deltas."""

from __future__ import annotations

import pytest

from gateway.access.config import RateLimitRule, RateLimitWhen
from gateway.access.credentials import Principal
from gateway.access.ratelimit import NO_LIMIT, SEP, RateLimiter
from gateway.errors import RateLimited

ALICE = Principal("user:alice", ["ml"])
BOB = Principal("user:bob")
T0 = 6000.0  # a minute boundary


def rule(rid: str = "r", limit: int = 3, unit: str = "requests_per_minute", **kw: object) -> RateLimitRule:
    when = kw.pop("when", RateLimitWhen())
    return RateLimitRule(id=rid, limit_to=limit, unit=unit, when=when, **kw)  # type: ignore[arg-type]


def test_requests_limit_and_headers() -> None:
    lim = RateLimiter([rule(rate_limit_applies_per=["user"])])
    got = [lim.admit(ALICE, "p/m", {}, T0 + i).remaining for i in range(3)]
    assert got == [2, 1, 0]
    a = lim.admit(BOB, "p/m", {}, T0 + 3)  # separate key per user
    assert a.headers == [("x-ratelimit-limit-requests", "3"), ("x-ratelimit-remaining-requests", "2")]
    assert a.rule_ids == ["r"]
    with pytest.raises(RateLimited) as err:
        lim.admit(ALICE, "p/m", {}, T0 + 10)
    e = err.value
    assert e.status == 429 and "'r'" in e.message
    h = dict(e.headers)
    assert h["x-ratelimit-limit-requests"] == "3" and h["x-ratelimit-remaining-requests"] == "0"
    # cur=3 in [T0, T0+60): the estimate drops to 2 at 1/3 into the next window -> T0+80, 70 s away
    assert h["retry-after"] == "70"


def test_window_rolls_over_with_sliding_estimate() -> None:
    lim = RateLimiter([rule(limit=10)])
    for i in range(10):
        lim.admit(ALICE, "p/m", {}, T0 + i)
    with pytest.raises(RateLimited):
        lim.admit(ALICE, "p/m", {}, T0 + 59)
    # half into the next window the previous one still weighs 5
    assert lim.usage("r", T0 + 90) == pytest.approx(5.0)
    for _ in range(5):
        lim.admit(ALICE, "p/m", {}, T0 + 90)
    with pytest.raises(RateLimited) as err:
        lim.admit(ALICE, "p/m", {}, T0 + 90.5)
    assert int(dict(err.value.headers)["retry-after"]) >= 1
    # two windows later everything is forgotten
    assert lim.admit(ALICE, "p/m", {}, T0 + 185).remaining == 9


def test_retry_after_is_honest() -> None:
    lim = RateLimiter([rule(limit=5)])
    for _ in range(5):
        lim.admit(ALICE, "p/m", {}, T0 + 30)
    with pytest.raises(RateLimited) as err:
        lim.admit(ALICE, "p/m", {}, T0 + 30)
    wait = int(dict(err.value.headers)["retry-after"])
    with pytest.raises(RateLimited):
        lim.admit(ALICE, "p/m", {}, T0 + 30 + wait - 2)
    lim.admit(ALICE, "p/m", {}, T0 + 30 + wait)


def test_tokens_checked_on_admission_charged_later() -> None:
    lim = RateLimiter([rule(limit=1000, unit="tokens_per_hour", rate_limit_applies_per=["user", "model"])])
    a = lim.admit(ALICE, "p/m", {}, T0)
    assert a.headers == [("x-ratelimit-limit-tokens", "1000"), ("x-ratelimit-remaining-tokens", "1000")]
    b = lim.admit(ALICE, "p/m", {}, T0)  # concurrent request: admitted, nothing spent yet
    a.charge_tokens(600, T0 + 1)
    b.charge_tokens(500, T0 + 2)
    with pytest.raises(RateLimited) as err:
        lim.admit(ALICE, "p/m", {}, T0 + 3)
    assert dict(err.value.headers)["x-ratelimit-remaining-tokens"] == "0"
    assert "tokens per hour" in err.value.message
    lim.admit(ALICE, "p/other", {}, T0 + 3)  # per model
    assert lim.usage(a.key, T0 + 3) == 1100


def test_first_matching_rule_applies() -> None:
    lim = RateLimiter(
        [
            rule("prod", 1, when=RateLimitWhen(metadata={"env": "prod"})),
            rule("ml", 2, when=RateLimitWhen(subjects=["team:ml"], models=["p/*"])),
        ]
    )
    assert lim.admit(ALICE, "p/m", {"env": "prod"}, T0).rule_id == "prod"
    assert lim.admit(ALICE, "p/m", {"env": "dev"}, T0).rule_id == "ml"
    assert lim.admit(ALICE, "q/m", {}, T0) is NO_LIMIT
    assert lim.admit(BOB, "p/m", {}, T0) is NO_LIMIT
    assert NO_LIMIT.headers == [] and NO_LIMIT.rule_ids == []
    NO_LIMIT.charge_tokens(10, T0)  # harmless


def test_metadata_key_and_zero_limit() -> None:
    lim = RateLimiter([rule("per-tenant", 1, rate_limit_applies_per=["metadata.tenant"])])
    lim.admit(ALICE, "p/m", {"tenant": "a"}, T0)
    lim.admit(BOB, "p/m", {"tenant": "b"}, T0)
    with pytest.raises(RateLimited):
        lim.admit(BOB, "p/m", {"tenant": "a"}, T0)
    blocked = RateLimiter([rule("none", 0)])
    with pytest.raises(RateLimited) as err:
        blocked.admit(ALICE, "p/m", {}, T0)
    assert dict(err.value.headers)["retry-after"] == "60"


def test_deltas_round_trip() -> None:
    a, b = RateLimiter([rule(limit=4)]), RateLimiter([rule(limit=4)])
    assert a.take_deltas() == []  # not tracked until fleet sync enables it
    a.track_deltas = b.track_deltas = True
    a.admit(ALICE, "p/m", {}, T0)
    a.admit(ALICE, "p/m", {}, T0 + 1)
    a.admit(ALICE, "p/m", {}, T0 + 61)  # next window: the old pending amount spills
    deltas = a.take_deltas()
    assert sorted(deltas) == [("r", 6000, 2), ("r", 6060, 1)]
    assert a.take_deltas() == []
    b.apply_remote(deltas)
    b.apply_remote([("unknown-rule", 6060, 5), ("r", 5940, 100)])  # ignored: unknown rule, too old
    assert b.usage("r", T0 + 61) == pytest.approx(2 * (1 - 1 / 60) + 1)
    b.admit(ALICE, "p/m", {}, T0 + 61)
    with pytest.raises(RateLimited):
        b.admit(ALICE, "p/m", {}, T0 + 61)
    assert b.take_deltas() == [("r", 6060, 1)]  # remote amounts are never re-published


def test_hot_hook_and_key_format() -> None:
    lim = RateLimiter([rule(limit=100, rate_limit_applies_per=["user", "model"])])
    lim.track_deltas = True
    calls: list[int] = []
    lim.on_hot = lambda: calls.append(1)
    a = lim.admit(ALICE, "p/m", {}, T0)
    assert a.key == SEP.join(["r", "user:alice", "p/m"])
    for _ in range(8):
        lim.admit(ALICE, "p/m", {}, T0)
    assert calls == []  # 9 unpublished of 91 left: not yet
    lim.admit(ALICE, "p/m", {}, T0)
    assert len(calls) == 1  # 10 unpublished >= 10 % of the 90 left
    lim.take_deltas()
    lim.admit(ALICE, "p/m", {}, T0)
    assert len(calls) == 1
    lim.apply_remote([(a.key, 6000, 85)])  # others used most of it: every charge is now urgent
    lim.admit(ALICE, "p/m", {}, T0)
    assert len(calls) == 2


def test_sweep_and_inherit() -> None:
    old = RateLimiter([rule(limit=2, rate_limit_applies_per=["user"])])
    old.admit(ALICE, "p/m", {}, T0)
    old.admit(BOB, "p/m", {}, T0)
    new = RateLimiter([rule(limit=2, rate_limit_applies_per=["user"])])
    new.inherit(old)
    old.apply_remote([("r" + SEP + "user:alice", 6000, 5)])  # retired: remote deltas not added twice
    new.admit(ALICE, "p/m", {}, T0 + 1)
    with pytest.raises(RateLimited):
        new.admit(ALICE, "p/m", {}, T0 + 2)
    assert new.sweep(T0 + 60) == 0
    assert new.sweep(T0 + 120) == 2
    other = RateLimiter([rule(limit=2, unit="requests_per_hour", rate_limit_applies_per=["user"])])
    other.inherit(old)  # same id, different window: counts not carried over
    assert other.usage("r" + SEP + "user:alice", T0) == 0


def test_snapshot_merge_takes_the_largest_view() -> None:
    a = RateLimiter([rule(limit=10)])
    for _ in range(4):
        a.admit(ALICE, "p/m", {}, T0 + 61)
    rows = a.snapshot()
    assert rows == [("r", 6060, 0, 4)]
    b = RateLimiter([rule(limit=10)])
    b.admit(ALICE, "p/m", {}, T0 + 61)
    b.merge_snapshot([*rows, ("r", 6060, 0, 3), ("r", 6000, 0, 9), ("gone", 6060, 0, 9)])
    assert b.usage("r", T0 + 61) == pytest.approx(9 * (1 - 1 / 60) + 4)
