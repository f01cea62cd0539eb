"""Semantic checks of the auth, access and rate_limiting sections."""

from __future__ import annotations

import hashlib

import pytest

from gateway.config import ConfigError, parse_config

H1 = hashlib.sha256(b"k1").hexdigest()
H2 = hashlib.sha256(b"k2").hexdigest()

BASE = """
providers:
  - {name: openai-main, base_url: "http://127.0.0.1:1/v1", models: [gpt-4o, gpt-4o-mini]}
virtual_models:
  - {name: chat-default, load_balance_targets: [{target: openai-main/gpt-4o}]}
"""


def problems(extra: str) -> list[str]:
    try:
        parse_config(BASE + extra, env={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_full_example_is_accepted() -> None:
    cfg = parse_config(
        BASE
        + f"""
auth:
  api_keys:
    - {{subject: "user:alice", teams: [ml], key_sha256: "{H1}"}}
    - {{subject: "virtualaccount:ci-bot", key_sha256: "{H2.upper()}"}}
  jwt:
    - issuer: https://idp.example.com/
      audience: llm-gateway
      jwks_url: https://idp.example.com/.well-known/jwks.json
      subject_claim: sub
      teams_claim: groups
      refresh_s: 300
access:
  - {{subjects: ["team:ml", "user:bob"], models: ["openai-main/*", "chat-default"]}}
rate_limiting:
  - id: per-user-rpm
    when: {{subjects: ["*"], models: ["*"], metadata: {{}}}}
    limit_to: 600
    unit: requests_per_minute
    rate_limit_applies_per: [user, metadata.env]
""",
        env={},
    )
    assert cfg.auth is not None and cfg.auth.api_keys[0].teams == ["ml"]
    assert cfg.auth.jwt[0].algorithms is None
    assert cfg.rate_limiting[0].when.models == ["*"]


def test_unknown_keys_are_rejected_with_path() -> None:
    out = problems(f'auth: {{api_keys: [{{subject: "user:a", key_sha256: "{H1}", secret: x}}]}}\n')
    assert any("auth.api_keys[0].secret: unknown key" in p for p in out), out


def test_bad_and_duplicate_hashes() -> None:
    out = problems(
        f"""
auth:
  api_keys:
    - {{subject: "user:a", key_sha256: "nothex"}}
    - {{subject: "user:b", key_sha256: "{H1}"}}
    - {{subject: "user:c", key_sha256: "{H1.upper()}"}}
    - {{subject: "team:x", key_sha256: "{H2}"}}
"""
    )
    assert "auth.api_keys[0].key_sha256: expected 64 hex digits (see `gateway hash-key`)" in out
    assert "auth.api_keys[2].key_sha256: same key as auth.api_keys[1]" in out
    assert any(p.startswith("auth.api_keys[3].subject:") for p in out)


def test_jwt_checks() -> None:
    out = problems(
        """
auth:
  jwt:
    - {issuer: a, audience: x, jwks_url: "ftp://x", refresh_s: 0, algorithms: [HS256, RS256]}
    - {issuer: a, audience: x, jwks_url: "https://x/jwks"}
"""
    )
    assert "auth.jwt[0].jwks_url: expected an http(s) URL" in out
    assert "auth.jwt[0].refresh_s: must be >= 1" in out
    assert "auth.jwt[0].algorithms[0]: 'HS256' is not an accepted asymmetric algorithm" in out
    assert "auth.jwt[1].issuer: duplicate issuer 'a'" in out


def test_access_model_patterns() -> None:
    out = problems(
        """
access:
  - {subjects: ["user:a", "bob"], models: ["openai-main/*", "nope/*", "chat-default", "ghost", "*"]}
"""
    )
    assert any(p.startswith("access[0].subjects[1]:") for p in out)
    assert "access[0].models[1]: no provider named 'nope'" in out
    assert any(p.startswith("access[0].models[3]:") and "virtual model" in p for p in out)
    assert len(out) == 3, out


def test_rate_limit_checks() -> None:
    out = problems(
        """
rate_limiting:
  - {id: r1, limit_to: 10, unit: requests_per_fortnight}
  - {id: r1, limit_to: 10, unit: tokens_per_hour, rate_limit_applies_per: [user, model, metadata.env]}
  - {id: r3, limit_to: 10, unit: tokens_per_day, rate_limit_applies_per: ["metadata.", team]}
"""
    )
    assert any(p.startswith("rate_limiting[0].unit: unknown unit 'requests_per_fortnight'") for p in out)
    assert "rate_limiting[1].id: duplicate rule id 'r1'" in out
    assert "rate_limiting[1].rate_limit_applies_per: at most 2 entries" in out
    assert "rate_limiting[2].rate_limit_applies_per[0]: expected user, model, tool, mcp_server or metadata.<key>" in out
    assert "rate_limiting[2].rate_limit_applies_per[1]: expected user, model, tool, mcp_server or metadata.<key>" in out


@pytest.mark.parametrize("unit", ["requests_per_minute", "tokens_per_hour", "requests_per_day"])
def test_units_accepted(unit: str) -> None:
    assert problems(f"rate_limiting: [{{id: r, limit_to: 1, unit: {unit}}}]\n") == []
