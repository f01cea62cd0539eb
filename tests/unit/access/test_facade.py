"""AccessControl.check: authenticate → metadata → authorize → admit; hash-key; warnings."""

from __future__ import annotations

import io

import pytest

from gateway.access import AccessControl, hash_key_main, startup_warnings
from gateway.config import GatewayConfig, parse_config
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from tests.unit.access.helpers import ALICE_KEY, BOB_KEY, BOT_KEY, sha


class Clock:
    def __init__(self) -> None:
        self.t = 6000.0

    def __call__(self) -> float:
        return self.t


def headers(**h: str) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in h.items()}


@pytest.fixture
def ac(cfg: GatewayConfig) -> AccessControl:
    ac = AccessControl.from_config(cfg)
    ac.clock = Clock()
    return ac


def test_check_allows_and_returns_decision(ac: AccessControl) -> None:
    d = ac.check(
        headers(authorization=f"Bearer {ALICE_KEY}", x_tfy_metadata='{"env":"dev"}').get, "chat-default"
    )
    assert d.principal.subject == "user:alice" and d.metadata == {"env": "dev"}
    assert d.rule_ids == [] and d.response_headers == []


def test_check_errors_in_order(ac: AccessControl) -> None:
    with pytest.raises(AuthenticationFailed):  # 401 wins over a bad metadata header
        ac.check(headers(x_tfy_metadata="{").get, "chat-default")
    with pytest.raises(InvalidRequest):
        ac.check(headers(x_api_key=ALICE_KEY, x_tfy_metadata="{").get, "chat-default")
    with pytest.raises(PermissionDenied) as err:
        ac.check(headers(x_api_key=ALICE_KEY).get, "azure-eu/gpt-4o")
    assert "azure-eu/gpt-4o" in err.value.message


def test_check_rate_limits_with_headers(ac: AccessControl) -> None:
    get = headers(x_api_key=BOT_KEY).get
    remaining = [ac.check(get, "azure-eu/gpt-4o").response_headers[1][1] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(RateLimited) as err:
        ac.check(get, "azure-eu/gpt-4o")
    assert "bot-rpm" in err.value.message
    assert {k for k, _ in err.value.headers} == {
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
    }


def test_token_limit_charged_after_response(ac: AccessControl) -> None:
    get = headers(authorization=f"Bearer {BOB_KEY}", x_tfy_metadata='{"env":"prod"}').get
    d = ac.check(get, "openai-main/gpt-4o")
    assert d.rule_ids == ["prod-tpm"]
    d.admission.charge_tokens(1000, ac.clock())
    with pytest.raises(RateLimited):
        ac.check(get, "openai-main/gpt-4o")
    ac.check(get, "openai-main/gpt-4o-mini")  # per (user, model)


def test_visible_models(ac: AccessControl, cfg: GatewayConfig) -> None:
    bot = ac.authenticate(headers(x_api_key=BOT_KEY).get)
    assert ac.visible_models(bot, [*cfg.model_ids(), "chat-default"]) == ["azure-eu/gpt-4o"]


def test_no_auth_section_is_anonymous_and_open() -> None:
    cfg = parse_config(
        """
providers: [{name: p, base_url: "http://127.0.0.1:1", models: [m]}]
access: [{subjects: ["user:x"], models: ["p/m"]}]
rate_limiting: [{id: all, limit_to: 1, unit: requests_per_day}]
""",
        env={},
    )
    ac = AccessControl.from_config(cfg)
    d = ac.check({}.get, "p/m")
    assert d.principal.subject == "anonymous" and d.rule_ids == ["all"]
    with pytest.raises(RateLimited):
        ac.check({}.get, "p/m")
    warnings = startup_warnings(cfg, None)
    assert any("anonymous" in w for w in warnings)
    assert any("per process" in w for w in warnings)
    assert any("ignored" in w for w in warnings)


def test_reload_keeps_counts(cfg: GatewayConfig) -> None:
    old = AccessControl.from_config(cfg)
    get = headers(x_api_key=BOT_KEY).get
    for _ in range(3):
        old.check(get, "azure-eu/gpt-4o")
    new = AccessControl.from_config(cfg, previous=old)
    with pytest.raises(RateLimited):
        new.check(get, "azure-eu/gpt-4o")


@pytest.mark.parametrize("text", ["sk-alice-0123456789\n", "sk-alice-0123456789\r\n", "sk-alice-0123456789"])
def test_hash_key_main(text: str) -> None:
    out = io.StringIO()
    assert hash_key_main(io.StringIO(text), out) == 0
    assert out.getvalue() == sha(ALICE_KEY) + "\n"


def test_hash_key_main_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert hash_key_main(io.StringIO("\n"), io.StringIO()) == 2
    assert "empty" in capsys.readouterr().err
