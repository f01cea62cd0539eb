"""Client-facing MCP sessions that any gateway replica can serve, with no shared store.

The ``Mcp-Session-Id`` the gateway hands a client is a sealed token (AES-256-GCM) holding
everything needed to continue the session anywhere: the gateway session id (``mcp.session.id``
on spans), the server and subject it belongs to, the protocol version, the client's
``initialize`` params (to re-initialise an upstream lazily) and the upstream session id of each
upstream server behind it. Any replica with the same config file opens it; nobody else can read
or forge it, so upstream session ids never reach the client.

The key is derived from the config's secrets (upstream credentials, API-key hashes, JWT
issuers, the cluster URL; see :func:`key_material`), so replicas sharing the config file agree
without any extra setting. A reload that changes those secrets rotates the key; the previous key
is still accepted by this process so open sessions survive the reload.

A token is bound to the caller (its subject) and the server: presented by anyone else, or on
another server, it is an unknown session (HTTP 404: the client starts a new one).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import TYPE_CHECKING

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["MAX_TOKEN_CHARS", "SessionCodec", "SessionState", "key_material"]

PREFIX = "g1."
MAX_TOKEN_CHARS = 8192
_AAD = b"llm-gateway mcp session v1"


class SessionState(msgspec.Struct, array_like=True, gc=False):
    """What a client-facing session token carries."""

    sid: bytes  # 16 random bytes: the gateway session id
    server: str  # the server the client addressed (plain or composite)
    subject: str  # the caller it was issued to
    version: str  # protocol version the client asked for in initialize
    init: bytes  # the client's initialize params (JSON), for lazy upstream re-initialisation
    upstream: dict[str, str]  # upstream server -> its Mcp-Session-Id (absent: stateless upstream)
    issued: int  # epoch seconds

    @property
    def session_id(self) -> str:
        """The gateway session id as spans show it (``mcp.session.id``)."""
        return self.sid.hex()


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SessionState).decode


def key_material(cfg: GatewayConfig) -> bytes:
    """Bytes every replica with this config file derives the same key from.

    Only values that are secret or deployment-specific go in (upstream MCP credentials, API-key
    hashes, JWT issuers, the cluster URL), so editing rules or limits does not end sessions."""
    parts = {
        "mcp": sorted((s.name, sorted(s.headers.items())) for s in cfg.mcp_servers),
        "keys": sorted(k.key_sha256.lower() for k in (cfg.auth.api_keys if cfg.auth else ())),
        "jwt": sorted(j.issuer for j in (cfg.auth.jwt if cfg.auth else ())),
        "cluster": cfg.cluster.nats_url if cfg.cluster is not None else "",
    }
    return msgspec.json.encode(parts)


class SessionCodec:
    """Seals and opens session tokens with the current key (and the previous one, after a reload)."""

    def __init__(self, material: bytes, previous: SessionCodec | None = None) -> None:
        key = hashlib.sha256(b"llm-gateway mcp session key\x00" + material).digest()
        self._aead = AESGCM(key)
        self.key_id = key[:4]
        keys = [self._aead]
        if previous is not None and previous.key_id != self.key_id:
            keys.append(previous._aead)
        self._keys = keys

    def seal(self, state: SessionState) -> str:
        """The token for ``state`` (URL-safe base64, visible ASCII as the spec requires)."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, _encode(state), _AAD)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> SessionState | None:
        """The state in ``token``; None for anything not sealed by this config's key."""
        if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        body = token[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) < 12 + 16:
            return None
        for aead in self._keys:
            try:
                plain = aead.decrypt(raw[:12], raw[12:], _AAD)
            except InvalidTag:
                continue
            try:
                return _decode(plain)
            except msgspec.DecodeError:
                return None
        return None


def new_state(server: str, subject: str, version: str, init: bytes, upstream: dict[str, str]) -> SessionState:
    """A fresh session for ``subject`` on ``server``."""
    return SessionState(os.urandom(16), server, subject, version, init, upstream, int(time.time()))
