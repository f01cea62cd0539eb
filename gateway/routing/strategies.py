"""Target selection strategies of a virtual model: pure, O(targets), no I/O.

A strategy sees targets by index (their position in ``load_balance_targets``) and answers two
questions: which of the currently available targets serves this request (:meth:`pick`), and in
which order the others are tried as fallbacks (:meth:`order`). Health comes from
:class:`~gateway.routing.health.TargetHealth`; time is passed in and randomness is an injected
``random.Random`` so that tests are deterministic.

- weight-based: smooth weighted round-robin (nginx): over any window of ``sum(weights)``
  requests every target gets exactly its share, interleaved rather than in bursts.
- latency-based: mean seconds per output token over the window; targets within ``fast_ratio``
  (1.2x) of the fastest are "fast" and share traffic at random; a target without recent data is
  probed (one request per ``probe_interval_s``) so it can earn its way back in. The ranking is
  a snapshot refreshed at most every ``refresh_s`` (100 ms): the scores are averages over 20
  minutes or 100 calls, so re-sorting them per request would buy nothing but CPU. Breaker
  changes bypass the snapshot at once (the router checks health before using it).
- priority-based: the lowest ``priority`` value among available targets, ties in config order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from gateway.routing.health import TargetHealth

__all__ = ["LatencyBased", "PriorityBased", "Strategy", "WeightBased"]


class Strategy(Protocol):
    def pick(self, avail: Sequence[int], now: float) -> int:
        """Index of the target that serves; ``avail`` is non-empty, in config order."""
        ...

    def order(self, now: float) -> Sequence[int]:
        """Every target index, best fallback first."""
        ...


class WeightBased:
    """Smooth weighted round-robin over the available targets."""

    __slots__ = ("weights", "current", "_order")

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self.current = [0.0] * len(self.weights)
        # Fallbacks by descending weight; ties keep config order (sorted is stable).
        self._order = tuple(sorted(range(len(self.weights)), key=lambda i: -self.weights[i]))

    def pick(self, avail: Sequence[int], now: float) -> int:
        weights, current = self.weights, self.current
        total = 0.0
        best = -1
        best_value = 0.0
        for i in avail:
            w = weights[i]
            if w <= 0:
                continue
            c = current[i] + w
            current[i] = c
            total += w
            if best < 0 or c > best_value:
                best, best_value = i, c
        if best < 0:  # only zero-weight targets are left: they still beat failing the request
            return avail[0]
        current[best] -= total
        return best

    def order(self, now: float) -> Sequence[int]:
        return self._order


class PriorityBased:
    """Lowest priority value first."""

    __slots__ = ("_order", "_rank")

    def __init__(self, priorities: Sequence[int]) -> None:
        self._order = tuple(sorted(range(len(priorities)), key=lambda i: priorities[i]))
        self._rank = [0] * len(priorities)
        for rank, i in enumerate(self._order):
            self._rank[i] = rank

    def pick(self, avail: Sequence[int], now: float) -> int:
        rank = self._rank
        best = avail[0]
        for i in avail:
            if rank[i] < rank[best]:
                best = i
        return best

    def order(self, now: float) -> Sequence[int]:
        return self._order


class LatencyBased:
    """Fastest targets (within ``fast_ratio`` of the best) share the traffic."""

    __slots__ = (
        "healths",
        "rng",
        "fast_ratio",
        "probe_interval_s",
        "refresh_s",
        "_all",
        "_scores",
        "snapshot_fast",
        "snapshot_order",
        "snapshot_until",
        "generation",
    )

    def __init__(
        self,
        healths: Sequence[TargetHealth],
        rng: random.Random,
        fast_ratio: float = 1.2,
        probe_interval_s: float = 1.0,
        refresh_s: float = 0.1,
    ) -> None:
        self.healths = list(healths)
        self.rng = rng
        self.fast_ratio = fast_ratio
        self.probe_interval_s = probe_interval_s
        self._all = tuple(range(len(self.healths)))
        self._scores = [0.0] * len(self.healths)
        self.refresh_s = refresh_s
        # Snapshot of the last full ranking (all targets available, no probe due).
        self.snapshot_fast: list[int] = []
        self.snapshot_order: list[int] = []
        self.snapshot_until = -_INF
        self.generation = 0  # bumped with every new snapshot

    def snapshot_pick(self, now: float) -> int:
        """A fast target from the snapshot, or -1 when it is stale (call :meth:`rank`)."""
        if now >= self.snapshot_until:
            return -1
        fast = self.snapshot_fast
        return fast[0] if len(fast) == 1 else fast[int(self.rng.random() * len(fast))]

    def _take_snapshot(self, now: float, limit: float) -> None:
        healths, scores = self.healths, self._scores
        until = now + self.refresh_s
        fast = []
        for i, h in enumerate(healths):
            # Stale as soon as a score leaves its window or a data-less target is due a probe.
            edge = h.expires_at if h.mean >= 0 else h.data_probe_at
            if edge < until:
                until = edge
            if scores[i] <= limit:
                fast.append(i)
        self.snapshot_fast = fast
        self.snapshot_order = sorted(self._all, key=scores.__getitem__)
        self.snapshot_until = until
        self.generation += 1

    def rank(self, avail: Sequence[int], now: float) -> tuple[int, list[int]]:
        """The chosen target and the rest of ``avail`` by ascending score (no data last)."""
        healths = self.healths
        scores = self._scores  # reused scratch list, indexed like the targets
        inf = _INF
        best = inf
        best_i = -1
        unknown = -1
        # Plain loops, no comprehensions: this runs per request and 3.11 comprehensions
        # allocate a function frame each.
        for i in avail:
            h = healths[i]
            s = h.mean if now < h.expires_at else _score_or_neg(h, now)
            if s < 0:
                # Probe a target without data, but only once per interval: a cold start
                # must not send a whole burst to an unmeasured upstream.
                if unknown < 0 and now >= h.data_probe_at:
                    unknown = i
                s = inf
            elif s < best:
                best, best_i = s, i
            scores[i] = s
        if unknown >= 0:
            healths[unknown].data_probe_at = now + self.probe_interval_s
            first = unknown
        elif best_i < 0:
            first = avail[int(self.rng.random() * len(avail))]
        else:
            limit = best * self.fast_ratio
            n_fast = 0
            for i in avail:
                if scores[i] <= limit:
                    n_fast += 1
            first = best_i
            if n_fast > 1:
                k = int(self.rng.random() * n_fast)
                for i in avail:
                    if scores[i] <= limit:
                        if not k:
                            first = i
                            break
                        k -= 1
            if len(avail) == len(healths):  # a full ranking: reusable for refresh_s
                self._take_snapshot(now, limit)
                return first, [i for i in self.snapshot_order if i != first]
        rest = []
        for i in avail:
            if i != first:
                rest.append(i)
        if len(rest) > 1:
            rest.sort(key=scores.__getitem__)
        return first, rest

    def pick(self, avail: Sequence[int], now: float) -> int:
        return self.rank(avail, now)[0]

    def order(self, now: float) -> Sequence[int]:
        return sorted(self._all, key=lambda i: _score_or_inf(self.healths[i], now))


_INF = float("inf")


def _score_or_neg(h: TargetHealth, now: float) -> float:
    s = h.score(now)
    return -1.0 if s is None else s


def _score_or_inf(h: TargetHealth, now: float) -> float:
    s = h.score(now)
    return _INF if s is None else s
