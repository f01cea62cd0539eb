// One trace: summary, span waterfall (Jaeger-like), the selected span's attributes, the
// conversation from the GenAI messages (or the request/response bodies), tool calls, raw bodies.
import { api } from "./api.js";
import { h, int, ms, parseJSON, pretty, statusClass, usd, when } from "./util.js";

const KIND = { 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer" };

function flatten(nodes, depth = 0, out = []) {
  for (const n of nodes) {
    out.push({ span: n, depth });
    flatten(n.children || [], depth + 1, out);
  }
  return out;
}

const MODEL_OPERATIONS = new Set(["chat", "text_completion", "embeddings", "generate_content"]);

function isModelCall(s) {
  return s.kind !== 2 && MODEL_OPERATIONS.has((s.attributes || {})["gen_ai.operation.name"]);
}

function isToolSpan(s) {
  const a = s.attributes || {};
  return a["gen_ai.operation.name"] === "execute_tool" || "mcp.method.name" in a || s.name.startsWith("execute_tool");
}

// --- conversation ---------------------------------------------------------------------------

// GenAI parts → display parts. Accepts both the semconv parts shape and OpenAI chat messages.
function partsOf(message) {
  if (Array.isArray(message.parts)) return message.parts;
  const parts = [];
  const c = message.content;
  if (typeof c === "string") parts.push({ type: "text", content: c });
  else if (Array.isArray(c)) {
    for (const p of c) {
      if (p.type === "text" || p.type === "input_text" || p.type === "output_text") parts.push({ type: "text", content: p.text });
      else parts.push({ type: p.type || "part", content: JSON.stringify(p) });
    }
  }
  for (const t of message.tool_calls || []) {
    parts.push({ type: "tool_call", id: t.id, name: t.function?.name, arguments: parseJSON(t.function?.arguments, t.function?.arguments) });
  }
  if (message.role === "tool") return [{ type: "tool_call_response", id: message.tool_call_id, response: c }];
  return parts;
}

function messagesFromBody(body) {
  const req = parseJSON(body, null);
  if (!req || typeof req !== "object") return [];
  if (Array.isArray(req.messages)) {
    const sys = typeof req.system === "string" ? [{ role: "system", content: req.system }] : [];
    return [...sys, ...req.messages];
  }
  if (typeof req.input === "string") return [{ role: "user", content: req.input }];
  if (Array.isArray(req.input)) return req.input.filter((m) => m && m.role);
  if (typeof req.prompt === "string") return [{ role: "user", content: req.prompt }];
  return [];
}

function outputsFromBody(body) {
  const res = parseJSON(body, null);
  if (!res || typeof res !== "object") return [];
  if (Array.isArray(res.choices)) {
    return res.choices.map((c) => ({ ...(c.message || { role: "assistant", content: c.text }), finish_reason: c.finish_reason }));
  }
  if (Array.isArray(res.content)) return [{ role: "assistant", content: res.content.map((p) => (p.type === "text" ? { type: "text", text: p.text } : p)) }];
  if (Array.isArray(res.output)) {
    return res.output.filter((o) => o.type === "message").map((o) => ({ role: o.role || "assistant", content: o.content }));
  }
  return [];
}

function renderPart(p) {
  if (p.type === "text" || p.type === "reasoning") {
    return h("div", { class: "part " + p.type }, p.type === "reasoning" ? h("small", {}, "reasoning") : null, p.content ?? "");
  }
  if (p.type === "tool_call") {
    return h("div", { class: "part tool-call" },
      h("div", { class: "tool-head" }, "⚙ ", h("strong", {}, p.name || "tool"), p.id ? h("small", {}, " " + p.id) : null),
      h("pre", {}, pretty(p.arguments ?? "")));
  }
  if (p.type === "tool_call_response") {
    return h("div", { class: "part tool-result" },
      h("div", { class: "tool-head" }, "↩ result", p.id ? h("small", {}, " " + p.id) : null),
      h("pre", {}, pretty(p.response ?? "")));
  }
  return h("div", { class: "part other" }, h("small", {}, p.type), h("pre", {}, pretty(p.content ?? p)));
}

function bubble(message) {
  const role = message.role || "assistant";
  return h("div", { class: "msg " + role },
    h("div", { class: "role" }, role, message.finish_reason ? h("small", {}, " · " + message.finish_reason) : null),
    partsOf(message).map(renderPart));
}

function toolCard(s) {
  const a = s.attributes || {};
  const name = a["gen_ai.tool.name"] || a["tfy.mcp.tool"] || s.name;
  const server = a["tfy.mcp.server"] || a["mcp.server.name"];
  const args = a["gen_ai.tool.call.arguments"] ?? a["mcp.request.params"];
  const result = a["gen_ai.tool.call.result"] ?? a["mcp.response.result"];
  return h("div", { class: "msg tool" + (s.status_code === 2 ? " failed" : "") },
    h("div", { class: "role" }, "tool · ", h("strong", {}, name), server ? h("small", {}, " on " + server) : null,
      h("small", {}, " · " + ms(s.duration_us / 1000))),
    args !== undefined ? h("div", { class: "part tool-call" }, h("div", { class: "tool-head" }, "arguments"), h("pre", {}, pretty(args))) : null,
    result !== undefined ? h("div", { class: "part tool-result" }, h("div", { class: "tool-head" }, "result"), h("pre", {}, pretty(result))) : null,
    s.status_message ? h("div", { class: "errtext" }, s.status_message) : null);
}

function conversation(detail, flat) {
  const spans = flat.map((f) => f.span).sort((a, b) => a.ts - b.ts);
  const calls = spans.filter(isModelCall);
  const out = [];
  const withMessages = calls.filter((c) => c.attributes["gen_ai.input.messages"] || c.attributes["gen_ai.output.messages"]);
  if (withMessages.length) {
    const first = withMessages[0].attributes;
    const sys = parseJSON(first["gen_ai.system_instructions"], null);
    if (Array.isArray(sys)) out.push(bubble({ role: "system", parts: sys }));
    for (const m of parseJSON(first["gen_ai.input.messages"], []) || []) out.push(bubble(m));
    const seen = new Set(withMessages);
    for (const s of spans) {
      if (seen.has(s)) for (const m of parseJSON(s.attributes["gen_ai.output.messages"], []) || []) out.push(bubble(m));
      else if (isToolSpan(s)) out.push(toolCard(s));
    }
  } else {
    for (const m of messagesFromBody(detail.request.input)) out.push(bubble(m));
    for (const s of spans) if (isToolSpan(s)) out.push(toolCard(s));
    for (const m of outputsFromBody(detail.request.output)) out.push(bubble(m));
  }
  return out;
}

// --- waterfall ------------------------------------------------------------------------------

function waterfall(flat, onSelect) {
  const t0 = Math.min(...flat.map((f) => f.span.ts));
  const t1 = Math.max(...flat.map((f) => f.span.ts + f.span.duration_us));
  const total = Math.max(1, t1 - t0);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { class: "tick", style: { left: f * 100 + "%" } }, ms((total * f) / 1000)));
  const rows = flat.map(({ span, depth }) => {
    const left = ((span.ts - t0) / total) * 100;
    const width = Math.max(0.4, (span.duration_us / total) * 100);
    const kind = KIND[span.kind] || "internal";
    const failed = span.status_code === 2;
    const el = h("div", { class: "wf-row", "data-span-id": span.span_id, tabindex: 0,
      onclick: () => onSelect(span, el), onkeydown: (e) => { if (e.key === "Enter") onSelect(span, el); } },
      h("div", { class: "wf-name", style: { "padding-left": 8 + depth * 16 + "px" } },
        h("span", { class: "kind " + kind }, kind), span.name),
      h("div", { class: "wf-track" },
        h("div", { class: "bar " + kind + (isToolSpan(span) ? " tool" : "") + (failed ? " failed" : ""), style: { left: left + "%", width: width + "%" } }),
        // The duration sits after the bar, or before it when the bar reaches the right edge.
        left + width > 85
          ? h("span", { class: "wf-dur before", style: { right: 100 - left + "%" } }, ms(span.duration_us / 1000))
          : h("span", { class: "wf-dur", style: { left: left + width + "%" } }, ms(span.duration_us / 1000))));
    return el;
  });
  return h("div", { class: "waterfall", id: "waterfall" },
    h("div", { class: "wf-row wf-axis" }, h("div", { class: "wf-name" }, "span"), h("div", { class: "wf-track" }, ticks)),
    rows);
}

function attributesTable(span) {
  const entries = Object.entries(span.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  return h("div", { class: "span-detail", id: "span-detail" },
    h("h3", {}, span.name, h("small", {}, ` ${KIND[span.kind] || ""} · ${ms(span.duration_us / 1000)} · ${span.span_id}`)),
    span.status_message ? h("p", { class: "errtext" }, span.status_message) : null,
    h("table", { class: "attrs" }, entries.map(([k, v]) => {
      const text = typeof v === "string" ? v : JSON.stringify(v);
      const long = text.length > 160 || text.startsWith("{") || text.startsWith("[");
      return h("tr", {}, h("th", {}, k), h("td", {}, long ? h("pre", {}, pretty(v)) : text));
    })));
}

export async function renderTrace(main, traceId) {
  main.replaceChildren(h("p", { class: "muted" }, "Loading trace…"));
  let detail;
  try {
    detail = await api.trace(traceId);
  } catch (err) {
    main.replaceChildren(h("section", { class: "card" }, h("a", { href: "#/requests" }, "← Requests"), h("p", { class: "error" }, err.message)));
    return null;
  }
  const r = detail.request;
  const flat = flatten(detail.spans);
  const detailBox = h("div", { id: "span-box" });
  const select = (span, el) => {
    for (const x of main.querySelectorAll(".wf-row.selected")) x.classList.remove("selected");
    if (el) el.classList.add("selected");
    detailBox.replaceChildren(attributesTable(span));
  };
  const convo = conversation(detail, flat);
  const cls = statusClass(r.status, r.error_code);
  const stat = (label, value, id) => h("div", { class: "stat", id }, h("span", {}, label), h("strong", {}, value));
  main.replaceChildren(
    h("section", { class: "card trace-head" },
      h("a", { href: "#/requests", class: "back" }, "← Requests"),
      h("h2", {}, h("span", { class: "status " + cls }, r.status || "–"), " ", r.model || r.span_type,
        r.target && r.target !== r.model ? h("small", {}, " → " + r.target) : null),
      h("div", { class: "muted mono", id: "trace-id" }, r.trace_id, " · ", when(r.time), " · ", r.span_type, " · ", r.subject),
      r.error_message ? h("p", { class: "errtext" }, r.error_code, ": ", r.error_message) : null,
      h("div", { class: "stats" },
        stat("Latency", ms(r.latency_ms)), stat("TTFT", r.ttft_ms === null ? "–" : ms(r.ttft_ms)),
        stat("Input tokens", int(r.input_tokens)), stat("Output tokens", int(r.output_tokens)),
        r.cached_tokens ? stat("Cached", int(r.cached_tokens)) : null,
        r.reasoning_tokens ? stat("Reasoning", int(r.reasoning_tokens)) : null,
        stat("Cost", usd(r.cost_usd)), stat("Spans", int(r.span_count)),
        r.tool_calls ? stat("Tool calls", int(r.tool_calls)) : null)),
    h("section", { class: "card" }, h("h2", {}, "Waterfall"), waterfall(flat, select), detailBox),
    h("section", { class: "card" }, h("h2", {}, "Conversation"),
      convo.length ? h("div", { class: "conversation", id: "conversation" }, convo)
        : h("p", { class: "muted", id: "conversation" }, "No messages recorded for this request (request data may be excluded).")),
    h("section", { class: "card" }, h("h2", {}, "Raw bodies"),
      h("details", {}, h("summary", {}, "Request"), h("pre", { class: "raw", id: "raw-input" }, pretty(r.input || ""))),
      h("details", {}, h("summary", {}, "Response"), h("pre", { class: "raw", id: "raw-output" }, pretty(r.output || "")))),
  );
  const firstCall = flat.find((f) => isModelCall(f.span)) || flat[0];
  if (firstCall) select(firstCall.span, main.querySelector(`.wf-row[data-span-id="${firstCall.span.span_id}"]`));
  return null;
}
