"""``/api/v1`` (JSON) and ``/ui`` (static ES modules) over a :class:`TraceStore`, framework-free.

:meth:`StoreWeb.handle` takes a method, path, query string and header lookup and returns a
:class:`Response`; the gateway's RSGI app and the exporter's small aiohttp server both adapt it.

Who sees what: an admin (``ui.admins`` lists their subject or one of their teams) sees every
trace; anyone else only traces whose subject is theirs. With no ``auth`` section every caller is
anonymous and sees everything, and ``/api/v1/me`` says so (the UI shows a banner).

Credentials: API clients send ``Authorization: Bearer`` / ``x-api-key`` as on ``/v1``. The UI
posts the key or JWT once to ``POST /api/v1/session`` and gets an opaque session id in an
``HttpOnly; SameSite=Strict`` cookie: the credential itself is never stored in the browser,
echoed, or put in a URL; the server keeps only the authenticated principal.

    GET    /api/v1/me                    who the caller is, admin or not, auth on or off
    POST   /api/v1/session               sign in: {"credential": "..."} → session cookie
    DELETE /api/v1/session               sign out
    GET    /api/v1/traces                filtered list, newest first, cursor-paged
    GET    /api/v1/traces/export         the same filters as JSON lines (bodies included)
    GET    /api/v1/traces/{trace_id}     request row and spans as a tree
    GET    /api/v1/stats                 series and totals per time bucket and group
"""

from __future__ import annotations

import logging
import mimetypes
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec

from exporter.store.backends import QueryTimeout
from exporter.store.config import UiConfig
from exporter.store.query import BadParam, parse_stats, parse_traces
from exporter.store.service import TraceStore
from gateway.access.credentials import ANONYMOUS, Principal
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    error_response,
)

__all__ = ["Response", "StoreWeb"]

log = logging.getLogger("exporter.store")

COOKIE: Final = "gw_session"
STATIC_DIR: Final = Path(__file__).parent / "static"
MAX_SESSIONS: Final = 10_000
MAX_SIGNIN_BYTES: Final = 16 * 1024
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_encode = msgspec.json.Encoder().encode

Headers = list[tuple[str, str]]
Authenticate = Callable[[Callable[[str], str | None]], Principal]

_API_HEADERS: Final = [("content-type", "application/json"), ("cache-control", "no-store")]
_UI_HEADERS: Final = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
]


class Response(msgspec.Struct):
    """What :meth:`StoreWeb.handle` answers: bytes, or a stream of chunks."""

    status: int
    headers: Headers
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


class Unavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "store_unavailable"


class QueryTooSlow(GatewayError):
    status = 504
    type = "timeout_error"
    code = "query_timeout"


class _Sessions:
    """Session id → (principal, expiry, credentials generation); bounded, oldest evicted first."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[Principal, float, object]] = OrderedDict()

    def create(self, principal: Principal, generation: object) -> str:
        sid = secrets.token_urlsafe(32)
        self._items[sid] = (principal, time.monotonic() + self.ttl_s, generation)
        while len(self._items) > MAX_SESSIONS:
            self._items.popitem(last=False)
        return sid

    def get(self, sid: str, generation: object) -> Principal | None:
        item = self._items.get(sid)
        if item is None:
            return None
        if item[1] < time.monotonic() or item[2] is not generation:
            del self._items[sid]
            return None
        return item[0]

    def drop(self, sid: str) -> None:
        self._items.pop(sid, None)


def _cookie_value(header: str | None) -> str | None:
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


class StoreWeb:
    """The query API and UI of one process (see the module docstring)."""

    def __init__(
        self,
        store: TraceStore | None,
        ui: UiConfig | Callable[[], UiConfig],
        authenticate: Authenticate,
        open_access: Callable[[], bool],
        unavailable: str = "",
        auth_generation: Callable[[], object] = lambda: None,
    ) -> None:
        """``store`` None: every API call answers 503 with ``unavailable`` as the reason.

        ``ui`` may be a callable returning the current section (config reloads change admins);
        ``auth_generation`` returns an object that changes when credentials are reloaded: a
        session opened under older credentials is no longer valid (a revoked key signs out)."""
        self.store = store
        self._ui_cfg: Callable[[], UiConfig] = ui if callable(ui) else (lambda: ui)
        self._authenticate = authenticate
        self._open_access = open_access
        self._unavailable = unavailable or "the trace store is not available in this process"
        self._generation = auth_generation
        self.sessions = _Sessions(self._ui_cfg().session_ttl_s)
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}

    # --- who is asking ------------------------------------------------------------------------

    def _principal(self, headers_get: Callable[[str], str | None]) -> Principal:
        if self._open_access():
            return ANONYMOUS
        if headers_get("authorization") or headers_get("x-api-key"):
            return self._authenticate(headers_get)
        sid = _cookie_value(headers_get("cookie"))
        principal = self.sessions.get(sid, self._generation()) if sid else None
        if principal is None:
            raise AuthenticationFailed("sign in: no valid session", code="login_required")
        return principal

    def _is_admin(self, principal: Principal) -> bool:
        return self._open_access() or not principal.matches.isdisjoint(self._ui_cfg().admins)

    def _viewer(self, principal: Principal) -> str | None:
        return None if self._is_admin(principal) else principal.subject

    # --- entry ----------------------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers_get: Callable[[str], str | None],
        read_body: Callable[[], Awaitable[bytes]],
        secure: bool = False,
    ) -> Response:
        """Answer one request under ``/api/v1`` or ``/ui``; never raises."""
        try:
            if path == "/ui" or path.startswith("/ui/"):
                return self._ui(method, path)
            return await self._api(method, path, query, headers_get, read_body, secure)
        except GatewayError as exc:
            status, headers, body = error_response(exc)
            return Response(status, [*headers, ("cache-control", "no-store")], body)
        except Exception:  # a bug must answer 500, not kill the connection
            log.exception("store API: %s %s failed", method, path)
            status, headers, body = error_response(GatewayError("internal error"))
            return Response(status, headers, body)

    def _ui(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use GET")
        name = path[len("/ui/") :] if path.startswith("/ui/") else ""
        file = self._static.get(name or "index.html")
        if file is None:
            raise NotFound(f"no UI file {name!r}", code="unknown_url")
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        return Response(200, [("content-type", ctype), *_UI_HEADERS], file.read_bytes())

    async def _api(
        self,
        method: str,
        path: str,
        query: str,
        headers_get: Callable[[str], str | None],
        read_body: Callable[[], Awaitable[bytes]],
        secure: bool,
    ) -> Response:
        if path == "/api/v1/session":
            return await self._session(method, headers_get, read_body, secure)
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use GET")
        principal = self._principal(headers_get)
        if path == "/api/v1/me":
            return self._json(200, self._me(principal))
        if self.store is None:
            raise Unavailable(self._unavailable)
        params = parse_qs(query, keep_blank_values=True, max_num_fields=64)
        viewer = self._viewer(principal)
        try:
            if path == "/api/v1/traces":
                return self._json(200, await self.store.list_traces(parse_traces(params), viewer))
            if path == "/api/v1/traces/export":
                q = parse_traces(params, export=True)
                return Response(
                    200,
                    [
                        ("content-type", "application/x-ndjson"),
                        ("content-disposition", 'attachment; filename="traces.jsonl"'),
                        ("cache-control", "no-store"),
                    ],
                    stream=self._jsonl(q, viewer),
                )
            if path.startswith("/api/v1/traces/"):
                trace_id = path.rsplit("/", 1)[1].lower()
                if params:
                    raise InvalidRequest(f"{next(iter(params))}: unknown parameter", param=next(iter(params)))
                if not _TRACE_ID.match(trace_id):
                    raise InvalidRequest("trace_id: expected 32 hex digits", param="trace_id")
                found = await self.store.trace(trace_id, viewer)
                if found is None:
                    raise NotFound(f"no trace {trace_id} visible to you", code="trace_not_found")
                return self._json(200, found)
            if path == "/api/v1/stats":
                return self._json(200, await self.store.stats(parse_stats(params), viewer))
        except BadParam as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None
        except QueryTimeout as exc:
            raise QueryTooSlow(f"the query took too long: {exc}; narrow the time range or filters") from None
        raise NotFound(f"no route for {method} {path}", code="unknown_url")

    async def _jsonl(self, q: Any, viewer: str | None) -> AsyncIterator[bytes]:
        assert self.store is not None
        chunk: list[bytes] = []
        async for row in self.store.export_rows(q, viewer):
            chunk.append(_encode(row))
            if len(chunk) >= 200:
                yield b"\n".join(chunk) + b"\n"
                chunk = []
        if chunk:
            yield b"\n".join(chunk) + b"\n"

    def _me(self, principal: Principal) -> dict[str, Any]:
        auth_on = not self._open_access()
        return {
            "subject": principal.subject,
            "teams": list(principal.teams),
            "admin": self._is_admin(principal),
            "auth": auth_on,
            "store": self.store is not None,
            "store_reason": None if self.store is not None else self._unavailable,
            "engine": self.store.cfg.engine if self.store is not None else None,
        }

    async def _session(
        self,
        method: str,
        headers_get: Callable[[str], str | None],
        read_body: Callable[[], Awaitable[bytes]],
        secure: bool,
    ) -> Response:
        if method == "DELETE":
            sid = _cookie_value(headers_get("cookie"))
            if sid:
                self.sessions.drop(sid)
            return self._json(200, {"signed_out": True}, [("set-cookie", self._cookie("", 0, secure))])
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not allowed on /api/v1/session; use POST or DELETE")
        # A JSON body cannot be sent cross-site without a CORS preflight we never grant.
        if not (headers_get("content-type") or "").startswith("application/json"):
            raise InvalidRequest("content-type: expected application/json", param="content-type")
        declared = headers_get("content-length") or "0"
        if not declared.isdigit() or int(declared) > MAX_SIGNIN_BYTES:  # refuse before reading
            raise PayloadTooLarge(f"sign-in body larger than {MAX_SIGNIN_BYTES} bytes")
        body = await read_body()
        if len(body) > MAX_SIGNIN_BYTES:
            raise PayloadTooLarge(f"sign-in body larger than {MAX_SIGNIN_BYTES} bytes")
        try:
            credential = msgspec.json.decode(body, type=dict[str, str]).get("credential", "").strip()
        except msgspec.DecodeError:
            raise InvalidRequest('expected {"credential": "<API key or JWT>"}', param="credential") from None
        if not credential:
            raise InvalidRequest("credential: missing", param="credential")
        if self._open_access():
            return self._json(200, self._me(ANONYMOUS))
        bearer = f"Bearer {credential}"
        principal = self._authenticate(lambda name: bearer if name == "authorization" else None)
        sid = self.sessions.create(principal, self._generation())
        cookie = self._cookie(sid, self.sessions.ttl_s, secure)
        return self._json(200, self._me(principal), [("set-cookie", cookie)])

    @staticmethod
    def _cookie(value: str, max_age: int, secure: bool) -> str:
        flags = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        return flags + ("; Secure" if secure else "")

    @staticmethod
    def _json(status: int, payload: Any, extra: Headers | None = None) -> Response:
        return Response(status, [*_API_HEADERS, *(extra or [])], _encode(payload))
