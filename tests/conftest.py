"""Real servers on free ports: the bench mock provider and the gateway under granian.

Nothing of ours is mocked: tests start ``python -m bench.mock_upstream`` and ``gateway serve``
as subprocesses and talk to them over 127.0.0.1 with real clients.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers (any status), the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving {url}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout_s}s")


class Proc:
    """A started server subprocess; ``stop`` is SIGTERM then, if needed, SIGKILL.

    Output goes to a log file (a pipe nobody reads would fill up and block the server)."""

    def __init__(self, popen: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.popen = popen
        self.url = url
        self.log_path = log_path

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _spawn(argv: list[str], log_path: Path, **kw: object) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]


LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", "/tmp")) / f"gateway-tests-{os.getpid()}"


def start_mock(*args: str, port: int | None = None) -> Proc:
    port = port or free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"mock-{port}.log"
    popen = _spawn([str(BIN / "python"), "-m", "bench.mock_upstream", "--port", str(port), *args], log_path)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", proc=popen)
    return Proc(popen, url, log_path)


def start_gateway(config: dict, tmp_path: Path, *, workers: int = 1, env: dict | None = None) -> Proc:
    port = free_port()
    cfg_file = tmp_path / f"gateway-{port}.yaml"
    # Each gateway its own trace store file, never one in the checkout.
    config = {"store": {"path": str(tmp_path / f"traces-{port}.duckdb")}, **config}
    cfg_file.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"gateway-{port}.log"
    popen = _spawn(
        [
            str(BIN / "gateway"),
            "serve",
            "--config",
            str(cfg_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        log_path,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc=popen)
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{log_path.read_text(errors='replace')}") from None
    return Proc(popen, url, log_path)


def start_exporter(config: dict, tmp_path: Path) -> Proc:
    """``gateway-exporter`` reading ``config`` (the same file shape the gateway reads; needs tracing.nats)."""
    cfg_file = tmp_path / "exporter.yaml"
    store = {"path": str(tmp_path / "exporter-traces.duckdb"), "listen": f"127.0.0.1:{free_port()}"}
    config = {"store": store, **config}
    cfg_file.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "exporter.log"
    return Proc(_spawn([str(BIN / "gateway-exporter"), "--config", str(cfg_file)], log_path), "", log_path)


def provider(name: str, mock_url: str, models: list[str], **extra: object) -> dict:
    return {
        "name": name,
        "type": "openai",
        "base_url": mock_url + "/v1",
        "api_key": "sk-test",
        "models": models,
        **extra,
    }


MODELS = [
    "gpt-4o",
    "text-embedding-3-small",
    "error-400",
    "error-429",
    "error-503",
    "slow-3000",
    "stall-2",
    "cut-3",
]


@pytest.fixture(scope="session")
def mock() -> Iterator[Proc]:
    proc = start_mock()
    yield proc
    proc.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def factory(config: dict, **kw: object) -> Proc:
        proc = start_gateway(config, tmp_path, **kw)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module", params=["pyreqwest", "aiohttp"])
def gateway(
    request: pytest.FixtureRequest, mock: Proc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    """One gateway per upstream client implementation, shared by a module's tests."""
    config = {
        "providers": [
            provider("mock", mock.url, MODELS, timeout_s=1.5),
            provider("dead", f"http://127.0.0.1:{free_port()}", ["gpt-4o"], connect_timeout_s=1),
        ],
        "server": {"upstream_client": request.param, "max_body_bytes": 1024 * 1024},
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("gw"))
    yield proc
    proc.stop()
