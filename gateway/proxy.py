"""The request path, top to bottom: read → decode → resolve → call upstream → respond.

Every step is a call into a small module that owns it; this file only sequences them and
turns errors into responses (through :func:`gateway.errors.error_response`, the one mapping).
Nothing here awaits anything but the client's body, the provider, and the client's socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed, ProtocolError

from gateway.access import Decision
from gateway.attempt import Attempt, TTFTTimeout, run_attempt
from gateway.body import ParsedRequest, parse_request
from gateway.errors import (
    JSON_HEADERS,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
    error_response,
    sse_error_event,
)
from gateway.metrics import Metrics, mean_inter_token_ms
from gateway.routing import FailureKind, PlanEntry, RoutePlan, counts_as_failure, outcome_of
from gateway.runtime import ModelTarget, Runtime
from gateway.sse import Usage, usage_of
from gateway.telemetry.drain import Telemetry
from gateway.telemetry.payloads import timing_attributes
from gateway.telemetry.spans import (
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    HTTP_STATUS,
    SPAN_KIND_CLIENT,
    SPAN_TYPES,
    TFY_DESTINATION,
    TFY_INPUT,
    TFY_LB_RULE_IDS,
    TFY_METADATA,
    TFY_OUTPUT,
    TFY_RL_RULE_IDS,
    TFY_SPAN_TYPE,
    TFY_SUBJECT,
    NullTrace,
    RequestTrace,
)

_encode_json = msgspec.json.Encoder().encode
TFY_OUTPUT_SSE = "tfy.output.sse"
TFY_COST_USD = "tfy.model.metric.cost_in_usd"  # raw SSE events; the exporter assembles them into tfy.output

log = logging.getLogger("gateway.proxy")

SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


async def read_body(scope: Any, proto: Any, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` without reading it all."""
    declared = scope.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("invalid content-length header", code="invalid_header") from None
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
        return await proto()
    parts: list[bytes] = []
    size = 0
    async for chunk in proto:  # chunked upload: count as it arrives
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class Outcome:
    """What the request path learned, for the trace (and metrics) recorded once at the end."""

    __slots__ = (
        "decision",
        "status",
        "error",
        "target",
        "usage",
        "first_pc",
        "events",
        "body_out",
        "plan",
    )

    def __init__(self) -> None:
        self.status = 200
        self.error: GatewayError | None = None
        self.target: ModelTarget | None = None
        self.usage: Usage | None = None
        self.first_pc = 0
        self.events: list[bytes] | None = None  # a stream's SSE events, as sent
        self.body_out = b""
        self.plan: RoutePlan | None = None
        self.decision: Decision | None = None


async def handle_llm(
    rt: Runtime, tel: Telemetry, metrics: Metrics, scope: Any, proto: Any, endpoint: str
) -> None:
    """``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
    metrics.inflight_inc()
    trace = (RequestTrace if tel.enabled else NullTrace).start(
        "POST", scope.path, scope.headers.get("traceparent")
    )
    request_id = trace.trace_id_hex
    out = Outcome()
    req: ParsedRequest | None = None
    try:
        body = await read_body(scope, proto, rt.max_body_bytes)
        req = parse_request(body, endpoint)

        auth = trace.child("auth")
        try:
            decision = out.decision = rt.access.check(scope.headers.get, req.model)
        except GatewayError as exc:
            auth.fail(exc.code or type(exc).__name__, exc.message)
            raise
        finally:
            auth.end()
        auth.set(TFY_SUBJECT, decision.principal.subject)

        resolution = trace.child("model resolution")
        plan = out.plan = rt.router.plan(req.model)
        if plan is None:
            resolution.fail("ModelNotFound")
            raise ModelNotFound(
                f"model '{req.model}' does not exist or is not served by this gateway", param="model"
            )
        if plan.rule_ids:
            resolution.set(TFY_LB_RULE_IDS, list(plan.rule_ids))
        resolution.end()

        attempt, entry = await _call_with_fallbacks(rt, trace, metrics, plan, req, endpoint, out)
        headers = [
            ("x-request-id", request_id),
            ("x-tfy-resolved-model", entry.target),
            *decision.response_headers,
        ]
        out.first_pc = attempt.first_pc
        if attempt.resp is None:
            out.body_out = attempt.body
            out.usage = usage_of(attempt.body)
            proto.response_bytes(200, [("content-type", attempt.content_type), *headers], attempt.body)
            return
        stream_span = trace.child("stream")
        try:
            await _relay_stream(proto, attempt, headers)
        finally:
            stream_span.end()
            if attempt.relay is not None:
                out.usage = attempt.relay.usage
                out.events = attempt.relay.events
    except GatewayError as exc:
        out.status, out.error = exc.status, exc
        status, headers, err_body = error_response(exc)
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)
    except Exception:
        # Our own bug, never the client's input: log it with the id the client sees.
        log.exception("unhandled error in request %s", request_id)
        internal = GatewayError("internal error")
        out.status, out.error = 500, internal
        status, headers, err_body = error_response(internal)
        proto.response_bytes(status, [*headers, ("x-request-id", request_id)], err_body)
    finally:
        metrics.inflight_dec()
        if out.decision is not None and out.usage is not None:
            # Token limits are charged with the real usage once the response (or stream) is done.
            out.decision.admission.charge_tokens(out.usage.total_tokens, rt.access.clock())
        cost = _record_metrics(rt, metrics, trace, req, out)
        if isinstance(trace, RequestTrace):  # tracing enabled
            if cost is not None:
                trace.root.attributes[TFY_COST_USD] = cost
            _record_trace(tel, trace, endpoint, req, out)


async def _call_with_fallbacks(
    rt: Runtime,
    trace: RequestTrace | NullTrace,
    metrics: Metrics,
    plan: RoutePlan,
    req: ParsedRequest,
    endpoint: str,
    out: Outcome,
) -> tuple[Attempt, PlanEntry]:
    """Walk the plan: retry a target per its ``retry_config``, then fall back to the next one.

    Every attempt gets its own CLIENT span and forwards a ``traceparent`` naming it."""
    router = rt.router
    operation = SPAN_TYPES[endpoint][1]
    step = plan.first()
    while True:
        entry = step.entry
        target = out.target = rt.models[entry.target]
        span = trace.child(f"{operation} {entry.upstream_model}", SPAN_KIND_CLIENT)
        span.update(target.client_span_attributes(endpoint, req.stream))
        if step.kind != "primary":
            span.set("tfy.attempt.kind", step.kind)
        started = time.perf_counter()
        try:
            attempt = await run_attempt(
                target,
                entry,
                req,
                endpoint,
                [("traceparent", trace.traceparent_for(span))],
                keep_events=isinstance(trace, RequestTrace),  # the events only feed tfy.output
            )
        except UpstreamError as exc:
            outcome = FailureKind.TTFT_TIMEOUT if isinstance(exc, TTFTTimeout) else outcome_of(exc)
            span.set(HTTP_STATUS, exc.status)
            span.fail(exc.code or type(exc).__name__, exc.message)
            span.end()
            if counts_as_failure(outcome):
                router.record(entry.target, False, time.perf_counter() - started)
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
        span.set(HTTP_STATUS, 200)
        span.end()
        router.record(entry.target, True, time.perf_counter() - started)
        return attempt, entry


def _record_metrics(
    rt: Runtime, metrics: Metrics, trace: RequestTrace | NullTrace, req: ParsedRequest | None, out: Outcome
) -> float | None:
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
        latency_ms = trace.elapsed_ms()
        ttft_ms = (
            (out.first_pc - trace.root.start_pc) / 1e6 if out.first_pc and out.events is not None else None
        )
        decision = out.decision
        metrics.record_request(
            req.model if req is not None else "",
            decision.principal.subject if decision is not None else "",
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
    tel: Telemetry, trace: RequestTrace, endpoint: str, req: ParsedRequest | None, out: Outcome
) -> None:
    """Finish the trace and hand it to the ring: only values already at hand, nothing decoded.

    Body-derived attributes (request parameters, input short hand, response id and finish
    reasons, the assembled stream) are added by the exporter (``exporter/enrich.py``)."""
    try:
        root = trace.root
        span_type, operation = SPAN_TYPES[endpoint]
        attrs = root.attributes
        attrs[TFY_SPAN_TYPE] = span_type
        attrs[GEN_AI_OPERATION] = operation
        if req is not None:
            attrs[TFY_INPUT] = req.body
            attrs[GEN_AI_REQUEST_MODEL] = req.model
            attrs[GEN_AI_REQUEST_STREAM] = req.stream
        if out.target is not None:
            attrs[GEN_AI_PROVIDER] = out.target.provider.type
            if out.error is None:
                attrs[TFY_DESTINATION] = out.target.model_id
        if out.plan is not None and out.plan.rule_ids:
            attrs[TFY_LB_RULE_IDS] = list(out.plan.rule_ids)
        decision = out.decision
        if isinstance(out.error, RateLimited):
            attrs[TFY_RL_RULE_IDS] = [out.error.rule_id]
        if decision is not None:
            attrs[TFY_SUBJECT] = decision.principal.subject
            if decision.metadata:
                attrs[TFY_METADATA] = _encode_json(decision.metadata)
            if decision.rule_ids:
                attrs[TFY_RL_RULE_IDS] = list(decision.rule_ids)
        if out.usage is not None:
            attrs[GEN_AI_INPUT_TOKENS] = out.usage.prompt_tokens
            attrs[GEN_AI_OUTPUT_TOKENS] = out.usage.completion_tokens
        if out.events is not None:
            attrs[TFY_OUTPUT_SSE] = b"".join(out.events)
        elif out.body_out:
            attrs[TFY_OUTPUT] = out.body_out
        attrs.update(timing_attributes(root, out.first_pc))  # root still open: latency up to now
        err = out.error
        if err is None:
            tel.record(trace.finish(out.status))
        else:
            tel.record(trace.finish(out.status, err.code or type(err).__name__, err.message))
    except Exception:  # telemetry never fails a request
        log.exception("recording a trace failed")


async def _relay_stream(proto: Any, attempt: Attempt, headers: list[tuple[str, str]]) -> None:
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
    try:
        if attempt.first_out:
            await transport.send_bytes(attempt.first_out)
        while not attempt.stream_complete:
            try:
                chunk = await resp.next_chunk()
            except GatewayError as exc:
                # Headers (and events) are already sent: end with an error event, never silently.
                await transport.send_bytes(sse_error_event(exc))
                return
            if chunk is None:
                break
            out = attempt.feed(chunk)
            if out:
                await transport.send_bytes(out)
        tail = attempt.relay.flush() if attempt.relay is not None else b""
        if tail:
            await transport.send_bytes(tail)
        if not attempt.stream_complete:
            await transport.send_bytes(
                sse_error_event(GatewayError("the provider ended the stream early", code="stream_truncated"))
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
