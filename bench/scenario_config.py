"""Generate API keys and a matching gateway config for the locust scenario (``bench/locustfile.py``).

    python -m bench.scenario_config --users 50 --limited 5 --mock-url http://127.0.0.1:8099 \\
        --out bench/results/scenario

writes ``gateway.yaml`` (one API key per user, stored as sha256; access for everyone; a tiny
per-user rate limit for the ``limited`` users, checked first; a limit that never trips for the
rest) and ``keys.json`` (the plaintext keys and which users are limited) for the locustfile. Both
go under ``bench/results/`` (git-ignored): the keys are random and throwaway.

With ``--run`` it also does the rest, all on 127.0.0.1 and bounded by ``--duration``: starts the
mock and the gateway on free ports (pinned like the overhead run), runs locust headless
(``-u users -r spawn-rate -t duration``, CSV under the output directory), and stops everything:

    python -m bench.scenario_config --run --users 50 --limited 5 --duration 30s
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import yaml

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scenario"


def make_keys(users: int, limited: int) -> list[dict[str, Any]]:
    """``users`` random keys; the last ``limited`` of them belong to rate-limited subjects."""
    out = []
    for i in range(users):
        is_limited = i >= users - limited
        subject = f"user:{'limited' if is_limited else 'bench'}-{i}"
        out.append({"subject": subject, "key": "sk-bench-" + secrets.token_hex(16), "limited": is_limited})
    return out


def make_config(keys: list[dict[str, Any]], mock_url: str, limited_rpm: int = 5) -> dict[str, Any]:
    """A gateway config accepting exactly ``keys``; the first matching rate-limit rule applies."""
    limited = [k["subject"] for k in keys if k["limited"]]
    rules: list[dict[str, Any]] = []
    if limited:
        rules.append(
            {
                "id": "scenario-tiny",
                "when": {"subjects": limited, "models": ["*"]},
                "limit_to": limited_rpm,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        )
    rules.append(
        {
            "id": "scenario-never",
            "when": {"subjects": ["*"], "models": ["*"]},
            "limit_to": 100_000_000,
            "unit": "requests_per_minute",
            "rate_limit_applies_per": ["user"],
        }
    )
    return {
        "providers": [
            {
                "name": "mock",
                "type": "openai",
                "base_url": mock_url.rstrip("/") + "/v1",
                "api_key": "sk-mock",
                "models": ["gpt-4o", "text-embedding-3-small"],
            }
        ],
        "auth": {
            "api_keys": [
                {"subject": k["subject"], "key_sha256": hashlib.sha256(k["key"].encode()).hexdigest()}
                for k in keys
            ]
        },
        "access": [{"subjects": ["*"], "models": ["*"]}],
        "rate_limiting": rules,
    }


def write(out_dir: Path, users: int, limited: int, mock_url: str, limited_rpm: int = 5) -> tuple[Path, Path]:
    """Write ``gateway.yaml`` and ``keys.json`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = make_keys(users, limited)
    config_path, keys_path = out_dir / "gateway.yaml", out_dir / "keys.json"
    config_path.write_text(yaml.safe_dump(make_config(keys, mock_url, limited_rpm), sort_keys=False))
    keys_path.write_text(json.dumps(keys, indent=1))
    keys_path.chmod(0o600)
    return config_path, keys_path


def run_scenario(args: argparse.Namespace) -> int:
    """Mock + gateway + locust headless; returns locust's exit code (non-zero on failures)."""
    import os
    import subprocess
    import sys
    import tempfile

    from bench.procs import decide_pinning, free_port, start, stop, wait_http
    from bench.targets import gateway_command, start_mock

    pinning = decide_pinning()
    print(f"pinning: {pinning.note}")
    cmd = gateway_command()
    if cmd is None:
        raise SystemExit("the gateway console script is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-scenario-") as tmp:
        work = Path(tmp)
        mock = start_mock(work, pinning)
        gateway = None
        try:
            config_path, keys_path = write(
                args.out, args.users, args.limited, f"http://127.0.0.1:{mock.port}", args.limited_rpm
            )
            port = free_port()
            serve = [
                *cmd,
                "serve",
                "--config",
                str(config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ]
            gateway = start(
                "gateway", [*pinning.prefix("target"), *serve, "--log-level", "warning"], work, port=port
            )
            wait_http(gateway, f"http://127.0.0.1:{port}/readyz", require_ok=True)
            locust = Path(sys.executable).with_name("locust")
            run = [
                *pinning.prefix("load"),
                str(locust),
                "-f",
                str(Path(__file__).with_name("locustfile.py")),
                "--headless",
                "-u",
                str(args.users),
                "-r",
                str(args.spawn_rate),
                "-t",
                args.duration,
                "--host",
                f"http://127.0.0.1:{port}",
                "--csv",
                str(args.out / "locust"),
                "--only-summary",
            ]
            env = {**os.environ, "BENCH_KEYS": str(keys_path), "BENCH_USER_RPS": str(args.user_rps)}
            return subprocess.run(run, env=env, check=False, timeout=_seconds(args.duration) + 120).returncode
        finally:
            if gateway is not None:
                stop(gateway)
            stop(mock)


def _seconds(text: str) -> int:
    """locust-style duration (``30s``, ``2m``, ``1h30m``) in seconds."""
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        else:
            total += int(number or 0) * {"s": 1, "m": 60, "h": 3600}[ch]
            number = ""
    return total + int(number or 0)


def main(argv: list[str] | None = None) -> None:
    """CLI; prints the paths and the commands to run next."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50, help="number of API keys (default 50)")
    parser.add_argument(
        "--limited", type=int, default=5, help="how many of them get a tiny rate limit (default 5)"
    )
    parser.add_argument(
        "--limited-rpm", type=int, default=5, help="their limit in requests per minute (default 5)"
    )
    parser.add_argument("--mock-url", default="http://127.0.0.1:8099")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--run", action="store_true", help="also start mock + gateway and run locust headless"
    )
    parser.add_argument("--duration", default="30s", help="locust -t (with --run)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="locust -r (with --run)")
    parser.add_argument("--user-rps", type=float, default=1, help="requests/s per user (with --run)")
    args = parser.parse_args(argv)
    if not 0 <= args.limited <= args.users:
        parser.error("--limited must be between 0 and --users")
    if args.run:
        raise SystemExit(run_scenario(args))
    config_path, keys_path = write(args.out, args.users, args.limited, args.mock_url, args.limited_rpm)
    print(f"config: {config_path}\nkeys:   {keys_path}")
    print(f"next:   gateway serve --config {config_path} --host 127.0.0.1 --port 8000 --workers 1")
    print(
        f"        BENCH_KEYS={keys_path} locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8000"
    )


if __name__ == "__main__":
    main()
