"""Config of virtual models: names and defaults follow TrueFoundry's load-balancing targets.

```yaml
virtual_models:
  - name: chat-default
    type: weight-based-routing        # | latency-based-routing | priority-based-routing
    load_balance_targets:
      - target: openai-main/gpt-4o
        weight: 70
        retry_config: {attempts: 2, delay: 100, on_status_codes: ["429", "500", "502", "503"]}
      - {target: azure-eu/gpt-4o, weight: 30}
```

``retry_config.attempts`` counts *retries* of the same target after its first call (TrueFoundry
documents it as the number of retry attempts), so ``attempts: 2`` allows up to three calls to one
target before falling back. Status codes are written as strings (as TrueFoundry does) or ints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "DEFAULT_FALLBACK_STATUS_CODES",
    "DEFAULT_RETRY_STATUS_CODES",
    "HeadersOverride",
    "RetryConfig",
    "RoutingType",
    "Target",
    "VirtualModelConfig",
    "check_routing",
    "status_codes",
]

DEFAULT_RETRY_STATUS_CODES = ("429", "500", "502", "503")
DEFAULT_FALLBACK_STATUS_CODES = ("401", "403", "404", "429", "500", "502", "503")

RoutingType = Literal["weight-based-routing", "latency-based-routing", "priority-based-routing"]

# Every section: unknown keys are errors, values immutable once loaded (keyword arguments
# repeated per class rather than inherited, so that type checkers see them frozen too).


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Retries of one target before the next candidate is tried."""

    attempts: int = 2  # retries after the first call
    delay: int = 100  # milliseconds between two calls to the same target
    on_status_codes: list[str | int] = msgspec.field(default_factory=lambda: list(DEFAULT_RETRY_STATUS_CODES))


class HeadersOverride(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Request headers set or removed before the call to this target."""

    set: dict[str, str] = {}
    remove: list[str] = []


class Target(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One concrete model (``<provider>/<model>``) a virtual model may send a request to."""

    target: str
    weight: float = 1.0  # weight-based: share of traffic (relative to the sum)
    priority: int = 0  # priority-based: lowest healthy value serves
    timeout_ms: int | None = None  # whole attempt; None = the provider's timeouts
    ttft_timeout_ms: int | None = None  # streams: time to the first token
    retry_config: RetryConfig = RetryConfig()
    fallback_candidate: bool = True  # may serve when an earlier target failed
    fallback_status_codes: list[str | int] = msgspec.field(
        default_factory=lambda: list(DEFAULT_FALLBACK_STATUS_CODES)
    )
    override_params: dict[str, Any] = {}  # merged into the request body
    headers_override: HeadersOverride = HeadersOverride()


class VirtualModelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A model name clients send that the gateway resolves to one of several targets."""

    name: str
    type: RoutingType = "weight-based-routing"
    load_balance_targets: list[Target] = []


def status_codes(values: list[str | int]) -> frozenset[int]:
    """Parse configured status codes; entries that are not 3-digit codes are skipped
    (:func:`check_routing` reports them)."""
    out: set[int] = set()
    for v in values:
        code = _code(v)
        if code is not None:
            out.add(code)
    return frozenset(out)


def _code(value: str | int) -> int | None:
    text = str(value).strip()
    if len(text) != 3 or not text.isdigit():
        return None
    code = int(text)
    return code if 100 <= code <= 599 else None


def check_routing(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of the ``virtual_models`` section, as ``path: message`` lines."""
    model_ids = set(cfg.model_ids())
    providers = cfg.provider_names()
    seen: set[str] = set()
    for i, vm in enumerate(cfg.virtual_models):
        at = f"virtual_models[{i}]"
        name = vm.name
        if not name:
            yield f"{at}.name: must be non-empty"
        elif name in seen:
            yield f"{at}.name: duplicate virtual model name {name!r}"
        elif name in model_ids or ("/" in name and name.split("/", 1)[0] in providers):
            # A client sending this name could mean either; refuse the ambiguity.
            yield f"{at}.name: {name!r} looks like a concrete <provider>/<model> id"
        seen.add(name)
        yield from _check_targets(vm, at, model_ids)


def _check_targets(vm: VirtualModelConfig, at: str, model_ids: set[str]) -> Iterator[str]:
    targets = vm.load_balance_targets
    if not targets:
        yield f"{at}.load_balance_targets: list at least one target"
        return
    names: set[str] = set()
    for j, t in enumerate(targets):
        tat = f"{at}.load_balance_targets[{j}]"
        if t.target not in model_ids:
            yield f"{tat}.target: unknown model {t.target!r} (expected <provider>/<model> from providers)"
        if t.target in names:
            yield f"{tat}.target: duplicate target {t.target!r}"
        names.add(t.target)
        if t.weight < 0:
            yield f"{tat}.weight: must be >= 0"
        if t.timeout_ms is not None and t.timeout_ms <= 0:
            yield f"{tat}.timeout_ms: must be > 0"
        if t.ttft_timeout_ms is not None and t.ttft_timeout_ms <= 0:
            yield f"{tat}.ttft_timeout_ms: must be > 0"
        rc = t.retry_config
        if rc.attempts < 0:
            yield f"{tat}.retry_config.attempts: must be >= 0"
        if rc.delay < 0:
            yield f"{tat}.retry_config.delay: must be >= 0"
        for k, code in enumerate(rc.on_status_codes):
            if _code(code) is None:
                yield f"{tat}.retry_config.on_status_codes[{k}]: {code!r} is not a 3-digit HTTP status"
        for k, code in enumerate(t.fallback_status_codes):
            if _code(code) is None:
                yield f"{tat}.fallback_status_codes[{k}]: {code!r} is not a 3-digit HTTP status"
    if vm.type == "weight-based-routing":
        total = sum(t.weight for t in targets)
        if not total > 0:
            yield f"{at}.load_balance_targets: weights must sum to a positive number (got {total:g})"
