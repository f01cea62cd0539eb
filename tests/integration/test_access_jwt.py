"""JWTs against a local JWKS server on 127.0.0.1, with keys and tokens minted here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.access import AccessControl
from gateway.access.config import AuthConfig
from gateway.config import GatewayConfig, parse_config
from gateway.errors import AuthenticationFailed

ISSUER = "https://idp.test/"
AUDIENCE = "llm-gateway"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    algo = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    out: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
    out.update(kid=kid, use="sig")
    if alg:
        out["alg"] = alg
    return out


class Jwks:
    """A JWKS endpoint whose document and liveness the test controls."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": [jwk(RSA_KEY, "k1", "RS256"), jwk(EC_KEY, "e1", None)]}
        self.hits = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                jwks.hits += 1
                body = json.dumps(jwks.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def jwks_server() -> Iterator[Jwks]:
    server = Jwks()
    try:
        yield server
    finally:
        if server.thread.is_alive():
            server.stop()


@pytest.fixture
async def access(jwks_server: Jwks) -> AsyncIterator[AccessControl]:
    cfg = parse_config(
        f"""
providers: [{{name: p, base_url: "http://127.0.0.1:1", models: [m]}}]
auth:
  jwt:
    - {{issuer: "{ISSUER}", audience: {AUDIENCE}, jwks_url: "{jwks_server.url}", teams_claim: groups, refresh_s: 300}}
""",
        env={},
    )
    ac = AccessControl.from_config(cfg)
    await ac.start()
    assert await ac.wait_for_keys(5.0)
    try:
        yield ac
    finally:
        await ac.stop()


def token(key: Any = RSA_KEY, kid: str | None = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, "groups": ["ml"]}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def auth(ac: AccessControl, tok: str) -> Any:
    headers = {"authorization": f"Bearer {tok}"}
    return ac.authenticate(headers.get)


async def test_valid_rs256_and_es256(access: AccessControl) -> None:
    p = auth(access, token())
    assert p.subject == "user:alice" and p.teams == ("ml",)
    p = auth(access, token(EC_KEY, kid="e1", alg="ES256", sub="bob", groups="ops"))
    assert p.subject == "user:bob" and p.teams == ("ops",)


async def test_verified_tokens_are_cached(access: AccessControl) -> None:
    assert access.authenticator is not None
    verifier = access.authenticator.jwts
    tok = token(sub="carol")
    before = verifier.verified
    for _ in range(5):
        assert auth(access, tok).subject == "user:carol"
    assert verifier.verified == before + 1


def hs256_with_public_key() -> str:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    now = int(time.time())
    body = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600}).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def alg_none() -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 600}).encode()
    )
    return f"{head}.{body}."


def tampered() -> str:
    head, _, sig = token().split(".")
    body = b64(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": int(time.time()) + 600}).encode()
    )
    return f"{head}.{body}.{sig}"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: token(exp=int(time.time()) - 120), "JWT has expired"),
        (lambda: token(nbf=int(time.time()) + 120), "JWT is not yet valid"),
        (lambda: token(iss="https://evil.test/"), "JWT issuer is not trusted"),
        (lambda: token(iss=None), "JWT has no issuer"),
        (lambda: token(aud="someone-else"), "JWT audience is not accepted"),
        (lambda: token(aud=None), "missing the 'aud' claim"),
        (lambda: token(exp=None), "missing the 'exp' claim"),
        (lambda: token(sub=None), "no usable 'sub' claim"),
        (alg_none, "alg 'none' is not accepted"),
        (hs256_with_public_key, "algorithm 'HS256' is not accepted"),
        (tampered, "JWT signature is invalid"),
        (lambda: token(RSA_KEY, kid="e1", alg="RS256"), "unknown"),  # an RSA token for an EC key
        (lambda: token(RSA_KEY_2, kid="k1"), "JWT signature is invalid"),
        (lambda: "eyJhbGciOiJSUzI1NiJ9.!!!.sig", "JWT payload is malformed"),
        (lambda: "x.y.z", "JWT is malformed"),
    ],
)
async def test_rejected_tokens(access: AccessControl, make: Any, message: str) -> None:
    tok = make()
    with pytest.raises(AuthenticationFailed) as err:
        auth(access, tok)
    assert message in err.value.message
    signature = tok.split(".")[-1]
    assert tok not in err.value.message and (not signature or signature not in err.value.message)


async def test_unknown_kid_is_401_at_once_and_refreshes_once(
    access: AccessControl, jwks_server: Jwks
) -> None:
    hits = jwks_server.hits
    jwks_server.document["keys"].append(jwk(RSA_KEY_2, "k2", "RS256"))  # the IdP rotates
    rotated = token(RSA_KEY_2, kid="k2")
    with pytest.raises(AuthenticationFailed) as err:
        auth(access, rotated)
    assert jwks_server.hits == hits  # answered before any fetch: the refresh runs in the background
    assert "signing key is unknown" in err.value.message
    for _ in range(100):  # bounded wait for the one background refresh
        if jwks_server.hits > hits:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert jwks_server.hits == hits + 1
    assert auth(access, rotated).subject == "user:alice"
    # another unknown kid within the interval: 401, and no further fetch
    with pytest.raises(AuthenticationFailed):
        auth(access, token(RSA_KEY_2, kid="k3"))
    await asyncio.sleep(0.1)
    assert jwks_server.hits == hits + 1


async def test_cached_keys_survive_jwks_outage(access: AccessControl, jwks_server: Jwks) -> None:
    jwks_server.stop()
    assert access.authenticator is not None
    cache = access.authenticator.jwts.caches[0]
    async with httpx.AsyncClient() as client:
        assert await cache.fetch(client) is False
    assert cache.failures >= 1
    assert auth(access, token(sub="dave")).subject == "user:dave"  # a fresh token: verified with cached key


async def test_reload_inherits_keys(access: AccessControl) -> None:
    assert access.authenticator is not None
    cfg = GatewayConfig(auth=AuthConfig(jwt=[c.issuer for c in access.authenticator.jwts.caches]))
    new = AccessControl.from_config(cfg, previous=access)
    assert auth(new, token(sub="erin")).subject == "user:erin"  # keys there before any fetch


async def test_admitted_callers_are_remembered_only_until_their_token_expires(access: AccessControl) -> None:
    assert access.authenticator is not None
    verifier = access.authenticator.jwts
    headers = {"authorization": f"Bearer {token(sub='dora', exp=int(time.time()) + 300)}"}
    before = verifier.verified
    for _ in range(3):
        assert access.check(headers.get, "p/m").principal.subject == "user:dora"
    assert verifier.verified == before + 1  # decided once, then remembered
    # Past the token's expiry the remembered decision is not used: the token is verified again
    # (PyJWT then judges exp by the real clock, so here it still passes).
    later = time.time() + 400
    access.clock = lambda: later
    verifier._clock = lambda: later  # noqa: SLF001 - the verifier's own cache clock, advanced alike
    assert access.check(headers.get, "p/m").principal.subject == "user:dora"
    assert verifier.verified == before + 2
