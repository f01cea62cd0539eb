"""Target selection per strategy, through the compiled Router (clock and randomness injected)."""

from __future__ import annotations

from collections import Counter

from gateway.routing import BreakerPolicy
from gateway.routing.strategies import WeightBased
from tests.unit.routing.helpers import Clock, router

WEIGHTED = """
  - name: chat
    type: weight-based-routing
    load_balance_targets:
      - {target: openai-main/gpt-4o, weight: 70}
      - {target: azure-eu/gpt-4o, weight: 30}
"""


def first_targets(r, model: str, n: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    c: Counter[str] = Counter()
    for _ in range(n):
        plan = r.plan(model)
        c[plan.entries[0].target] += 1
    return c


def test_weight_split_holds_over_a_few_hundred_requests() -> None:
    r = router(WEIGHTED)
    c = first_targets(r, "chat", 300)
    assert abs(c["openai-main/gpt-4o"] - 210) <= 15
    assert abs(c["azure-eu/gpt-4o"] - 90) <= 15


def test_smooth_weighted_round_robin_interleaves() -> None:
    w = WeightBased([5, 1, 1])
    seq = [w.pick([0, 1, 2], 0.0) for _ in range(7)]
    assert seq == [0, 0, 1, 0, 2, 0, 0]  # nginx's sequence for {a:5, b:1, c:1}
    assert [w.pick([1, 2], 0.0) for _ in range(4)] == [1, 2, 1, 2]  # a unavailable


def test_weighted_plan_lists_the_other_target_as_fallback() -> None:
    r = router(WEIGHTED)
    for _ in range(10):
        plan = r.plan("chat")
        assert len(plan.entries) == 2
        assert {e.target for e in plan.entries} == {"openai-main/gpt-4o", "azure-eu/gpt-4o"}


LATENCY = """
  - name: fast
    type: latency-based-routing
    load_balance_targets:
      - {target: openai-main/gpt-4o}
      - {target: azure-eu/gpt-4o}
      - {target: anthropic-main/claude-sonnet-4-5}
"""


def test_latency_based_moves_traffic_to_the_faster_target() -> None:
    clock = Clock()
    r = router(LATENCY, clock)
    # openai 10 ms per token, azure 11 ms (within 1.2x: shares), anthropic 50 ms (slow).
    for _ in range(20):
        r.record("openai-main/gpt-4o", True, 1.0, 100)
        r.record("azure-eu/gpt-4o", True, 1.1, 100)
        r.record("anthropic-main/claude-sonnet-4-5", True, 5.0, 100)
    c = first_targets(r, "fast", 400)
    assert c["anthropic-main/claude-sonnet-4-5"] == 0
    assert 150 <= c["openai-main/gpt-4o"] <= 250 and 150 <= c["azure-eu/gpt-4o"] <= 250
    plan = r.plan("fast")
    assert plan.entries[-1].target == "anthropic-main/claude-sonnet-4-5"  # slowest fallback last
    # azure slows down: traffic moves to openai alone.
    for _ in range(100):
        r.record("azure-eu/gpt-4o", True, 3.0, 100)
    # The ranking is a snapshot refreshed every 100 ms: within it the old split holds.
    assert first_targets(r, "fast", 50)["azure-eu/gpt-4o"] > 0
    clock.now += 0.1
    c = first_targets(r, "fast", 100)
    assert c == Counter({"openai-main/gpt-4o": 100})


def test_latency_snapshot_is_bypassed_when_a_breaker_opens() -> None:
    clock = Clock()
    r = router(LATENCY, clock, BreakerPolicy(consecutive_failures=2))
    for target in ("openai-main/gpt-4o", "azure-eu/gpt-4o", "anthropic-main/claude-sonnet-4-5"):
        r.record(target, True, 1.0 if target.startswith("openai") else 5.0, 100)
    assert first_targets(r, "fast", 5) == Counter({"openai-main/gpt-4o": 5})
    r.record("openai-main/gpt-4o", False, 0.1)
    r.record("openai-main/gpt-4o", False, 0.1)
    plan = r.plan("fast")
    assert plan is not None and "openai-main/gpt-4o" not in [e.target for e in plan.entries]


def test_latency_based_probes_targets_without_data_once_per_interval() -> None:
    clock = Clock()
    r = router(LATENCY, clock)
    for _ in range(5):
        r.record("openai-main/gpt-4o", True, 1.0, 100)
        r.record("azure-eu/gpt-4o", True, 1.0, 100)
    # anthropic has no data: probed once, then not again within the probe interval.
    c = first_targets(r, "fast", 50)
    assert c["anthropic-main/claude-sonnet-4-5"] == 1
    clock.now += 1.0
    assert r.plan("fast").entries[0].target == "anthropic-main/claude-sonnet-4-5"
    # Data older than 20 minutes no longer counts: everyone gets probed again.
    clock.now += 1201
    probed = {r.plan("fast").entries[0].target for _ in range(3)}
    assert probed == {"openai-main/gpt-4o", "azure-eu/gpt-4o", "anthropic-main/claude-sonnet-4-5"}


def test_latency_uses_latency_when_no_tokens_are_known() -> None:
    clock = Clock()
    r = router(LATENCY, clock)
    for target, latency in (
        ("openai-main/gpt-4o", 2.0),
        ("azure-eu/gpt-4o", 0.5),
        ("anthropic-main/claude-sonnet-4-5", 9.0),
    ):
        r.record(target, True, latency)
    assert first_targets(r, "fast", 20) == Counter({"azure-eu/gpt-4o": 20})


PRIORITY = """
  - name: prio
    type: priority-based-routing
    load_balance_targets:
      - {target: azure-eu/gpt-4o, priority: 1}
      - {target: openai-main/gpt-4o, priority: 0}
      - {target: anthropic-main/claude-sonnet-4-5, priority: 2, fallback_candidate: false}
"""


def test_priority_uses_the_backup_only_while_the_primary_is_cooled_down() -> None:
    clock = Clock()
    breaker = BreakerPolicy(consecutive_failures=3, cooldown_s=30, probe_interval_s=5)
    r = router(PRIORITY, clock, breaker)
    plan = r.plan("prio")
    assert [e.target for e in plan.entries] == ["openai-main/gpt-4o", "azure-eu/gpt-4o"]  # not a candidate
    for _ in range(3):
        r.record("openai-main/gpt-4o", False, 0.1)
    for _ in range(5):
        clock.now += 5
        plan = r.plan("prio")
        assert [e.target for e in plan.entries] == ["azure-eu/gpt-4o"]  # the cooled-down one is left out
        r.record("azure-eu/gpt-4o", True, 0.1)
    clock.now += 5  # 30 s later: half-open, the primary gets one trial request
    assert r.plan("prio").entries[0].target == "openai-main/gpt-4o"
    assert r.plan("prio").entries[0].target == "azure-eu/gpt-4o"  # the probe is in flight
    r.record("openai-main/gpt-4o", True, 0.1)
    assert first_targets(r, "prio", 10) == Counter({"openai-main/gpt-4o": 10})


def test_every_target_cooled_down_still_yields_a_plan() -> None:
    clock = Clock()
    r = router(WEIGHTED, clock, BreakerPolicy(consecutive_failures=1))
    r.record("openai-main/gpt-4o", False, 0.1)
    r.record("azure-eu/gpt-4o", False, 0.1)
    plan = r.plan("chat")
    assert plan is not None and len(plan.entries) == 2
