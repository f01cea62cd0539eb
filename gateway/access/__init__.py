"""Access control decided in memory: credentials, access rules, rate limits.

The request handler makes one call, :meth:`AccessControl.check`: authenticate → parse
``x-tfy-metadata`` → authorize → admit. Nothing in it awaits or touches the network. Background
tasks (JWKS refresh, fleet-wide rate-limit sync over NATS) are started by :meth:`AccessControl.start`
and stopped by :meth:`AccessControl.stop`.

    access = AccessControl.from_config(cfg)             # cheap; rebuild on config reload
    await access.start(nats_url, subject_prefix)        # never blocks on NATS or the IdP
    decision = access.check(headers.get, model_id)      # raises 401 / 400 / 403 / 429 errors
    ...
    decision.admission.charge_tokens(usage.total_tokens, time.time())
    await access.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from gateway.access.config import AccessRule, AuthConfig, RateLimitRule, check_access
from gateway.access.credentials import ANONYMOUS, Authenticator, Principal
from gateway.access.fleet import FleetSync
from gateway.access.metadata import HEADER as METADATA_HEADER
from gateway.access.metadata import parse_metadata
from gateway.access.ratelimit import Admission, RateLimiter
from gateway.access.rules import AccessPolicy

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "ANONYMOUS",
    "AccessControl",
    "AccessRule",
    "Admission",
    "AuthConfig",
    "Decision",
    "Principal",
    "RateLimitRule",
    "check_access",
    "hash_key",
    "hash_key_main",
    "startup_warnings",
]

log = logging.getLogger("gateway.access")


class Decision:
    """What :meth:`AccessControl.check` decided for an admitted request."""

    __slots__ = ("admission", "metadata", "principal")

    def __init__(self, principal: Principal, metadata: dict[str, str], admission: Admission) -> None:
        self.principal = principal
        self.metadata = metadata
        self.admission = admission

    @property
    def rule_ids(self) -> list[str]:
        """Ids of the applied rate-limit rules (span attribute ``applied_ratelimit_rule_ids``)."""
        return self.admission.rule_ids

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """``x-ratelimit-*`` headers to add to the response."""
        return self.admission.headers


ADMITTED_MEMO_SIZE = 65_536


class _Admitted:
    """What :meth:`AccessControl.check` decided for one (credentials, metadata, model)."""

    __slots__ = ("key", "metadata", "principal", "rule", "until")

    def __init__(
        self, principal: Principal, metadata: dict[str, str], rule: Any, key: str, until: float
    ) -> None:
        self.principal = principal
        self.metadata = metadata  # shared by every request with the same header: read-only
        self.rule = rule
        self.key = key
        self.until = until  # epoch seconds; math.inf for an API key


class AccessControl:
    """Authenticator + access policy + rate limiter for one config generation."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        policy: AccessPolicy,
        limiter: RateLimiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.limiter = limiter
        self.clock = clock
        # (authorization, x-api-key, x-tfy-metadata, model) -> what was decided for them last time.
        # Only admitted callers are remembered, each until its credential expires; the rate limit
        # itself is counted on every request. Built per config generation, so a reload (new keys,
        # rules or limits) starts empty.
        self._admitted: dict[tuple[str | None, str | None, str | None, str], _Admitted] = {}
        self._fleet: FleetSync | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @classmethod
    def from_config(cls, cfg: GatewayConfig, previous: AccessControl | None = None) -> AccessControl:
        """Build from a validated config. ``previous`` (config reload) hands over JWKS keys and
        rate-limit counts, so a reload neither 401s JWTs nor resets limits."""
        auth = Authenticator.from_config(cfg.auth) if cfg.auth is not None else None
        # No auth section: every caller is anonymous, so access rules could only deny everyone.
        policy = AccessPolicy(cfg.access if cfg.auth is not None else None)
        limiter = RateLimiter(cfg.rate_limiting)
        new = cls(auth, policy, limiter)
        if previous is not None:
            limiter.inherit(previous.limiter)
            if auth is not None and previous.authenticator is not None:
                old = {c.issuer.issuer: c for c in previous.authenticator.jwts.caches}
                for cache in auth.jwts.caches:
                    if (o := old.get(cache.issuer.issuer)) is not None:
                        cache.inherit(o)
        return new

    # --- request path ------------------------------------------------------------------------

    def authenticate(self, headers_get: Callable[[str], str | None]) -> Principal:
        """The caller (anonymous without an ``auth`` section); raises ``AuthenticationFailed``."""
        if self.authenticator is None:
            return ANONYMOUS
        return self.authenticator.authenticate(headers_get("authorization"), headers_get("x-api-key"))

    def check(self, headers_get: Callable[[str], str | None], model_id: str) -> Decision:
        """Authenticate, parse metadata, authorize ``model_id`` and admit, all in memory.

        ``headers_get`` looks up a lower-case request header name. ``model_id`` is what the client
        asked for (``<provider>/<model>`` or a virtual model name).

        Raises:
            AuthenticationFailed: 401. InvalidRequest: 400 (bad ``x-tfy-metadata``).
            PermissionDenied: 403 naming the model. RateLimited: 429 with ``retry-after`` and
            ``x-ratelimit-*`` headers.
        """
        authorization = headers_get("authorization")
        memo_key = (
            authorization,
            None if authorization else headers_get("x-api-key"),  # Authorization wins when both are sent
            headers_get(METADATA_HEADER),
            model_id,
        )
        now = self.clock()
        seen = self._admitted.get(memo_key)
        if seen is None or seen.until <= now:
            seen = self._decide(memo_key, now)
        return Decision(seen.principal, seen.metadata, self.limiter.admit_planned(seen.rule, seen.key, now))

    def _decide(self, memo_key: tuple[str | None, str | None, str | None, str], now: float) -> _Admitted:
        """Authenticate, parse metadata, authorize and pick the rate-limit rule; remember it."""
        authorization, api_key, raw_metadata, model_id = memo_key
        if self.authenticator is None:
            principal, until = ANONYMOUS, math.inf
        else:
            principal, until = self.authenticator.authenticate_until(authorization, api_key)
        metadata = parse_metadata(raw_metadata)
        self.policy.require(principal, model_id)
        rule, key = self.limiter.plan(principal, model_id, metadata)
        seen = _Admitted(principal, metadata, rule, key, until)
        if len(self._admitted) >= ADMITTED_MEMO_SIZE:
            self._admitted.clear()  # bounded: callers are many, but rarely that many at once
        self._admitted[memo_key] = seen
        return seen

    def visible_models(self, principal: Principal, model_ids: Iterable[str]) -> list[str]:
        """What ``GET /v1/models`` lists for ``principal``."""
        return self.policy.visible_models(principal, model_ids)

    # --- background tasks ----------------------------------------------------------------------

    async def start(self, nats_url: str | None = None, subject_prefix: str = "llm-gateway") -> None:
        """Start JWKS refresh and (with ``nats_url``) fleet-wide rate-limit sync. Never blocks on
        the network: keys arrive shortly after; until then JWTs get 401 (API keys work at once)."""
        self.start_soon(asyncio.get_running_loop(), nats_url, subject_prefix)

    def start_soon(
        self,
        loop: asyncio.AbstractEventLoop,
        nats_url: str | None = None,
        subject_prefix: str = "llm-gateway",
    ) -> None:
        """:meth:`start` from synchronous code (``__rsgi_init__``, a runtime's constructor): the
        tasks are created on ``loop`` and run once it does."""
        if self._started:
            return
        self._started = True
        if self.authenticator is not None and self.authenticator.jwts:
            self._http = httpx.AsyncClient(follow_redirects=False)
            for cache in self.authenticator.jwts.caches:
                self._tasks.append(loop.create_task(cache.run(self._http), name="jwks-refresh"))
        if nats_url and self.limiter:
            self._fleet = FleetSync(self.limiter, nats_url, subject_prefix)
            self._fleet.start_soon(loop)

    async def wait_for_keys(self, timeout_s: float = 5.0) -> bool:
        """Wait until every JWT issuer's keys were fetched once (start-up readiness); True if so."""
        if self.authenticator is None:
            return True
        deadline = time.monotonic() + timeout_s
        caches = self.authenticator.jwts.caches
        while any(c.fetched_at is None for c in caches):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        """Stop background tasks: publish the last rate-limit deltas, close clients."""
        if self._fleet is not None:
            await self._fleet.stop()
            self._fleet = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def startup_warnings(cfg: GatewayConfig, nats_url: str | None) -> list[str]:
    """Lines to log at start-up about how open the gateway is."""
    out = []
    if cfg.auth is None:
        out.append("no 'auth' section: every request is anonymous and may use every model")
    elif not cfg.auth.api_keys and not cfg.auth.jwt:
        out.append("'auth' section lists no API key and no JWT issuer: every request gets 401")
    if cfg.auth is None and cfg.access is not None:
        out.append("'access' rules are ignored without an 'auth' section")
    if cfg.rate_limiting and not nats_url:
        out.append("no NATS configured: rate limits are counted per process, not fleet-wide")
    return out


def hash_key(key: str) -> str:
    """The ``key_sha256`` value for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_key_main(stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``gateway hash-key``: print the sha256 hex of the key read from stdin (one trailing newline
    stripped). Returns the exit status."""
    text = (stdin or sys.stdin).read()
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        print("gateway hash-key: read an empty key from stdin", file=sys.stderr)
        return 2
    print(hash_key(text), file=stdout or sys.stdout)
    return 0
