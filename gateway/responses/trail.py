"""What a Responses request records for its ``AgentResponse`` trace (one record, at the end).

The request path only collects values it already has (clock readings, its attempts, the bodies
of each model call); :mod:`gateway.telemetry.expand_agent` builds the spans in the exporter.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any

from gateway.telemetry.spans import new_span_id
from gateway.telemetry.wire import AgentRecord, AttemptRecord, McpCallRecord, ModelCallRecord, ToolCallRecord


class AgentTrail:
    """The ``invoke_agent`` span of one request and the model calls made under it."""

    __slots__ = ("span_id", "start_pc", "end_pc", "model_calls", "_mark")

    def __init__(self) -> None:
        self.span_id = new_span_id()  # MCP messages and tool calls name it as their parent
        self.start_pc = 0
        self.end_pc = 0
        self.model_calls: list[ModelCallRecord] = []
        self._mark = 0

    def start(self, attempts: list[AttemptRecord]) -> None:
        """The agent starts (after model resolution); ``attempts`` is the request's list."""
        self.start_pc = perf_counter_ns()
        self._mark = len(attempts)

    def model_call(
        self,
        attempts: list[AttemptRecord],
        native: bool,
        request_body: bytes = b"",
        response_body: bytes = b"",
        usage: Any = None,
    ) -> None:
        """A model call ended (answered or not): its attempts are those since the last one."""
        self.model_calls.append(
            ModelCallRecord(
                tuple(attempts[self._mark :]),
                "responses" if native else "chat_completions",
                request_body,
                response_body,
                usage.prompt_tokens if usage is not None else -1,
                usage.completion_tokens if usage is not None else -1,
            )
        )
        self._mark = len(attempts)

    def record(
        self,
        attempts: list[AttemptRecord],
        native: bool,
        response_id: str,
        conversation_id: str | None,
        usage: Any,
        tool_calls: list[ToolCallRecord] | None = None,
        list_calls: list[McpCallRecord] | None = None,
        dropped: list[str] | None = None,
    ) -> AgentRecord | None:
        """The record, once the request is done (None when no model call was reached)."""
        if not self.start_pc:
            return None
        if len(attempts) > self._mark:  # the one call of a request without a loop
            self.model_call(attempts, native, usage=usage)
        return AgentRecord(
            self.span_id,
            response_id,
            conversation_id or response_id,
            self.start_pc,
            self.end_pc or perf_counter_ns(),
            tuple(self.model_calls),
            tuple(tool_calls or ()),
            tuple(list_calls or ()),
            tuple(dict.fromkeys(dropped or ())),
        )
