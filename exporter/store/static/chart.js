// A small SVG line / stacked-bar chart with a legend and hover values; no library.
import { h } from "./util.js";

const W = 640;
const H = 200;
const PAD = { l: 56, r: 12, t: 12, b: 26 };

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// series: [{ name, cls, values: [number|null] }], times: [Date]; kind: "line" | "bars"
export function chart({ id, title, times, series, kind = "line", format = String, axisFormat = format }) {
  const n = times.length;
  const stacked = kind === "bars";
  const totals = times.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const max = niceMax(stacked ? Math.max(0, ...totals) : Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
  const x = (i) => PAD.l + (n <= 1 ? (W - PAD.l - PAD.r) / 2 : (i * (W - PAD.l - PAD.r)) / (n - 1));
  const y = (v) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title });
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    svg.append(h("svg:line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }),
      h("svg:text", { x: PAD.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, axisFormat(v)));
  }
  const labelEvery = Math.max(1, Math.ceil(n / 6));
  const days = n > 1 && times[n - 1] - times[0] > 2 * 86400000;
  times.forEach((t, i) => {
    if (i % labelEvery) return;
    const label = days ? t.toLocaleDateString("en-CA", { month: "2-digit", day: "2-digit" })
      : t.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
    svg.append(h("svg:text", { x: x(i), y: H - 8, class: "axis", "text-anchor": "middle" }, label));
  });
  if (stacked) {
    const bw = Math.max(2, Math.min(24, ((W - PAD.l - PAD.r) / Math.max(1, n)) * 0.7));
    times.forEach((_, i) => {
      let base = 0;
      for (const s of series) {
        const v = s.values[i] || 0;
        if (v > 0) svg.append(h("svg:rect", { x: x(i) - bw / 2, y: y(base + v), width: bw, height: y(base) - y(base + v), class: "bar " + s.cls },
          h("svg:title", {}, `${s.name}: ${format(v)}`)));
        base += v;
      }
    });
  } else {
    for (const s of series) {
      const pts = s.values.map((v, i) => (v === null ? null : `${x(i)},${y(v)}`)).filter(Boolean);
      if (pts.length > 1) svg.append(h("svg:polyline", { points: pts.join(" "), class: "line " + s.cls }));
      s.values.forEach((v, i) => {
        if (v !== null) svg.append(h("svg:circle", { cx: x(i), cy: y(v), r: n > 40 ? 1.5 : 2.5, class: "pt " + s.cls }, h("svg:title", {}, `${s.name}: ${format(v)}`)));
      });
    }
  }
  if (!n) svg.append(h("svg:text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no data in this range"));
  return h("div", { class: "chart", id },
    h("div", { class: "chart-head" }, h("h3", {}, title),
      h("div", { class: "legend" }, series.map((s) => h("span", { class: "key " + s.cls }, s.name)))),
    svg);
}
