"""Micro-benchmark of access control on the request path: µs per call.

    python -m bench.micro_access

Times are CPU time per call (best of 5); the first row, a dict lookup, shows the machine's speed
so figures from different runs can be compared. Budget (issue 3): authenticate + authorize + rate-limit admit together under 30 µs. Nothing here
touches the network: the JWKS document is loaded straight into the cache.
"""

from __future__ import annotations

import hashlib
import time
import timeit
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.access import AccessControl
from gateway.config import parse_config

KEY = "sk-bench-0123456789abcdef"
ISSUER = "https://idp.bench/"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())

CONFIG = f"""
providers:
  - {{name: openai-main, base_url: "http://127.0.0.1:1/v1", models: [gpt-4o, gpt-4o-mini]}}
  - {{name: azure-eu, base_url: "http://127.0.0.1:2/v1", models: [gpt-4o]}}
auth:
  api_keys:
    - {{subject: "user:alice", teams: [ml], key_sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}"}}
  jwt:
    - {{issuer: "{ISSUER}", audience: llm-gateway, jwks_url: "http://127.0.0.1:1/jwks", teams_claim: groups}}
access:
  - {{subjects: ["user:bob"], models: ["azure-eu/*"]}}
  - {{subjects: ["team:ml"], models: ["openai-main/*"]}}
rate_limiting:
  - {{id: prod-tpm, when: {{metadata: {{env: prod}}}}, limit_to: 100000, unit: tokens_per_minute}}
  - {{id: per-user-rpm, limit_to: 1000000000, unit: requests_per_minute, rate_limit_applies_per: [user, model]}}
"""


def per_call_us(fn: Callable[[], object], number: int) -> float:
    # CPU time of this process: steadier than wall time on a shared, busy machine.
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    ac = AccessControl.from_config(parse_config(CONFIG, env={}))
    assert ac.authenticator is not None
    verifier = ac.authenticator.jwts
    rsa_jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True) | {"kid": "r1", "alg": "RS256"}
    ec_jwk = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True) | {"kid": "e1", "alg": "ES256"}
    verifier.caches[0].load({"keys": [rsa_jwk, ec_jwk]})
    claims = {
        "iss": ISSUER,
        "aud": "llm-gateway",
        "sub": "alice",
        "groups": ["ml"],
        "exp": int(time.time()) + 3600,
    }
    rs256 = jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    es256 = jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": "e1"})

    key_headers = {"authorization": f"Bearer {KEY}", "x-tfy-metadata": '{"env":"dev"}'}
    jwt_headers = {"authorization": f"Bearer {rs256}"}
    auth = ac.authenticator.authenticate
    alice = auth(key_headers["authorization"], None)
    model = "openai-main/gpt-4o"
    now = time.time()

    ref: dict[str, int] = {"a": 1}
    rows = [
        ("reference: dict.get (machine speed)", lambda: ref.get("a"), 1_000_000),
        ("API-key auth", lambda: auth(key_headers["authorization"], None), 200_000),
        ("JWT RS256 verify, cached JWKS key (no token cache)", lambda: verifier._verify(rs256, now), 2_000),
        ("JWT ES256 verify, cached JWKS key (no token cache)", lambda: verifier._verify(es256, now), 2_000),
        ("JWT auth, cached token", lambda: auth(jwt_headers["authorization"], None), 100_000),
        ("access check (allowed)", lambda: ac.policy.allowed(alice, model), 500_000),
        ("rate-limit admit", lambda: ac.limiter.admit(alice, model, {}, now), 200_000),
        ("check() API key + metadata + rule", lambda: ac.check(key_headers.get, model), 100_000),
        ("check() JWT (cached token) + rule", lambda: ac.check(jwt_headers.get, model), 100_000),
    ]
    auth(jwt_headers["authorization"], None)  # warm the token cache
    width = max(len(name) for name, _, _ in rows)
    for name, fn, number in rows:
        print(f"{name:<{width}}  {per_call_us(fn, number):8.2f} µs")


if __name__ == "__main__":
    main()
