"""The things the overhead benchmark measures, and how each one is started.

A target is one process tree listening on 127.0.0.1 (the measured one, pinned to the target CPU)
plus helpers it needs (nats-server, the exporter) which run on the load CPU so that only the
target's own work lands on the measured core.

    direct            the mock upstream itself (the reference every "added" figure subtracts)
    aiohttp           bare granian + aiohttp pass-through (bench.baselines)
    pyreqwest         bare granian + pyreqwest pass-through (bench.baselines)
    gateway           the gateway, providers only, tracing off (bare proxy)
    gateway-access    the bare gateway plus API-key auth, access rules and a never-tripping rate limit
    gateway-tracing   the same with tracing on, spans to a real nats-server and exporter process
    gateway-full      API-key auth, access rules, a never-tripping rate limit, a two-target
                      virtual model, tracing to NATS with the exporter
    gateway-aiohttp   the bare gateway with ``server.upstream_client: aiohttp`` (optional)
    gateway-messages  the bare gateway on ``/v1/messages`` to an Anthropic target (the mock's
                      Messages endpoint): native pass-through, compare with ``gateway``
    gateway-messages-hub  the same to an OpenAI-type target: Messages ↔ hub translation
    litellm           LiteLLM's proxy (registered by bench.peers; optional)
    <name>-tls        pyreqwest, gateway, gateway-full against the run's second mock, which serves
                      HTTPS with a certificate from a throwaway CA (the relay and the gateway
                      trust it through a CA file, ``providers[].ca_file``): every provider is TLS

Ratios compare a row with the bare pyreqwest relay of the same transport (``pyreqwest`` for
plaintext rows, ``pyreqwest-tls`` for TLS rows): see :func:`relay_of`.

Gateway configs are validated with ``gateway check-config`` first; a feature section that the
gateway does not accept yet is dropped and named in the run's notes instead of failing the run.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.procs import Pinning, Proc, free_port, start, stop, wait_http, wait_port

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"


@dataclass
class RunContext:
    """What every target factory needs: where the mock is, where to log, how to pin."""

    mock_url: str  # e.g. http://127.0.0.1:40123 (no /v1)
    work_dir: Path
    pinning: Pinning
    notes: list[str] = field(default_factory=list)
    tls_mock_url: str | None = None  # https://127.0.0.1:<port> when a -tls target runs
    ca_file: Path | None = None  # the CA that signed the TLS mock's certificate

    def upstream(self, tls: bool) -> str:
        """The mock a target talks to: the plaintext one or the TLS one."""
        if not tls:
            return self.mock_url
        if self.tls_mock_url is None:
            raise RuntimeError("no TLS mock in this run")
        return self.tls_mock_url


@dataclass
class Running:
    """A started target: the URL to load, the request shape, and the processes to stop."""

    name: str
    base_url: str
    model: str
    measured: Proc | None  # the process tree whose CPU and RSS are reported
    headers: dict[str, str] = field(default_factory=dict)
    helpers: list[Proc] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)  # name → URL whose JSON is kept after the run
    path: str = CHAT_PATH  # the endpoint loaded: chat completions, or MESSAGES_PATH

    @property
    def chat_url(self) -> str:
        """The endpoint this target is loaded on (chat completions unless ``path`` says otherwise)."""
        return self.base_url + self.path

    def body(self, stream: bool = False) -> bytes:
        """The request every generator sends to this target (compact JSON, one short message)."""
        text = f'{{"model":"{self.model}","messages":[{{"role":"user","content":"Say hello in one word."}}]'
        if self.path == MESSAGES_PATH:
            text += ',"max_tokens":64'
        return (text + (',"stream":true}' if stream else "}")).encode()

    def stop(self) -> None:
        """Stop the target first (it may flush to its helpers), then the helpers."""
        for proc in ([self.measured] if self.measured else []) + self.helpers[::-1]:
            stop(proc)


Factory = Callable[[RunContext], Running]


def _python() -> str:
    return sys.executable


def gateway_command() -> list[str] | None:
    """How to invoke the ``gateway`` console script of this environment (None when absent)."""
    script = Path(sys.executable).with_name("gateway")
    if script.exists():
        return [str(script)]
    found = shutil.which("gateway")
    return [found] if found else None


def relay_of(name: str) -> str:
    """The bare relay a target's ratios refer to: the one on the same transport."""
    return "pyreqwest-tls" if name.endswith("-tls") else "pyreqwest"


def start_mock(
    ctx_dir: Path, pinning: Pinning, extra: list[str] | None = None, ca_file: Path | None = None
) -> Proc:
    """Start the mock upstream on the load CPU; zero latency unless ``extra`` says otherwise.

    With ``ca_file`` it serves HTTPS, its certificate signed by a CA written to that path."""
    port = free_port()
    cmd = [
        *pinning.prefix("load"),
        _python(),
        "-m",
        "bench.mock_upstream",
        "--port",
        str(port),
        "--no-record",
    ]
    if ca_file is None:
        proc = start("mock", cmd + (extra or []), ctx_dir, port=port)
        wait_http(proc, f"http://127.0.0.1:{port}/v1/models")
        return proc
    proc = start("mock-tls", [*cmd, *(extra or []), "--tls-cert", str(ca_file)], ctx_dir, port=port)
    wait_port(proc, port)
    return proc


def _direct(ctx: RunContext) -> Running:
    # The mock is shared by the whole run and stopped by the orchestrator, so it is not "measured"
    # here; its CPU is reported by the orchestrator from the mock's own process tree.
    return Running("direct", ctx.mock_url, "gpt-4o", None)


def _baseline(module: str, name: str, tls: bool = False) -> Factory:
    def factory(ctx: RunContext) -> Running:
        port = free_port()
        cmd = [
            *ctx.pinning.prefix("target"),
            _python(),
            "-m",
            module,
            "--port",
            str(port),
            "--upstream",
            ctx.upstream(tls),
        ]
        if tls:
            cmd += ["--ca-file", str(ctx.ca_file)]
        proc = start(name, cmd, ctx.work_dir, port=port)
        wait_http(proc, f"http://127.0.0.1:{port}/healthz", require_ok=True)
        return Running(name, f"http://127.0.0.1:{port}", "gpt-4o", proc)

    return factory


# ---------------------------------------------------------------- gateway configurations


def _providers(mock_url: str, second: bool, ca_file: Path | None = None) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "type": "openai",
        "base_url": mock_url + "/v1",
        "api_key": "sk-mock",
        "models": ["gpt-4o", "text-embedding-3-small"],
    }
    if ca_file is not None:
        base["ca_file"] = str(ca_file)
    out = [{"name": "mock", **base}]
    if second:
        out.append({"name": "mock2", **base})
    return out


def feature_sections(nats_url: str | None, key_sha256: str) -> dict[str, Any]:
    """The optional top-level sections of a "full features" gateway config, in drop order."""
    tracing: dict[str, Any] = {"enabled": True}
    if nats_url:
        tracing["nats"] = {"url": nats_url, "subject_prefix": "gateway"}
    return {
        "auth": {"api_keys": [{"subject": "user:bench", "key_sha256": key_sha256}]},
        "access": [{"subjects": ["*"], "models": ["*"]}],
        "rate_limiting": [
            {
                "id": "never",
                "when": {"subjects": ["*"], "models": ["*"]},
                "limit_to": 100_000_000,
                "unit": "requests_per_minute",
                "rate_limit_applies_per": ["user"],
            }
        ],
        "virtual_models": [
            {
                "name": "chat-default",
                "type": "weight-based-routing",
                "load_balance_targets": [
                    {"target": "mock/gpt-4o", "weight": 50},
                    {"target": "mock2/gpt-4o", "weight": 50},
                ],
            }
        ],
        "tracing": tracing,
    }


def check_config(config: dict[str, Any], path: Path) -> tuple[bool, str]:
    """Write ``config`` to ``path`` and run ``gateway check-config`` on it: (ok, its output)."""
    cmd = gateway_command()
    if cmd is None:
        return False, "the gateway console script is not installed"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run(
        [*cmd, "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def degrade(config: dict[str, Any], optional: list[str], path: Path) -> tuple[dict[str, Any], list[str], str]:
    """Drop optional sections the gateway rejects until ``check-config`` passes.

    Sections named in the error output go first; if the output names none, the last remaining
    optional section goes. Returns (accepted config, dropped section names, last error or "").

    ``optional`` entries are top-level keys, or ``server.upstream_client`` style dotted keys.
    """
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    dropped: list[str] = []
    remaining = list(optional)
    for _ in range(len(optional) + 1):
        ok, out = check_config(config, path)
        if ok:
            return config, dropped, ""
        if "not installed" in out:
            return config, dropped, out
        named = [key for key in remaining if re.search(rf"\b{re.escape(key.split('.')[-1])}\b", out)]
        victims = named or remaining[-1:]
        if not victims:
            return config, dropped, out
        for key in victims:
            remaining.remove(key)
            dropped.append(key)
            head, _, tail = key.partition(".")
            if tail and isinstance(config.get(head), dict):
                config[head].pop(tail, None)
                if not config[head]:
                    config.pop(head)
            else:
                config.pop(head, None)
    ok, out = check_config(config, path)
    return config, dropped, "" if ok else out


def start_nats(ctx: RunContext) -> Proc:
    """A real nats-server on the load CPU, on a free port, with JetStream (spans travel on a
    stream) stored under the run's work directory."""
    port = free_port()
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    store = ctx.work_dir / "nats-js"
    proc = start(
        "nats",
        [*ctx.pinning.prefix("load"), binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        ctx.work_dir,
        port=port,
    )
    wait_port(proc, port)
    return proc


def start_sink(ctx: RunContext) -> Proc:
    """The do-nothing OTLP/HTTP receiver (``bench.otlp_sink``) on the load CPU, lowest priority."""
    port = free_port()
    cmd = [*ctx.pinning.prefix("background"), _python(), "-m", "bench.otlp_sink", "--port", str(port)]
    proc = start("otlp-sink", cmd, ctx.work_dir, port=port)
    wait_http(proc, f"http://127.0.0.1:{port}/stats", require_ok=True)
    return proc


def start_exporter(ctx: RunContext, config_path: Path, notes: list[str]) -> Proc | None:
    """The exporter process on the load CPU at the lowest priority (see ``Pinning.prefix``), reading
    the gateway's config (None if it will not run)."""
    script = Path(sys.executable).with_name("gateway-exporter")
    if not script.exists():
        notes.append("gateway-exporter not installed: spans go to NATS with no consumer")
        return None
    proc = start(
        "exporter",
        [*ctx.pinning.prefix("background"), str(script), "--config", str(config_path)],
        ctx.work_dir,
    )
    time.sleep(1.0)
    if proc.popen.poll() is not None:
        notes.append(f"gateway-exporter exited ({proc.popen.returncode}): {proc.log_tail(300).strip()!r}")
        return None
    return proc


def _gateway_factory(
    name: str,
    *,
    tracing: bool,
    full: bool,
    access: bool = False,
    client: str = "pyreqwest",
    messages_model: str | None = None,
    tls: bool = False,
) -> Factory:
    def factory(ctx: RunContext) -> Running:
        cmd = gateway_command()
        if cmd is None:
            raise RuntimeError("the gateway console script is not installed (merge main, pip install -e .)")
        helpers: list[Proc] = []
        key = "sk-bench-" + secrets.token_hex(16)
        nats = start_nats(ctx) if tracing else None
        sink = start_sink(ctx) if tracing else None
        helpers += [p for p in (nats, sink) if p is not None]
        sections = feature_sections(
            f"nats://127.0.0.1:{nats.port}" if nats else None, hashlib.sha256(key.encode()).hexdigest()
        )
        config: dict[str, Any] = {
            "server": {"upstream_client": client},
            "providers": _providers(ctx.upstream(tls), full, ctx.ca_file if tls else None),
        }
        if messages_model is not None:  # the mock's Messages endpoint, as an Anthropic provider
            config["providers"].append(
                {"name": "anth", "type": "anthropic", "base_url": ctx.mock_url, "api_key": "sk-mock",
                 "models": ["claude-bench"]}
            )  # fmt: skip
        if full:
            config.update(sections)
            optional = ["auth", "access", "rate_limiting", "virtual_models", "tracing"]
        elif tracing:
            config["tracing"] = sections["tracing"]
            optional = ["tracing"]
        else:
            config["tracing"] = {"enabled": False}
            optional = ["tracing"]
        if access and not full:
            config.update({k: sections[k] for k in ("auth", "access", "rate_limiting")})
            optional = ["auth", "access", "rate_limiting", *optional]
        if sink is not None:
            # The exporter reads the same file: give it a real OTLP/HTTP destination to send to.
            endpoint = f"http://127.0.0.1:{sink.port}/v1/traces"
            config["exporter"] = {
                "traces": [{"name": "bench-sink", "protocol": "http", "endpoint": endpoint}]
            }
            optional.append("exporter")
            # The exporter also owns the trace store: keep its file in the run's work dir.
            config["store"] = {
                "path": str(ctx.work_dir / f"{name}-traces.duckdb"),
                "listen": f"127.0.0.1:{free_port()}",
            }
            optional.append("store")
        optional.append("server.upstream_client")
        path = ctx.work_dir / f"{name}.yaml"
        config, dropped, error = degrade(config, optional, path)
        if error:
            for proc in helpers:
                stop(proc)
            raise RuntimeError(f"gateway config rejected: {error}")
        features = {k: k not in dropped for k in optional}
        if dropped and (full or tracing or access or client != "pyreqwest"):
            ctx.notes.append(
                f"{name}: gateway rejected {', '.join(dropped)}; measured without (skipped features)"
            )
            print(
                f"  {name}: skipped features not accepted by this gateway: {', '.join(dropped)}", flush=True
            )
        if tracing and "tracing" in dropped:
            for proc in helpers:
                stop(proc)
            raise RuntimeError("tracing section not accepted by this gateway's config")
        if tracing:
            exporter = start_exporter(ctx, path, ctx.notes)
            if exporter:
                helpers.append(exporter)
        port = free_port()
        serve = [
            *cmd,
            "serve",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        proc = start(
            name, [*ctx.pinning.prefix("target"), *serve, "--log-level", "warning"], ctx.work_dir, port=port
        )
        try:
            wait_http(proc, f"http://127.0.0.1:{port}/readyz", require_ok=True)
        except RuntimeError:
            stop(proc)
            for helper in helpers:
                stop(helper)
            raise
        model = "chat-default" if full and features.get("virtual_models") else "mock/gpt-4o"
        headers = {"authorization": f"Bearer {key}"} if (full or access) and features.get("auth") else {}
        probes = {"otlp_sink": f"http://127.0.0.1:{sink.port}/stats"} if sink else {}
        if messages_model is not None:
            return Running(
                name, f"http://127.0.0.1:{port}", messages_model, proc, headers, helpers, features, probes,
                MESSAGES_PATH,
            )  # fmt: skip
        return Running(name, f"http://127.0.0.1:{port}", model, proc, headers, helpers, features, probes)

    return factory


TARGETS: dict[str, Factory] = {
    "direct": _direct,
    "aiohttp": _baseline("bench.baselines.aiohttp_proxy", "aiohttp"),
    "pyreqwest": _baseline("bench.baselines.pyreqwest_proxy", "pyreqwest"),
    "gateway": _gateway_factory("gateway", tracing=False, full=False),
    "gateway-access": _gateway_factory("gateway-access", tracing=False, full=False, access=True),
    "gateway-tracing": _gateway_factory("gateway-tracing", tracing=True, full=False),
    "gateway-full": _gateway_factory("gateway-full", tracing=True, full=True),
    "gateway-aiohttp": _gateway_factory("gateway-aiohttp", tracing=False, full=False, client="aiohttp"),
    "gateway-messages": _gateway_factory(
        "gateway-messages", tracing=False, full=False, messages_model="anth/claude-bench"
    ),
    "gateway-messages-hub": _gateway_factory(
        "gateway-messages-hub", tracing=False, full=False, messages_model="mock/gpt-4o"
    ),
    "pyreqwest-tls": _baseline("bench.baselines.pyreqwest_proxy", "pyreqwest-tls", tls=True),
    "gateway-tls": _gateway_factory("gateway-tls", tracing=False, full=False, tls=True),
    "gateway-full-tls": _gateway_factory("gateway-full-tls", tracing=True, full=True, tls=True),
}
DEFAULT_TARGETS = [
    "direct",
    "aiohttp",
    "pyreqwest",
    "gateway",
    "gateway-access",
    "gateway-tracing",
    "gateway-full",
    "gateway-messages",
    "gateway-messages-hub",
    "pyreqwest-tls",
    "gateway-tls",
    "gateway-full-tls",
]


def validate(target: Running, timeout_s: float = 10.0) -> str | None:
    """One non-streaming and one streaming request; None when both look right, else the problem.

    A target that answers 401 or 404 quickly would otherwise look like the fastest proxy ever.
    """
    for stream in (False, True):
        req = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
            target.chat_url,
            data=target.body(stream),
            headers={"content-type": "application/json", **target.headers},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                data = resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return f"{'stream' if stream else 'chat'} request got HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            return f"{'stream' if stream else 'chat'} request failed: {exc}"
        if target.path == MESSAGES_PATH:
            expected = b"message_stop" if stream else b'"content"'
        else:
            expected = b"[DONE]" if stream else b'"choices"'
        if expected not in data:
            return f"{'stream' if stream else 'chat'} answer lacks {expected!r}: {data[:300]!r}"
    return None
