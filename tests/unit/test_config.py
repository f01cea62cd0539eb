"""Config validation: every problem reported with its path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

GOOD = """
providers:
  - name: openai-main
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    models: [gpt-4o, gpt-4o-mini]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.problems


def test_good_config_with_env_substitution() -> None:
    cfg = parse_config(GOOD, env={"OPENAI_API_KEY": "sk-x"})
    assert cfg.providers[0].api_key == "sk-x"
    assert cfg.model_ids() == ["openai-main/gpt-4o", "openai-main/gpt-4o-mini"]
    assert cfg.providers[0].timeout_s == 60 and cfg.providers[0].connect_timeout_s == 5


def test_env_default_and_missing_env() -> None:
    cfg = parse_config(GOOD.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-fallback}"), env={})
    assert cfg.providers[0].api_key == "fallback"
    assert problems(GOOD) == ["providers[0].api_key: environment variable OPENAI_API_KEY is not set"]


def test_secret_with_yaml_characters_is_not_parsed_as_yaml() -> None:
    cfg = parse_config(GOOD, env={"OPENAI_API_KEY": "a: b # c\n- d"})
    assert cfg.providers[0].api_key == "a: b # c\n- d"


def test_bad_url_reported_with_path() -> None:
    text = GOOD.replace("https://api.openai.com/v1", "not-a-url")
    assert problems(text, {"OPENAI_API_KEY": "k"}) == ["providers[0].base_url: expected a URL"]


def test_unknown_keys_rejected_everywhere() -> None:
    text = GOOD + "    colour: blue\nserver: {max_body: 3}\nextra: 1\n"
    found = problems(text, {"OPENAI_API_KEY": "k"})
    assert "extra: unknown key" in found
    assert "providers[0].colour: unknown key" in found
    assert "server.max_body: unknown key" in found


def test_several_problems_at_once() -> None:
    text = """
providers:
  - {name: a, base_url: "http://x", models: [m], timeout_s: fast}
  - {base_url: "http://y", models: [m]}
"""
    found = problems(text)
    assert "providers[0].timeout_s: expected float, got str" in found
    assert "providers[1].name: required key is missing" in found


def test_semantic_checks() -> None:
    text = """
providers:
  - {name: a, base_url: "http://x", models: []}
  - {name: a, base_url: "ftp://y", models: [m], timeout_s: 0}
server: {max_body_bytes: 10}
"""
    found = problems(text)
    assert "providers[0].models: list at least one model" in found
    assert "providers[1].name: duplicate provider name 'a'" in found
    assert "providers[1].base_url: expected a URL" in found
    assert "providers[1].timeout_s: must be > 0" in found
    assert "server.max_body_bytes: must be >= 1024" in found


def test_enabled_if_env_skips_provider() -> None:
    text = GOOD + "    enabled_if_env: OPENAI_API_KEY\n"
    assert parse_config(text, env={}).providers == []
    assert len(parse_config(text, env={"OPENAI_API_KEY": "k"}).providers) == 1


def test_not_yaml_and_not_mapping() -> None:
    assert problems("a: [")[0].startswith("<config>: not valid YAML")
    assert problems("- 1\n- 2") == ["<root>: expected a mapping of sections"]


def test_example_config_is_valid() -> None:
    from pathlib import Path

    from gateway.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "examples" / "gateway.yaml", env={})
    assert [p.name for p in cfg.providers] == ["mock"]
    cfg = load_config(Path(__file__).parents[2] / "examples" / "gateway.yaml", env={"OPENAI_API_KEY": "sk"})
    assert [p.name for p in cfg.providers] == ["mock", "openai-main"]
