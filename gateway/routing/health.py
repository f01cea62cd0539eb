"""Per-target statistics and circuit breaker, kept in memory, fed by the request handler.

One :class:`TargetHealth` per concrete model id (``<provider>/<model>``), shared by every
virtual model that names it: a provider that fails, fails for all of them.

Breaker states::

    closed ──(N consecutive failures, or failure ratio over the window)──▶ open
    open ──(cool-down elapsed)──▶ half-open: one probe request per ``probe_interval_s``
    half-open ──probe succeeds──▶ closed (history cleared)
    half-open ──probe fails──▶ open again, cool-down doubled up to ``max_cooldown_s``

Everything takes ``now`` (monotonic seconds) as an argument: no clock is read here, so tests
drive time by hand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

_INF = float("inf")

__all__ = ["BreakerPolicy", "TargetHealth"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a target is cooled down, and for how long."""

    consecutive_failures: int = 5
    failure_ratio: float = 0.5  # over the window, once it holds ``min_calls`` calls
    min_calls: int = 20
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    probe_interval_s: float = 5.0  # half-open: at most one trial request per interval
    window_s: float = 1200.0  # statistics cover the last 20 minutes ...
    window_calls: int = 100  # ... or the last 100 calls, whichever is fewer


class TargetHealth:
    """Outcomes and latency scores of one target over a sliding window, plus its breaker."""

    __slots__ = (
        "policy",
        "_samples",
        "_n_fail",
        "_score_sum",
        "_n_score",
        "consecutive_failures",
        "open_until",
        "tripped",
        "cooldown_s",
        "next_probe",
        "data_probe_at",
        "mean",
        "expires_at",
    )

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        # (time, ok, score or -1.0): score is seconds per output token of a success.
        self._samples: deque[tuple[float, bool, float]] = deque()
        self._n_fail = 0
        self._score_sum = 0.0
        self._n_score = 0
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.tripped = False  # True from the moment the breaker opens until a probe succeeds
        self.cooldown_s = self.policy.cooldown_s
        self.next_probe = 0.0  # half-open: earliest time of the next trial request
        self.data_probe_at = 0.0  # latency routing: earliest next probe of a target without data
        # Cached for the hot path: the mean score (-1: no data) stays valid until the oldest
        # sample leaves the time window at ``expires_at``.
        self.mean = -1.0
        self.expires_at = _INF

    # --- breaker -----------------------------------------------------------------------------

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (closed, or half-open with the probe slot free)."""
        if not self.tripped:
            return True
        return now >= self.open_until and now >= self.next_probe

    def take_probe(self, now: float) -> None:
        """Claim the half-open probe slot (called when this target is chosen to serve)."""
        if self.tripped:
            self.next_probe = now + self.policy.probe_interval_s

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half-open`` (for logs, metrics and tests)."""
        if not self.tripped:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def _open(self, now: float) -> None:
        self.tripped = True
        self.open_until = now + self.cooldown_s
        self.next_probe = self.open_until

    # --- statistics -------------------------------------------------------------------------

    def record(self, ok: bool, score: float | None, now: float) -> None:
        """Feed one finished attempt: ``score`` is seconds per output token (or the latency)."""
        # Old samples dropped without a refresh, then one refresh after the new sample: this
        # runs once per request (two refreshes and the tuple unpacking cost 1.8 µs; timeit).
        self._drop_old(now, 1)
        s = score if ok and score is not None and score >= 0 else -1.0
        self._samples.append((now, ok, s))
        if s >= 0:
            self._score_sum += s
            self._n_score += 1
        self._refresh()
        if ok:
            self.consecutive_failures = 0
            if self.tripped and now >= self.open_until:
                self._close(now, s)
            return
        self._n_fail += 1
        self.consecutive_failures += 1
        if self.tripped:
            if now >= self.open_until:  # the half-open probe failed: back off harder
                self.cooldown_s = min(self.cooldown_s * 2, self.policy.max_cooldown_s)
                self._open(now)
            return
        p = self.policy
        n = len(self._samples)
        if self.consecutive_failures >= p.consecutive_failures or (
            n >= p.min_calls and self._n_fail >= p.failure_ratio * n
        ):
            self._open(now)

    def _close(self, now: float, score: float) -> None:
        # Failures from before the outage would re-trip the ratio test at once; start afresh.
        self.tripped = False
        self.cooldown_s = self.policy.cooldown_s
        self._samples.clear()
        self._n_fail = 0
        self._score_sum = 0.0
        self._n_score = 0
        self._samples.append((now, True, score))
        if score >= 0:
            self._score_sum = score
            self._n_score = 1
        self._refresh()

    def _refresh(self) -> None:
        self.mean = self._score_sum / self._n_score if self._n_score else -1.0
        samples = self._samples
        self.expires_at = samples[0][0] + self.policy.window_s if samples else _INF

    def _prune(self, now: float, room: int = 0) -> None:
        self._drop_old(now, room)
        self._refresh()

    def _drop_old(self, now: float, room: int) -> None:
        samples = self._samples
        horizon = now - self.policy.window_s
        limit = self.policy.window_calls - room  # room: samples about to be added
        while samples and (len(samples) > limit or samples[0][0] < horizon):
            _, ok, s = samples.popleft()
            if not ok:
                self._n_fail -= 1
            if s >= 0:
                self._score_sum -= s
                self._n_score -= 1

    def score(self, now: float) -> float | None:
        """Mean seconds per output token over the window; None without recent successes."""
        if now >= self.expires_at:
            self._prune(now)
        mean = self.mean
        return None if mean < 0 else mean

    def calls(self) -> int:
        """Calls in the window (as of the last prune)."""
        return len(self._samples)

    def failures(self) -> int:
        """Failed calls in the window (as of the last prune)."""
        return self._n_fail
