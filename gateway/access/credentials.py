"""Who is calling: API keys looked up by hash, JWTs verified against cached JWKS keys.

Everything here runs in memory on the request path. Keys of JWT issuers are fetched in the
background by :class:`~gateway.access.jwks.JwksCache`; an unknown ``kid`` gets a 401 at once and
asks for one early refresh. Verified JWTs are cached briefly (bounded LRU keyed by the token's
sha256) so that RSA/EC verification is paid once per token, not once per request.

Error messages say what is wrong with a credential and never repeat it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jwt
import msgspec

from gateway.access.config import ASYMMETRIC_ALGORITHMS, AuthConfig, JwtIssuerConfig
from gateway.access.jwks import JwksCache
from gateway.errors import AuthenticationFailed

__all__ = [
    "ANONYMOUS",
    "ApiKeyIndex",
    "Authenticator",
    "JwksCache",
    "JwtVerifier",
    "Principal",
    "looks_like_jwt",
]

LEEWAY_S = 30.0  # clock skew tolerated on exp / nbf
TOKEN_CACHE_TTL_S = 60.0
TOKEN_CACHE_SIZE = 10_000
MAX_TOKEN_CHARS = 16_384


class Principal:
    """An authenticated caller: ``subject`` is ``user:<x>``, ``virtualaccount:<x>`` or ``anonymous``.

    ``matches`` holds every name an access or rate-limit rule may use for this caller (``*``, the
    subject itself, ``team:<t>`` for each team), precomputed so rule matching is a set lookup.
    """

    __slots__ = ("kind", "matches", "name", "subject", "teams")

    def __init__(self, subject: str, teams: Iterable[str] = ()) -> None:
        self.subject = subject
        kind, _, name = subject.partition(":")
        self.kind = kind
        self.name = name or subject
        self.teams: tuple[str, ...] = tuple(dict.fromkeys(teams))
        self.matches = frozenset(("*", subject, *(f"team:{t}" for t in self.teams)))

    def __repr__(self) -> str:
        return f"Principal({self.subject!r}, teams={list(self.teams)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Principal) and (self.subject, self.teams) == (other.subject, other.teams)

    def __hash__(self) -> int:
        return hash((self.subject, self.teams))


ANONYMOUS = Principal("anonymous")


class ApiKeyIndex:
    """sha256 hex of a key → :class:`Principal`; one hash and one dict lookup per request."""

    def __init__(self, entries: Mapping[str, Principal]) -> None:
        # Keyed by the raw digest so a JWT's digest (also the token-cache key) is computed once.
        self._by_digest = {bytes.fromhex(h): p for h, p in entries.items()}

    @classmethod
    def from_config(cls, auth: AuthConfig) -> ApiKeyIndex:
        return cls({k.key_sha256: Principal(k.subject, k.teams) for k in auth.api_keys})

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str) -> Principal | None:
        return self._by_digest.get(hashlib.sha256(key.encode()).digest())

    def lookup_digest(self, digest: bytes) -> Principal | None:
        return self._by_digest.get(digest)


# --- JWT -----------------------------------------------------------------------------------------


class _Header(msgspec.Struct):
    alg: str | None = None
    kid: str | None = None


class _IssuerOnly(msgspec.Struct):
    iss: str | None = None


_decode_header = msgspec.json.Decoder(_Header).decode
_decode_iss = msgspec.json.Decoder(_IssuerOnly).decode


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segments(token: str) -> tuple[_Header, str] | None:
    """Header and payload segment of a compact JWS, or ``None`` when it is not one."""
    if token.count(".") != 2 or len(token) > MAX_TOKEN_CHARS:
        return None
    head, payload, _ = token.split(".")
    try:
        return _decode_header(_b64(head)), payload
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None


def looks_like_jwt(token: str) -> bool:
    """Cheap test: three dot-separated segments whose first decodes to a JSON header."""
    return _segments(token) is not None


_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "JWT has expired"),
    (jwt.ImmatureSignatureError, "JWT is not yet valid (nbf/iat in the future)"),
    (jwt.InvalidAudienceError, "JWT audience is not accepted by this gateway"),
    (jwt.InvalidIssuerError, "JWT issuer is not trusted"),
    (jwt.InvalidSignatureError, "JWT signature is invalid"),
    (jwt.InvalidAlgorithmError, "JWT algorithm does not match its signing key"),
)


class _Issuer:
    __slots__ = ("algorithms", "audience", "cfg", "keys")

    def __init__(self, cfg: JwtIssuerConfig, keys: JwksCache) -> None:
        self.cfg = cfg
        self.keys = keys
        self.audience = cfg.audience
        self.algorithms = frozenset(cfg.algorithms) if cfg.algorithms else ASYMMETRIC_ALGORITHMS


class JwtVerifier:
    """Verifies JWTs of the configured issuers with keys held by their :class:`JwksCache`."""

    def __init__(
        self,
        issuers: Iterable[JwtIssuerConfig],
        clock: Callable[[], float] = time.time,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        self._clock = clock
        self._issuers = {cfg.issuer: _Issuer(cfg, JwksCache(cfg)) for cfg in issuers}
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size
        self.verified = 0  # full signature verifications (for tests and metrics)

    @property
    def caches(self) -> list[JwksCache]:
        return [i.keys for i in self._issuers.values()]

    def __bool__(self) -> bool:
        return bool(self._issuers)

    def verify(self, token: str, digest: bytes | None = None) -> Principal:
        """The principal a JWT names; raises :class:`AuthenticationFailed` with the reason.

        ``digest`` is the token's sha256 when the caller already computed it.
        """
        return self.verify_until(token, digest)[0]

    def verify_until(self, token: str, digest: bytes | None = None) -> tuple[Principal, float]:
        """:meth:`verify`, and until when (epoch seconds) the answer may be reused."""
        if digest is None:
            digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None:
            if hit[1] > now:
                self._cache.move_to_end(digest)
                return hit
            del self._cache[digest]
        entry = self._verify(token, now)
        self._cache[digest] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        parts = _segments(token)
        if parts is None:
            raise AuthenticationFailed("JWT is malformed")
        header, payload_segment = parts
        alg = header.alg
        if not alg or alg.lower() == "none":
            raise AuthenticationFailed("JWT is unsigned (alg 'none' is not accepted)")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthenticationFailed(f"JWT algorithm {alg[:16]!r} is not accepted; use an asymmetric one")
        try:
            iss = _decode_iss(_b64(payload_segment)).iss
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise AuthenticationFailed("JWT payload is malformed") from None
        issuer = self._issuers.get(iss or "")
        if issuer is None:
            raise AuthenticationFailed("JWT issuer is not trusted" if iss else "JWT has no issuer (iss)")
        if alg not in issuer.algorithms:
            raise AuthenticationFailed(f"JWT algorithm {alg!r} is not accepted for this issuer")
        key = issuer.keys.key_for(header.kid, alg)
        if key is None:
            issuer.keys.request_refresh()
            raise AuthenticationFailed("JWT signing key is unknown (kid not in the issuer's JWKS)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.cfg.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(f"JWT is missing the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            for kind, message in _FAILURES:
                if isinstance(exc, kind):
                    raise AuthenticationFailed(message) from None
            raise AuthenticationFailed("JWT is invalid") from None
        self.verified += 1
        principal = _principal_from_claims(claims, issuer.cfg)
        return principal, min(float(claims["exp"]), now + TOKEN_CACHE_TTL_S)


def _principal_from_claims(claims: dict[str, Any], cfg: JwtIssuerConfig) -> Principal:
    sub = claims.get(cfg.subject_claim)
    if isinstance(sub, int) and not isinstance(sub, bool):
        sub = str(sub)
    if not isinstance(sub, str) or not sub:
        raise AuthenticationFailed(f"JWT has no usable {cfg.subject_claim!r} claim")
    teams: list[str] = []
    if cfg.teams_claim:
        raw = claims.get(cfg.teams_claim)
        if isinstance(raw, str):
            teams = [raw]
        elif isinstance(raw, list):
            teams = [t for t in raw if isinstance(t, str) and t]
    return Principal(f"user:{sub}", teams)


# --- the front door ------------------------------------------------------------------------------


class Authenticator:
    """Turns the ``Authorization`` / ``x-api-key`` headers into a :class:`Principal`."""

    def __init__(self, api_keys: ApiKeyIndex, jwts: JwtVerifier) -> None:
        self.api_keys = api_keys
        self.jwts = jwts

    @classmethod
    def from_config(cls, auth: AuthConfig, clock: Callable[[], float] = time.time) -> Authenticator:
        return cls(ApiKeyIndex.from_config(auth), JwtVerifier(auth.jwt, clock=clock))

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> Principal:
        """The caller, from ``Authorization: Bearer <key-or-jwt>`` or else ``x-api-key``.

        Raises:
            AuthenticationFailed: credentials missing, malformed, unknown, expired, …
        """
        return self.authenticate_until(authorization, x_api_key)[0]

    def authenticate_until(self, authorization: str | None, x_api_key: str | None) -> tuple[Principal, float]:
        """:meth:`authenticate`, and until when (epoch seconds) the answer holds: forever for an
        API key (a reload builds a new authenticator), the token's expiry (capped) for a JWT."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise AuthenticationFailed("Authorization header must use the Bearer scheme")
            token = token.strip()
            if not token:
                raise AuthenticationFailed("Authorization header has an empty Bearer token")
        elif x_api_key:
            token = x_api_key.strip()
        else:
            raise AuthenticationFailed(
                "missing credentials: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key",
            )
        digest = hashlib.sha256(token.encode()).digest()
        principal = self.api_keys.lookup_digest(digest)
        if principal is not None:
            return principal, math.inf
        # Keys are opaque strings; only something shaped like a JWT goes to the (costlier) verifier.
        if self.jwts and token.count(".") == 2:
            return self.jwts.verify_until(token, digest)
        raise AuthenticationFailed("API key is not valid")
