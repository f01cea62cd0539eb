"""Access rules: subjects, teams, patterns, the 403 and the visible model list."""

from __future__ import annotations

import pytest

from gateway.access.config import AccessRule
from gateway.access.credentials import ANONYMOUS, Principal
from gateway.access.rules import AccessPolicy, ModelPattern
from gateway.errors import PermissionDenied

ALL = ["openai-main/gpt-4o", "openai-main/gpt-4o-mini", "azure-eu/gpt-4o", "chat-default"]
RULES = [
    AccessRule(subjects=["team:ml", "user:bob"], models=["openai-main/*", "chat-default"]),
    AccessRule(subjects=["virtualaccount:ci-bot"], models=["azure-eu/gpt-4o"]),
    AccessRule(subjects=["*"], models=["openai-main/gpt-4o-mini"]),
]


def test_model_pattern() -> None:
    p = ModelPattern(["openai-main/*", "chat-default"])
    assert "openai-main/x" in p and "chat-default" in p
    assert "azure-eu/x" not in p and "openai-main" not in p and "chat" not in p
    assert "anything" in ModelPattern(["*"])


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        (Principal("user:alice", ["ml"]), ["openai-main/gpt-4o", "openai-main/gpt-4o-mini", "chat-default"]),
        (Principal("user:bob"), ["openai-main/gpt-4o", "openai-main/gpt-4o-mini", "chat-default"]),
        (Principal("virtualaccount:ci-bot"), ["openai-main/gpt-4o-mini", "azure-eu/gpt-4o"]),
        (Principal("user:carol", ["sales"]), ["openai-main/gpt-4o-mini"]),
    ],
)
def test_visible_models(principal: Principal, visible: list[str]) -> None:
    policy = AccessPolicy(RULES)
    assert policy.visible_models(principal, ALL) == visible
    for m in ALL:  # memoised answers agree with the first ones
        assert policy.allowed(principal, m) == (m in visible)


def test_require_names_the_model() -> None:
    policy = AccessPolicy(RULES)
    with pytest.raises(PermissionDenied) as err:
        policy.require(Principal("user:carol"), "azure-eu/gpt-4o")
    assert err.value.status == 403
    assert "azure-eu/gpt-4o" in err.value.message and "user:carol" in err.value.message
    policy.require(Principal("user:bob"), "chat-default")


def test_no_section_allows_everything_and_empty_section_nothing() -> None:
    assert AccessPolicy(None).allowed(ANONYMOUS, "x/y")
    assert AccessPolicy(None).visible_models(ANONYMOUS, ALL) == ALL
    assert not AccessPolicy([]).allowed(Principal("user:a"), "x/y")
