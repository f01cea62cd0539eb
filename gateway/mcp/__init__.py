"""The MCP gateway: registered MCP servers at ``/mcp/{server}`` behind the gateway's auth.

- :mod:`gateway.mcp.core` — registry, policy, upstream sessions and the in-process API
  (``McpGateway.list_tools`` / ``McpGateway.call_tool``), built per config as ``runtime.mcp``;
- :mod:`gateway.mcp.http` — the Streamable HTTP surface;
- :mod:`gateway.mcp.jsonrpc` — JSON-RPC framing, SSE parsing, the surface's error tree;
- :mod:`gateway.mcp.session` — sealed session tokens any replica can open;
- :mod:`gateway.mcp.policy`, :mod:`gateway.mcp.config`, :mod:`gateway.mcp.upstream`.

Nothing is imported here: :mod:`gateway.config` imports :mod:`gateway.mcp.config` early.
"""
