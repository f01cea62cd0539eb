"""Rate limits as pure arithmetic: an injected clock (``now`` in seconds), no I/O, no awaits.

Algorithm: sliding window, two-bucket approximation. Each key keeps the count of the current fixed
window and of the previous one; the usage "in the last window length" is estimated as

    previous * (1 - elapsed_in_current / window) + current

which assumes traffic was spread evenly over the previous window. It costs two integers per key,
rolls over without timers, and merges additively, which is what fleet sync needs: every local
charge is also recorded as a delta ``(key, window_start, amount)`` that :mod:`gateway.access.fleet`
publishes, and deltas from other workers are added with :meth:`RateLimiter.apply_remote`.

Semantics (TrueFoundry's rule shape): the first rule whose ``when`` matches applies; its key is
built from ``rate_limit_applies_per`` (user, model, metadata.<key>). Request limits are charged on
admission. Token limits are checked on admission (rejected once the window's tokens are spent) and
charged later with the real usage through :meth:`Admission.charge_tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from gateway.access.config import UNITS, RateLimitRule
from gateway.access.credentials import Principal
from gateway.access.rules import GlobSet, ModelPattern
from gateway.errors import RateLimited

__all__ = ["NO_LIMIT", "NO_PLAN", "Admission", "Delta", "Plan", "RateLimiter", "Snapshot"]

SEP = "\x1f"  # between the parts of a counter key; cannot appear in YAML ids or header values we keep
SWEEP_EVERY = 8192  # admissions between sweeps of counters idle for two windows
MAX_SPILL = 65_536  # bound on deltas of past windows kept while no fleet sync drains them
# Ask fleet sync to publish now (see fleet.py) once this worker's unpublished charges on a key
# reach this share of what is left of the limit: other workers then learn about a key's usage
# sooner the closer it gets to its limit, which bounds the fleet's overshoot, while a key far
# from its limit only travels with the periodic publish. Triggers are charges, so they are
# themselves bounded by the limits.
HOT_SHARE = 0.1
MEMO_SIZE = 65_536  # (caller, model) pairs whose candidate rules are remembered

Delta = tuple[str, int, int]  # (key, window_start, amount)
Snapshot = tuple[str, int, int, int]  # (key, window_start, previous, current)


class _Counter:
    __slots__ = ("cur", "prev", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.prev = 0
        self.cur = 0

    def roll(self, start: int, window: int) -> None:
        """Move to the window beginning at ``start`` (no-op when already there or older)."""
        if start <= self.start:
            return
        self.prev = self.cur if start - self.start == window else 0
        self.cur = 0
        self.start = start

    def estimate(self, now: float, window: int) -> float:
        return self.prev * (1.0 - (now - self.start) / window) + self.cur


class _Rule:
    __slots__ = (
        "id",
        "kind",
        "limit",
        "limit_header",
        "metadata",
        "models",
        "parts",
        "remaining_header",
        "subjects",
        "tool_rule",
        "tool_servers",
        "tools",
        "window",
    )

    def __init__(self, rule: RateLimitRule) -> None:
        self.id = rule.id
        self.kind, self.window = UNITS[rule.unit]
        self.limit = rule.limit_to
        self.subjects = frozenset(rule.when.subjects)
        self.models = ModelPattern(rule.when.models)
        self.metadata = tuple(rule.when.metadata.items())
        self.parts = tuple(rule.rate_limit_applies_per)
        # A rule naming mcp_servers or tools counts MCP tool calls only; every other rule, model calls.
        self.tool_rule = rule.when.mcp_servers is not None or rule.when.tools is not None
        self.tool_servers = frozenset(rule.when.mcp_servers or ("*",))
        self.tools = GlobSet(rule.when.tools or ("*",))
        # Response headers, built once: only the remaining count changes per request.
        self.limit_header = (f"x-ratelimit-limit-{self.kind}", str(self.limit))
        self.remaining_header = f"x-ratelimit-remaining-{self.kind}"

    def matches_caller(self, principal: Principal, model_id: str) -> bool:
        return not self.subjects.isdisjoint(principal.matches) and model_id in self.models

    def matches_metadata(self, metadata: Mapping[str, str]) -> bool:
        for k, v in self.metadata:
            if metadata.get(k) != v:
                return False
        return True

    def key(self, principal: Principal, model_id: str, metadata: Mapping[str, str]) -> str:
        if not self.parts:
            return self.id
        out = [self.id]
        for p in self.parts:
            if p == "user":
                out.append(principal.subject)
            elif p == "model" or p == "tool":
                out.append(model_id)  # for a tool rule: "<server>/<tool>"
            elif p == "mcp_server":
                out.append(model_id.partition("/")[0])
            else:
                out.append(metadata.get(p[9:], ""))  # "metadata.<key>"
        return SEP.join(out)


def _wait_s(c: _Counter, now: float, window: int, budget: float) -> float:
    """Seconds until the estimate falls to ``budget`` if no more traffic arrives."""
    if budget < 0:
        return float(window)
    if c.cur <= budget:
        if c.prev <= 0:
            return 0.0
        t = c.start + window * (1.0 - (budget - c.cur) / c.prev)
    else:
        t = c.start + window + window * (1.0 - budget / c.cur)
    return max(0.0, t - now)


class Admission:
    """The outcome of :meth:`RateLimiter.admit` for an admitted request."""

    __slots__ = ("key", "limiter", "remaining", "rule")

    def __init__(self, limiter: RateLimiter | None, rule: _Rule | None, key: str, remaining: int) -> None:
        self.limiter = limiter
        self.rule = rule
        self.key = key
        self.remaining = remaining

    @property
    def rule_id(self) -> str | None:
        return None if self.rule is None else self.rule.id

    @property
    def kind(self) -> str:
        return "requests" if self.rule is None else self.rule.kind

    @property
    def limit(self) -> int:
        return 0 if self.rule is None else self.rule.limit

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``x-ratelimit-limit-*`` / ``x-ratelimit-remaining-*`` for the response (empty: no rule)."""
        rule = self.rule
        if rule is None:
            return []
        return [rule.limit_header, (rule.remaining_header, str(self.remaining))]

    @property
    def rule_ids(self) -> list[str]:
        return [] if self.rule is None else [self.rule.id]

    def charge_tokens(self, n: int, now: float) -> None:
        """Charge the real token usage once the response (or stream) completed."""
        if self.limiter is not None and self.rule is not None and self.rule.kind == "tokens" and n > 0:
            self.limiter.charge(self.key, n, now)


NO_LIMIT = Admission(None, None, "", 0)

# What :meth:`RateLimiter.plan` decides for a caller: the rule that applies and its counter key.
Plan = tuple["_Rule | None", str]
NO_PLAN: Plan = (None, "")


class RateLimiter:
    """Counters of every rate-limit key, in memory. Not thread-safe: one per event loop."""

    def __init__(self, rules: Sequence[RateLimitRule]) -> None:
        compiled = [_Rule(r) for r in rules]
        self._rules = [r for r in compiled if not r.tool_rule]
        self._tool_rules = [r for r in compiled if r.tool_rule]
        self._by_id = {r.id: r for r in compiled}
        self._candidates: dict[tuple[frozenset[str], str], tuple[_Rule, ...]] = {}
        self._counters: dict[str, _Counter] = {}
        self._pending: dict[str, list[int]] = {}  # key -> [window_start, amount] not yet published
        self._spill: list[Delta] = []  # pending amounts of windows that rolled over before publishing
        self._admissions = 0
        self.track_deltas = False  # set by fleet sync; without it no delta is kept
        self.accept_remote = True  # cleared when a reloaded limiter took over these counters
        self.on_hot: Callable[[], None] | None = None  # fleet sync's "publish now" hook

    def __bool__(self) -> bool:
        return bool(self._by_id)

    # --- request path ----------------------------------------------------------------------------

    def admit(
        self, principal: Principal, model_id: str, metadata: Mapping[str, str], now: float
    ) -> Admission:
        """Admit a request or raise :class:`RateLimited` (message names the rule, with headers)."""
        rule, key = self.plan(principal, model_id, metadata)
        return self.admit_planned(rule, key, now)

    def plan(self, principal: Principal, model_id: str, metadata: Mapping[str, str]) -> Plan:
        """The rule that applies to this caller, model and metadata, and its counter key.

        Depends on nothing but its arguments and the rules, so a caller may remember it for the
        same (credentials, model, metadata) and go straight to :meth:`admit_planned`."""
        ck = (principal.matches, model_id)
        candidates = self._candidates.get(ck)
        if candidates is None:
            candidates = self._candidates_for(ck, principal, model_id)
        for rule in candidates:
            if not rule.metadata or rule.matches_metadata(metadata):
                return rule, rule.key(principal, model_id, metadata)
        return NO_PLAN

    def plan_tool(self, principal: Principal, server: str, tool: str, metadata: Mapping[str, str]) -> Plan:
        """:meth:`plan` for an MCP tool call: the first tool rule matching caller, server and tool."""
        for rule in self._tool_rules:
            if (
                not rule.subjects.isdisjoint(principal.matches)
                and ("*" in rule.tool_servers or server in rule.tool_servers)
                and tool in rule.tools
                and (not rule.metadata or rule.matches_metadata(metadata))
            ):
                return rule, rule.key(principal, f"{server}/{tool}", metadata)
        return NO_PLAN

    def admit_planned(self, rule: _Rule | None, key: str, now: float) -> Admission:
        """:meth:`admit` with the rule and key already known (see :meth:`plan`)."""
        if rule is None:
            return NO_LIMIT
        window = rule.window
        start = int(now // window) * window
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = _Counter(start)
        else:
            c.roll(start, window)
        used = c.estimate(now, window)
        limit = rule.limit
        if used + 1 > limit:
            retry = max(1, math.ceil(_wait_s(c, now, window, limit - 1)))
            noun = "requests" if rule.kind == "requests" else "tokens"
            raise RateLimited(
                f"rate limit '{rule.id}' exceeded: {limit} {noun} per {_SPAN[window]}; retry in {retry} s",
                rule_id=rule.id,
                headers=[("retry-after", str(retry)), rule.limit_header, (rule.remaining_header, "0")],
            )
        if rule.kind == "requests":
            self._add(key, c, 1, rule)
            used += 1
        self._admissions += 1
        if self._admissions % SWEEP_EVERY == 0:
            self.sweep(now)
        return Admission(self, rule, key, max(0, int(limit - used)))

    def _candidates_for(
        self, ck: tuple[frozenset[str], str], principal: Principal, model_id: str
    ) -> tuple[_Rule, ...]:
        """Rules matching the caller and model, in order; memoised (metadata varies per request)."""
        found = tuple(r for r in self._rules if r.matches_caller(principal, model_id))
        if len(self._candidates) >= MEMO_SIZE:
            self._candidates.clear()
        self._candidates[ck] = found
        return found

    def charge(self, key: str, n: int, now: float) -> None:
        """Add ``n`` (tokens) to ``key``'s current window."""
        rule = self._by_id.get(key.partition(SEP)[0])
        if rule is None:  # the rule went away with a config reload
            return
        start = int(now // rule.window) * rule.window
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = _Counter(start)
        else:
            c.roll(start, rule.window)
        self._add(key, c, n, rule)

    def _add(self, key: str, c: _Counter, n: int, rule: _Rule) -> None:
        c.cur += n
        if not self.track_deltas:
            return
        p = self._pending.get(key)
        if p is None:
            p = self._pending[key] = [c.start, n]
        elif p[0] == c.start:
            p[1] += n
        else:
            if len(self._spill) < MAX_SPILL:
                self._spill.append((key, p[0], p[1]))
            p[0], p[1] = c.start, n
        # c.cur + c.prev over-estimates the usage: errs towards publishing early.
        if self.on_hot is not None and p[1] >= HOT_SHARE * (rule.limit - c.cur - c.prev):
            self.on_hot()

    # --- fleet sync ------------------------------------------------------------------------------

    def take_deltas(self) -> list[Delta]:
        """Local charges since the last call, as ``(key, window_start, amount)``; resets them."""
        out = self._spill
        self._spill = []
        out.extend((k, p[0], p[1]) for k, p in self._pending.items())
        self._pending = {}
        return out

    def apply_remote(self, deltas: Iterable[Delta]) -> None:
        """Add other workers' charges; deltas of unknown rules or expired windows are ignored."""
        if not self.accept_remote:
            return
        for key, start, amount in deltas:
            rule = self._by_id.get(key.partition(SEP)[0])
            if rule is None:
                continue
            c = self._counters.get(key)
            if c is None:
                c = self._counters[key] = _Counter(start)
            if start == c.start:
                c.cur += amount
            elif start == c.start - rule.window:
                c.prev += amount
            elif start > c.start:
                c.roll(start, rule.window)
                c.cur += amount

    def snapshot(self) -> list[Snapshot]:
        """Every non-empty counter as ``(key, window_start, previous, current)``, for a joining
        worker (see :meth:`merge_snapshot`)."""
        return [(k, c.start, c.prev, c.cur) for k, c in self._counters.items() if c.prev or c.cur]

    def merge_snapshot(self, rows: Iterable[Snapshot]) -> None:
        """Start from peers' views of the counters (a new worker mid-window).

        Every peer's view already approximates the fleet-wide count, so views are combined with
        ``max``, never added."""
        for key, start, prev, cur in rows:
            rule = self._by_id.get(key.partition(SEP)[0])
            if rule is None:
                continue
            c = self._counters.get(key)
            if c is None:
                c = self._counters[key] = _Counter(start)
            elif start > c.start:
                c.roll(start, rule.window)
            if start == c.start:
                c.prev = max(c.prev, prev)
                c.cur = max(c.cur, cur)
            elif start == c.start - rule.window:
                c.prev = max(c.prev, cur)

    # --- housekeeping ----------------------------------------------------------------------------

    def sweep(self, now: float) -> int:
        """Drop counters idle for two windows (they would read as zero); returns how many."""
        stale = [
            k
            for k, c in self._counters.items()
            if (r := self._by_id.get(k.partition(SEP)[0])) is None or c.start + 2 * r.window <= now
        ]
        for k in stale:
            del self._counters[k]
        return len(stale)

    def inherit(self, old: RateLimiter) -> None:
        """Keep the counts of rules that survive a config reload (same id and window).

        Counter objects are shared, so charges still made through ``old`` (token usage of requests
        admitted before the reload) count here too; ``old`` stops applying remote deltas, which
        would otherwise be added twice while both limiters' fleet syncs run.
        """
        old.accept_remote = False
        for key, c in old._counters.items():
            rule_id = key.partition(SEP)[0]
            new, prev = self._by_id.get(rule_id), old._by_id.get(rule_id)
            if new is not None and prev is not None and new.window == prev.window:
                self._counters[key] = c

    def usage(self, key: str, now: float) -> float:
        """The sliding-window estimate of ``key`` at ``now`` (tests, debugging)."""
        rule = self._by_id.get(key.partition(SEP)[0])
        c = self._counters.get(key)
        if rule is None or c is None:
            return 0.0
        c.roll(int(now // rule.window) * rule.window, rule.window)
        return c.estimate(now, rule.window)


_SPAN = {60: "minute", 3600: "hour", 86400: "day"}
