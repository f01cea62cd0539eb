"""A provider that replays recorded-shape fixtures, for the conformance suite and Claude Code.

    granian --interface rsgi --port 8101 tests.replay_upstream:app    (or start_replay() in a test)

The model name picks the fixture: ``POST …/chat/completions`` answers
``tests/fixtures/openai/<model>.json`` (or ``.sse`` with ``"stream": true``), ``POST …/messages``
answers ``tests/fixtures/anthropic/<model>.json`` / ``.sse``. Streams are sent in
:data:`CHUNK_BYTES`-byte pieces and cut inside every multi-byte UTF-8 character, so events,
JSON strings and characters arrive split, as they can over a real network.

``script-<name>`` models are scripted conversations: the fixture ``<name>-tool`` until the
last user turn carries a tool result, then ``<name>-text``. ``{{FILE}}`` in a fixture is
replaced by the ``REPLAY_FILE`` environment variable (a path the test created).

``GET /_replay/requests`` lists the requests seen (path, headers, body); ``DELETE`` clears it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHUNK_BYTES = 7
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
_recent: deque[dict[str, Any]] = deque(maxlen=200)


def _has_tool_result(req: dict[str, Any]) -> bool:
    messages = req.get("messages") or []
    if not messages:
        return False
    last = messages[-1]
    if last.get("role") == "tool":  # chat completions
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def fixture_path(api: str, model: str, stream: bool, req: dict[str, Any]) -> Path:
    """The fixture file answering ``model`` on ``api`` (openai | anthropic)."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith("script-"):
        name = name[len("script-") :] + ("-text" if _has_tool_result(req) else "-tool")
    return FIXTURES / api / f"{name}.{'sse' if stream else 'json'}"


def pieces(data: bytes) -> list[bytes]:
    """``data`` cut every :data:`CHUNK_BYTES` bytes and inside every multi-byte UTF-8 character."""
    cuts = set(range(0, len(data), CHUNK_BYTES))
    cuts.update(i + 1 for i, byte in enumerate(data) if byte >= 0xC0)  # after a lead byte
    bounds = sorted(cuts | {len(data)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class ReplayApp:
    """RSGI application; see the module docstring."""

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path, method = scope.path, scope.method
        if path == "/_replay/requests":
            if method == "DELETE":
                _recent.clear()
            proto.response_bytes(200, JSON, json.dumps(list(_recent)).encode())
            return
        if method != "POST":
            proto.response_bytes(404, JSON, b'{"error":{"message":"replay: no route","type":"not_found"}}')
            return
        body = await proto()
        _recent.append({"path": path, "headers": dict(scope.headers.items()), "body": body.decode()})
        req = json.loads(body)
        api = "anthropic" if path.endswith("/messages") else "openai"
        stream = bool(req.get("stream"))
        fixture = fixture_path(api, str(req.get("model", "")), stream, req)
        if not fixture.exists():
            err = {"error": {"message": f"replay: no fixture {fixture.name}", "type": "not_found_error"}}
            proto.response_bytes(404, JSON, json.dumps(err).encode())
            return
        data = fixture.read_bytes().replace(b"{{FILE}}", os.environ.get("REPLAY_FILE", "").encode())
        if not stream:
            proto.response_bytes(200, JSON, data)
            return
        transport = proto.response_stream(200, SSE)
        for piece in pieces(data):
            await transport.send_bytes(piece)


app = ReplayApp()


def start_replay(env: dict[str, str] | None = None) -> Any:
    """Start this server on a free port (a :class:`tests.conftest.Proc`)."""
    from tests.conftest import BIN, LOG_DIR, ROOT, Proc, free_port, wait_http

    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"replay-{port}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [str(BIN / "granian"), "--interface", "rsgi", "--loop", "uvloop", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "tests.replay_upstream:app"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_replay/requests", proc=popen)
    return Proc(popen, url, log_path)
