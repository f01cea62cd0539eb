"""Who may use which model: ``access`` rules compiled once, answered from memory.

A rule grants every subject it names (``user:x``, ``team:t``, ``virtualaccount:x``, ``*``) every
model it names (``*``, ``<provider>/*``, an exact id or a virtual model name). No ``access``
section means everything is allowed. Answers are memoised per (caller, model) in a bounded dict,
so the request path is one lookup after the first request.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from gateway.access.config import AccessRule
from gateway.access.credentials import Principal
from gateway.errors import PermissionDenied

__all__ = ["AccessPolicy", "GlobSet", "ModelPattern"]

MEMO_SIZE = 65_536


class ModelPattern:
    """A set of model patterns: ``*``, ``<provider>/*`` prefixes and exact names."""

    __slots__ = ("any", "exact", "providers")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.any = False
        self.exact: set[str] = set()
        self.providers: set[str] = set()
        for p in patterns:
            if p == "*":
                self.any = True
            elif p.endswith("/*"):
                self.providers.add(p[:-2])
            else:
                self.exact.add(p)

    def __contains__(self, model_id: str) -> bool:
        if self.any or model_id in self.exact:
            return True
        provider, sep, _ = model_id.partition("/")
        return bool(sep) and provider in self.providers


class GlobSet:
    """Shell-glob patterns (``*``, ``get_*``, ``list_?``) over whole names, compiled once."""

    __slots__ = ("any", "exact", "regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        pats = list(patterns)
        self.any = "*" in pats
        self.exact = frozenset(p for p in pats if not any(c in p for c in "*?["))
        globs = [fnmatch.translate(p) for p in pats if p not in self.exact]
        self.regex = re.compile("|".join(globs)) if globs else None

    def __contains__(self, name: str) -> bool:
        if self.any or name in self.exact:
            return True
        return self.regex is not None and self.regex.match(name) is not None


class AccessPolicy:
    """Compiled ``access`` rules; ``None`` rules (no section) allow everything."""

    def __init__(self, rules: Sequence[AccessRule] | None) -> None:
        self.open = rules is None
        self._rules = [(frozenset(r.subjects), ModelPattern(r.models)) for r in rules or ()]
        self._memo: dict[tuple[frozenset[str], str], bool] = {}

    def allowed(self, principal: Principal, model_id: str) -> bool:
        """Whether ``principal`` may use ``model_id``."""
        if self.open:
            return True
        key = (principal.matches, model_id)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        matches = principal.matches
        ok = any(not subjects.isdisjoint(matches) and model_id in models for subjects, models in self._rules)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()  # bounded: callers are many but rarely that many at once
        self._memo[key] = ok
        return ok

    def require(self, principal: Principal, model_id: str) -> None:
        """Raises :class:`PermissionDenied` naming the model when ``principal`` may not use it."""
        if not self.allowed(principal, model_id):
            raise PermissionDenied(f"{principal.subject} is not allowed to use model '{model_id}'")

    def visible_models(self, principal: Principal, all_model_ids: Iterable[str]) -> list[str]:
        """The subset of ``all_model_ids`` the caller may use, order kept (for ``GET /v1/models``)."""
        if self.open:
            return list(all_model_ids)
        return [m for m in all_model_ids if self.allowed(principal, m)]
