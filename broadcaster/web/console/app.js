// The console's entry point: login, the page's frame (who is logged in, language, tabs) and the
// screens. Everything runs against the controller's own API on this origin.

import { api, setCsrf, csrf, whenLoggedOut } from "./api.js";
import { h, fill, flash, field } from "./dom.js";
import { t, getLang, setLang, setTimeZone, errorText } from "./i18n.js";
import { LiveState } from "./state.js";
import { BroadcastView } from "./broadcast-view.js";
import { historyView, auditView, usersView, accountView, schedulesView } from "./records-view.js";

const root = document.getElementById("app");
let me = null;
let state = null;
let view = null; // the BroadcastView (kept while logged in: it holds the page and the choice)
let tab = "broadcast";
let feedListener = null;

function langButton(after) {
  return h("button", { type: "button", class: "lang", id: "lang", lang: getLang() === "en" ? "zh-CN" : "en",
    "aria-label": t("language_label"), onclick: () => { setLang(getLang() === "en" ? "zh-CN" : "en"); after(); } },
  t("language"));
}

function loginScreen(message) {
  document.title = t("app_title");
  const name = h("input", { type: "text", id: "login-name", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pw = h("input", { type: "password", id: "login-password", name: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "error", id: "login-error", role: "alert" }, message || "");
  const go = h("button", { type: "submit", class: "primary big", id: "login" }, t("login"));
  const form = h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    go.disabled = true;
    go.textContent = t("logging_in");
    err.textContent = "";
    try {
      const r = await api("POST", "/api/login", { name: name.value.trim(), password: pw.value });
      setCsrf(r.csrf);
      await start();
    } catch (ex) {
      err.textContent = errorText(ex);
      go.disabled = false;
      go.textContent = t("login");
    }
  } }, h("h1", {}, t("login_title")), field(t("name"), name), field(t("password"), pw), err, go);
  fill(root, h("main", { class: "login-page" }, h("div", { class: "login-top" }, langButton(() => loginScreen())), form));
  name.focus();
}

const TABS = [
  ["broadcast", "tab_broadcast", () => true],
  ["history", "tab_history", () => true],
  ["schedules", "tab_schedules", () => true],
  ["audit", "tab_audit", () => true],
  ["users", "tab_users", (u) => u.role === "admin"],
  ["account", "tab_account", () => true],
];

function shell() {
  document.title = `${t("app_title")} · ${me.scope_name}`;
  const status = h("span", { class: "feed", id: "feed", role: "status" });
  const nav = h("nav", { class: "tabs", "aria-label": t("app_title") },
    TABS.filter(([, , ok]) => ok(me)).map(([id, label]) => h("button", { type: "button",
      class: "tab", id: `tab-${id}`, "aria-current": id === tab ? "page" : "false",
      onclick: () => { tab = id; shell(); } }, t(label))));
  const main = h("main", { id: "main" });
  fill(root,
    h("header", { class: "top" },
      h("div", { class: "brand" }, h("img", { src: "/console/icon.svg", alt: "", width: "28", height: "28" }),
        h("span", {}, t("app_title"))),
      h("div", { class: "who" }, h("span", { class: "user", id: "user" }, me.name),
        h("span", { class: "scope", id: "scope" }, `${me.scope_name} · ${t(`role_${me.role}`)}`)),
      h("div", { class: "top-actions" }, status, langButton(() => { view?.destroy(); view = null; shell(); }),
        h("button", { type: "button", id: "logout", onclick: logout }, t("logout")))),
    h("div", { id: "flash", class: "flash", hidden: true }),
    nav, main);
  const showFeed = () => {
    status.textContent = state.feedOk ? "" : t("live_feed_off");
    status.hidden = state.feedOk;
  };
  if (feedListener) state.removeEventListener("change", feedListener);
  feedListener = showFeed;
  state.addEventListener("change", showFeed);
  showFeed();
  if (!view) view = new BroadcastView(state, me);
  if (tab === "broadcast") fill(main, view.render());
  else if (tab === "history") fill(main, historyView(state));
  else if (tab === "schedules") fill(main, schedulesView(state, () => [...view.selection]));
  else if (tab === "audit") fill(main, auditView(state));
  else if (tab === "users") fill(main, usersView(state, me));
  else fill(main, accountView(me));
}

async function start() {
  me = await api("GET", "/api/me");
  state?.stop();
  state = new LiveState();
  await state.load();
  setTimeZone(state.tree.timezone);
  state.start();
  view = null;
  tab = "broadcast";
  shell();
}

async function logout() {
  try { await api("POST", "/api/logout"); } catch (e) { console.warn("logout", e.message); }
  ended();
}

function ended(message) {
  view?.destroy();
  view = null;
  if (feedListener) state?.removeEventListener("change", feedListener);
  feedListener = null;
  state?.stop();
  state = null;
  me = null;
  setCsrf("");
  loginScreen(message);
}

whenLoggedOut(() => { if (me) ended(t("error_generic", { msg: errorText({ code: "unauthorized" }) })); });

async function boot() {
  if (!csrf()) { loginScreen(); return; }
  try {
    await start();
  } catch (e) {
    if (e.status === 401) ended();
    else {
      loginScreen(errorText(e));
      flash(errorText(e), "error");
    }
  }
}

boot();
