"""``gateway`` console script: ``serve``, ``check-config``, ``hash-key``.

Every ``serve`` flag is also read from a ``GATEWAY_*`` env var; precedence is argument, then
env var, then default.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.redact import install_log_redaction

log = logging.getLogger("gateway")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GATEWAY_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (granian, RSGI, uvloop)")
    serve.add_argument(
        "--config", default=os.environ.get("GATEWAY_CONFIG"), help="YAML file [GATEWAY_CONFIG]"
    )
    serve.add_argument(
        "--host", default=_env("HOST", "0.0.0.0"), help="bind address [GATEWAY_HOST] (0.0.0.0)"
    )
    serve.add_argument(
        "--port", type=int, default=int(_env("PORT", "8000")), help="port [GATEWAY_PORT] (8000)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "1")),
        help="worker processes [GATEWAY_WORKERS] (1)",
    )
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), help="[GATEWAY_LOG_LEVEL] (info)")

    check = sub.add_parser("check-config", help="validate a config file; exit 1 listing every problem")
    check.add_argument("file")

    sub.add_parser("hash-key", help="print the sha256 of an API key read from stdin")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    install_log_redaction()
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "hash-key":
        from gateway.access import hash_key_main

        return hash_key_main()
    return serve(args)


def check_config(path: str) -> int:
    """Validate ``path``; print each problem with its path."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(cfg.providers)} providers, {len(cfg.model_ids())} models)")
    return 0


def _startup_warnings(cfg: GatewayConfig) -> None:
    from gateway.access import startup_warnings

    for line in startup_warnings(cfg, cfg.cluster.nats_url if cfg.cluster is not None else None):
        log.warning("%s", line)
    if not cfg.providers:
        log.warning("no providers configured: every model request will get 404")


def serve(args: argparse.Namespace) -> int:
    if not args.config:
        print("gateway serve: --config FILE (or GATEWAY_CONFIG) is required", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)  # fail fast, in the supervisor, with every problem listed
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    _startup_warnings(cfg)
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
    os.environ["GATEWAY_WORKERS"] = str(args.workers)  # the embedded trace store needs to know

    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from gateway.metrics import cleanup_multiprocess_dir, prepare_multiprocess_dir

    class _DrainingServer(Server):  # type: ignore[misc,valid-type]
        """granian's supervisor, with a readiness-drain phase before the listener closes."""

        _drain_started = False

        def _signal_workers(self, signum: int) -> None:
            for wrk in list(self.wrks):
                pid = getattr(getattr(wrk, "inner", None), "pid", None)
                if pid:
                    try:
                        os.kill(pid, signum)
                    except ProcessLookupError:
                        pass

        def signal_handler_reload(self, *a: Any, **kw: Any) -> None:
            # Workers reload their config in place (gateway/reload.py) instead of being respawned.
            log.info("SIGHUP: asking workers to reload %s", os.environ.get("GATEWAY_CONFIG"))
            self._signal_workers(signal.SIGHUP)

        def signal_handler_interrupt(self, *a: Any, **kw: Any) -> None:
            if self._drain_started:
                return super().signal_handler_interrupt(*a, **kw)
            self._drain_started = True
            self._signal_workers(signal.SIGUSR1)
            delay = cfg.server.shutdown_delay_s
            log.info(
                "shutdown requested: draining for %.1fs, then %.0fs for in-flight requests",
                delay,
                cfg.server.drain_timeout_s,
            )
            timer = threading.Timer(delay, super().signal_handler_interrupt)
            timer.daemon = True
            timer.start()

    # Every worker writes its samples under one directory so any worker's scrape sums them all;
    # it must exist before the workers import prometheus_client.
    metrics_dir = prepare_multiprocess_dir(None)

    level = {"debug": LogLevels.debug, "warning": LogLevels.warning, "error": LogLevels.error}.get(
        args.log_level.lower(), LogLevels.info
    )
    server = _DrainingServer(
        "gateway.app:create_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=args.workers,
        factory=True,
        log_level=level,
        backlog=2048,
        # A client slower than this with its request head is disconnected by granian (no body).
        http1_settings=HTTP1Settings(header_read_timeout=int(cfg.server.header_timeout_s * 1000)),
        workers_kill_timeout=max(1, int(cfg.server.drain_timeout_s + 0.999)),
    )
    server.serve()
    cleanup_multiprocess_dir(metrics_dir)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
