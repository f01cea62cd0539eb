// The request log: filters in the URL hash, newest first, live while on the first page.
import { api } from "./api.js";
import { ago, h, int, ms, statusClass, usd, when } from "./util.js";

const FILTERS = [
  ["since", "Since", "select", [["", "Any time"], ["15m", "15 min"], ["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"]]],
  ["model", "Model", "list"],
  ["target", "Target", "list"],
  ["subject", "User", "list"],
  ["team", "Team", "text"],
  ["status", "Status", "select", [["", "Any"], ["ok", "OK"], ["error", "Errors"], ["4xx", "4xx"], ["5xx", "5xx"], ["429", "429"]]],
  ["span_type", "Type", "select", [["", "Any"], ["ChatCompletion", "Chat"], ["Completion", "Completion"], ["Embedding", "Embedding"], ["AgentResponse", "Agent"], ["MCPGateway", "MCP"]]],
  ["error_code", "Error code", "text"],
  ["min_latency_ms", "Min latency ms", "number"],
  ["q", "Search text", "search"],
];
const LIVE_MS = 3000;

function filterParams(form) {
  const p = new URLSearchParams();
  for (const [name] of FILTERS) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  const meta = form.elements.metadata.value.trim();
  if (meta.includes("=")) {
    const [k, ...rest] = meta.split("=");
    p.set("metadata." + k.trim(), rest.join("=").trim());
  }
  return p;
}

function filterBar(params, onChange, suggestions) {
  const form = h("form", { class: "filters", id: "filters", onsubmit: (e) => { e.preventDefault(); onChange(); } });
  for (const [name, label, kind, options] of FILTERS) {
    let input;
    if (kind === "select") {
      input = h("select", { name, id: "f-" + name, onchange: onChange },
        options.map(([v, t]) => h("option", { value: v, selected: params.get(name) === v }, t)));
    } else {
      input = h("input", {
        name, id: "f-" + name, type: kind === "number" ? "number" : "text", value: params.get(name) || "",
        list: kind === "list" ? "dl-" + name : null, placeholder: kind === "search" ? "in prompts and answers" : "",
        onchange: onChange,
      });
    }
    form.append(h("label", { class: "field" }, h("span", {}, label), input));
    if (kind === "list") form.append(h("datalist", { id: "dl-" + name }, (suggestions[name] || []).map((v) => h("option", { value: v }))));
  }
  const metaValue = [...params.entries()].filter(([k]) => k.startsWith("metadata.")).map(([k, v]) => `${k.slice(9)}=${v}`)[0] || "";
  form.append(h("label", { class: "field" }, h("span", {}, "Metadata"),
    h("input", { name: "metadata", id: "f-metadata", placeholder: "key=value", value: metaValue, onchange: onChange })));
  return form;
}

function row(r, fresh) {
  const cls = statusClass(r.status, r.error_code);
  return h("tr", { class: "row" + (fresh ? " fresh" : ""), "data-trace-id": r.trace_id, tabindex: 0,
    onclick: () => { location.hash = "#/trace/" + r.trace_id; },
    onkeydown: (e) => { if (e.key === "Enter") location.hash = "#/trace/" + r.trace_id; } },
    h("td", { class: "time", title: r.time }, when(r.time), h("small", {}, ago(r.time))),
    h("td", {}, h("span", { class: "status " + cls }, r.status || "–"), r.error_code ? h("small", { class: "code" }, r.error_code) : null),
    h("td", { class: "model" }, r.model || "–", r.target && r.target !== r.model ? h("small", {}, "→ " + r.target) : null),
    h("td", { class: "prompt" }, r.error_message && r.status >= 400 ? h("span", { class: "errtext" }, r.error_message) : r.preview || h("span", { class: "muted" }, r.span_type)),
    h("td", { class: "subject" }, r.subject || "–"),
    h("td", { class: "num" }, ms(r.latency_ms)),
    h("td", { class: "num" }, r.ttft_ms === null ? "–" : ms(r.ttft_ms)),
    h("td", { class: "num" }, int(r.input_tokens), h("small", {}, " / " + int(r.output_tokens))),
    h("td", { class: "num" }, usd(r.cost_usd)),
  );
}

export async function renderLog(main, params, me) {
  let timer = null;
  let cursor = null;
  let newest = null;
  const suggestions = {};
  try {
    const since = new URLSearchParams({ since: "7d" });
    for (const g of ["model", "target", "subject"]) {
      if (g === "subject" && !me.admin) continue;
      since.set("group_by", g);
      suggestions[g] = (await api.stats(since)).totals.map((t) => t[g]).filter(Boolean);
    }
  } catch { /* suggestions are a convenience */ }

  const onChange = () => {
    const p = filterParams(form);
    location.hash = "#/requests" + (p.toString() ? "?" + p.toString() : "");
  };
  const form = filterBar(params, onChange, suggestions);
  const body = h("tbody", { id: "log-rows" });
  const more = h("button", { id: "more", class: "secondary", hidden: true, onclick: () => load(false) }, "Older requests");
  const live = h("span", { class: "live", id: "live" }, h("span", { class: "dot" }), "live");
  const count = h("span", { class: "muted", id: "log-count" });
  const error = h("p", { class: "error", hidden: true, id: "log-error" });
  const exportLink = h("a", { class: "secondary button", href: api.exportUrl(params), download: "traces.jsonl" }, "Export JSONL");
  main.replaceChildren(
    h("section", { class: "card" }, form),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Requests"), live, count, h("span", { class: "spacer" }), exportLink),
      error,
      h("table", { class: "log", id: "log-table" },
        h("thead", {}, h("tr", {}, ["Time", "Status", "Model", "Prompt", "User", "Latency", "TTFT", "Tokens in / out", "Cost"].map((t) => h("th", {}, t)))),
        body),
      h("div", { class: "empty", id: "log-empty", hidden: true }, "No requests match. Send one through the gateway and it appears here within a second or two."),
      more),
  );

  async function load(first) {
    const p = new URLSearchParams(params);
    if (!first && cursor) p.set("cursor", cursor);
    try {
      const page = await api.traces(p);
      error.hidden = true;
      if (first) {
        const known = new Set([...body.children].map((tr) => tr.dataset.traceId));
        const fresh = newest !== null;
        body.replaceChildren(...page.data.map((r) => row(r, fresh && !known.has(r.trace_id))));
        newest = page.data[0]?.trace_id ?? newest;
      } else {
        body.append(...page.data.map((r) => row(r, false)));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      document.getElementById("log-empty").hidden = body.children.length > 0;
      count.textContent = `${int(body.children.length)} shown`;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  await load(true);
  // Live: refresh the first page while the user has not paged further.
  timer = setInterval(() => { if (!document.hidden && body.children.length <= 50) load(true); }, LIVE_MS);
  return () => clearInterval(timer);
}
