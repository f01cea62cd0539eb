"""Smoke test of the benchmark harness: it runs, and what it reports is well-formed.

No timing assertions: the machine is shared, so only shapes, counts and orderings are checked.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import percentiles, run_open_loop, summarize
from bench.procs import Pinning, Proc, free_port, start, stop, tree_pids, tree_rss, wait_http, wait_port
from bench.targets import Running, degrade, validate
from bench.wrk import lua_script, parse_wrk_output

WRK_SAMPLE = """\
Running 3s test @ http://127.0.0.1:18101/v1/chat/completions
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    26.19ms    6.51ms  56.25ms   71.94%
    Req/Sec     2.44k   521.64     3.62k    76.67%
  Latency Distribution
     50%   26.26ms
     75%   29.80ms
     90%   33.10ms
     99%   49.10ms
  7290 requests in 3.00s, 2.87MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2427.62
Transfer/sec:    979.33KB
"""

WRK_SAMPLE_US = """\
Running 1s test @ http://127.0.0.1:18099/v1/chat/completions
  1 threads and 16 connections
  Latency Distribution
     50%  812.00us
     75%    1.02ms
     90%    1.40ms
     99%    1.20s
  8934 requests in 1.00s, 1.96MB read
Requests/sec:   8928.80
"""

CHAT = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}'


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    """The mock upstream and both bare baselines on free ports (unpinned)."""
    log_dir = tmp_path_factory.mktemp("bench-smoke")
    mock_port = free_port()
    procs = {
        "mock": start(
            "mock",
            [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port), "--no-record"],
            log_dir,
            port=mock_port,
        )
    }
    for name in ("aiohttp", "pyreqwest"):
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            f"bench.baselines.{name}_proxy",
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{mock_port}",
        ]
        procs[name] = start(name, cmd, log_dir, port=port)
    try:
        wait_http(procs["mock"], f"http://127.0.0.1:{mock_port}/v1/models")
        for name in ("aiohttp", "pyreqwest"):
            wait_http(procs[name], f"http://127.0.0.1:{procs[name].port}/healthz", require_ok=True)
        yield procs
    finally:
        for proc in procs.values():
            stop(proc)


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def test_open_loop_against_mock_is_well_formed(servers: dict[str, Proc]) -> None:
    url = f"http://127.0.0.1:{servers['mock'].port}/v1/chat/completions"
    result = run_open_loop(url, CHAT, rate=50, duration_s=1.0, warmup_s=0.2, timeout_s=5.0)
    data = result.to_dict()
    assert data["scheduled"] == 50
    assert data["completed"] + data["unfinished"] == 50
    assert data["ok"] == data["status"].get("200", 0) > 0
    lat = data["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    ttft = data["ttft_ms"]
    assert ttft["p50"] <= lat["max"]
    json.dumps(data)  # JSON-ready


@pytest.mark.parametrize("client", ["pyreqwest", "aiohttp"])
def test_open_loop_streaming_measures_ttft(servers: dict[str, Proc], client: str) -> None:
    url = f"http://127.0.0.1:{servers['pyreqwest'].port}/v1/chat/completions"
    result = run_open_loop(url, STREAM, rate=50, duration_s=0.5, warmup_s=0, timeout_s=5.0, client=client)
    assert result.ok == result.scheduled == 25
    assert (
        result.ttft_ms["p50"] <= result.latency_ms["p50"] + 1e-9
        or result.ttft_ms["p50"] <= result.latency_ms["max"]
    )


@pytest.mark.parametrize("name", ["aiohttp", "pyreqwest"])
def test_baselines_relay_chat_and_stream(servers: dict[str, Proc], name: str) -> None:
    status, body = _post(servers[name].port, CHAT)
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
    status, body = _post(servers[name].port, STREAM)
    assert status == 200
    events = [line for line in body.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    assert len(events) >= 3


def test_baseline_relays_upstream_error_status(servers: dict[str, Proc]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{servers['pyreqwest'].port}/v1/chat/completions",
        data=b'{"model":"error-429","messages":[]}',
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 429
    info.value.close()


def test_validate_and_proc_accounting(servers: dict[str, Proc]) -> None:
    proc = servers["aiohttp"]
    running = Running("aiohttp", f"http://127.0.0.1:{proc.port}", "gpt-4o", proc)
    assert validate(running) is None
    assert validate(Running("bad", f"http://127.0.0.1:{proc.port}", "error-401", None)) is not None
    assert len(tree_pids(proc.pid)) >= 2  # granian's supervisor and its worker
    rss = tree_rss(proc.pid)
    assert 0 < rss["worker_mb"] <= rss["total_mb"]


def test_wrk_parser_on_recorded_output() -> None:
    res = parse_wrk_output(WRK_SAMPLE)
    assert res.rps == pytest.approx(2427.62)
    assert res.requests == 7290
    assert res.duration_s == pytest.approx(3.0)
    assert res.latency_ms == {"p50": 26.26, "p75": 29.8, "p90": 33.1, "p99": 49.1}
    assert res.non_2xx == 4
    assert res.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert res.errors == 7
    units = parse_wrk_output(WRK_SAMPLE_US)
    assert units.latency_ms["p50"] == pytest.approx(0.812)
    assert units.latency_ms["p99"] == pytest.approx(1200.0)
    assert units.errors == 0
    with pytest.raises(ValueError):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused")


def test_lua_script_keeps_body_intact() -> None:
    body = b'{"content":"a]]b]=]c"}'
    script = lua_script(body, {"Authorization": "Bearer k"})
    assert "[==[" + body.decode() + "]==]" in script
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script


def test_summarize_counts_unfinished_and_errors() -> None:
    samples = [(0.0, 0.0, 0.001, 0.002, 200), (0.01, 0.01, 0.011, 0.015, 429), (0.02, 0.02, 0.02, 0.03, -1)]
    res = summarize(samples, rate=100, duration_s=0.04, scheduled=4, timeout_s=1.0)
    assert (res.ok, res.transport_errors, res.unfinished) == (1, 1, 1)
    assert res.status == {"200": 1, "429": 1, "error": 1}
    assert res.latency_ms["max"] == pytest.approx(1000.0)  # the unfinished one counts at the timeout
    assert percentiles([]) == {}
    assert percentiles([3.0, 1.0, 2.0])["p50"] == 2.0


def test_degrade_drops_rejected_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_check(config: dict, path: Path) -> tuple[bool, str]:
        bad = [k for k in ("auth", "tracing") if k in config]
        return (not bad, "\n".join(f"{k}: unknown field" for k in bad))

    monkeypatch.setattr("bench.targets.check_config", fake_check)
    config = {"providers": [], "auth": {}, "access": [], "tracing": {}}
    accepted, dropped, error = degrade(config, ["auth", "access", "tracing"], tmp_path / "c.yaml")
    assert error == ""
    assert sorted(dropped) == ["auth", "tracing"]
    assert "access" in accepted and "auth" not in accepted


def test_pinning_prefix() -> None:
    pin = Pinning(True, 0, 1, "")
    assert pin.prefix("target") == ["taskset", "-c", "0"]
    assert pin.prefix("load") == ["taskset", "-c", "1"]
    assert pin.prefix("background") == ["nice", "-n", "19", "taskset", "-c", "1"]
    assert Pinning(False, None, None, "").prefix("target") == []
    assert Pinning(False, None, None, "").prefix("background") == ["nice", "-n", "19"]


def _fake_target(rps: float, p50: float, p99: float) -> dict:
    lat = {"p50": p50, "p90": (p50 + p99) / 2, "p99": p99, "max": p99 * 2, "mean": p50}
    run = {"completed": 500, "ok": 500, "unfinished": 0, "scheduled": 500, "achieved_rps": 250.0}
    run |= {
        "latency_ms": lat,
        "ttft_ms": lat,
        "send_lag_ms": {"p99": 1.0},
        "cpu_us_per_req": 300.0,
        "cpu_util": 0.1,
    }
    closed = {"rps": rps, "requests": int(rps * 5), "errors": 0, "cpu_us_per_req": 1e6 / rps, "cpu_util": 1.0}
    return {
        "closed": {"64": closed},
        "open": {"250": run},
        "stream": {"open": dict(run), "closed": closed},
        "rss": {"worker_mb": 50.0, "total_mb": 80.0},
    }


def test_report_tables_ratios_and_plot(tmp_path: Path) -> None:
    from bench.overhead import add_deltas, median_merge
    from bench.peers import ratio_table
    from bench.report import plot, render_table

    targets = {
        "direct": _fake_target(10000, 1.0, 2.0),
        "aiohttp": _fake_target(3000, 1.5, 3.5),
        "gateway": _fake_target(4000, 1.4, 3.0),
        "gateway-tracing": _fake_target(3400, 1.4, 3.0),
        "litellm": _fake_target(40, 900.0, 10000.0),
        "broken": {"error": "start failed: nope"},
    }
    targets["gateway-tracing"]["closed_exporter_paused"] = {"64": {"rps": 3800.0}}
    add_deltas(targets)
    assert targets["gateway"]["open"]["250"]["added_ms"] == {"p50": 0.4, "p90": 0.7, "p99": 1.0}
    assert targets["gateway"]["rps_vs_aiohttp"] == 1.33
    assert targets["gateway-tracing"]["rps_vs_tracing_off"] == 0.85
    assert targets["gateway-tracing"]["rps_vs_tracing_off_exporter_paused"] == 0.95
    doc = {
        "kind": "peers",
        "started": "2026-01-01T00:00:00+00:00",
        "pinning": "test",
        "options": {"connections": [64], "rates": [250.0], "stream": True, "repeat": 1},
        "notes": ["a note"],
        "targets": targets,
    }
    text = render_table(doc)
    assert "SKIPPED broken" in text and "note: a note" in text
    assert (
        "tracing on / off throughput: 0.85 with the exporter beside" in text and "0.95 with it paused" in text
    )
    assert "100.0x" in ratio_table(doc)  # 4000 / 40
    png = plot(doc, tmp_path / "run.png")
    assert png is not None and png.stat().st_size > 1000
    merged = median_merge(
        [
            {"a": 1, "b": {"c": 1.0}, "s": "x"},
            {"a": 3, "b": {"c": 2.0}, "s": "y"},
            {"a": 2, "b": {"c": 9.0}, "s": "z"},
        ]
    )
    assert merged == {"a": 2, "b": {"c": 2.0}, "s": "x"}


def test_profile_summary_of_collapsed_stacks(tmp_path: Path) -> None:
    from bench.profile import summarize

    path = tmp_path / "p.collapsed"
    path.write_text(
        "process 1:main;<module> (gateway:1);handle (proxy.py:10);send (client.py:5) 30\n"
        "process 1:main;<module> (gateway:1);handle (proxy.py:10) 10\n"
    )
    text = summarize(path)
    assert "40 samples" in text
    assert "75.0  send (client.py)" in text


def test_ratios_against_the_relay_on_the_same_transport() -> None:
    from bench.overhead import add_relay_ratios
    from bench.report import render_table
    from bench.targets import relay_of

    assert relay_of("gateway-full") == "pyreqwest" and relay_of("gateway-full-tls") == "pyreqwest-tls"
    targets = {
        "pyreqwest": _fake_target(8000, 1.0, 2.0),
        "gateway-full": _fake_target(4000, 1.0, 2.0),
        "pyreqwest-tls": _fake_target(5000, 1.0, 2.0),
        "gateway-full-tls": _fake_target(4000, 1.0, 2.0),
    }
    add_relay_ratios(targets)
    assert targets["gateway-full"]["cpu_vs_relay"] == 2.0  # 250 µs against 125 µs
    assert targets["gateway-full"]["stream_rps_vs_relay"] == 0.5
    assert targets["gateway-full-tls"]["cpu_vs_relay"] == 1.25  # against the TLS relay, not the plain one
    assert targets["gateway-full-tls"]["stream_cpu_vs_relay"] == 1.25
    assert targets["pyreqwest-tls"]["cpu_vs_relay"] == 1.0
    doc = {
        "kind": "overhead",
        "started": "2026-01-01T00:00:00+00:00",
        "pinning": "test",
        "options": {"connections": [64], "rates": [250.0], "stream": True, "repeat": 1, "mock_chunks": 150},
        "targets": targets,
    }
    text = render_table(doc)
    assert "cpu x relay" in text and "cpu us/stream" in text and "150 chunks per answer" in text


def test_tls_mock_serves_realistic_chunks(tmp_path: Path) -> None:
    """The -tls targets' upstream: HTTPS from a throwaway CA, OpenAI-shaped chunks with usage: null."""
    import ssl

    port = free_port()
    ca = tmp_path / "ca.pem"
    cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), "--tls-cert", str(ca), "--chunks", "3"]
    proc = start("mock-tls", cmd, tmp_path, port=port)
    try:
        wait_port(proc, port)
        ctx = ssl.create_default_context(cafile=str(ca))
        req = urllib.request.Request(
            f"https://127.0.0.1:{port}/v1/chat/completions",
            data=b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}',
        )
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:  # noqa: S310 - 127.0.0.1
            events = [e for e in resp.read().split(b"\n\n") if e]
    finally:
        stop(proc)
    assert events[-1] == b"data: [DONE]" and len(events) == 3 + 4  # role, 3 tokens, finish, usage, DONE
    chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    assert all("obfuscation" in c and c["service_tier"] == "default" and "system_fingerprint" in c for c in chunks)
    assert [c["usage"] for c in chunks[:-1]] == [None] * 5
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
