"""Microbenchmark of target selection: µs per ``Router.plan()`` for each strategy.

    python -m bench.micro_routing [--number 200000]

Budget: under 5 µs per plan (issue 4). The latency strategy is measured twice: on its ranking
snapshot (refreshed every 100 ms, the common case at any real request rate) and re-ranking at
every call (the worst case). Timed in process CPU time (``time.process_time``) so
that other load on a shared machine does not count against us; best of 5 runs. Targets are fed a few latency samples first so the
latency strategy does its real work (scores, fast set) rather than probing.
"""

from __future__ import annotations

import argparse
import random
import time
import timeit

from gateway.config import parse_config
from gateway.routing import Router

CONFIG = """
providers:
  - {name: a, base_url: "http://127.0.0.1:1", models: [m1, m2]}
  - {name: b, base_url: "http://127.0.0.1:2", models: [m1]}
virtual_models:
  - name: weighted
    type: weight-based-routing
    load_balance_targets: [{target: a/m1, weight: 70}, {target: b/m1, weight: 30}]
  - name: latency
    type: latency-based-routing
    load_balance_targets: [{target: a/m1}, {target: b/m1}, {target: a/m2}]
  - name: priority
    type: priority-based-routing
    load_balance_targets: [{target: a/m1, priority: 0}, {target: b/m1, priority: 1}]
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args(argv)
    now = [1000.0]
    router = Router(parse_config(CONFIG, env={}), clock=lambda: now[0], rng=random.Random(1))
    for i in range(50):
        router.record("a/m1", True, 1.0, 100, now=now[0] + i * 0.01)
        router.record("b/m1", True, 1.1, 100, now=now[0] + i * 0.01)
        router.record("a/m2", True, 3.0, 100, now=now[0] + i * 0.01)
    now[0] += 1
    # Reference operation, to scale the figures on a loaded or slow machine (~20-30 ns on an
    # idle modern core).
    ref = {"a": 1}
    best = min(
        timeit.Timer(lambda: ref.get("a"), timer=time.process_time).repeat(number=args.number, repeat=5)
    )
    print(f"reference dict.get + call  {best / args.number * 1e9:6.0f} ns")
    plan = router.plan
    for model in ("a/m1", "weighted", "latency", "priority"):
        timer = timeit.Timer(lambda m=model: plan(m), timer=time.process_time)  # type: ignore[misc]
        best = min(timer.repeat(number=args.number, repeat=5))
        print(f"plan({model!r:12}) {best / args.number * 1e6:6.2f} µs")

    # Worst case of the latency strategy: the 100 ms ranking snapshot is stale at every call.
    strategy = router._virtual["latency"].strategy  # white-box: expire the snapshot by hand

    def stale() -> None:
        strategy.snapshot_until = 0.0  # type: ignore[union-attr]
        plan("latency")

    best = min(timeit.Timer(stale, timer=time.process_time).repeat(number=args.number // 10, repeat=5))
    print(f"plan('latency') re-ranked every call {best / (args.number // 10) * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
