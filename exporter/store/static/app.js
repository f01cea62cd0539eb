// The shell: who is signed in, the banner, the sign-in dialog and a hash router over three pages.
import { api, setUnauthorizedHandler } from "./api.js";
import { renderDashboard } from "./dashboard.js";
import { renderLog } from "./log.js";
import { renderTrace } from "./trace.js";
import { h } from "./util.js";

const main = document.getElementById("main");
let me = null;
let cleanup = null; // the current page's timers

function showSignIn() {
  const dialog = document.getElementById("signin");
  if (!dialog.open) dialog.showModal();
  document.getElementById("credential").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("credential");
  const error = document.getElementById("signin-error");
  error.hidden = true;
  try {
    me = await api.signIn(input.value);
    input.value = ""; // the cookie is the session from now on; forget the key
    document.getElementById("signin").close();
    renderWho();
    route();
  } catch (err) {
    input.value = "";
    error.textContent = err.status === 401 ? "That key or token was not accepted." : err.message;
    error.hidden = false;
  }
}

function renderWho() {
  const who = document.getElementById("who");
  who.replaceChildren();
  const banner = document.getElementById("banner");
  banner.hidden = true;
  if (!me) return;
  if (!me.auth) {
    banner.replaceChildren(
      h("strong", {}, "Authentication is off. "),
      "Every request from every caller is visible here. Add an auth section to the gateway config to restrict it.",
    );
    banner.id = "banner";
    banner.dataset.kind = "auth-off";
    banner.hidden = false;
  } else if (!me.store) {
    banner.replaceChildren(h("strong", {}, "No trace store here. "), me.store_reason || "");
    banner.dataset.kind = "no-store";
    banner.hidden = false;
  }
  if (me.auth) {
    who.append(
      h("span", { class: "subject", id: "who-subject" }, me.subject),
      me.admin ? h("span", { class: "pill admin" }, "admin") : h("span", { class: "pill" }, "own traces"),
      h("button", { class: "link", id: "signout", onclick: async () => {
        await api.signOut().catch(() => {});
        me = null;
        renderWho();
        main.replaceChildren();
        showSignIn();
      } }, "Sign out"),
    );
  } else if (me.engine) {
    who.append(h("span", { class: "pill" }, me.engine));
  }
}

function setNav(name) {
  for (const id of ["requests", "dashboard"]) {
    document.getElementById("nav-" + id).classList.toggle("active", id === name);
  }
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!me) return;
  const hash = location.hash.replace(/^#/, "") || "/requests";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (path.startsWith("/trace/")) {
    setNav("requests");
    cleanup = await renderTrace(main, decodeURIComponent(path.slice(7)));
  } else if (path === "/dashboard") {
    setNav("dashboard");
    cleanup = await renderDashboard(main, params, me);
  } else {
    setNav("requests");
    cleanup = await renderLog(main, params, me);
  }
}

async function start() {
  document.getElementById("signin-form").addEventListener("submit", signIn);
  setUnauthorizedHandler(() => { me = null; renderWho(); showSignIn(); });
  window.addEventListener("hashchange", route);
  try {
    me = await api.me();
  } catch (err) {
    if (err.status !== 401) main.replaceChildren(h("p", { class: "error" }, err.message));
    return;
  }
  renderWho();
  route();
}

start();
