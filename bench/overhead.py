"""Overhead run: what the gateway adds on one pinned vCPU, against the mock served directly.

    python -m bench.overhead [--duration 5] [--rates 250,1000] [--connections 16,64]
                             [--targets direct,aiohttp,pyreqwest,gateway,gateway-access,gateway-tracing,gateway-full]
                             [--quick] [--no-stream] [--no-pin] [--out bench/results]

For each target (see ``bench.targets``), in one session and against one mock upstream:

1. closed loop with wrk at each connection count: maximum requests/s, CPU per request;
2. open loop at each offered rate (``bench.loadgen``): p50/p90/p99 measured from the scheduled
   send time, *added* latency = target percentile minus the direct-to-mock percentile of this run;
3. streaming: wrk at the largest connection count, and an open-loop run at the first rate for
   time-to-first-token and its overhead;
4. RSS of the target's processes (granian's worker is a child of the supervisor).

The target runs on one CPU, the mock, helpers and load generators on the other (``taskset``);
the exporter and the OTLP sink run there at the lowest priority (``nice -n 19``), and the
exporter is paused during open-loop latency phases (``--exporter-during-latency run`` keeps it
running): sharing the load CPU, its bursts would delay the mock and the generator.
Results: a table on stdout, ``bench/results/overhead-<time>.json`` and a PNG plot beside it.
Numbers on a shared machine are noisy: compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile, report
from bench.loadgen import run_open_loop
from bench.procs import Pinning, cpu_seconds, decide_pinning, stop, tree_pids, tree_rss
from bench.targets import DEFAULT_TARGETS, TARGETS, RunContext, Running, relay_of, start_mock, validate
from bench.wrk import lua_script, run_wrk, wrk_available

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Options:
    """Knobs of one overhead run (see the module docstring and ``--help``)."""

    duration_s: float = 5.0
    warmup_s: float = 1.0
    rates: list[float] = field(default_factory=lambda: [250.0, 1000.0])
    connections: list[int] = field(default_factory=lambda: [16, 64])
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    stream: bool = True
    pin: bool = True
    timeout_s: float = 10.0
    mock_args: list[str] = field(default_factory=list)
    out_dir: Path = RESULTS_DIR
    plot: bool = True
    label: str = "overhead"
    repeat: int = 1
    profile: list[str] = field(default_factory=list)  # targets to sample with py-spy after measuring
    generator: str = "pyreqwest"  # open-loop client; pyreqwest costs about half aiohttp's CPU per request
    # Latency phases with the exporter SIGSTOPped (spans wait in NATS, exported right after):
    # on two CPUs it shares the load CPU, where its bursts delay the mock and the generator.
    pause_exporter: bool = True


@contextlib.contextmanager
def _exporter_paused(running: Running, enabled: bool) -> Iterator[None]:
    """SIGSTOP the target's exporter (if any) for a latency phase, SIGCONT it after.

    The gateway's work is the same either way (it publishes to NATS whether or not a consumer
    reads); what changes is that the exporter's CPU bursts stop landing on the load CPU, where
    they would delay the mock and the generator and read as latency added by the gateway."""
    procs = [p for p in running.helpers if p.name == "exporter" and p.popen.poll() is None] if enabled else []
    for proc in procs:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)


def _measured_root(running: Running, mock_pid: int) -> int:
    return running.measured.pid if running.measured else mock_pid


def _closed(
    running: Running, script: Path, conns: int, opts: Options, pinning: Pinning, root: int
) -> dict[str, Any]:
    pids = tree_pids(root)
    cpu0 = cpu_seconds(pids)
    res = run_wrk(
        running.chat_url, script, connections=conns, duration_s=opts.duration_s, prefix=pinning.prefix("load")
    )
    cpu = cpu_seconds(pids) - cpu0
    out = res.to_dict()
    out["cpu_us_per_req"] = round(cpu / res.requests * 1e6, 1) if res.requests else None
    out["cpu_util"] = round(cpu / res.duration_s, 2) if res.duration_s else None
    return out


def _open(running: Running, rate: float, stream: bool, opts: Options, root: int) -> dict[str, Any]:
    pids = tree_pids(root)
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    res = run_open_loop(
        running.chat_url,
        running.body(stream),
        rate=rate,
        duration_s=opts.duration_s,
        warmup_s=opts.warmup_s,
        headers=running.headers,
        timeout_s=opts.timeout_s,
        client=opts.generator,
    )
    cpu, wall = cpu_seconds(pids) - cpu0, time.monotonic() - t0
    out = res.to_dict()
    # CPU covers warm-up and measured phases; divide by every request that got an answer in both.
    answered = res.ok * (1 + opts.warmup_s / opts.duration_s)
    out["cpu_us_per_req"] = round(cpu / answered * 1e6, 1) if answered else None
    out["cpu_util"] = round(cpu / wall, 2) if wall else None
    return out


def measure(
    running: Running, opts: Options, pinning: Pinning, mock_pid: int, work_dir: Path
) -> dict[str, Any]:
    """All phases against one started target; returns its JSON-ready result."""
    root = _measured_root(running, mock_pid)
    result: dict[str, Any] = {
        "closed": {},
        "open": {},
        "stream": {},
        "features": running.features,
        "model": running.model,
    }
    rss_peak: dict[str, float] = {}

    def sample_rss() -> None:
        for key, value in tree_rss(root).items():
            rss_peak[key] = max(rss_peak.get(key, 0), value)

    scripts = {}
    for stream in (False, True):
        path = work_dir / f"{running.name}{'-stream' if stream else ''}.lua"
        path.write_text(
            lua_script(running.body(stream), {"Content-Type": "application/json", **running.headers})
        )
        scripts[stream] = path
    if wrk_available():
        # Warm-up: open the connections, let the target's caches and the pools fill; discarded.
        run_wrk(
            running.chat_url,
            scripts[False],
            connections=max(opts.connections),
            duration_s=opts.warmup_s,
            prefix=pinning.prefix("load"),
        )
        for conns in opts.connections:
            result["closed"][str(conns)] = _closed(running, scripts[False], conns, opts, pinning, root)
            sample_rss()
            time.sleep(0.3)
        if opts.pause_exporter and any(p.name == "exporter" for p in running.helpers):
            # The same maximum once more with the exporter paused: the gateway's own cost of
            # tracing (it still publishes every batch to NATS), without the exporter competing
            # with wrk and the mock for the load CPU. Spans wait in NATS meanwhile.
            conns = max(opts.connections)
            with _exporter_paused(running, True):
                paused = _closed(running, scripts[False], conns, opts, pinning, root)
            result["closed_exporter_paused"] = {str(conns): paused}
            time.sleep(3.0)  # the exporter catches up before the next phase
    else:
        result["closed_skipped"] = "wrk not found"
    for rate in opts.rates:
        with _exporter_paused(running, opts.pause_exporter):
            result["open"][f"{rate:g}"] = _open(running, rate, False, opts, root)
        sample_rss()
        time.sleep(0.3)
    if opts.stream:
        if wrk_available():
            result["stream"]["closed"] = _closed(
                running, scripts[True], max(opts.connections), opts, pinning, root
            )
            result["stream"]["closed"]["connections"] = max(opts.connections)
        with _exporter_paused(running, opts.pause_exporter):
            result["stream"]["open"] = _open(running, opts.rates[0], True, opts, root)
        sample_rss()
    result["rss"] = rss_peak
    return result


def add_deltas(results: dict[str, dict[str, Any]]) -> None:
    """Added latency (target minus direct, same run) and throughput ratios, in place."""
    direct = results.get("direct", {})
    aiohttp_rps = _max_rps(results.get("aiohttp", {}))
    for res in results.values():
        if "error" in res:
            continue
        for rate, run in res.get("open", {}).items():
            ref = direct.get("open", {}).get(rate, {}).get("latency_ms", {})
            run["added_ms"] = {
                q: round(run["latency_ms"][q] - ref[q], 3)
                for q in ("p50", "p90", "p99")
                if q in ref and q in run["latency_ms"]
            }
        s_open, d_open = res.get("stream", {}).get("open"), direct.get("stream", {}).get("open")
        if s_open and d_open:
            s_open["added_ttft_ms"] = {
                q: round(s_open["ttft_ms"][q] - d_open["ttft_ms"][q], 3)
                for q in ("p50", "p90", "p99")
                if q in s_open["ttft_ms"] and q in d_open["ttft_ms"]
            }
        rps = _max_rps(res)
        if rps and aiohttp_rps:
            res["rps_vs_aiohttp"] = round(rps / aiohttp_rps, 2)
    add_relay_ratios(results)
    off, on = _max_rps(results.get("gateway", {})), _max_rps(results.get("gateway-tracing", {}))
    if off and on:
        results["gateway-tracing"]["rps_vs_tracing_off"] = round(on / off, 3)
        paused = _max_rps(results["gateway-tracing"], "closed_exporter_paused")
        if paused:
            results["gateway-tracing"]["rps_vs_tracing_off_exporter_paused"] = round(paused / off, 3)


def add_relay_ratios(results: dict[str, dict[str, Any]]) -> None:
    """Each row against the bare pyreqwest relay on the same transport (the issue's goals), in place.

    ``cpu_vs_relay``: CPU per request at the largest connection count; ``stream_rps_vs_relay`` and
    ``stream_cpu_vs_relay``: streamed requests per second and CPU per stream (closed loop).
    """
    for name, res in results.items():
        relay = results.get(relay_of(name), {})
        if "error" in res or "error" in relay or not relay:
            continue
        pairs = {
            "cpu_vs_relay": (_last(res.get("closed", {})), _last(relay.get("closed", {})), "cpu_us_per_req"),
            "stream_rps_vs_relay": (
                res.get("stream", {}).get("closed"),
                relay.get("stream", {}).get("closed"),
                "rps",
            ),
            "stream_cpu_vs_relay": (
                res.get("stream", {}).get("closed"),
                relay.get("stream", {}).get("closed"),
                "cpu_us_per_req",
            ),
        }
        for key, (mine, ref, metric) in pairs.items():
            if mine and ref and mine.get(metric) and ref.get(metric):
                res[key] = round(mine[metric] / ref[metric], 3)


def _last(closed: dict[str, Any]) -> dict[str, Any] | None:
    """The closed-loop run at the largest connection count."""
    return closed[max(closed, key=int)] if closed else None


def _max_rps(res: dict[str, Any], phase: str = "closed") -> float | None:
    closed = res.get(phase, {})
    return max((c["rps"] for c in closed.values() if "rps" in c), default=None)


def machine_info() -> dict[str, Any]:
    """Hardware and versions to print beside the figures (no paths, no hostnames)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("granian", "pyreqwest", "aiohttp", "uvloop", "llm-gateway"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


def _profile(running: Running, opts: Options, pinning: Pinning, out: Path) -> str:
    """An extra, unreported wrk phase at the largest connection count under py-spy."""
    if running.measured is None or not wrk_available():
        return "no profile: nothing to sample or no wrk"
    lua = out.with_suffix(".lua")
    lua.write_text(lua_script(running.body(), {"Content-Type": "application/json", **running.headers}))
    conns = max(opts.connections)

    def load() -> object:
        return run_wrk(
            running.chat_url,
            lua,
            connections=conns,
            duration_s=opts.duration_s,
            prefix=pinning.prefix("load"),
        )

    try:
        return profile.record(running.measured.pid, out, opts.duration_s, load, pinning.prefix("load"))
    finally:
        lua.unlink(missing_ok=True)


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return json.loads(resp.read())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def _run_target(
    name: str, factory: Any, ctx: RunContext, opts: Options, mock_pid: int, out_prefix: Path
) -> dict[str, Any]:
    """Start, validate, measure and stop one target; errors become an ``error`` entry."""
    print(f"[{name}] starting", flush=True)
    t0 = time.monotonic()
    try:
        running = factory(ctx)
    except Exception as exc:  # one broken target must not sink the others' figures
        print(f"[{name}] SKIPPED: {exc}", flush=True)
        return {"error": f"start failed: {exc}"[:1500]}
    try:
        problem = validate(running)
        if problem:
            print(f"[{name}] SKIPPED: {problem}", flush=True)
            return {"error": f"validation failed: {problem}"}
        try:
            result = measure(running, opts, ctx.pinning, mock_pid, ctx.work_dir)
        except Exception as exc:  # the target died or hung mid-run: keep the others' figures
            tail = running.measured.log_tail(1500) if running.measured else ""
            alive = running.measured is None or running.measured.popen.poll() is None
            print(f"[{name}] FAILED during measurement: {exc}\n{name} log tail:\n{tail}", flush=True)
            return {
                "error": f"measurement failed ({'still running' if alive else 'process exited'}): {exc}; log: {tail}"[
                    :3000
                ]
            }
        print(f"[{name}] done in {time.monotonic() - t0:.0f}s: {report.one_line(result)}", flush=True)
        if running.probes:
            time.sleep(1.5)  # let the ring drain and the exporter flush its last batches
            result["probes"] = {key: _get_json(url) for key, url in running.probes.items()}
            print(f"[{name}] probes: {result['probes']}", flush=True)
        if name in opts.profile:
            opts.out_dir.mkdir(parents=True, exist_ok=True)
            result["profile"] = _profile(running, opts, ctx.pinning, Path(f"{out_prefix}-{name}.collapsed"))
            print(result["profile"], flush=True)
        return result
    finally:
        running.stop()


def median_merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge per-round results key by key: numbers become their median, dicts merge recursively."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        if isinstance(first, dict):
            out[key] = median_merge([v for v in values if isinstance(v, dict)])
        elif isinstance(first, int | float) and not isinstance(first, bool):
            nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            med = statistics.median(nums)
            # Counts stay integers; measurements keep microsecond precision.
            out[key] = round(med) if all(isinstance(v, int) for v in nums) else round(med, 3)
        else:
            out[key] = first
    return out


def merge_rounds(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per target, the median over the rounds that succeeded (an error only if all failed)."""
    merged: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        good = [r[name] for r in rounds if "error" not in r[name]]
        if not good:
            merged[name] = rounds[0][name]
            continue
        merged[name] = median_merge(good) if len(good) > 1 else good[0]
        merged[name]["rounds"] = len(good)
    return merged


def run(opts: Options, extra_targets: dict[str, Any] | None = None) -> dict[str, Any]:
    """One whole overhead run; returns the JSON document also written under ``opts.out_dir``."""
    factories = {**TARGETS, **(extra_targets or {})}
    unknown = [t for t in opts.targets if t not in factories]
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(unknown)} (known: {', '.join(factories)})")
    names = ["direct"] + [t for t in opts.targets if t != "direct"]  # the reference always runs first
    pinning = decide_pinning(disable=not opts.pin)
    print(f"pinning: {pinning.note}", flush=True)
    if opts.pause_exporter:
        print("exporter: paused during open-loop latency phases (spans wait in NATS)", flush=True)
    if pinning.enabled:
        os.sched_setaffinity(0, {pinning.load_cpu})  # this process is the open-loop generator
    if not wrk_available():
        print("wrk not found: closed-loop max throughput skipped (apt-get install wrk)", flush=True)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out_prefix = opts.out_dir / f"{opts.label}-{stamp}"
    load_before = os.getloadavg()[0]
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work_dir = Path(tmp)
        mock = start_mock(work_dir, pinning, opts.mock_args)
        ctx = RunContext(f"http://127.0.0.1:{mock.port}", work_dir, pinning)
        tls_mock = None
        if any(n.endswith("-tls") for n in names):  # a second mock, serving HTTPS
            ctx.ca_file = work_dir / "mock-ca.pem"
            tls_mock = start_mock(work_dir, pinning, opts.mock_args, ca_file=ctx.ca_file)
            ctx.tls_mock_url = f"https://127.0.0.1:{tls_mock.port}"
        try:
            for round_no in range(opts.repeat):
                if opts.repeat > 1:
                    print(f"--- round {round_no + 1}/{opts.repeat}", flush=True)
                rounds.append(
                    {
                        name: _run_target(name, factories[name], ctx, opts, mock.pid, out_prefix)
                        for name in names
                    }
                )
        finally:
            stop(mock)
            if tls_mock is not None:
                stop(tls_mock)
    results = merge_rounds(rounds)
    add_deltas(results)
    doc = {
        "kind": opts.label,
        "started": started.isoformat(timespec="seconds"),
        "pinning": pinning.note,
        "options": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "rates": opts.rates,
            "connections": opts.connections,
            "stream": opts.stream,
            "repeat": opts.repeat,
            "generator": opts.generator,
            "mock_args": opts.mock_args,
            "mock_chunks": int(opts.mock_args[opts.mock_args.index("--chunks") + 1])
            if "--chunks" in opts.mock_args
            else None,
            "exporter_during_latency": "paused" if opts.pause_exporter else "running",
        },
        # Load average (1 min) around the run: other work on the machine is the main source of noise.
        "machine": {
            **machine_info(),
            "loadavg_before": round(load_before, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
        },
        "notes": list(dict.fromkeys(ctx.notes)),
        "targets": results,
        "rounds": rounds if opts.repeat > 1 else [],
    }
    print()
    print(report.render_table(doc))
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(doc, opts.out_dir / f"{opts.label}-{stamp}.json")
    print(f"\nJSON: {json_path}")
    if opts.plot:
        png = report.plot(doc, opts.out_dir / f"{opts.label}-{stamp}.png")
        if png:
            print(f"plot: {png}")
    return doc


def parse_args(argv: list[str] | None = None, extra_targets: list[str] | None = None) -> Options:
    """CLI → :class:`Options` (``--quick`` shortens everything to about a minute or two)."""
    known = [*TARGETS, *(extra_targets or [])]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, help="seconds per measured phase (default 5; quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of discarded warm-up per phase (default 1)")
    parser.add_argument(
        "--rates", help="open-loop offered loads in req/s, comma-separated (default 250,1000)"
    )
    parser.add_argument("--connections", help="wrk connection counts, comma-separated (default 16,64)")
    parser.add_argument("--targets", help=f"comma-separated, from: {', '.join(known)}")
    parser.add_argument("--quick", action="store_true", help="2 s phases, 250 req/s, 64 connections")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all targets, interleaved; figures are medians (default 1)",
    )
    parser.add_argument(
        "--generator", choices=["pyreqwest", "aiohttp"], default="pyreqwest", help="open-loop HTTP client"
    )
    parser.add_argument(
        "--profile", default="", help="comma-separated targets to sample with py-spy afterwards"
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming phases")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--exporter-during-latency",
        choices=["pause", "run"],
        default="pause",
        help="the exporter during open-loop latency phases (default: paused, see bench/README.md)",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="per-request timeout of the open-loop generator"
    )
    parser.add_argument("--mock-latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--mock-chunks", type=int, default=150, help="tokens per answer, one per stream chunk (default 150)"
    )
    parser.add_argument("--mock-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for JSON and PNG")
    args = parser.parse_args(argv)
    opts = Options(
        repeat=max(1, args.repeat),
        generator=args.generator,
        timeout_s=args.timeout,
        out_dir=args.out,
        plot=not args.no_plot,
        pin=not args.no_pin,
        stream=not args.no_stream,
        pause_exporter=args.exporter_during_latency == "pause",
    )
    if args.quick:
        opts.duration_s, opts.warmup_s, opts.rates, opts.connections = 2.0, 1.0, [250.0], [64]
    if args.duration is not None:
        opts.duration_s = args.duration
    if args.warmup is not None:
        opts.warmup_s = args.warmup
    if args.rates:
        opts.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.connections:
        opts.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    opts.profile = [t.strip() for t in args.profile.split(",") if t.strip()]
    if args.targets:
        opts.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    opts.mock_args = [
        "--latency-ms",
        f"{args.mock_latency_ms:g}",
        "--chunks",
        str(args.mock_chunks),
        "--chunk-delay-ms",
        f"{args.mock_chunk_delay_ms:g}",
    ]
    if opts.duration_s <= 0 or not opts.rates or not opts.connections or min(opts.rates) <= 0:
        parser.error("durations, rates and connections must be positive")
    return opts


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.overhead`` and ``make bench``."""
    run(parse_args(argv))


if __name__ == "__main__":
    main()
