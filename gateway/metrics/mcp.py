"""Prometheus metrics of the MCP gateway, beside the model catalog and flushed with it.

=======================================  =========  ==========================
metric                                   type       labels
=======================================  =========  ==========================
llm_gateway_mcp_tool_calls               counter    server, tool, status
llm_gateway_mcp_tool_call_duration_ms    histogram  server, tool
llm_gateway_mcp_rejections               counter    server, reason
llm_gateway_mcp_requests                 counter    server, method, status_code
=======================================  =========  ==========================

``status`` is ``ok``, ``tool_error`` (the result said ``isError``), ``error`` (JSON-RPC error
or transport failure), ``denied`` or ``rate_limited``; ``reason`` is ``unauthenticated``,
``forbidden``, ``tool_denied``, ``rate_limited`` or ``bad_request``. Label values come from
bounded sets only: ``server`` is a configured server; ``tool`` is a tool its upstream listed
(at most 512 per server, see ``McpGateway.known_tools``) or ``__other__``; ``method`` is an
MCP method the spec defines or ``__other__``. A client cannot mint label values.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from gateway.metrics.catalog import OTHER
from gateway.telemetry.wire import PROCESSING_MS_BUCKETS

if TYPE_CHECKING:
    from gateway.metrics.catalog import Metrics

__all__ = ["McpMetrics"]

KNOWN_METHODS = frozenset(
    {
        "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
        "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
        "prompts/get", "completion/complete", "logging/setLevel", "server/discover",
        "subscriptions/listen", "notifications/initialized", "notifications/cancelled",
        "notifications/progress", "notifications/roots/list_changed", "",
    }
)  # fmt: skip

_by_catalog: weakref.WeakKeyDictionary[Any, McpMetrics] = weakref.WeakKeyDictionary()


class McpMetrics:
    """MCP series of one worker; numbers collect in dicts and reach prometheus_client on flush."""

    def __init__(self, metrics: Metrics) -> None:
        from prometheus_client import Counter, Histogram

        registry = metrics._registry  # None in multiprocess mode: the scrape reads the files
        self.enabled = metrics.enabled
        self.tool_calls = Counter(
            "llm_gateway_mcp_tool_calls", "MCP tool calls, by outcome.", ("server", "tool", "status"),
            registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "llm_gateway_mcp_tool_call_duration_ms", "MCP tool call latency through the gateway, ms.",
            ("server", "tool"), buckets=PROCESSING_MS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.rejections = Counter(
            "llm_gateway_mcp_rejections", "MCP requests or tool calls refused by the gateway.",
            ("server", "reason"), registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            "llm_gateway_mcp_requests", "MCP HTTP requests answered.", ("server", "method", "status_code"),
            registry=registry,
        )  # fmt: skip
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._durations: dict[tuple[str, str], list[float]] = {}
        metrics.add_flush_hook(self.flush)

    @classmethod
    def of(cls, metrics: Metrics) -> McpMetrics:
        """The MCP metrics living beside ``metrics`` (one per process, created on first use)."""
        found = _by_catalog.get(metrics)
        if found is None:
            found = _by_catalog[metrics] = cls(metrics)
        return found

    def _inc(self, metric: Any, labels: tuple[str, ...]) -> None:
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0) + 1

    def tool_call(self, gw: Any, server: str, tool: str, call: Any, duration_ms: float) -> None:
        """One tool call made through the in-process API (``McpGateway.call_tool``)."""
        self._tool(gw, server, tool, _status(call.error, call.is_error), duration_ms)

    def _tool(self, gw: Any, server: str, tool: str, status: str, duration_ms: float | None) -> None:
        if not self.enabled or server not in gw.config:
            return
        member, _, name = tool.partition("__") if gw.is_composite(server) else ("", "", tool)
        if status in ("ok", "tool_error"):
            gw.remember_tool(member or server, name)  # the upstream ran it: it exists there
        known = gw.known_tools.get(member or server, ())
        label = tool if name in known else OTHER
        self._inc(self.tool_calls, (server, label, status))
        if status in ("denied", "rate_limited"):
            self._inc(self.rejections, (server, "tool_denied" if status == "denied" else "rate_limited"))
        elif duration_ms is not None:
            self._durations.setdefault((server, label), []).append(duration_ms)

    def request(self, req: Any, gw: Any) -> None:
        """One HTTP request to ``/mcp/{server}`` ended (``gateway.mcp.http.Req``)."""
        if not self.enabled:
            return
        from gateway.mcp.jsonrpc import McpError

        method = req.method if req.method in KNOWN_METHODS else OTHER
        self._inc(self.requests, (req.server, method or req.http_method, str(req.status)))
        err = req.error
        if req.status in (401, 403):
            self._inc(self.rejections, (req.server, "unauthenticated" if req.status == 401 else "forbidden"))
        elif req.status in (400, 406, 413, 415) and isinstance(err, McpError):
            self._inc(self.rejections, (req.server, "bad_request"))
        if req.method != "tools/call" or not req.target:
            return
        last = req.calls[-1] if req.calls else None
        if err is None and (last is None or (last.error_type and last.error_type != "tool_error")):
            status = "error"  # the upstream failed after the stream had started
        else:
            status = _status(err, last is not None and last.error_type == "tool_error")
        from time import perf_counter_ns

        self._tool(gw, req.server, req.target, status, (perf_counter_ns() - req.start_pc) / 1e6)

    def flush(self) -> None:
        """Move the collected numbers into prometheus_client (a flush hook of the catalog)."""
        counts, self._counts = self._counts, {}
        for (metric, labels), n in counts.items():
            metric.labels(*labels).inc(n)
        durations, self._durations = self._durations, {}
        for labels, values in durations.items():
            child = self.duration.labels(*labels)
            for v in values:
                child.observe(v)


def _status(err: Any, tool_error: bool) -> str:
    """The ``status`` label of a tool call."""
    from gateway.mcp.jsonrpc import ToolDenied, ToolRateLimited

    if isinstance(err, ToolDenied):
        return "denied"
    if isinstance(err, ToolRateLimited):
        return "rate_limited"
    if err is not None:
        return "error"
    return "tool_error" if tool_error else "ok"
