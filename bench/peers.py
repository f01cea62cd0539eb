"""Peers side by side: the overhead run with LiteLLM's proxy added, in the same session.

    python -m bench.peers [--quick] [--reinstall] [overhead options...]      # make bench-peers

LiteLLM's proxy (``litellm[proxy]`` from PyPI) goes into its own venv under ``bench/.peers/``
(git-ignored) on first use, so its pins never touch ours. It runs without a database, with a
master key and ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no cost-map download), one uvicorn worker,
pointing at the same zero-latency mock as every other target, pinned to the target CPU exactly
like the gateway. Default targets: direct, aiohttp, pyreqwest, gateway, gateway-full, litellm;
default offered load 250 req/s only (LiteLLM cannot hold it; a higher rate only queues timeouts).
Portkey's gateway (Node) is not included.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import yaml

from bench import overhead
from bench.procs import free_port, start, stop, wait_http
from bench.report import table
from bench.targets import RunContext, Running

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
LITELLM_VENV = PEERS_DIR / "litellm"
PEER_TARGETS = [
    "direct",
    "aiohttp",
    "pyreqwest",
    "gateway",
    "gateway-full",
    "litellm",
    "pyreqwest-tls",
    "gateway-full-tls",
    "litellm-tls",
]


def ensure_litellm(reinstall: bool = False) -> Path:
    """The ``litellm`` console script of the peers venv, installing it first when missing."""
    script = LITELLM_VENV / "bin" / "litellm"
    if script.exists() and not reinstall:
        return script
    print(
        f"installing litellm[proxy] into {LITELLM_VENV.relative_to(Path.cwd()) if LITELLM_VENV.is_relative_to(Path.cwd()) else LITELLM_VENV} (a few minutes, once)",
        flush=True,
    )
    venv.EnvBuilder(with_pip=True, clear=reinstall).create(LITELLM_VENV)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=600)
    subprocess.run([*pip, "litellm[proxy]"], check=True, timeout=1800)
    if not script.exists():
        raise RuntimeError("litellm installed but its console script is missing")
    return script


def _litellm_version() -> str:
    proc = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


def litellm_target(ctx: RunContext, tls: bool = False) -> Running:
    """Start LiteLLM's proxy against the run's mock (factory for ``bench.overhead``).

    ``tls``: against the TLS mock, trusting its CA (``ssl_verify`` and ``SSL_CERT_FILE``)."""
    script = ensure_litellm()
    master = "sk-bench-" + secrets.token_hex(12)
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": ctx.upstream(tls) + "/v1",
                    "api_key": "sk-mock",
                },
            }
        ],
        "general_settings": {"master_key": master},
    }
    if tls:
        config["litellm_settings"] = {"ssl_verify": str(ctx.ca_file)}
    name = "litellm-tls" if tls else "litellm"
    path = ctx.work_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the model cost map at start-up
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    env.pop("DATABASE_URL", None)
    if tls:
        env["SSL_CERT_FILE"] = str(ctx.ca_file)
    port = free_port()
    cmd = [
        *ctx.pinning.prefix("target"),
        str(script),
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = start(name, cmd, ctx.work_dir, port=port, env=env)
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/health/liveliness", timeout_s=180, require_ok=True)
    except RuntimeError:
        stop(proc)
        raise
    ctx.notes.append(f"litellm {_litellm_version()}: proxy, 1 worker, no database, local cost map")
    return Running(name, f"http://127.0.0.1:{port}", "gpt-4o", proc, {"authorization": f"Bearer {master}"})


def ratio_table(doc: dict[str, Any], peer: str = "litellm") -> str:
    """Each target's headline figures beside the peer's, with throughput and memory ratios."""
    targets = doc["targets"]
    ref = targets.get(peer, {})
    if "error" in ref or not ref:
        return f"no ratios: {peer} did not run ({ref.get('error', 'not in targets')[:300]})"
    conns = str(doc["options"]["connections"][-1])
    rate = f"{doc['options']['rates'][0]:g}"

    def fig(res: dict[str, Any]) -> dict[str, Any]:
        closed, run = res.get("closed", {}).get(conns, {}), res.get("open", {}).get(rate, {})
        return {
            "rps": closed.get("rps"),
            "p50": run.get("latency_ms", {}).get("p50"),
            "p99": run.get("latency_ms", {}).get("p99"),
            "ok": f"{run.get('ok', 0)}/{run.get('scheduled', 0)}",
            "cpu": closed.get("cpu_us_per_req"),
            "rss": res.get("rss", {}).get("worker_mb"),
        }

    def ratio(a: float | None, b: float | None) -> str:
        if not a:
            return "-"
        return f"{a / b:,.1f}x" if b else "inf (peer 0)"

    peer_fig = fig(ref)
    rows = []
    for name, res in targets.items():
        if "error" in res:
            continue
        mine = fig(res)
        rows.append(
            [
                name,
                f"{mine['rps'] or 0:,.0f}",
                ratio(mine["rps"], peer_fig["rps"]) if name != peer else "1.0x",
                f"{mine['p50'] or 0:,.1f}",
                f"{mine['p99'] or 0:,.1f}",
                mine["ok"],
                f"{mine['cpu'] or 0:,.0f}" if mine["cpu"] else "-",
                f"{mine['rss'] or 0:,.0f}",
            ]
        )
    headers = [
        "target",
        f"req/s@{conns}",
        f"x {peer}",
        f"p50 ms@{rate}",
        f"p99 ms@{rate}",
        f"ok@{rate}",
        "cpu us/req",
        "RSS worker MB",
    ]
    return f"Side by side with {peer} (same run, same mock, same pinning)\n" + table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.peers`` and ``make bench-peers``."""
    args = list(sys.argv[1:] if argv is None else argv)
    reinstall = "--reinstall" in args
    args = [a for a in args if a != "--reinstall"]
    opts = overhead.parse_args(args, extra_targets=["litellm", "litellm-tls"])
    if "--targets" not in " ".join(args):
        opts.targets = list(PEER_TARGETS)
    if "--rates" not in " ".join(args):
        opts.rates = [250.0]
    opts.label = "peers"
    # LiteLLM needs about a second per request at 64 connections: shorter wrk runs count nothing.
    opts.duration_s = max(opts.duration_s, 5.0)
    if "litellm" in opts.targets or "litellm-tls" in opts.targets:
        ensure_litellm(reinstall)
    extra = {"litellm": litellm_target, "litellm-tls": lambda ctx: litellm_target(ctx, tls=True)}
    doc = overhead.run(opts, extra_targets=extra)
    print()
    print(ratio_table(doc))


if __name__ == "__main__":
    main()
