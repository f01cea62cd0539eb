"""Config sections of the MCP gateway: the server registry and who may use which tools.

```yaml
mcp_servers:
  - name: github                         # exposed at /mcp/github
    url: https://api.githubcopilot.com/mcp/
    headers: {authorization: "Bearer ${GITHUB_TOKEN}"}   # the gateway's credential
    forward_caller_identity: false       # true: x-gateway-subject / x-gateway-teams upstream
    timeout_s: 60                        # longest silence tolerated from the upstream
    tools: {allow: ["*"], deny: ["delete_*"]}
  - name: everything
    composite: [github, search]          # tools are <member>__<tool>
access_mcp:                              # first rule naming the caller and the server wins
  - {subjects: ["team:eng"], servers: ["github"], tools: ["*"]}
rate_limiting:                           # tool calls, with the model rules' shape
  - {id: tools-rpm, when: {mcp_servers: [github], tools: ["*"]}, limit_to: 60,
     unit: requests_per_minute, rate_limit_applies_per: [user]}
```

Tool patterns are shell globs (``*``, ``?``, ``[..]``) matched against the whole name.
:func:`check_mcp` reports semantic problems as ``path: message`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["COMPOSITE_SEP", "AccessMcpRule", "McpServerConfig", "ToolFilter", "check_mcp"]

COMPOSITE_SEP = "__"  # <member>__<tool> on a composite server
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# The gateway sets these itself; a registry entry may not override them.
_RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "content-length",
        "host",
        "mcp-session-id",
        "mcp-protocol-version",
        "traceparent",
        "x-gateway-subject",
        "x-gateway-teams",
    }
)


class ToolFilter(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which of an upstream's tools the gateway exposes at all (before any caller's rules)."""

    allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    deny: list[str] = []


class McpServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One registered MCP server (``url``) or a composite of registered ones (``composite``)."""

    name: str
    url: str | None = None
    composite: list[str] | None = None
    headers: dict[str, str] = {}
    forward_caller_identity: bool = False
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    tools: ToolFilter = ToolFilter()


class AccessMcpRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which subjects may call which tools of which servers; the first matching rule decides."""

    subjects: list[str]
    servers: list[str]
    tools: list[str] = msgspec.field(default_factory=lambda: ["*"])


def check_mcp(cfg: GatewayConfig) -> Iterator[str]:
    """Semantic checks of ``mcp_servers``, ``access_mcp`` and the tool rate-limit rules."""
    from gateway.access.config import _subject_problem  # one definition of a valid subject

    servers: dict[str, McpServerConfig] = {}
    for i, s in enumerate(cfg.mcp_servers):
        at = f"mcp_servers[{i}]"
        if not _NAME.match(s.name) or COMPOSITE_SEP in s.name:
            yield f"{at}.name: expected letters, digits, '.', '-', '_' (no '{COMPOSITE_SEP}'), at most 64"
        if s.name in servers:
            yield f"{at}.name: duplicate server name {s.name!r}"
        servers[s.name] = s
        if (s.url is None) == (s.composite is None):
            yield f"{at}: set exactly one of url and composite"
        if s.url is not None and not _is_http_url(s.url):
            yield f"{at}.url: expected an http(s) URL"
        if s.timeout_s <= 0:
            yield f"{at}.timeout_s: must be > 0"
        if s.connect_timeout_s <= 0:
            yield f"{at}.connect_timeout_s: must be > 0"
        for name in s.headers:
            if not _HEADER.match(name):
                yield f"{at}.headers.{name}: not a valid header name"
            elif name.lower() in _RESERVED_HEADERS:
                yield f"{at}.headers.{name}: set by the gateway; cannot be configured"
    for i, s in enumerate(cfg.mcp_servers):
        if s.composite is None:
            continue
        at = f"mcp_servers[{i}].composite"
        if not s.composite:
            yield f"{at}: list at least one member server"
        for j, member in enumerate(s.composite):
            m = servers.get(member)
            if m is None:
                yield f"{at}[{j}]: no MCP server named {member!r}"
            elif m.composite is not None:
                yield f"{at}[{j}]: {member!r} is a composite itself; members must be plain servers"
        if s.headers or s.forward_caller_identity:
            yield f"mcp_servers[{i}]: a composite takes headers and identity from its members"
    for i, rule in enumerate(cfg.access_mcp or ()):
        at = f"access_mcp[{i}]"
        if not rule.subjects:
            yield f"{at}.subjects: list at least one subject"
        for j, subj in enumerate(rule.subjects):
            if (p := _subject_problem(subj)) is not None:
                yield f"{at}.subjects[{j}]: {p}"
        if not rule.servers:
            yield f"{at}.servers: list at least one server"
        for j, name in enumerate(rule.servers):
            if name != "*" and name not in servers:
                yield f"{at}.servers[{j}]: no MCP server named {name!r}"
    for i, rl in enumerate(cfg.rate_limiting):
        when = rl.when
        if when.mcp_servers is None and when.tools is None:
            continue
        at = f"rate_limiting[{i}]"
        for j, name in enumerate(when.mcp_servers or ()):
            if name != "*" and name not in servers:
                yield f"{at}.when.mcp_servers[{j}]: no MCP server named {name!r}"
        if when.models != ["*"]:
            yield f"{at}.when.models: a rule naming mcp_servers or tools applies to tool calls only"
        for j, part in enumerate(rl.rate_limit_applies_per):
            if part == "model":
                yield f"{at}.rate_limit_applies_per[{j}]: use tool or mcp_server for tool-call rules"
        if rl.unit.startswith("tokens"):
            yield f"{at}.unit: tool calls are counted in requests, not tokens"


def _is_http_url(value: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
