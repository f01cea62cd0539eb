// The dashboard: exact totals, series over time, and breakdowns by model and by user.
import { api } from "./api.js";
import { chart } from "./chart.js";
import { h, int, ms, usd } from "./util.js";

const RANGES = [["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"]];
const REFRESH_MS = 10000;

// "2.6 / 7.1 ms" rather than two units
function pair(a, b) {
  if (a === null || a === undefined) return "–";
  const [x, unit] = ms(a).split(" ");
  const [y, unitB] = ms(b).split(" ");
  return unit === unitB ? `${x} / ${y} ${unit}` : `${ms(a)} / ${ms(b)}`;
}

// Every bucket of the range, empty ones as zeros (percentiles as gaps), so the axis is time.
function zeroFilled(stats) {
  const step = stats.bucket_s * 1000;
  const end = stats.until ? new Date(stats.until).getTime() : Date.now();
  const start = Math.floor(new Date(stats.since).getTime() / step) * step;
  const byTime = new Map(stats.series.map((s) => [new Date(s.time).getTime(), s]));
  const out = [];
  for (let t = start; t <= end && out.length < 500; t += step) {
    out.push(byTime.get(t) || { time: new Date(t).toISOString(), requests: 0, errors: 0, input_tokens: 0, output_tokens: 0,
      cost_usd: 0, latency_p50: null, latency_p95: null, latency_p99: null, ttft_p50: null, ttft_p95: null, ttft_p99: null });
  }
  return out;
}

function compact(v) {
  if (v >= 1e6) return +(v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return +(v / 1e3).toFixed(1) + "k";
  return String(+v.toFixed(2));
}

function sum(rows, key) { return rows.reduce((s, r) => s + (r[key] || 0), 0); }

function kpi(id, label, value, raw, sub) {
  return h("div", { class: "kpi", id, "data-value": raw }, h("span", { class: "label" }, label), h("strong", {}, value), sub ? h("small", {}, sub) : null);
}

function breakdown(title, id, key, rows) {
  const sorted = [...rows].sort((a, b) => b.requests - a.requests).slice(0, 15);
  const maxReq = Math.max(1, ...sorted.map((r) => r.requests));
  return h("div", { class: "card breakdown", id },
    h("h2", {}, title),
    h("table", { class: "grid-table" },
      h("thead", {}, h("tr", {}, [key === "subject" ? "User" : "Model", "Requests", "Errors", "Tokens", "Cost", "p50", "p95"].map((t) => h("th", {}, t)))),
      h("tbody", {}, sorted.map((r) => h("tr", {},
        h("td", { class: "name" }, h("a", { href: `#/requests?${new URLSearchParams({ [key]: r[key] })}` }, r[key] || "(none)"),
          h("div", { class: "meter" }, h("span", { style: { width: (100 * r.requests) / maxReq + "%" } }))),
        h("td", { class: "num" }, int(r.requests)),
        h("td", { class: "num" + (r.errors ? " warn-text" : "") }, int(r.errors)),
        h("td", { class: "num" }, int(r.input_tokens + r.output_tokens)),
        h("td", { class: "num" }, usd(r.cost_usd)),
        h("td", { class: "num" }, ms(r.latency_p50)),
        h("td", { class: "num" }, ms(r.latency_p95)))))));
}

export async function renderDashboard(main, params, me) {
  const range = params.get("since") || "24h";
  const picker = h("div", { class: "range", id: "range" }, RANGES.map(([v, t]) =>
    h("a", { href: "#/dashboard?since=" + v, class: v === range ? "active" : "" }, t)));
  const body = h("div", { id: "dash-body" }, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("div", { class: "dash-head" }, h("h1", {}, "Dashboard"), h("span", { class: "muted" }, me.admin ? "all callers" : "your requests"), h("span", { class: "spacer" }), picker), body);

  async function load() {
    const base = new URLSearchParams({ since: range });
    let all, byModel, byUser;
    try {
      [all, byModel, byUser] = await Promise.all([
        api.stats(base),
        api.stats(new URLSearchParams({ since: range, group_by: "model" })),
        api.stats(new URLSearchParams({ since: range, group_by: "subject" })),
      ]);
    } catch (err) {
      body.replaceChildren(h("p", { class: "error" }, err.message));
      return;
    }
    const t = all.totals[0] || {};
    const requests = t.requests || 0;
    const tokensIn = t.input_tokens || 0;
    const tokensOut = t.output_tokens || 0;
    const series = zeroFilled(all);
    const times = series.map((s) => new Date(s.time));
    const col = (k) => series.map((s) => s[k]);
    body.replaceChildren(
      h("div", { class: "kpis" },
        kpi("kpi-requests", "Requests", int(requests), requests),
        kpi("kpi-errors", "Errors", int(t.errors || 0), t.errors || 0, requests ? ((100 * (t.errors || 0)) / requests).toFixed(1) + "% of requests" : ""),
        kpi("kpi-tokens", "Tokens", int(tokensIn + tokensOut), tokensIn + tokensOut, `${int(tokensIn)} in · ${int(tokensOut)} out`),
        kpi("kpi-cost", "Cost", usd(t.cost_usd || 0), t.cost_usd || 0),
        kpi("kpi-latency", "Latency p50 / p95", pair(t.latency_p50, t.latency_p95), t.latency_p50 ?? "", `p99 ${ms(t.latency_p99)}`),
        kpi("kpi-ttft", "TTFT p50 / p95", pair(t.ttft_p50, t.ttft_p95), t.ttft_p50 ?? "", `p99 ${ms(t.ttft_p99)}`)),
      h("div", { class: "charts" },
        chart({ id: "chart-requests", title: "Requests", times, kind: "bars", format: int, axisFormat: compact, series: [
          { name: "ok", cls: "s-ok", values: series.map((s) => s.requests - s.errors) },
          { name: "errors", cls: "s-err", values: col("errors") }] }),
        chart({ id: "chart-tokens", title: "Tokens", times, kind: "bars", format: int, axisFormat: compact, series: [
          { name: "input", cls: "s-in", values: col("input_tokens") },
          { name: "output", cls: "s-out", values: col("output_tokens") }] }),
        chart({ id: "chart-latency", title: "Latency", times, format: (v) => ms(v), series: [
          { name: "p50", cls: "s-p50", values: col("latency_p50") },
          { name: "p95", cls: "s-p95", values: col("latency_p95") },
          { name: "p99", cls: "s-p99", values: col("latency_p99") }] }),
        chart({ id: "chart-ttft", title: "Time to first token", times, format: (v) => ms(v), series: [
          { name: "p50", cls: "s-p50", values: col("ttft_p50") },
          { name: "p95", cls: "s-p95", values: col("ttft_p95") },
          { name: "p99", cls: "s-p99", values: col("ttft_p99") }] }),
        chart({ id: "chart-cost", title: "Cost (USD)", times, kind: "bars", format: (v) => usd(v), series: [
          { name: "cost", cls: "s-cost", values: col("cost_usd") }] })),
      h("div", { class: "two" },
        breakdown("By model", "by-model", "model", byModel.totals),
        breakdown("By user", "by-user", "subject", byUser.totals)),
      h("p", { class: "muted small" }, `Buckets of ${all.bucket_s >= 3600 ? all.bucket_s / 3600 + " h" : all.bucket_s / 60 + " min"} · sum of requests ${int(sum(series, "requests"))}`),
    );
  }
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
  return () => clearInterval(timer);
}
