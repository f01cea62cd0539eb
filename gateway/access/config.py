"""Config sections for authentication, access rules and rate limits.

```yaml
auth:
  api_keys:
    - {subject: "user:alice", teams: [ml], key_sha256: "<hex sha256 of the key>"}
  jwt:
    - {issuer: https://idp/, audience: llm-gateway, jwks_url: https://idp/jwks.json,
       subject_claim: sub, teams_claim: groups, refresh_s: 300}
access:
  - {subjects: ["team:ml", "user:bob"], models: ["openai-main/*", "chat-default"]}
rate_limiting:
  - {id: per-user-rpm, when: {subjects: ["*"], models: ["*"], metadata: {}},
     limit_to: 600, unit: requests_per_minute, rate_limit_applies_per: [user]}
```

:func:`check_access` reports semantic problems as ``path: message`` lines; decoding (unknown keys,
wrong types) is done by :mod:`gateway.config`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "UNITS",
    "AccessRule",
    "ApiKeyConfig",
    "AuthConfig",
    "JwtIssuerConfig",
    "RateLimitRule",
    "RateLimitWhen",
    "check_access",
]

# Only public-key algorithms: a JWKS never legitimately carries a shared secret, and accepting HS*
# would let anyone holding the (public) key forge tokens.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)

# unit -> (what is counted, window length in seconds)
UNITS: dict[str, tuple[str, int]] = {
    f"{kind}_per_{span}": (kind, seconds)
    for kind in ("requests", "tokens")
    for span, seconds in (("minute", 60), ("hour", 3600), ("day", 86400))
}

SUBJECT_KINDS = ("user", "team", "virtualaccount")
MAX_APPLIES_PER = 2
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ApiKeyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One API key, stored only as the sha256 of the key (``gateway hash-key`` prints it)."""

    subject: str  # user:<name> or virtualaccount:<name>
    key_sha256: str
    teams: list[str] = []


class JwtIssuerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An identity provider whose JWTs are accepted, verified against its JWKS."""

    issuer: str
    audience: str | list[str]
    jwks_url: str
    subject_claim: str = "sub"  # the subject becomes "user:<value>"
    teams_claim: str | None = None
    refresh_s: float = 300.0
    algorithms: list[str] | None = None  # restricts further what the JWKS declares


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Credentials accepted by the gateway. Present → every request must authenticate."""

    api_keys: list[ApiKeyConfig] = []
    jwt: list[JwtIssuerConfig] = []


class AccessRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which subjects may use which models (``*``, ``<provider>/*``, exact ids, virtual names)."""

    subjects: list[str]
    models: list[str]


class RateLimitWhen(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The requests a rate-limit rule applies to; every listed condition must hold."""

    subjects: list[str] = msgspec.field(default_factory=lambda: ["*"])
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    metadata: dict[str, str] = {}
    # Naming either makes the rule apply to MCP tool calls only (see gateway.mcp.config).
    mcp_servers: list[str] | None = None
    tools: list[str] | None = None


class RateLimitRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One rate-limit rule; the first matching rule applies."""

    id: str
    limit_to: int
    unit: str  # see UNITS
    when: RateLimitWhen = RateLimitWhen()
    rate_limit_applies_per: list[str] = []  # up to two of user | model | tool | mcp_server | metadata.<key>


# --- semantic checks ---------------------------------------------------------------------------


def _subject_problem(subject: str, *, allow_team: bool = True, allow_star: bool = True) -> str | None:
    if subject == "*":
        return None if allow_star else "'*' is not a subject of a credential"
    kind, sep, name = subject.partition(":")
    kinds = SUBJECT_KINDS if allow_team else ("user", "virtualaccount")
    if not sep or not name or kind not in kinds:
        return f"expected {' | '.join(k + ':<name>' for k in kinds)}" + (" or '*'" if allow_star else "")
    return None


def _model_problem(pattern: str, providers: set[str], model_ids: set[str], virtual: set[str]) -> str | None:
    if pattern == "*":
        return None
    provider, sep, model = pattern.partition("/")
    if sep:
        if provider not in providers:
            return f"no provider named {provider!r}"
        if not model:
            return "expected <provider>/<model> or <provider>/*"
        return None
    if pattern in virtual:
        return None
    return f"{pattern!r} is neither <provider>/<model>, <provider>/* nor a virtual model"


def check_access(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of the ``auth``, ``access`` and ``rate_limiting`` sections."""
    providers = cfg.provider_names()
    model_ids = set(cfg.model_ids())
    virtual = {name for v in cfg.virtual_models if (name := getattr(v, "name", None))}
    if cfg.auth is not None:
        yield from _check_auth(cfg.auth)
    for i, rule in enumerate(cfg.access or ()):
        at = f"access[{i}]"
        if not rule.subjects:
            yield f"{at}.subjects: list at least one subject"
        for j, s in enumerate(rule.subjects):
            if (p := _subject_problem(s)) is not None:
                yield f"{at}.subjects[{j}]: {p}"
        if not rule.models:
            yield f"{at}.models: list at least one model"
        for j, m in enumerate(rule.models):
            if (p := _model_problem(m, providers, model_ids, virtual)) is not None:
                yield f"{at}.models[{j}]: {p}"
    yield from _check_rate_limits(cfg.rate_limiting, providers, model_ids, virtual)


def _check_auth(auth: AuthConfig) -> Iterator[str]:
    seen_hashes: dict[str, int] = {}
    for i, key in enumerate(auth.api_keys):
        at = f"auth.api_keys[{i}]"
        if (p := _subject_problem(key.subject, allow_team=False, allow_star=False)) is not None:
            yield f"{at}.subject: {p}"
        if not _HEX64.match(key.key_sha256):
            yield f"{at}.key_sha256: expected 64 hex digits (see `gateway hash-key`)"
        else:
            h = key.key_sha256.lower()
            if h in seen_hashes:
                yield f"{at}.key_sha256: same key as auth.api_keys[{seen_hashes[h]}]"
            seen_hashes.setdefault(h, i)
        for j, team in enumerate(key.teams):
            if not team or ":" in team:
                yield f"{at}.teams[{j}]: must be a non-empty name without ':'"
    issuers: set[str] = set()
    for i, jw in enumerate(auth.jwt):
        at = f"auth.jwt[{i}]"
        if not jw.issuer:
            yield f"{at}.issuer: must be non-empty"
        if jw.issuer in issuers:
            yield f"{at}.issuer: duplicate issuer {jw.issuer!r}"
        issuers.add(jw.issuer)
        if not jw.audience:
            yield f"{at}.audience: must be non-empty"
        if not jw.jwks_url.startswith(("https://", "http://")):
            yield f"{at}.jwks_url: expected an http(s) URL"
        if not jw.subject_claim:
            yield f"{at}.subject_claim: must be non-empty"
        if jw.refresh_s < 1:
            yield f"{at}.refresh_s: must be >= 1"
        for k, alg in enumerate(jw.algorithms or ()):
            if alg not in ASYMMETRIC_ALGORITHMS:
                yield f"{at}.algorithms[{k}]: {alg!r} is not an accepted asymmetric algorithm"


def _check_rate_limits(
    rules: list[RateLimitRule], providers: set[str], model_ids: set[str], virtual: set[str]
) -> Iterator[str]:
    ids: set[str] = set()
    for i, rule in enumerate(rules):
        at = f"rate_limiting[{i}]"
        if not rule.id:
            yield f"{at}.id: must be non-empty"
        if rule.id in ids:
            yield f"{at}.id: duplicate rule id {rule.id!r}"
        ids.add(rule.id)
        if rule.limit_to < 0:
            yield f"{at}.limit_to: must be >= 0"
        if rule.unit not in UNITS:
            yield f"{at}.unit: unknown unit {rule.unit!r}; expected one of {', '.join(UNITS)}"
        for j, s in enumerate(rule.when.subjects):
            if (p := _subject_problem(s)) is not None:
                yield f"{at}.when.subjects[{j}]: {p}"
        for j, m in enumerate(rule.when.models):
            if (p := _model_problem(m, providers, model_ids, virtual)) is not None:
                yield f"{at}.when.models[{j}]: {p}"
        per = rule.rate_limit_applies_per
        if len(per) > MAX_APPLIES_PER:
            yield f"{at}.rate_limit_applies_per: at most {MAX_APPLIES_PER} entries"
        if len(set(per)) != len(per):
            yield f"{at}.rate_limit_applies_per: duplicate entries"
        for j, p in enumerate(per):
            if p in ("user", "model", "tool", "mcp_server"):
                continue
            prefix, _, key = p.partition(".")
            if prefix != "metadata" or not _METADATA_KEY.match(key):
                yield f"{at}.rate_limit_applies_per[{j}]: expected user, model, tool, mcp_server or metadata.<key>"
