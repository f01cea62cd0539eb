"""Who may call which tool of which MCP server: decided in memory, memoised per caller.

Three layers, all of which must allow a call:

1. the registry's filter of the server (``tools: {allow, deny}``): what the gateway exposes at all;
2. ``access_mcp``: the first rule naming one of the caller's subjects and the server decides
   which tools (globs) the caller may use there; no rule → nothing. No ``access_mcp`` section
   (or no ``auth`` section) → every caller may use every exposed tool.
3. for a composite server, the caller sees ``<member>__<tool>``: a rule naming the composite
   must allow that name, *and* layers 1 and 2 of the member must allow ``<tool>``, so a tool
   denied on ``github`` stays denied through ``everything``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.access.credentials import Principal
from gateway.access.rules import GlobSet
from gateway.mcp.config import COMPOSITE_SEP, AccessMcpRule, McpServerConfig

__all__ = ["ToolPolicy"]

MEMO_SIZE = 65_536


class ToolPolicy:
    """Compiled registry filters and ``access_mcp`` rules of one config generation."""

    def __init__(self, servers: Sequence[McpServerConfig], rules: Sequence[AccessMcpRule] | None) -> None:
        self.servers = {s.name: s for s in servers}
        self._filters = {s.name: (GlobSet(s.tools.allow), GlobSet(s.tools.deny)) for s in servers}
        self.open = rules is None
        self._rules = [(frozenset(r.subjects), frozenset(r.servers), GlobSet(r.tools)) for r in rules or ()]
        self._memo: dict[tuple[frozenset[str], str, str], bool] = {}

    def exposed(self, server: str, tool: str) -> bool:
        """Layer 1: the registry filter of a plain server."""
        f = self._filters.get(server)
        if f is None:
            return False
        allow, deny = f
        return tool in allow and tool not in deny

    def _rule_tools(self, principal: Principal, server: str) -> GlobSet | None:
        matches = principal.matches
        for subjects, servers, tools in self._rules:
            if not subjects.isdisjoint(matches) and (server in servers or "*" in servers):
                return tools
        return None

    def may_use_server(self, principal: Principal, server: str) -> bool:
        """Whether any rule lets ``principal`` reach ``server`` at all (else the endpoint is 403)."""
        return server in self.servers and (self.open or self._rule_tools(principal, server) is not None)

    def allowed(self, principal: Principal, server: str, tool: str) -> bool:
        """Whether ``principal`` may call ``tool`` (the name it sees) on ``server``."""
        key = (principal.matches, server, tool)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        ok = self._decide(principal, server, tool)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()  # bounded: callers are many but rarely that many at once
        self._memo[key] = ok
        return ok

    def _decide(self, principal: Principal, server: str, tool: str) -> bool:
        cfg = self.servers.get(server)
        if cfg is None:
            return False
        if cfg.composite is not None:
            split = self.split(server, tool)
            if split is None:
                return False
            if not self.open:
                tools = self._rule_tools(principal, server)
                if tools is None or tool not in tools:
                    return False
            return self._decide(principal, *split)
        if not self.exposed(server, tool):
            return False
        if self.open:
            return True
        tools = self._rule_tools(principal, server)
        return tools is not None and tool in tools

    def split(self, composite: str, tool: str) -> tuple[str, str] | None:
        """``(member, tool)`` for a composite's ``<member>__<tool>``; None if no member matches."""
        cfg = self.servers.get(composite)
        if cfg is None or cfg.composite is None:
            return None
        member, sep, name = tool.partition(COMPOSITE_SEP)
        if not sep or not name or member not in cfg.composite:
            return None
        return member, name
