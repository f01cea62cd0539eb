"""Gateway-run MCP tools: the agent loop of one Responses request.

A request with ``tools: [{"type": "mcp", "server_label": …}]`` names servers of the gateway's
MCP registry. The loop, for any provider (MCP tools are never forwarded upstream)::

    list each server's tools (the caller's MCP access applies)   → mcp_list_tools items
    run approved calls from the request's mcp_approval_response  → mcp_call items
    repeat:
        call the model (its own retries and fallbacks) with the client's function tools and
        the MCP tools as function tools                          → its output items
        no MCP call in the answer                                → done
        a call needing approval                                  → mcp_approval_request, done
        otherwise run each call through the MCP client           → mcp_call (output | error)
        tool calls over max_tool_calls / the gateway's cap       → incomplete (max_tool_calls)

A function call of a client-defined tool ends the loop: the client runs it, as usual. A tool
that fails or times out gives an ``mcp_call`` with ``error``; the model sees the error and goes
on. Every item is handed to ``emit`` as it is made (streams send it at once).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter_ns
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.mcp.core import McpGateway, TraceContext
from gateway.mcp.jsonrpc import McpError, ToolDenied
from gateway.responses.request import ResponsesRequest, native_items
from gateway.responses.translate import new_id, skeleton
from gateway.telemetry.spans import new_span_id
from gateway.telemetry.wire import McpCallRecord, ToolCallRecord

_encode = msgspec.json.Encoder().encode

# The model's input may not carry these: the gateway ran them (or will, once approved).
_LOOP_FIELDS = ("previous_response_id", "store", "stream", "stream_options", "max_tool_calls", "background")

CallModel = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Emit = Callable[[dict[str, Any]], Awaitable[None]]


class _Server:
    __slots__ = ("label", "allowed", "approval", "index")

    def __init__(self, tool: Mapping[str, Any], index: int) -> None:
        self.index = index
        self.label: str = tool["server_label"]
        allowed = tool.get("allowed_tools")
        if isinstance(allowed, dict):
            allowed = allowed.get("tool_names")
        self.allowed: list[str] | None = list(allowed) if isinstance(allowed, list) else None
        self.approval = tool.get("require_approval", "always")  # OpenAI's default

    def needs_approval(self, name: str) -> bool:
        rule = self.approval
        if rule == "never":
            return False
        if isinstance(rule, dict):
            never = (rule.get("never") or {}).get("tool_names") or []
            always = (rule.get("always") or {}).get("tool_names") or []
            if name in always:
                return True
            return name not in never
        return True

    def offers(self, name: str) -> bool:
        return self.allowed is None or any(fnmatch.fnmatchcase(name, p) for p in self.allowed)


def check_mcp_tools(req: ResponsesRequest, mcp: McpGateway) -> list[_Server]:
    """The request's MCP servers, each a server of the gateway's registry.

    Raises:
        InvalidRequest: an ``mcp`` tool without ``server_label``, naming an unknown server, or
            approval responses without MCP tools to run them.
    """
    servers: list[_Server] = []
    tools = req.obj.get("tools") or []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "mcp":
            continue
        label = tool.get("server_label")
        if not isinstance(label, str) or label not in mcp.config:
            raise InvalidRequest(
                f"tools[{i}]: MCP server {label!r} is not registered on this gateway",
                param=f"tools[{i}].server_label",
                code="unknown_mcp_server",
            )
        servers.append(_Server(tool, i))
    return servers


class AgentLoop:
    """The loop for one request; :attr:`runs` and :attr:`list_calls` feed the trace. ``trace``
    is (trace id, the ``invoke_agent`` span id, flags): MCP messages hang under that span."""

    def __init__(
        self,
        req: ResponsesRequest,
        servers: list[_Server],
        mcp: McpGateway,
        principal: Any,
        metadata: Mapping[str, str],
        max_tool_calls: int,
        trace: tuple[bytes, bytes, int],
        emit: Emit | None = None,
    ) -> None:
        self.req = req
        self.servers = servers
        self.mcp = mcp
        self.principal = principal
        self.metadata = metadata
        client_max = req.obj.get("max_tool_calls")
        self.max_tool_calls = (
            min(max_tool_calls, client_max) if isinstance(client_max, int) else max_tool_calls
        )
        self.trace_id, self.parent_span, self.flags = trace
        self.emit = emit
        self.output: list[dict[str, Any]] = []
        self.runs: list[ToolCallRecord] = []  # execute_tool spans
        self.list_calls: list[McpCallRecord] = []  # tools/list messages (CLIENT spans)
        self.usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cached": 0, "reasoning": 0}
        self.tool_calls = 0
        self.incomplete: str | None = None
        self._names: dict[str, tuple[_Server, str]] = {}  # function name the model sees → server, tool
        self._functions: list[dict[str, Any]] = []
        self._approved: list[tuple[_Server, dict[str, Any], bool]] = []

    # --- steps ---------------------------------------------------------------------------------

    async def _add(self, item: dict[str, Any]) -> None:
        self.output.append(item)
        if self.emit is not None:
            await self.emit(item)

    async def list_tools(self) -> None:
        """List each server's tools; an ``mcp_list_tools`` item unless the chain already has one."""
        listed = {i.get("server_label") for i in self.req.history if i.get("type") == "mcp_list_tools"}
        for server in self.servers:
            item: dict[str, Any] = {"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": server.label,
                                    "tools": []}  # fmt: skip
            try:
                listing = await self.mcp.list_tools(self.principal, server.label, trace=self._trace())
                self.list_calls.extend(listing.calls)
            except ToolDenied:
                raise InvalidRequest(
                    f"tools[{server.index}]: MCP server '{server.label}' is not available to this caller",
                    param=f"tools[{server.index}].server_label",
                    code="unknown_mcp_server",
                ) from None
            except McpError as exc:
                item["error"] = exc.message
                await self._add(item)
                continue
            for tool in listing.tools:
                name = tool.get("name", "")
                if not server.offers(name):
                    continue
                seen = name if name not in self._names else f"{server.label}__{name}"
                self._names[seen] = (server, name)
                schema = tool.get("inputSchema") or {"type": "object", "properties": {}}
                self._functions.append({"type": "function", "name": seen, "description": tool.get("description") or "",
                                        "parameters": schema})  # fmt: skip
                item["tools"].append({"name": name, "description": tool.get("description"),
                                      "input_schema": schema, "annotations": tool.get("annotations")})  # fmt: skip
            if server.label not in listed:
                await self._add(item)

    async def prepare(self) -> None:
        """List the tools and check the approvals: what can refuse the request (400) happens here,
        before a stream starts."""
        await self.list_tools()
        self._approved = self._approvals()

    def _approvals(self) -> list[tuple[_Server, dict[str, Any], bool]]:
        """(server, the approval request, approved) for each ``mcp_approval_response`` item."""
        requests = {i.get("id"): i for i in self.req.history if i.get("type") == "mcp_approval_request"}
        answers = []
        for i, item in enumerate(self.req.items):
            if item.get("type") != "mcp_approval_response":
                continue
            asked = requests.get(item.get("approval_request_id"))
            if asked is None:
                raise InvalidRequest(
                    f"input[{i}]: no mcp_approval_request with id {item.get('approval_request_id')!r} "
                    "in the previous response",
                    param=f"input[{i}].approval_request_id",
                )
            server = next((s for s in self.servers if s.label == asked.get("server_label")), None)
            if server is None:
                raise InvalidRequest(
                    f"input[{i}]: the request has no mcp tool for server '{asked.get('server_label')}'",
                    param="tools",
                )
            answers.append((server, asked, item.get("approve") is True))
        return answers

    async def run_approved(self) -> None:
        """Run (or decline) the calls the client answered with ``mcp_approval_response``."""
        for server, asked, approved in self._approved:
            if approved:
                await self._call(
                    server, asked.get("name", ""), asked.get("arguments") or "{}", asked.get("id")
                )
            else:
                declined = {"id": new_id("mcp"), "type": "mcp_call", "server_label": server.label,
                            "name": asked.get("name", ""), "arguments": asked.get("arguments") or "{}",
                            "approval_request_id": asked.get("id"), "output": None, "status": "failed",
                            "error": {"type": "mcp_tool_execution_error",
                                      "content": [{"type": "text", "text": "the user declined this call"}]}}  # fmt: skip
                await self._add(declined)

    async def _call(self, server: _Server, tool: str, arguments: str, approval_id: Any = None) -> None:
        """Run one MCP tool call; its ``mcp_call`` item has ``output`` or ``error``."""
        self.tool_calls += 1
        item: dict[str, Any] = {"id": new_id("mcp"), "type": "mcp_call", "server_label": server.label, "name": tool,
                                "arguments": arguments, "output": None, "error": None, "status": "completed"}  # fmt: skip
        if approval_id is not None:
            item["approval_request_id"] = approval_id
        span_id = new_span_id()
        start = perf_counter_ns()
        calls: tuple[McpCallRecord, ...] = ()
        result = b""
        try:
            args = msgspec.json.decode(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except (msgspec.DecodeError, ValueError) as exc:
            item["error"] = {
                "type": "mcp_protocol_error",
                "code": -32602,
                "message": f"invalid arguments: {exc}",
            }
        else:
            call = await self.mcp.call_tool(
                self.principal, server.label, tool, args, metadata=self.metadata,
                trace=TraceContext(self.trace_id, span_id, self.flags),
            )  # fmt: skip
            calls = tuple(call.calls)
            if call.error is not None:
                item["error"] = {
                    "type": "mcp_protocol_error",
                    "code": call.error.code,
                    "message": call.error.message,
                }
            elif call.is_error:
                item["error"] = {
                    "type": "mcp_tool_execution_error",
                    "content": (call.result or {}).get("content"),
                }
            else:
                item["output"] = _text(call.result or {})
                result = _encode(call.result)
        error_type = error_message = ""
        if item["error"] is not None:
            item["status"] = "failed"
            error_type = str(item["error"].get("code", item["error"]["type"]))
            error_message = str(item["error"].get("message") or item["error"].get("content"))
        self.runs.append(
            ToolCallRecord(
                span_id, server.label, tool, item["id"], start, perf_counter_ns(), arguments.encode(), result,
                error_type, error_message, calls,
            )
        )  # fmt: skip
        await self._add(item)

    def _trace(self) -> TraceContext:
        return TraceContext(self.trace_id, self.parent_span, self.flags)

    # --- the loop ------------------------------------------------------------------------------

    def model_body(self) -> dict[str, Any]:
        """The Responses request for the next model call: the chain so far, in the model's terms."""
        body = {k: v for k, v in self.req.obj.items() if k not in _LOOP_FIELDS}
        given = self.req.obj.get("input")
        current = given if isinstance(given, list) else [{"role": "user", "content": given}]
        body["input"] = native_items(self.req.history) + native_items(current) + native_items(self.output)
        tools = [
            t for t in self.req.obj.get("tools") or [] if not (isinstance(t, dict) and t.get("type") == "mcp")
        ]
        tools += self._functions
        if tools:
            body["tools"] = tools
        else:
            body.pop("tools", None)
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "mcp":
            name = choice.get("name")
            body["tool_choice"] = {"type": "function", "name": name} if name else "required"
        return body

    async def run(self, call_model: CallModel) -> None:
        """Call the model and run its MCP tool calls until it answers (see the module docstring).

        :meth:`prepare` must have run."""
        await self.run_approved()
        while True:
            answer = await call_model(self.model_body())
            self._count(answer.get("usage"))
            if answer.get("status") == "incomplete":
                self.incomplete = (answer.get("incomplete_details") or {}).get("reason") or "incomplete"
            mcp_calls, client_calls = [], False
            for item in answer.get("output") or []:
                if item.get("type") == "function_call" and item.get("name") in self._names:
                    mcp_calls.append(item)
                    continue
                client_calls = client_calls or item.get("type") == "function_call"
                await self._add(item)
            if not mcp_calls or self.incomplete:
                return
            pending = False
            for call in mcp_calls:
                server, tool = self._names[call["name"]]
                if server.needs_approval(tool):
                    pending = True
                    await self._add({"id": new_id("mcpr"), "type": "mcp_approval_request", "server_label": server.label,
                                     "name": tool, "arguments": call.get("arguments") or "{}"})  # fmt: skip
                elif self.tool_calls >= self.max_tool_calls:
                    self.incomplete = "max_tool_calls"
                    return
                else:
                    await self._call(server, tool, call.get("arguments") or "{}")
            if pending or client_calls:
                return

    def _count(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        u = self.usage
        u["input_tokens"] += usage.get("input_tokens") or 0
        u["output_tokens"] += usage.get("output_tokens") or 0
        u["total_tokens"] += usage.get("total_tokens") or 0
        u["cached"] += (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        u["reasoning"] += (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0

    def response(self, resp_id: str, created_at: int, status: str | None = None) -> dict[str, Any]:
        """The Response object of the whole loop (usage summed over its model calls)."""
        status = status or ("incomplete" if self.incomplete else "completed")
        obj = skeleton(self.req.obj, resp_id, created_at, status)
        obj["output"] = self.output
        if self.incomplete and status == "incomplete":
            obj["incomplete_details"] = {"reason": self.incomplete}
        u = self.usage
        obj["usage"] = {
            "input_tokens": u["input_tokens"],
            "input_tokens_details": {"cached_tokens": u["cached"]},
            "output_tokens": u["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["total_tokens"],
        }
        return obj


def _text(result: Mapping[str, Any]) -> str:
    """An MCP tool result as the text the model reads (text parts joined; otherwise JSON)."""
    content = result.get("content")
    if isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text" for c in content):
        return "".join(c.get("text", "") for c in content)
    structured = result.get("structuredContent")
    return _encode(structured if structured is not None else content).decode()
