"""Pin the public surface the request handler uses."""

from __future__ import annotations

import gateway.access


def test_exported_members() -> None:
    assert set(gateway.access.__all__) == {
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
    }
    for name in gateway.access.__all__:
        assert hasattr(gateway.access, name)
