"""A real ``nats-server`` for tests: free port on 127.0.0.1, started, awaited, killed.

Use the ``nats_server`` fixture (one per session, shared; never stop it) or
``nats_server_factory`` for a private server you may stop/restart or configure
(``max_payload``, JetStream). Register in a conftest with
``pytest_plugins = ["tests.nats_fixtures"]``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; ``stop``/``start`` keep the same port, so clients reconnect."""

    def __init__(self, *, max_payload: int | None = None, jetstream: bool = True) -> None:
        self.port = free_port()
        self.max_payload = max_payload
        self.jetstream = jetstream
        self._dir = tempfile.mkdtemp(prefix="nats-test-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        lines = ["host: 127.0.0.1", f"port: {self.port}"]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self._dir}/js" }}')
        conf = os.path.join(self._dir, "nats.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return [NATS_SERVER, "-c", conf]

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until the server greets a client with INFO."""
        if self._proc is not None:
            return
        self._proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not start on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        """Kill the process (clients see the connection drop) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _require_binary() -> None:
    if not os.path.exists(NATS_SERVER):
        pytest.skip("nats-server binary not installed")


@pytest.fixture(scope="session")
def nats_server() -> Iterator[str]:
    """URL of a nats-server shared by the session (do not stop it)."""
    _require_binary()
    server = NatsServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def nats_server_factory() -> Iterator[type[NatsServer]]:
    """Make private servers: ``srv = nats_server_factory(max_payload=4096); srv.start()``."""
    _require_binary()
    made: list[NatsServer] = []

    class _Tracked(NatsServer):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            made.append(self)

    try:
        yield _Tracked
    finally:
        for server in made:
            server.close()
