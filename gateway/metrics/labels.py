"""Bounded Prometheus label values: what any metric of the gateway may use as a label.

A label value that comes from a request (a model name, a tool name, a subject) would let any
caller create series without limit: the series live in every worker's memory and in the
multiprocess files on disk, and a scrape reads all of them. Two rules keep them bounded:

* a value from the request is used only when it is in a set the configuration bounds
  (configured models and virtual models, MCP servers and their tools); anything else is
  :data:`UNKNOWN` (:func:`bounded`);
* every metric holds at most ``max_series`` label sets; later ones are counted under one
  overflow set where every label is :data:`OTHER` (:class:`SeriesCap`).

::

    cap = SeriesCap(metrics.max_series)
    key = cap.key((bounded(server, servers), bounded(tool, tools), status))
    counter.labels(*key).inc()
"""

from __future__ import annotations

from collections.abc import Container
from typing import Final

__all__ = ["OTHER", "UNAUTHENTICATED", "UNKNOWN", "SeriesCap", "bounded"]

UNKNOWN: Final = "unknown"  # a request named something the configuration does not have
OTHER: Final = "__other__"  # the overflow label set of a metric past its series cap
UNAUTHENTICATED: Final = ""  # the subject of a request refused before it was authenticated


def bounded(value: str, allowed: Container[str]) -> str:
    """``value`` if the configuration knows it (``value in allowed``), else :data:`UNKNOWN`."""
    return value if value in allowed else UNKNOWN


class SeriesCap:
    """At most ``max_series`` distinct label tuples; past that, every new one is the overflow tuple.

    Tuples seen before the cap was reached keep their own series. Memory is bounded by the cap:
    tuples refused are not remembered.
    """

    __slots__ = ("_seen", "max_series")

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self._seen: set[tuple[str, ...]] = set()

    def key(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """``labels``, or ``(OTHER, …)`` of the same length once the cap is reached."""
        seen = self._seen
        if labels in seen:
            return labels
        if len(seen) < self.max_series:
            seen.add(labels)
            return labels
        return (OTHER,) * len(labels)

    def __len__(self) -> int:
        return len(self._seen)
