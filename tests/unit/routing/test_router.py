"""Attempt plans and the retry/fallback decisions the request handler follows."""

from __future__ import annotations

import msgspec

from gateway.body import parse_request
from gateway.errors import UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.routing import (
    NO_RETRY,
    FailureKind,
    RetryPolicy,
    RoutePlan,
    Router,
    Step,
    apply_header_overrides,
    counts_as_failure,
    outcome_of,
    should_fallback,
    should_retry,
)
from tests.unit.routing.helpers import config, router

VM = """
  - name: chat
    type: priority-based-routing
    load_balance_targets:
      - target: openai-main/gpt-4o
        priority: 0
        timeout_ms: 30000
        ttft_timeout_ms: 5000
        retry_config: {attempts: 2, delay: 100, on_status_codes: ["429", "503"]}
        override_params: {temperature: 0.2}
        headers_override: {set: {X-Region: eu}, remove: [X-Debug]}
      - target: anthropic-main/claude-sonnet-4-5
        priority: 1
        retry_config: {attempts: 0}
        fallback_status_codes: ["500"]
      - {target: azure-eu/gpt-4o, priority: 2}
"""


def run(plan: RoutePlan, outcomes: list[object]) -> list[tuple[str, str, int, int, float]]:
    """Drive the loop the handler runs, with scripted outcomes (200 ends it)."""
    steps: list[Step] = []
    step: Step | None = plan.first()
    for outcome in outcomes:  # bounded by the script
        assert step is not None
        steps.append(step)
        if outcome == 200:
            break
        step = plan.next_step(step, outcome)  # type: ignore[arg-type]
        if step is None:
            break
    return [(s.entry.target, s.kind, s.attempt, s.target_try, s.delay_s) for s in steps]


def test_concrete_and_unknown_models() -> None:
    r = router(VM)
    plan = r.plan("azure-eu/gpt-4o")
    assert plan is not None and plan.virtual_model is None and plan.rule_ids == ()
    (entry,) = plan.entries
    assert (entry.provider, entry.upstream_model, entry.retry) == ("azure-eu", "gpt-4o", NO_RETRY)
    assert r.plan("azure-eu/gpt-5") is None
    assert r.plan("nope") is None
    assert r.virtual_models() == ["chat"]


def test_plan_entries_carry_everything_the_call_needs() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    assert plan.virtual_model == "chat" and plan.rule_ids == ("chat",)
    first, second, third = plan.entries
    assert (first.provider, first.provider_type, first.upstream_model) == ("openai-main", "openai", "gpt-4o")
    assert (first.timeout_s, first.ttft_timeout_s) == (30.0, 5.0)
    assert first.retry == RetryPolicy(attempts=2, delay_s=0.1, on_status=frozenset({429, 503}))
    assert first.override_params == {"temperature": 0.2}
    assert second.provider_type == "anthropic" and second.upstream_model == "claude-sonnet-4-5"
    assert third.timeout_s is None


def test_retries_then_falls_back() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    assert run(plan, [503, 503, 503, 200]) == [
        ("openai-main/gpt-4o", "primary", 1, 1, 0.0),
        ("openai-main/gpt-4o", "retry", 2, 2, 0.1),
        ("openai-main/gpt-4o", "retry", 3, 3, 0.1),
        ("anthropic-main/claude-sonnet-4-5", "fallback", 4, 1, 0.0),
    ]


def test_no_retry_on_statuses_not_listed() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    # 502 is not in this target's on_status_codes but is a fallback status: straight to fallback.
    assert [k for _, k, *_ in run(plan, [502, 200])] == ["primary", "fallback"]
    # 400 is neither: the client's error is final.
    assert len(run(plan, [400, 200])) == 1


def test_fallback_follows_the_failing_targets_status_codes() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    # anthropic only falls back on 500; its 503 ends the request.
    assert [t for t, *_ in run(plan, [404, 503, 200])] == [
        "openai-main/gpt-4o",
        "anthropic-main/claude-sonnet-4-5",
    ]
    assert [t for t, *_ in run(plan, [404, 500, 200])] == [
        "openai-main/gpt-4o",
        "anthropic-main/claude-sonnet-4-5",
        "azure-eu/gpt-4o",
    ]


def test_transport_failures_fall_back_without_retrying() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    for kind in FailureKind:
        got = run(plan, [kind, 200])
        assert [k for _, k, *_ in got] == ["primary", "fallback"], kind


def test_plans_are_bounded() -> None:
    plan = router(VM).plan("chat")
    assert plan is not None
    assert plan.max_attempts() == 3 + 1 + 3
    steps = run(plan, [503] * 100)
    assert len(steps) <= plan.max_attempts()


def test_decision_helpers() -> None:
    policy = RetryPolicy(attempts=1, delay_s=0.0, on_status=frozenset({503}))
    assert should_retry(503, 1, policy) and not should_retry(503, 2, policy)
    assert not should_retry(500, 1, policy)
    assert not should_retry(FailureKind.CONNECT, 1, policy)
    entry = router(VM).plan("chat").entries[0]  # type: ignore[union-attr]
    assert should_fallback(FailureKind.TTFT_TIMEOUT, entry) and should_fallback(401, entry)
    assert not should_fallback(400, entry) and not should_fallback(422, entry)
    assert counts_as_failure(503) and counts_as_failure(429) and counts_as_failure(FailureKind.HEADER_TIMEOUT)
    assert not counts_as_failure(400) and not counts_as_failure(200)


def test_fallback_candidate_false_is_never_a_fallback() -> None:
    r = router(
        """
  - name: w
    load_balance_targets:
      - {target: openai-main/gpt-4o, weight: 1}
      - {target: azure-eu/gpt-4o, weight: 1, fallback_candidate: false}
"""
    )
    plans = [r.plan("w") for _ in range(4)]
    assert [[e.target for e in p.entries] for p in plans if p] == [
        ["openai-main/gpt-4o"],
        ["azure-eu/gpt-4o", "openai-main/gpt-4o"],
        ["openai-main/gpt-4o"],
        ["azure-eu/gpt-4o", "openai-main/gpt-4o"],
    ]


def test_header_overrides_and_body_rewrite() -> None:
    entry = router(VM).plan("chat").entries[0]  # type: ignore[union-attr]
    headers = [("Content-Type", "application/json"), ("x-debug", "1"), ("x-region", "us")]
    assert apply_header_overrides(headers, entry) == [
        ("Content-Type", "application/json"),
        ("x-region", "eu"),
    ]
    req = parse_request(b'{"model":"chat","temperature":1,"messages":[]}', "chat")
    body = req.upstream_body(entry.upstream_model, dict(entry.override_params))
    assert msgspec.json.decode(body) == {"model": "gpt-4o", "temperature": 0.2, "messages": []}


def test_reload_keeps_health_of_targets_that_remain() -> None:
    old = router(VM)
    old.record("openai-main/gpt-4o", True, 1.0, 10)
    new = Router(config(VM), previous=old)
    assert new.health("openai-main/gpt-4o") is old.health("openai-main/gpt-4o")


def test_outcome_of_upstream_errors() -> None:
    assert outcome_of(UpstreamStatus(503, b"", None, [])) == 503
    assert outcome_of(UpstreamUnreachable("refused")) is FailureKind.CONNECT
    assert outcome_of(UpstreamTimeout("slow")) is FailureKind.HEADER_TIMEOUT
