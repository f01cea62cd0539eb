"""The request path, top to bottom: read → decode → resolve → call upstream → respond.

Every step is a call into a small module that owns it; this file only sequences them and
turns errors into responses (through :func:`gateway.errors.error_response`, the one mapping).
Nothing here awaits anything but the client's body, the provider, and the client's socket.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter_ns, time_ns
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.access import Decision
from gateway.attempt import Attempt, TTFTTimeout, run_attempt
from gateway.body import ParsedRequest
from gateway.deadline import sweeper
from gateway.errors import (
    JSON_HEADERS,
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    UpstreamError,
)
from gateway.metrics import Metrics, mean_inter_token_ms
from gateway.metrics.labels import UNAUTHENTICATED, UNKNOWN, bounded
from gateway.routing import FailureKind, PlanEntry, RoutePlan, counts_as_failure, outcome_of
from gateway.runtime import ModelTarget, Runtime
from gateway.sse import Usage
from gateway.surfaces import Surface
from gateway.telemetry.drain import Telemetry
from gateway.telemetry.spans import format_traceparent, new_span_id, new_trace_id, parse_traceparent
from gateway.telemetry.wire import (
    PHASE_AUTH,
    PHASE_NONE,
    PHASE_RESOLUTION,
    AgentRecord,
    AttemptRecord,
    TraceRecord,
)

log = logging.getLogger("gateway.proxy")

SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


async def read_body(scope: Any, proto: Any, limit: int, timeout_s: float = 30.0) -> bytes:
    """The request body, refusing (413) anything over ``limit`` without reading it all.

    Raises:
        RequestTimeout: the body did not arrive within ``timeout_s`` (``server.body_timeout_s``).
        ClientDisconnected: the client closed the connection mid-body.
    """
    # One sweep per loop instead of a timer per request (measured in gateway/deadline.py).
    deadlines, task = sweeper()
    deadlines.enter(task, timeout_s)
    try:
        declared = scope.headers.get("content-length")
        if declared is None:
            body = await _read_chunked(proto, limit)
        else:
            try:
                size = int(declared)
            except ValueError:
                raise InvalidRequest("invalid content-length header", code="invalid_header") from None
            if size > limit:
                raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
            body = await proto()  # awaited here, not in a helper: one coroutine less per request
    except BaseException as exc:
        # The sweep's cancel, unless someone else (shutdown) cancelled the task too.
        if deadlines.leave(task) and task.uncancel() == 0:
            raise _body_timeout(timeout_s) from None
        if isinstance(exc, ProtocolClosed | ProtocolError):
            raise ClientDisconnected("the client closed the connection while sending the body") from None
        raise
    if deadlines.leave(task):
        # The deadline passed as the last bytes arrived and the cancel is still pending:
        # answer the timeout now, before an await would deliver it somewhere else.
        task.uncancel()
        raise _body_timeout(timeout_s)
    return body


def _body_timeout(timeout_s: float) -> RequestTimeout:
    # The rest of the body may still be on its way: close the connection, never reuse it.
    return RequestTimeout(
        f"request body not received within {timeout_s:g}s", headers=[("connection", "close")]
    )


async def _read_chunked(proto: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in proto:  # chunked upload: count as it arrives
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class Outcome(msgspec.Struct):
    """What the request path learned, for the metrics and the trace record made once at the end.

    It also carries the request's trace identity, so ids exist (for ``x-request-id`` and the
    ``traceparent`` sent upstream) whether or not tracing is on. Clock fields hold
    ``perf_counter_ns()`` readings, 0 until reached. A Struct for its C constructor: most fields
    start at their defaults.
    """

    trace_id: bytes
    parent_id: bytes  # the caller's span id from ``traceparent`` (b"" when the trace starts here)
    flags: int
    span_id: bytes
    start_pc: int
    epoch_offset: int  # time_ns() - perf_counter_ns() at the start
    status: int = 200
    error: GatewayError | None = None
    failed_phase: int = PHASE_NONE
    decision: Decision | None = None
    plan: RoutePlan | None = None
    target: ModelTarget | None = None
    usage: Usage | None = None
    auth_start_pc: int = 0
    auth_end_pc: int = 0
    resolved_pc: int = 0
    attempts: list[AttemptRecord] = []
    first_pc: int = 0
    stream_start_pc: int = 0
    stream_end_pc: int = 0
    events: list[bytes] | None = None  # a stream's SSE events, as sent
    body_out: bytes = b""

    @classmethod
    def start(cls, traceparent: str | None) -> Outcome:
        """A new request: continue the caller's trace (a valid ``traceparent``) or start one."""
        parent = parse_traceparent(traceparent) if traceparent else None
        pc = perf_counter_ns()
        if parent is None:
            return cls(new_trace_id(), b"", 1, new_span_id(), pc, time_ns() - pc)
        return cls(parent[0], parent[1], parent[2], new_span_id(), pc, time_ns() - pc)


async def handle_llm(
    rt: Runtime, tel: Telemetry, metrics: Metrics, scope: Any, proto: Any, surface: Surface
) -> None:
    """A model call on any surface (``gateway.surfaces``): ``POST /v1/chat/completions``,
    ``/v1/completions``, ``/v1/embeddings``, ... The surface decodes the request and encodes
    the response and errors; everything in between is the same for all of them."""
    metrics.inflight_inc()
    # granian builds a new headers object on every ``scope.headers`` (0.18 µs measured): once.
    headers_in = scope.headers
    out = Outcome.start(headers_in.get("traceparent"))
    request_id = out.trace_id.hex()
    req: ParsedRequest | None = None
    try:
        body = await read_body(scope, proto, rt.max_body_bytes, rt.config.server.body_timeout_s)
        req = surface.parse(body, headers_in)

        out.auth_start_pc = perf_counter_ns()
        try:
            decision = out.decision = rt.access.check(headers_in.get, req.model)
        except GatewayError:
            out.failed_phase = PHASE_AUTH
            raise
        finally:
            out.auth_end_pc = perf_counter_ns()

        plan = out.plan = rt.router.plan(req.model)
        out.resolved_pc = perf_counter_ns()
        if plan is None:
            out.failed_phase = PHASE_RESOLUTION
            raise ModelNotFound(
                f"model '{req.model}' does not exist or is not served by this gateway", param="model"
            )

        attempt, entry = await _call_with_fallbacks(rt, metrics, plan, req, surface, out, tel.enabled)
        headers = [
            ("x-request-id", request_id),
            ("x-tfy-resolved-model", entry.target),
            *decision.response_headers,
        ]
        out.first_pc = attempt.first_pc
        if attempt.resp is None:
            out.body_out = attempt.body
            out.usage = attempt.usage
            proto.response_bytes(200, [("content-type", attempt.content_type), *headers], attempt.body)
            return
        out.stream_start_pc = perf_counter_ns()
        try:
            await _relay_stream(proto, attempt, headers, surface)
        finally:
            out.stream_end_pc = perf_counter_ns()
            if attempt.relay is not None:
                out.usage = attempt.relay.usage
                out.events = attempt.relay.events
    except Exception as exc:
        answer_error(proto, surface, out, exc, request_id)
    finally:
        cost = settle(rt, metrics, req, out)
        if tel.enabled:
            _record_trace(tel, scope.path, surface, req, out, cost)


def answer_error(proto: Any, surface: Surface, out: Outcome, exc: Exception, request_id: str) -> None:
    """The error tail of every model-call handler: record the outcome and answer in the
    surface's own error shape (our own bugs as a logged 500, a client that left not at all).

    Call it from the ``except`` block, so an unexpected exception is logged with its traceback."""
    if isinstance(exc, GatewayError):
        out.status, out.error = exc.status, exc
        if isinstance(exc, ClientDisconnected):  # nobody left to answer
            return
    else:
        # Our own bug, never the client's input: log it with the id the client sees.
        log.exception("unhandled error in request %s", request_id)
        exc = out.error = GatewayError("internal error")
        out.status = 500
    status, headers, err_body = surface.error_response(exc)
    proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)


def settle(rt: Runtime, metrics: Metrics, req: ParsedRequest | None, out: Outcome) -> float | None:
    """A finished request's bookkeeping: in-flight gauge, token limits charged with the real
    usage (once the response or stream is done), metrics. Returns the cost in USD (if priced)."""
    metrics.inflight_dec()
    if out.decision is not None and out.usage is not None:
        out.decision.admission.charge_tokens(out.usage.total_tokens, rt.access.clock())
    return _record_metrics(rt, metrics, req, out)


async def _call_with_fallbacks(
    rt: Runtime,
    metrics: Metrics,
    plan: RoutePlan,
    req: ParsedRequest,
    surface: Surface,
    out: Outcome,
    keep_events: bool,
) -> tuple[Attempt, PlanEntry]:
    """Walk the plan: retry a target per its ``retry_config``, then fall back to the next one.

    Every attempt is recorded (a CLIENT span for the trace) and forwards a ``traceparent``
    naming it."""
    router = rt.router
    step = plan.first()
    while True:
        entry = step.entry
        target = out.target = rt.models[entry.target]
        span_id = new_span_id()
        started = perf_counter_ns()
        try:
            attempt = await run_attempt(
                target,
                entry,
                req,
                surface,
                [("traceparent", format_traceparent(out.trace_id, span_id, out.flags))],
                keep_events=keep_events,  # a stream's events only feed the trace's tfy.output
            )
        except UpstreamError as exc:
            ended = perf_counter_ns()
            out.attempts.append(
                AttemptRecord(
                    span_id, target.trace_info, step.kind, started, ended, exc.status,
                    exc.code or type(exc).__name__, exc.message,
                )
            )  # fmt: skip
            outcome = FailureKind.TTFT_TIMEOUT if isinstance(exc, TTFTTimeout) else outcome_of(exc)
            if counts_as_failure(outcome):
                router.record(entry.target, False, (ended - started) / 1e9)
            nxt = plan.next_step(step, outcome)
            if nxt is None:
                raise
            step = nxt
            if step.kind == "retry":
                metrics.retry(step.entry.target)
            else:
                metrics.fallback(step.entry.target)
            if step.delay_s:
                await asyncio.sleep(step.delay_s)
            continue
        except BaseException as exc:  # not the provider's failure (bad request shape, cancel)
            out.attempts.append(
                AttemptRecord(
                    span_id, target.trace_info, step.kind, started, perf_counter_ns(), 0,
                    getattr(exc, "code", None) or type(exc).__name__, getattr(exc, "message", ""),
                )
            )  # fmt: skip
            raise
        ended = perf_counter_ns()
        out.attempts.append(AttemptRecord(span_id, target.trace_info, step.kind, started, ended, 200))
        if not attempt.local:
            router.record(entry.target, True, (ended - started) / 1e9)
        return attempt, entry


def _record_metrics(rt: Runtime, metrics: Metrics, req: ParsedRequest | None, out: Outcome) -> float | None:
    """Count the finished request in the Prometheus catalog; returns its cost in USD (if priced)."""
    try:
        err = out.error
        if isinstance(err, RateLimited):
            metrics.rate_limited(err.rule_id)
        usage, target = out.usage, out.target
        cost = None
        if usage is not None and target is not None:
            cost = rt.prices.cost_usd(
                target.model_id, target.upstream_model, usage.prompt_tokens, usage.completion_tokens
            )
        if not metrics.enabled:
            return cost
        latency_ms = (perf_counter_ns() - out.start_pc) / 1e6
        ttft_ms = (out.first_pc - out.start_pc) / 1e6 if out.first_pc and out.events is not None else None
        decision = out.decision
        metrics.record_request(
            # Labels from bounded sets only: a name the config does not know, or a caller not
            # (yet) authenticated, must not create series (see gateway/metrics/labels.py).
            bounded(req.model, rt.known_models) if req is not None else UNKNOWN,
            decision.principal.subject if decision is not None else UNAUTHENTICATED,
            "default",
            decision.metadata if decision is not None else None,
            out.status,
            (err.code or type(err).__name__) if err is not None else None,
            usage.prompt_tokens if usage is not None else None,
            usage.completion_tokens if usage is not None else None,
            cost,
            latency_ms,
            ttft_ms,
            mean_inter_token_ms(latency_ms, ttft_ms, usage.completion_tokens if usage else None)
            if ttft_ms
            else None,
        )
        return cost
    except Exception:  # metrics never fail a request
        log.exception("recording metrics failed")
        return None


def _record_trace(
    tel: Telemetry,
    path: str,
    surface: Surface,
    req: ParsedRequest | None,
    out: Outcome,
    cost: float | None,
    agent: AgentRecord | None = None,
) -> None:
    """Hand the request's trace record to the ring: values already at hand, nothing decoded.

    The exporter builds the spans and their attributes from it (``gateway.telemetry.expand``),
    then the body-derived ones (``exporter/enrich.py``), off the request path."""
    try:
        err, decision, usage = out.error, out.decision, out.usage
        if isinstance(err, RateLimited):
            rl_rule_ids: tuple[str, ...] = (err.rule_id,)
        else:
            rl_rule_ids = tuple(decision.rule_ids) if decision is not None else ()
        plan = out.plan
        attempts = tuple(out.attempts) if agent is None else ()
        tel.record(
            TraceRecord(
                out.trace_id,
                out.span_id,
                out.parent_id,
                out.epoch_offset,
                out.start_pc,
                perf_counter_ns(),
                path,
                surface.operation,
                out.status,
                (err.code or type(err).__name__) if err is not None else "",
                err.message if err is not None else "",
                out.failed_phase,
                req.model if req is not None else "",
                req.stream if req is not None else False,
                req.body if req is not None else b"",
                out.auth_start_pc,
                out.auth_end_pc,
                out.resolved_pc,
                decision.principal.subject if decision is not None else "",
                decision.metadata if decision is not None else {},
                plan.rule_ids if plan is not None else (),
                rl_rule_ids,
                attempts,
                out.first_pc,
                out.stream_start_pc,
                out.stream_end_pc,
                usage.prompt_tokens if usage is not None else -1,
                usage.completion_tokens if usage is not None else -1,
                cost,
                out.body_out,
                b"".join(out.events) if out.events else b"",
                surface.name,
                agent=agent,  # a Responses request: its attempts are inside (AgentResponse trace)
                teams=decision.principal.teams if decision is not None else (),
            )
        )
    except Exception:  # telemetry never fails a request
        log.exception("recording a trace failed")


async def _relay_stream(
    proto: Any, attempt: Attempt, headers: list[tuple[str, str]], surface: Surface
) -> None:
    """Pass an SSE stream through as it arrives; cancel the upstream if the client leaves."""
    resp = attempt.resp
    assert resp is not None
    task = asyncio.current_task()
    watcher = asyncio.ensure_future(proto.client_disconnect())

    def on_disconnect(_: Any) -> None:
        if task is not None and not task.done():
            task.cancel()

    watcher.add_done_callback(on_disconnect)
    transport = proto.response_stream(200, [*SSE_HEADERS, *headers])
    # Per chunk only what the bare relay does (read, to_bytes, send) plus the stage's feed:
    # bound-method locals, the stage's ``done`` attribute, the library's reader with its errors
    # translated around the loop (callgrind: -19 % instructions per stream, bench/micro_relay.py).
    relay, feed, send = attempt.relay, attempt.feed, transport.send_bytes
    try:
        if attempt.first_out:
            await send(attempt.first_out)
        read_chunk = resp.chunk_reader()
        try:
            while not relay.done:
                chunk = await read_chunk()
                if chunk is None:
                    break
                out = feed(chunk.to_bytes())
                if out:
                    await send(out)
        except resp.read_errors as exc:
            # Headers (and events) are already sent: end with an error event, never silently.
            await send(surface.stream_error(resp.translate(exc)))
            return
        tail = relay.flush()
        if tail:
            await send(tail)
        if not relay.done:
            await send(
                surface.stream_error(
                    GatewayError("the provider ended the stream early", code="stream_truncated")
                )
            )
    except asyncio.CancelledError:
        if not watcher.done():
            raise  # cancelled by shutdown, not by the client
        # The client went away: stop reading so the upstream request is cancelled below.
    except (ProtocolClosed, ProtocolError) as exc:  # the client's socket failed while we wrote
        log.debug("stream to client ended: %s", exc)
    except Exception:
        log.exception("stream relay failed")
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()
        await resp.aclose()


def respond_json(proto: Any, status: int, body: bytes) -> None:
    proto.response_bytes(status, JSON_HEADERS, body)
