// Calls to /api/v1. The session cookie (HttpOnly) travels by itself; no credential lives here.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.param = body?.error?.param;
    this.code = body?.error?.code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => null);
  if (res.status === 401 && path !== "/api/v1/session") onUnauthorized();
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const api = {
  me: () => call("GET", "/api/v1/me"),
  signIn: (credential) => call("POST", "/api/v1/session", { credential }),
  signOut: () => call("DELETE", "/api/v1/session"),
  traces: (params) => call("GET", "/api/v1/traces?" + params.toString()),
  trace: (id) => call("GET", "/api/v1/traces/" + encodeURIComponent(id)),
  stats: (params) => call("GET", "/api/v1/stats?" + params.toString()),
  exportUrl: (params) => "/api/v1/traces/export?" + params.toString(),
};
