"""The ``exporter:`` section (filled in by the tracing work)."""

from __future__ import annotations

import msgspec


class ExporterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where spans and metrics go."""
