"""The virtual_models section: defaults as TrueFoundry documents them, and semantic checks."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError
from gateway.routing.config import Target, status_codes
from tests.unit.routing.helpers import config


def problems(virtual_models: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(virtual_models)
    return err.value.problems


def test_defaults_follow_truefoundry() -> None:
    t = Target(target="openai-main/gpt-4o")
    assert t.retry_config.attempts == 2
    assert t.retry_config.delay == 100
    assert status_codes(t.retry_config.on_status_codes) == {429, 500, 502, 503}
    assert status_codes(t.fallback_status_codes) == {401, 403, 404, 429, 500, 502, 503}
    assert t.fallback_candidate is True
    assert t.priority == 0


def test_full_example_parses() -> None:
    cfg = config(
        """
  - name: chat-default
    type: weight-based-routing
    load_balance_targets:
      - target: openai-main/gpt-4o
        weight: 70
        priority: 0
        timeout_ms: 30000
        ttft_timeout_ms: 5000
        retry_config: {attempts: 2, delay: 100, on_status_codes: ["429", "500", "502", "503"]}
        fallback_candidate: true
        fallback_status_codes: ["401", "403", "404", "429", "500", "502", "503"]
        override_params: {temperature: 0.2}
        headers_override: {set: {x-region: eu}, remove: [x-debug]}
      - {target: azure-eu/gpt-4o, weight: 30}
"""
    )
    vm = cfg.virtual_models[0]
    assert vm.load_balance_targets[0].override_params == {"temperature": 0.2}
    assert vm.load_balance_targets[0].headers_override.set == {"x-region": "eu"}
    assert vm.load_balance_targets[1].weight == 30


def test_unknown_target_is_reported_with_its_path() -> None:
    got = problems("  - {name: v, load_balance_targets: [{target: nope/gpt-4o}]}\n")
    assert any(p.startswith("virtual_models[0].load_balance_targets[0].target: unknown model") for p in got)


def test_weights_must_sum_to_a_positive_number() -> None:
    got = problems(
        "  - {name: v, load_balance_targets: [{target: openai-main/gpt-4o, weight: 0}, {target: azure-eu/gpt-4o, weight: 0}]}\n"
    )
    assert any("weights must sum to a positive number" in p for p in got)
    # Priority-based routing does not care about weights.
    config(
        "  - {name: v, type: priority-based-routing, load_balance_targets: [{target: openai-main/gpt-4o, weight: 0}]}\n"
    )


def test_duplicate_and_concrete_looking_names() -> None:
    got = problems(
        """
  - {name: v, load_balance_targets: [{target: openai-main/gpt-4o}]}
  - {name: v, load_balance_targets: [{target: openai-main/gpt-4o}]}
  - {name: openai-main/gpt-4o, load_balance_targets: [{target: azure-eu/gpt-4o}]}
  - {name: azure-eu/other, load_balance_targets: [{target: azure-eu/gpt-4o}]}
"""
    )
    assert "virtual_models[1].name: duplicate virtual model name 'v'" in got
    assert any(p.startswith("virtual_models[2].name:") and "concrete" in p for p in got)
    assert any(p.startswith("virtual_models[3].name:") and "concrete" in p for p in got)


def test_status_codes_must_have_three_digits() -> None:
    got = problems(
        """
  - name: v
    load_balance_targets:
      - target: openai-main/gpt-4o
        retry_config: {on_status_codes: ["42", 503]}
        fallback_status_codes: ["5xx"]
"""
    )
    assert (
        "virtual_models[0].load_balance_targets[0].retry_config.on_status_codes[0]: '42' is not a 3-digit HTTP status"
        in got
    )
    assert any(
        p.startswith("virtual_models[0].load_balance_targets[0].fallback_status_codes[0]:") for p in got
    )
    assert status_codes(["42", 503, "429"]) == {503, 429}


def test_unknown_keys_and_empty_targets() -> None:
    got = problems("  - {name: v, load_balance_targets: [{target: openai-main/gpt-4o, wieght: 3}]}\n")
    assert any("wieght" in p and "unknown key" in p for p in got)
    got = problems("  - {name: v, load_balance_targets: []}\n")
    assert "virtual_models[0].load_balance_targets: list at least one target" in got


def test_duplicate_targets_and_bad_numbers() -> None:
    got = problems(
        """
  - name: v
    load_balance_targets:
      - {target: openai-main/gpt-4o, timeout_ms: 0, retry_config: {attempts: -1, delay: -5}}
      - {target: openai-main/gpt-4o, weight: -1, ttft_timeout_ms: -1}
"""
    )
    at = "virtual_models[0].load_balance_targets"
    assert f"{at}[0].timeout_ms: must be > 0" in got
    assert f"{at}[0].retry_config.attempts: must be >= 0" in got
    assert f"{at}[0].retry_config.delay: must be >= 0" in got
    assert f"{at}[1].target: duplicate target 'openai-main/gpt-4o'" in got
    assert f"{at}[1].weight: must be >= 0" in got
    assert f"{at}[1].ttft_timeout_ms: must be > 0" in got
