"""Tables, JSON and the PNG plot for overhead runs (``bench.overhead``, ``bench.peers``).

python -m bench.report bench/results/overhead-<time>.json   # re-print a run's tables and plot
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _per_cpu_s(us_per_req: float | None) -> str:
    # Requests per second of the target's own CPU time: what one fully dedicated core would serve.
    # Less sensitive than wall-clock req/s to other work stealing the core on a shared machine.
    return "-" if not us_per_req else f"{1e6 / us_per_req:,.0f}"


def _pct(util: float | None) -> str:
    return "-" if util is None else f"{util * 100:.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def one_line(res: dict[str, Any]) -> str:
    """A progress line for one target: max rps and p50/p99 at the first rate."""
    parts = []
    for conns, run in res.get("closed", {}).items():
        parts.append(f"{run['rps']:,.0f} req/s@{conns}c")
    for rate, run in list(res.get("open", {}).items())[:1]:
        lat = run["latency_ms"]
        parts.append(f"@{rate}/s p50 {lat.get('p50', 0):.2f} p99 {lat.get('p99', 0):.2f} ms")
    return ", ".join(parts)


def render_table(doc: dict[str, Any]) -> str:
    """The three result tables (throughput, latency per rate, streaming) plus notes."""
    targets: dict[str, dict[str, Any]] = doc["targets"]
    ok = {n: r for n, r in targets.items() if "error" not in r}
    conns = [str(c) for c in doc["options"]["connections"]]
    out = [f"pinning: {doc['pinning']}", f"machine: {doc.get('machine', {})}"]
    repeat = doc["options"].get("repeat", 1)
    out += [
        f"figures: median of {repeat} interleaved rounds"
        if repeat > 1
        else "figures: one round (use --repeat for medians)",
        "",
    ]

    headers = [
        "target",
        *[f"req/s@{c}" for c in conns],
        "x aiohttp",
        f"cpu us/req@{conns[-1]}",
        "cpu x relay",
        "cpu %",
        "req/cpu-s",
        "wrk errors",
        "RSS worker MB",
        "RSS total MB",
    ]
    rows = []
    for name, res in ok.items():
        closed = res.get("closed", {})
        rss = res.get("rss", {})
        errors = sum(c.get("errors", 0) for c in closed.values())
        rows.append(
            [
                name,
                *[_f(closed.get(c, {}).get("rps"), 0) for c in conns],
                _f(res.get("rps_vs_aiohttp")),
                _f(closed.get(conns[-1], {}).get("cpu_us_per_req"), 0),
                _f(res.get("cpu_vs_relay")),
                _pct(closed.get(conns[-1], {}).get("cpu_util")),
                _per_cpu_s(closed.get(conns[-1], {}).get("cpu_us_per_req")),
                _f(errors),
                _f(rss.get("worker_mb"), 0),
                _f(rss.get("total_mb"), 0),
            ]
        )
    out += [
        "Closed loop (wrk): maximum throughput; cpu % = target's CPU use during the run (100 = its whole core),",
        "req/cpu-s = requests per second of the target's CPU time (what a dedicated core would serve),",
        "x relay = against the bare pyreqwest relay on the same transport (pyreqwest-tls for -tls rows)",
        table(headers, rows),
        "",
    ]

    headers = [
        "target",
        "offered",
        "achieved",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50",
        "+p90",
        "+p99",
        "cpu us/req",
        "cpu %",
        "non-2xx/err",
        "gen lag p99",
    ]
    rows = []
    for rate in [f"{r:g}" for r in doc["options"]["rates"]]:
        for name, res in ok.items():
            run = res.get("open", {}).get(rate)
            if not run:
                continue
            lat, add = run["latency_ms"], run.get("added_ms", {})
            bad = run["completed"] - run["ok"] + run["unfinished"]
            rows.append(
                [
                    name,
                    rate,
                    _f(run["achieved_rps"], 0),
                    _f(lat.get("p50")),
                    _f(lat.get("p90")),
                    _f(lat.get("p99")),
                    _f(add.get("p50")),
                    _f(add.get("p90")),
                    _f(add.get("p99")),
                    _f(run.get("cpu_us_per_req"), 0),
                    _pct(run.get("cpu_util")),
                    _f(bad),
                    _f(run["send_lag_ms"].get("p99")),
                ]
            )
    out += [
        "Open loop (constant rate, latency from scheduled send; + = added vs direct, same run)",
        table(headers, rows),
        "",
    ]

    if doc["options"].get("stream"):
        headers = [
            "target",
            "stream req/s",
            "x relay",
            "cpu us/stream",
            "cpu x relay",
            "ttft p50",
            "ttft p99",
            "+ttft p50",
            "+ttft p99",
            "total p50",
            "total p99",
            "non-2xx/err",
        ]
        rows = []
        for name, res in ok.items():
            stream = res.get("stream", {})
            sopen, sclosed = stream.get("open", {}), stream.get("closed", {})
            if not sopen:
                continue
            ttft, add, lat = (
                sopen.get("ttft_ms", {}),
                sopen.get("added_ttft_ms", {}),
                sopen.get("latency_ms", {}),
            )
            bad = sopen["completed"] - sopen["ok"] + sopen["unfinished"]
            rows.append(
                [
                    name,
                    _f(sclosed.get("rps"), 0),
                    _f(res.get("stream_rps_vs_relay")),
                    _f(sclosed.get("cpu_us_per_req"), 0),
                    _f(res.get("stream_cpu_vs_relay")),
                    _f(ttft.get("p50")),
                    _f(ttft.get("p99")),
                    _f(add.get("p50")),
                    _f(add.get("p99")),
                    _f(lat.get("p50")),
                    _f(lat.get("p99")),
                    _f(bad),
                ]
            )
        rate = f"{doc['options']['rates'][0]:g}"
        out += [
            f"Streaming, {doc['options'].get('mock_chunks', '?')} chunks per answer "
            f"(wrk at {conns[-1]} connections; open loop at {rate} req/s, ms)",
            table(headers, rows),
            "",
        ]

    for name, res in targets.items():
        if "error" in res:
            out.append(f"SKIPPED {name}: {res['error'][:400]}")
    gw = targets.get("gateway-tracing", {})
    if "rps_vs_tracing_off" in gw:
        line = f"tracing on / off throughput: {gw['rps_vs_tracing_off']:.2f}"
        if "rps_vs_tracing_off_exporter_paused" in gw:
            line += (
                f" with the exporter beside the load generator;"
                f" {gw['rps_vs_tracing_off_exporter_paused']:.2f} with it paused (the gateway's own cost)"
            )
        out.append(line)
    out += [f"note: {n}" for n in doc.get("notes", [])]
    return "\n".join(out).rstrip()


def write_json(doc: dict[str, Any], path: Path) -> Path:
    """Write the run document; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False))
    return path


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    """PNG: latency percentiles vs offered load per target (left), max throughput (right).

    Returns None (and says why) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return None
    targets = {n: r for n, r in doc["targets"].items() if "error" not in r}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, res) in enumerate(targets.items()):
        runs = sorted(((float(rate), run) for rate, run in res.get("open", {}).items()), key=lambda x: x[0])
        if not runs:
            continue
        xs = [r for r, _ in runs]
        color = colors[i % len(colors)]
        for q, style, marker in (("p50", "-", "o"), ("p99", "--", "^")):
            ys = [run["latency_ms"].get(q) for _, run in runs]
            left.plot(xs, ys, style, marker=marker, color=color, label=f"{name} {q}")
    left.set_xlabel("offered load (req/s, open loop)")
    left.set_ylabel("latency from scheduled send (ms)")
    left.set_yscale("log")
    left.set_title("Latency vs offered load (p50 solid/circle, p99 dashed/triangle)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    conns = str(doc["options"]["connections"][-1])
    names = [n for n, r in targets.items() if r.get("closed", {}).get(conns)]
    runs = [targets[n]["closed"][conns] for n in names]
    wall = [r["rps"] for r in runs]
    # Requests per second of the target's own CPU time: robust to other work sharing the core.
    per_cpu = [1e6 / r["cpu_us_per_req"] if r.get("cpu_us_per_req") else 0 for r in runs]
    ys = list(range(len(names)))
    bars = right.barh([y - 0.2 for y in ys], wall, height=0.4, color="tab:blue", label="req/s (wall clock)")
    right.bar_label(bars, labels=[f"{v:,.0f}" for v in wall], fontsize=7)
    bars = right.barh(
        [y + 0.2 for y in ys], per_cpu, height=0.4, color="tab:gray", label="req per CPU-second"
    )
    right.bar_label(bars, labels=[f"{v:,.0f}" for v in per_cpu], fontsize=7)
    right.set_yticks(ys, names)
    right.invert_yaxis()
    right.legend(fontsize=7, loc="lower right")
    right.set_xlabel(f"wrk, {conns} connections")
    right.set_title("Closed-loop throughput")
    fig.suptitle(f"{doc.get('kind', 'overhead')} {doc['started']}: {doc['pinning']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Re-render the tables (and the plot, next to the JSON) of a saved run."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: python -m bench.report RESULT.json")
    path = Path(args[0])
    doc = json.loads(path.read_text())
    print(render_table(doc))
    png = plot(doc, path.with_suffix(".png"))
    if png:
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
