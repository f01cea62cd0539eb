"""Model resolution: concrete models and virtual models with load balancing, retries, fallbacks.

Pure modules: :mod:`.config` (the ``virtual_models`` section), :mod:`.health` (per-target
statistics and circuit breaker), :mod:`.strategies` (weight, latency, priority selection) and
:mod:`.router` (the compiled :class:`Router`, attempt plans and retry/fallback decisions).
"""

from gateway.routing.config import VirtualModelConfig, check_routing
from gateway.routing.health import BreakerPolicy, TargetHealth
from gateway.routing.router import (
    NO_RETRY,
    FailureKind,
    Outcome,
    PlanEntry,
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

__all__ = [
    "NO_RETRY",
    "BreakerPolicy",
    "FailureKind",
    "Outcome",
    "PlanEntry",
    "RetryPolicy",
    "RoutePlan",
    "Router",
    "Step",
    "TargetHealth",
    "VirtualModelConfig",
    "apply_header_overrides",
    "check_routing",
    "counts_as_failure",
    "outcome_of",
    "should_fallback",
    "should_retry",
]
