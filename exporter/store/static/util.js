// DOM and formatting helpers. Text goes in with textContent only: stored data never becomes markup.

export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "style") for (const [p, val] of Object.entries(v)) el.style.setProperty(p, val);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
export const int = (n) => (n === null || n === undefined ? "–" : intFmt.format(n));

export function usd(n) {
  if (n === null || n === undefined) return "–";
  if (n === 0) return "$0";
  if (Math.abs(n) < 0.01) return "$" + n.toFixed(6).replace(/0+$/, "");
  return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
}

export function ms(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1) return n.toFixed(2) + " ms";
  if (n < 1000) return n.toFixed(n < 10 ? 1 : 0) + " ms";
  return (n / 1000).toFixed(n < 10000 ? 2 : 1) + " s";
}

export function when(iso) {
  const d = new Date(iso);
  const today = new Date();
  const time = d.toLocaleTimeString("en-GB", { hour12: false });
  if (d.toDateString() === today.toDateString()) return time;
  return d.toLocaleDateString("en-CA") + " " + time;
}

export function ago(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return Math.floor(s) + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

export function statusClass(status, errorCode) {
  if (status >= 500) return "bad";
  if (status >= 400 || errorCode) return "warn";
  return "ok";
}

export function parseJSON(text, fallback = null) {
  if (typeof text !== "string") return text ?? fallback;
  try { return JSON.parse(text); } catch { return fallback; }
}

export function pretty(value) {
  const parsed = typeof value === "string" ? parseJSON(value, value) : value;
  return typeof parsed === "string" ? parsed : JSON.stringify(parsed, null, 2);
}
