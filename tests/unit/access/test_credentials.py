"""API keys, the Principal and the Authenticator's header handling (JWTs: test_jwt.py)."""

from __future__ import annotations

import pytest

from gateway.access.config import AuthConfig
from gateway.access.credentials import ApiKeyIndex, Authenticator, Principal, looks_like_jwt
from gateway.config import GatewayConfig
from gateway.errors import AuthenticationFailed
from tests.unit.access.helpers import ALICE_KEY, BOT_KEY, sha


@pytest.fixture
def auth(cfg: GatewayConfig) -> Authenticator:
    assert cfg.auth is not None
    return Authenticator.from_config(cfg.auth)


def test_principal_matches() -> None:
    p = Principal("user:alice", ["ml", "ml", "ops"])
    assert p.kind == "user" and p.name == "alice" and p.teams == ("ml", "ops")
    assert p.matches == {"*", "user:alice", "team:ml", "team:ops"}
    assert p == Principal("user:alice", ["ml", "ops"])


def test_api_key_index_lookup_is_by_hash() -> None:
    idx = ApiKeyIndex({sha("k").upper(): Principal("user:x")})
    assert idx.lookup("k") == Principal("user:x")
    assert idx.lookup("K") is None
    assert len(idx) == 1


def test_right_key_bearer_and_x_api_key(auth: Authenticator) -> None:
    assert auth.authenticate(f"Bearer {ALICE_KEY}", None).subject == "user:alice"
    assert auth.authenticate(f"bearer   {ALICE_KEY} ", None).teams == ("ml",)
    p = auth.authenticate(None, BOT_KEY)
    assert (p.subject, p.kind) == ("virtualaccount:ci-bot", "virtualaccount")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "message"),
    [
        (None, None, "missing credentials"),
        ("", "", "missing credentials"),
        ("Basic abc", None, "Bearer scheme"),
        ("Bearer ", None, "empty Bearer token"),
        ("Bearer sk-wrong-secret", None, "API key is not valid"),
        (None, "sk-wrong-secret", "API key is not valid"),
        ("Bearer a.b.c", None, "API key is not valid"),  # no JWT issuer configured
    ],
)
def test_bad_credentials(
    auth: Authenticator, authorization: str | None, x_api_key: str | None, message: str
) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        auth.authenticate(authorization, x_api_key)
    assert message in err.value.message
    assert err.value.status == 401
    assert "secret" not in err.value.message  # the credential is never echoed


def test_no_keys_means_everything_fails() -> None:
    auth = Authenticator.from_config(AuthConfig())
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(f"Bearer {ALICE_KEY}", None)


def test_looks_like_jwt() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30.sig")
    assert not looks_like_jwt("sk-abc")
    assert not looks_like_jwt("a.b.c")
    assert not looks_like_jwt("a.b")
