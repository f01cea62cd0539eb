"""Signing keys of one JWT issuer, fetched in the background and kept in memory.

The request path only reads :meth:`JwksCache.key_for` (a dict lookup). Fetching happens in
:meth:`JwksCache.run`: once at start-up, then every ``refresh_s``, plus at most one early refresh per
interval when a token names a ``kid`` we do not hold (key rotation). A failed fetch keeps the keys
we already have: an IdP outage must not lock users out while their keys are still valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from gateway.access.config import ASYMMETRIC_ALGORITHMS, JwtIssuerConfig

__all__ = ["JwksCache", "compatible"]

log = logging.getLogger("gateway.access.jwks")

# Algorithms a key type can verify when the JWK does not declare its own ``alg``.
_FAMILY = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512", "ES256K"}),
    "OKP": frozenset({"EdDSA"}),
}
_EC_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}
FETCH_TIMEOUT_S = 5.0
RETRY_S = 5.0  # after a failed fetch, try again this soon (capped by refresh_s)


def compatible(jwk: dict[str, Any], alg: str) -> bool:
    """Whether ``jwk`` may verify a token signed with ``alg`` (asymmetric only)."""
    if alg not in ASYMMETRIC_ALGORITHMS:
        return False
    declared = jwk.get("alg")
    if declared:
        return bool(declared == alg)
    if alg not in _FAMILY.get(jwk.get("kty", ""), ()):
        return False
    return jwk.get("kty") != "EC" or jwk.get("crv") == _EC_CURVE[alg]


class JwksCache:
    """The keys of one issuer: ``kid`` → raw JWK, with :class:`jwt.PyJWK` built lazily per alg."""

    def __init__(self, issuer: JwtIssuerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self._clock = clock
        self._jwks: dict[str, dict[str, Any]] = {}  # kid ("" when absent) -> JWK
        self._built: dict[tuple[str, str], jwt.PyJWK] = {}
        self._refresh = asyncio.Event()
        self._last_forced = -float("inf")
        self.fetched_at: float | None = None
        self.fetches = 0
        self.failures = 0

    # --- request path (sync, in memory) ---------------------------------------------------------

    def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for ``kid`` able to verify ``alg``; ``None`` when unknown (see :meth:`request_refresh`)."""
        cached = self._built.get((kid or "", alg))
        if cached is not None:
            return cached
        if kid is None and len(self._jwks) == 1:
            # Tokens without a kid are only unambiguous when the issuer publishes a single key.
            kid = next(iter(self._jwks))
        raw = self._jwks.get(kid or "")
        if raw is None or not compatible(raw, alg):
            return None
        try:
            key = jwt.PyJWK(raw, algorithm=alg)
        except jwt.PyJWTError:
            return None
        self._built[(kid or "", alg)] = key
        return key

    def request_refresh(self) -> bool:
        """Ask for an early fetch (unknown kid); at most one per ``refresh_s``. Never waits."""
        now = self._clock()
        if now - self._last_forced < self.issuer.refresh_s:
            return False
        self._last_forced = now
        self._refresh.set()
        return True

    @property
    def kids(self) -> list[str]:
        return list(self._jwks)

    # --- loading --------------------------------------------------------------------------------

    def load(self, document: Any) -> int:
        """Replace the keys with those of a JWKS document; returns how many were kept.

        Symmetric (``oct``) keys, keys meant for encryption and keys with an unknown type are
        skipped. A document with no usable key leaves the current keys in place.
        """
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("JWKS document has no 'keys' list")
        keys: dict[str, dict[str, Any]] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") not in _FAMILY:
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("alg") and jwk["alg"] not in ASYMMETRIC_ALGORITHMS:
                continue
            kid = jwk.get("kid") or ""
            if not isinstance(kid, str):
                continue
            keys[kid] = jwk
        if not keys:
            raise ValueError("JWKS document has no usable asymmetric signing key")
        self._jwks = keys
        self._built = {}
        self.fetched_at = self._clock()
        return len(keys)

    def inherit(self, other: JwksCache) -> None:
        """Start with the keys of a previous cache for the same URL (config reload: no gap)."""
        if other.issuer.jwks_url == self.issuer.jwks_url:
            self._jwks = other._jwks
            self.fetched_at = other.fetched_at

    # --- background I/O ---------------------------------------------------------------------------

    async def fetch(self, client: httpx.AsyncClient) -> bool:
        """Fetch and load the JWKS once; logs (without secrets) and returns False on failure."""
        self.fetches += 1
        try:
            resp = await client.get(self.issuer.jwks_url, timeout=FETCH_TIMEOUT_S)
            resp.raise_for_status()
            n = self.load(resp.json())
        except (httpx.HTTPError, ValueError) as exc:
            self.failures += 1
            log.warning(
                "JWKS fetch for issuer %s failed (%s); keeping %d cached keys",
                self.issuer.issuer,
                type(exc).__name__,
                len(self._jwks),
            )
            return False
        log.debug("JWKS for issuer %s: %d keys", self.issuer.issuer, n)
        return True

    async def run(self, client: httpx.AsyncClient) -> None:
        """Fetch now, then every ``refresh_s`` or when :meth:`request_refresh` asks; until cancelled."""
        while True:
            ok = await self.fetch(client)
            delay = self.issuer.refresh_s if ok else min(RETRY_S, self.issuer.refresh_s)
            self._refresh.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races with the event being set, and the task would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._refresh.wait()
