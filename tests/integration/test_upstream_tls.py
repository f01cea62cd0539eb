"""Providers over TLS: the mock's self-signed HTTPS listener, trusted through ``ca_file``.

Both upstream clients (pyreqwest, aiohttp) verify the provider's certificate against the system
roots plus ``ca_file``; without it the same provider is unreachable (502), never silently trusted.
"""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import BIN, LOG_DIR, Proc, _spawn, free_port, provider, start_gateway


@pytest.fixture(scope="module")
def tls_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    cert = tmp_path_factory.mktemp("tls") / "mock.pem"
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"mock-tls-{port}.log"
    argv = [str(BIN / "python"), "-m", "bench.mock_upstream", "--port", str(port), "--tls-cert", str(cert)]
    popen = _spawn(argv, log_path)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:  # bounded: the deadline below
        assert popen.poll() is None, log_path.read_text(errors="replace")
        try:
            if cert.exists():  # written atomically by the mock
                httpx.get(
                    url + "/v1/models", verify=ssl.create_default_context(cafile=str(cert)), timeout=0.5
                )
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "TLS mock did not come up"
        time.sleep(0.05)
    proc = Proc(popen, url, log_path)
    yield proc, cert
    proc.stop()


@pytest.mark.parametrize("client_kind", ["pyreqwest", "aiohttp"])
def test_chat_and_stream_over_tls_with_ca_file(
    tls_mock: tuple[Proc, Path], tmp_path: Path, client_kind: str
) -> None:
    mock, cert = tls_mock
    config = {
        "server": {"upstream_client": client_kind},
        "providers": [provider("tls", mock.url, ["gpt-4o"], ca_file=str(cert))],
    }
    gw = start_gateway(config, tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        resp = client.chat.completions.create(
            model="tls/gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert resp.choices[0].message.content.startswith("tok0") and resp.usage.total_tokens == 20
        stream = client.chat.completions.create(
            model="tls/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("tok0 tok1")
        assert all(c.usage is None for c in chunks)  # the injected usage chunk was removed
    finally:
        gw.stop()


@pytest.mark.parametrize("client_kind", ["pyreqwest", "aiohttp"])
def test_untrusted_certificate_is_unreachable(
    tls_mock: tuple[Proc, Path], tmp_path: Path, client_kind: str
) -> None:
    mock, _cert = tls_mock
    config = {
        "server": {"upstream_client": client_kind},
        "providers": [provider("tls", mock.url, ["gpt-4o"])],
    }
    gw = start_gateway(config, tmp_path)
    try:
        resp = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "tls/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert resp.status_code == 502
        assert resp.json()["error"]["message"].startswith(
            ("cannot connect", "the provider at https://127.0.0.1")
        )
    finally:
        gw.stop()


def test_ca_file_problems_are_config_errors(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for path, expected in ((tmp_path / "missing.pem", "cannot read"), (not_pem, "holds no PEM certificate")):
        text = (
            "providers:\n  - name: p\n    base_url: https://example.com/v1\n    models: [m]\n"
            f"    ca_file: {path}\n"
        )
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert any(p.startswith("providers[0].ca_file:") and expected in p for p in info.value.problems)


def test_check_config_names_a_bad_ca_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "providers:\n  - name: p\n    base_url: https://example.com/v1\n    models: [m]\n"
        f"    ca_file: {tmp_path / 'missing.pem'}\n"
    )
    out = subprocess.run(
        [str(BIN / "gateway"), "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "providers[0].ca_file" in (out.stdout + out.stderr)
