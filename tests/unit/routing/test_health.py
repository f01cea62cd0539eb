"""Circuit breaker and sliding-window statistics, driven by a hand-moved clock."""

from __future__ import annotations

from gateway.routing import BreakerPolicy, TargetHealth

POLICY = BreakerPolicy(
    consecutive_failures=3, failure_ratio=0.5, min_calls=10, cooldown_s=30, max_cooldown_s=100
)


def test_opens_after_consecutive_failures_then_half_opens_and_closes() -> None:
    h = TargetHealth(POLICY)
    now = 0.0
    for _ in range(2):
        h.record(False, None, now)
    assert h.state(now) == "closed" and h.available(now)
    h.record(False, None, now)
    assert h.state(now) == "open" and not h.available(now)
    assert not h.available(now + 29.9)
    now += 30
    assert h.state(now) == "half-open" and h.available(now)
    h.take_probe(now)  # one trial request at a time
    assert not h.available(now + 1)
    h.record(True, 0.01, now + 1)
    assert h.state(now + 1) == "closed" and h.available(now + 1)
    assert h.failures() == 0  # history from before the outage is gone


def test_failed_probe_reopens_with_a_longer_cool_down() -> None:
    h = TargetHealth(POLICY)
    for _ in range(3):
        h.record(False, None, 0.0)
    h.record(False, None, 30.0)  # the half-open probe fails
    assert h.state(30.0) == "open"
    assert h.state(89.9) == "open" and h.state(90.0) == "half-open"  # 60 s now
    h.record(False, None, 90.0)
    assert h.state(189.9) == "open" and h.state(190.0) == "half-open"  # capped at 100 s
    h.record(True, 0.5, 190.0)
    assert h.state(190.0) == "closed"
    for _ in range(3):
        h.record(False, None, 200.0)
    assert h.state(229.9) == "open" and h.state(230.0) == "half-open"  # back to the base


def test_failure_ratio_opens_without_a_failure_streak() -> None:
    h = TargetHealth(POLICY)
    for i in range(10):
        h.record(i % 2 == 0, 0.1, float(i))  # alternate: never 3 in a row
    assert h.state(10.0) == "open"


def test_late_results_while_open_do_not_close_it() -> None:
    h = TargetHealth(POLICY)
    for _ in range(3):
        h.record(False, None, 0.0)
    h.record(True, 0.1, 5.0)  # a request sent before the breaker opened
    assert h.state(5.0) == "open"


def test_score_is_a_mean_over_time_and_call_windows() -> None:
    h = TargetHealth(BreakerPolicy(window_s=60, window_calls=4))
    assert h.score(0.0) is None
    for i, s in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        h.record(True, s, float(i))
    assert h.score(5.0) == 3.5  # the last 4 calls: 2, 3, 4, 5
    assert h.calls() == 4
    assert h.score(61.5) == 4.0  # the sample of t=1 left the 60 s window
    assert h.score(63.5) == 5.0
    assert h.score(64.5) is None  # no recent data at all


def _record_by_prune_and_refresh(h: TargetHealth, ok: bool, score: float | None, now: float) -> None:
    """``record`` as it was before its hot path was inlined: the reference."""
    h._prune(now, room=1)
    s = score if ok and score is not None and score >= 0 else -1.0
    h._samples.append((now, ok, s))
    if s >= 0:
        h._score_sum += s
        h._n_score += 1
    h._refresh()
    if ok:
        h.consecutive_failures = 0
    else:  # the breaker never trips under the test's policy
        h._n_fail += 1
        h.consecutive_failures += 1


def test_record_statistics_equal_prune_then_refresh() -> None:
    import random

    rng = random.Random(7)
    policy = BreakerPolicy(window_s=5.0, window_calls=30, consecutive_failures=10**6, min_calls=10**6)
    fast, ref = TargetHealth(policy), TargetHealth(policy)
    now = 0.0
    for _ in range(2000):
        now += rng.choice((0.001, 0.01, 0.3, 2.0))
        ok = rng.random() < 0.8
        score = rng.choice((None, -1.0, rng.random()))
        fast.record(ok, score, now)
        _record_by_prune_and_refresh(ref, ok, score, now)
        assert list(fast._samples) == list(ref._samples)
        assert (fast._n_fail, fast._n_score, fast.mean, fast.expires_at) == (
            ref._n_fail, ref._n_score, ref.mean, ref.expires_at
        )  # fmt: skip
        assert abs(fast._score_sum - ref._score_sum) < 1e-9
