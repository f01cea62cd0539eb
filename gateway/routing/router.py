"""Model resolution: a model id in, an ordered attempt plan out; retry and fallback decisions.

The :class:`Router` is compiled once from the config (and rebuilt on reload). Per request::

    plan = router.plan(model_id)                 # None -> 404 model_not_found
    step = plan.first()
    while True:                                  # bounded: plan.max_attempts()
        try:
            resp = await call(step.entry)        # raises UpstreamStatus for >= 400, as proxy.py
        except UpstreamError as exc:
            outcome = outcome_of(exc)            # a status, or a FailureKind
            if counts_as_failure(outcome):       # a client's own 4xx says nothing of the target
                router.record(step.entry.target, False, latency_s)
            nxt = plan.next_step(step, outcome)  # retry the same target, fall back, or None
            if nxt is None:
                raise
            step = nxt
            if step.delay_s:
                await asyncio.sleep(step.delay_s)
            continue
        router.record(step.entry.target, True, latency_s, output_tokens)
        break

For streams the loop may only continue while nothing has been sent to the client.

Decision rules (pure functions, below):
- retry the same target when the status is in its ``retry_config.on_status_codes`` and fewer
  than ``attempts`` retries were made; transport failures (:class:`FailureKind`) are not
  retried on the same target: an upstream that refused a connection or stalled is better
  left for the next candidate than waited on again;
- otherwise fall back when the status is in the failing target's ``fallback_status_codes`` or
  the failure is a :class:`FailureKind` (connect error, header/TTFT timeout, ...).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gateway.errors import GatewayError, UpstreamStatus, UpstreamTimeout, UpstreamUnreachable
from gateway.routing.config import Target, VirtualModelConfig, status_codes
from gateway.routing.health import BreakerPolicy, TargetHealth
from gateway.routing.strategies import LatencyBased, PriorityBased, WeightBased

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "NO_RETRY",
    "FailureKind",
    "Outcome",
    "PlanEntry",
    "RetryPolicy",
    "RoutePlan",
    "Router",
    "Step",
    "apply_header_overrides",
    "counts_as_failure",
    "outcome_of",
    "should_fallback",
    "should_retry",
]


class FailureKind(StrEnum):
    """Transport-level failures: no usable status from the upstream."""

    CONNECT = "connect_error"  # refused, DNS, TLS, reset before the response
    HEADER_TIMEOUT = "header_timeout"  # no response headers in time
    TTFT_TIMEOUT = "ttft_timeout"  # stream: no first token within ttft_timeout_ms
    TIMEOUT = "timeout"  # the whole attempt exceeded timeout_ms
    READ_ERROR = "read_error"  # body cut or unreadable before anything reached the client


Outcome = int | FailureKind

# Statuses that say the target (not the request) is broken; 4xx like 400/413/422 are the
# client's fault and must not cool a healthy upstream down.
_TARGET_FAULT_4XX = frozenset({401, 403, 404, 408, 429})


class RetryPolicy(msgspec.Struct, frozen=True, gc=False):
    """Compiled ``retry_config``: ``attempts`` retries after the first call."""

    attempts: int
    delay_s: float
    on_status: frozenset[int]


NO_RETRY = RetryPolicy(attempts=0, delay_s=0.0, on_status=frozenset())


class PlanEntry(msgspec.Struct, frozen=True, gc=False):
    """Everything needed to call one target; compiled once per target of a virtual model."""

    target: str  # concrete model id, ``<provider>/<model>``: tfy.data_routing.destination
    provider: str  # provider name in the config
    provider_type: str  # ``openai`` | ``anthropic``
    upstream_model: str  # the model name the provider expects
    retry: RetryPolicy
    fallback_status: frozenset[int]
    fallback_candidate: bool
    # Non-streaming: the whole attempt. Streams: until the response headers only; once tokens
    # flow, the provider's read timeout (silence between bytes) is the only limit, so a long
    # healthy stream is never cut. None = the provider's own timeouts.
    timeout_s: float | None
    ttft_timeout_s: float | None  # streams: request sent -> first content chunk
    override_params: Mapping[str, Any]  # merged into the body; do not mutate
    headers_set: tuple[tuple[str, str], ...]  # lower-case names
    headers_remove: frozenset[str]  # lower-case names


StepKind = Literal["primary", "retry", "fallback"]


class Step(msgspec.Struct, frozen=True, gc=False):
    """One upstream attempt of a request: what to call and why (for the CLIENT span)."""

    entry: PlanEntry
    index: int  # position of ``entry`` in the plan
    attempt: int  # 1-based across the whole request
    target_try: int  # 1-based on this target
    kind: StepKind
    delay_s: float  # wait this long before the attempt (retry delay)


class RoutePlan(msgspec.Struct, frozen=True, gc=False):
    """Ordered targets for one request: the chosen one first, then fallback candidates."""

    model: str  # what the client asked for
    virtual_model: str | None  # None for a concrete model id
    rule_ids: tuple[str, ...]  # applied_loadbalance_rule_ids (the virtual model name)
    entries: tuple[PlanEntry, ...]

    def first(self) -> Step:
        """The first attempt."""
        return Step(self.entries[0], 0, 1, 1, "primary", 0.0)

    def next_step(self, step: Step, outcome: Outcome) -> Step | None:
        """The attempt after ``step`` failed with ``outcome``, or None to give up."""
        entry = step.entry
        if should_retry(outcome, step.target_try, entry.retry):
            return Step(
                entry, step.index, step.attempt + 1, step.target_try + 1, "retry", entry.retry.delay_s
            )
        nxt = step.index + 1
        if nxt < len(self.entries) and should_fallback(outcome, entry):
            return Step(self.entries[nxt], nxt, step.attempt + 1, 1, "fallback", 0.0)
        return None

    def max_attempts(self) -> int:
        """Upper bound of attempts this plan can make (for bounded loops and tests)."""
        return sum(e.retry.attempts + 1 for e in self.entries)


def should_retry(outcome: Outcome, target_try: int, policy: RetryPolicy) -> bool:
    """Whether to call the same target again after try number ``target_try`` failed."""
    if isinstance(outcome, FailureKind):
        return False
    return target_try <= policy.attempts and outcome in policy.on_status


def should_fallback(outcome: Outcome, entry: PlanEntry) -> bool:
    """Whether a failure of ``entry`` lets the next candidate try."""
    if isinstance(outcome, FailureKind):
        return True
    return outcome in entry.fallback_status


def counts_as_failure(outcome: Outcome) -> bool:
    """Whether an outcome counts against the target's health (``record(ok=False)``).

    2xx is a success; 5xx, 401/403/404/408/429 and transport failures are the target's fault;
    other 4xx are the request's fault and should not be recorded at all.
    """
    if isinstance(outcome, FailureKind):
        return True
    return outcome >= 500 or outcome in _TARGET_FAULT_4XX


def outcome_of(exc: GatewayError) -> Outcome:
    """The :data:`Outcome` of an attempt that raised ``exc`` (the upstream client's errors).

    A status relayed from the provider stays a status; an unreachable upstream is a connect
    error and any upstream timeout a header timeout (both fall back; neither is retried).
    """
    if isinstance(exc, UpstreamStatus):
        return exc.status
    if isinstance(exc, UpstreamUnreachable):
        return FailureKind.CONNECT
    if isinstance(exc, UpstreamTimeout):
        return FailureKind.HEADER_TIMEOUT
    return FailureKind.READ_ERROR


def apply_header_overrides(headers: Sequence[tuple[str, str]], entry: PlanEntry) -> list[tuple[str, str]]:
    """Outgoing headers with the target's ``headers_override`` applied (names compared lower-case)."""
    if not entry.headers_set and not entry.headers_remove:
        return list(headers)
    drop = entry.headers_remove | {k for k, _ in entry.headers_set}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.extend(entry.headers_set)
    return out


# --- compilation ------------------------------------------------------------------------------


def _entry(target: Target, provider_types: Mapping[str, str]) -> PlanEntry:
    provider, _, model = target.target.partition("/")
    rc = target.retry_config
    return PlanEntry(
        target=target.target,
        provider=provider,
        provider_type=provider_types.get(provider, "openai"),
        upstream_model=model,
        retry=RetryPolicy(
            attempts=rc.attempts, delay_s=rc.delay / 1000, on_status=status_codes(rc.on_status_codes)
        ),
        fallback_status=status_codes(target.fallback_status_codes),
        fallback_candidate=target.fallback_candidate,
        timeout_s=None if target.timeout_ms is None else target.timeout_ms / 1000,
        ttft_timeout_s=None if target.ttft_timeout_ms is None else target.ttft_timeout_ms / 1000,
        override_params=dict(target.override_params),
        headers_set=tuple((k.lower(), v) for k, v in target.headers_override.set.items()),
        headers_remove=frozenset(k.lower() for k in target.headers_override.remove),
    )


class _Virtual:
    """One compiled virtual model: entries, their health and the strategy's state."""

    __slots__ = (
        "name",
        "rule_ids",
        "entries",
        "healths",
        "strategy",
        "all_idx",
        "candidate",
        "_static",
        "_ranked",
        "_ranked_gen",
    )

    def __init__(
        self,
        vm: VirtualModelConfig,
        entries: list[PlanEntry],
        healths: list[TargetHealth],
        rng: random.Random,
    ) -> None:
        self.name = vm.name
        self.rule_ids = (vm.name,)
        self.entries = entries
        self.healths = healths
        self.all_idx = list(range(len(entries)))
        self.candidate = [e.fallback_candidate for e in entries]
        targets = vm.load_balance_targets
        self.strategy: WeightBased | PriorityBased | LatencyBased
        if vm.type == "latency-based-routing":
            self.strategy = LatencyBased(healths, rng)
        elif vm.type == "priority-based-routing":
            self.strategy = PriorityBased([t.priority for t in targets])
        else:
            self.strategy = WeightBased([t.weight for t in targets])
        # Weight and priority order fallbacks statically: with every target available the
        # plan only depends on the chosen target, so it is built once per target, here.
        self._static: list[RoutePlan] = []
        if not isinstance(self.strategy, LatencyBased):
            order = self.strategy.order(0.0)
            for first in self.all_idx:
                self._static.append(self._build(vm.name, first, [i for i in order if i != first]))
        # Latency: plans of the strategy's current ranking snapshot, built on first use.
        self._ranked: list[RoutePlan | None] = [None] * len(entries)
        self._ranked_gen = -1

    def _build(self, model: str, first: int, rest: Sequence[int]) -> RoutePlan:
        entries, candidate = self.entries, self.candidate
        chosen = [entries[first]]
        for i in rest:
            if candidate[i]:
                chosen.append(entries[i])
        return RoutePlan(model, self.name, self.rule_ids, tuple(chosen))

    def plan(self, model: str, now: float) -> RoutePlan:
        healths = self.healths
        avail: list[int] = self.all_idx
        for h in healths:
            if h.tripped:  # rare: only then is availability worked out per target
                avail = [i for i in self.all_idx if healths[i].available(now)] or self.all_idx
                break
        strategy = self.strategy
        if isinstance(strategy, LatencyBased):
            if avail is self.all_idx:
                first = strategy.snapshot_pick(now)
                if first >= 0:
                    return self._snapshot_plan(first, now)
            first, rest = strategy.rank(avail, now)
            if healths[first].tripped:
                healths[first].take_probe(now)
            return self._build(model, first, rest)
        first = strategy.pick(avail, now)
        if healths[first].tripped:
            healths[first].take_probe(now)
        if avail is self.all_idx:
            # Every target is available, or none is and trying all beats failing unheard.
            return self._static[first]
        return self._build(model, first, [i for i in strategy.order(now) if i != first and i in avail])

    def _snapshot_plan(self, first: int, now: float) -> RoutePlan:
        strategy = self.strategy
        assert isinstance(strategy, LatencyBased)
        if self._ranked_gen != strategy.generation:
            self._ranked = [None] * len(self.entries)
            self._ranked_gen = strategy.generation
        plan = self._ranked[first]
        if plan is None:
            rest = [i for i in strategy.snapshot_order if i != first]
            plan = self._ranked[first] = self._build(self.name, first, rest)
        if self.healths[first].tripped:
            self.healths[first].take_probe(now)
        return plan


class Router:
    """Compiled routing table; not thread-safe (one per event loop / worker)."""

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        breaker: BreakerPolicy | None = None,
        direct_retry: RetryPolicy = NO_RETRY,
        previous: Router | None = None,
    ) -> None:
        """Args:
        cfg: a validated config (``check_routing`` passed).
        clock: monotonic seconds; used when ``plan``/``record`` get no ``now``.
        rng: randomness of the latency strategy (seed it in tests).
        breaker: circuit breaker policy of every target.
        direct_retry: retries for plain ``<provider>/<model>`` requests (default none).
        previous: the router this one replaces on a config reload; the health records of
            targets that still exist carry over (latency data, open breakers).
        """
        self._clock = clock
        self._breaker = breaker or BreakerPolicy()
        rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        provider_types = {p.name: p.type for p in cfg.providers}
        self._health: dict[str, TargetHealth] = {}
        if previous is not None:
            known = set(cfg.model_ids())
            self._health = {k: h for k, h in previous._health.items() if k in known}
        self._direct: dict[str, RoutePlan] = {}
        for p in cfg.providers:
            for m in p.models:
                mid = f"{p.name}/{m}"
                entry = PlanEntry(
                    target=mid,
                    provider=p.name,
                    provider_type=p.type,
                    upstream_model=m,
                    retry=direct_retry,
                    fallback_status=frozenset(),
                    fallback_candidate=False,
                    timeout_s=None,
                    ttft_timeout_s=None,
                    override_params={},
                    headers_set=(),
                    headers_remove=frozenset(),
                )
                self._direct[mid] = RoutePlan(mid, None, (), (entry,))
        self._virtual: dict[str, _Virtual] = {}
        for vm in cfg.virtual_models:
            entries = [_entry(t, provider_types) for t in vm.load_balance_targets]
            healths = [self.health(e.target) for e in entries]
            self._virtual[vm.name] = _Virtual(vm, entries, healths, rng)

    def health(self, target: str) -> TargetHealth:
        """The (shared) health record of a concrete model id, created on first use."""
        h = self._health.get(target)
        if h is None:
            h = self._health[target] = TargetHealth(self._breaker)
        return h

    def virtual_models(self) -> list[str]:
        """Names of the virtual models, in config order (for ``/v1/models``)."""
        return list(self._virtual)

    def plan(self, model: str, now: float | None = None) -> RoutePlan | None:
        """The attempt plan for ``model`` (virtual or concrete), or None when unknown."""
        vm = self._virtual.get(model)
        if vm is None:
            return self._direct.get(model)
        return vm.plan(model, self._clock() if now is None else now)

    def record(
        self, target: str, ok: bool, latency_s: float, output_tokens: int = 0, now: float | None = None
    ) -> None:
        """Feed the outcome of one attempt on ``target`` (a concrete model id).

        ``latency_s`` is the whole attempt; with ``output_tokens`` > 0 the latency score is
        seconds per output token, else the latency itself.
        """
        health = self._health.get(target)
        if health is None:  # not a target of any virtual model: nothing chooses by its health
            return
        score = latency_s / output_tokens if output_tokens > 0 else latency_s
        health.record(ok, score, self._clock() if now is None else now)
