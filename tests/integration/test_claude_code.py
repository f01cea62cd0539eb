"""Claude Code itself, in print mode, through the gateway to an Anthropic and an OpenAI-type target.

``make test`` installs ``@anthropic-ai/claude-code`` from the npm registry into ``.tools/``
when npm is present. The scripted upstream (``tests/replay_upstream.py``, model ``script-cc``)
answers the first call with a ``Read`` tool use of a file the test wrote, and the call that
carries the tool result with text quoting it. Claude Code's telemetry, auto-updates, error
reports and other non-essential traffic are switched off by its environment variables, and
its home is a temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, start_gateway
from tests.otlp_fixtures import otlp_receiver  # noqa: F401
from tests.otlp_receiver import OtlpReceiver
from tests.replay_upstream import start_replay

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        shutil.which("npm") is None, reason="npm is not installed: Claude Code cannot be installed"
    ),
]

CLAUDE = ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
}


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_claude_code_session_through_the_gateway(
    provider: str,
    tmp_path: Path,
    otlp_receiver: OtlpReceiver,  # noqa: F811
) -> None:
    assert CLAUDE.exists(), "npm is present but Claude Code is not installed: run `make claude-code`"
    project = tmp_path / "project"
    project.mkdir()
    note = project / "note.txt"
    note.write_text("gateway-ok\n")
    replay = start_replay({"REPLAY_FILE": str(note)})
    models = ["script-cc"]
    config = {
        "providers": [
            {
                "name": "rp-ant",
                "type": "anthropic",
                "base_url": replay.url,
                "api_key": "sk-a",
                "models": models,
            },
            {
                "name": "rp-oai",
                "type": "openai",
                "base_url": replay.url + "/v1",
                "api_key": "sk-o",
                "models": models,
            },
        ],
        "tracing": {"flush_interval_ms": 50},
        "exporter": {"traces": [{"name": "otlp", "endpoint": otlp_receiver.traces_url}]},
    }
    gw = start_gateway(config, tmp_path)
    model = f"{'rp-ant' if provider == 'anthropic' else 'rp-oai'}/script-cc"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_API_KEY": "sk-gateway-key",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # background calls, if any, reach the same script
        **QUIET_ENV,
    }
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(CLAUDE), "-p", "Read note.txt and tell me what it says.", "--model", model,
             "--allowedTools", "Read", "--output-format", "json"],
            cwd=project, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        requests = httpx.get(replay.url + "/_replay/requests").json()
    finally:
        gw.stop()
        replay.stop()
    assert done.returncode == 0, done.stdout + done.stderr + gw.output()
    result = json.loads(done.stdout)
    assert "gateway-ok" in result["result"] and result["is_error"] is False

    calls = [r for r in requests if r["path"].endswith(("/messages", "/chat/completions"))]
    assert len(calls) >= 2  # the tool use, then the answer
    last = json.loads(calls[-1]["body"])
    assert "gateway-ok" in json.dumps(last["messages"][-1])  # the tool result went back up
    if provider == "anthropic":
        assert calls[-1]["headers"]["anthropic-beta"]  # Claude Code's betas, forwarded
        assert last["model"] == "script-cc"
    else:
        assert last["messages"][-1]["role"] == "tool"

    deadline = asyncio.get_running_loop().time() + 15
    while True:
        spans = otlp_receiver.spans()
        roots = [s for s in spans if s.name == "POST /v1/messages"]
        clients = [s for s in spans if s.kind == 3]
        if len(roots) >= len(calls) and len(clients) >= len(calls):
            break
        assert asyncio.get_running_loop().time() < deadline, [s.name for s in spans]
        await asyncio.sleep(0.1)
    assert all(_attrs(s)["gen_ai.provider.name"] == provider for s in clients)
    assert all(_attrs(s)["http.response.status_code"] == 200 for s in roots)
    # usage read on the way (native: message_start/message_delta; translated: the hub's usage chunk)
    assert all(_attrs(s)["tfy.usage.input_tokens"] >= 900 for s in roots)
    # counted once: on the model-call spans, never on the root (the GenAI span contract)
    assert all(_attrs(s).get("gen_ai.usage.input_tokens", 0) >= 900 for s in clients)
    assert not any(k.startswith("gen_ai.") for s in roots for k in _attrs(s))
