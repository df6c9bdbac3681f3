// The other screens: broadcast history, the audit log, users (admins), the account (password)
// and schedules. Each loads what it shows when opened; the controller filters by scope.

import { api } from "./api.js";
import { h, fill, flash, field, table } from "./dom.js";
import { t, errorText, fmtTime } from "./i18n.js";
import { describeSource } from "./broadcast-view.js";
import { findZone } from "./state.js";

function failBox(el, e) {
  fill(el, h("p", { class: "error", role: "alert" }, errorText(e)));
}

function zoneName(state, id) {
  const z = findZone(state.tree, id);
  if (z) return z.name;
  const g = (state.tree.groups || []).find((x) => x.id === id);
  return g ? g.name : (state.info.get(id)?.name || id);
}

/** Broadcast history: newest first, with the outcome per speaker on demand. */
export function historyView(state) {
  const el = h("section", { class: "panel wide", "aria-labelledby": "hist-h" });
  const body = h("div", {}, t("loading"));
  const load = async () => {
    try {
      const r = await api("GET", "/api/broadcasts", undefined, { limit: 100 });
      fill(body, r.broadcasts.length ? table(
        [t("when"), t("what"), t("priority"), t("by"), t("targets"), t("state"), t("result"), ""],
        r.broadcasts.map((b) => h("tr", { dataset: { broadcast: b.id } },
          h("td", {}, fmtTime(b.created_at)), h("td", {}, describeSource(b)),
          h("td", {}, h("span", { class: `badge pr-${b.priority}` }, t(`pr_${b.priority}`))),
          h("td", {}, b.owner), h("td", {}, b.targets.map((x) => zoneName(state, x)).join("、")),
          h("td", {}, t(`bs_${b.state}`)),
          h("td", {}, t("heard_of", { heard: b.summary.heard, total: b.summary.speakers })),
          h("td", {}, h("button", { type: "button", class: "small",
            onclick: () => details(state, b) }, t("details"))))),
        "history") : h("p", { class: "muted" }, t("none_active")));
    } catch (e) {
      failBox(body, e);
    }
  };
  fill(el, h("div", { class: "panel-head" }, h("h2", { id: "hist-h" }, t("tab_history")),
    h("button", { type: "button", class: "small", onclick: load }, t("refresh"))), body);
  load();
  return el;
}

function details(state, b) {
  const dlg = h("dialog", { class: "details", "aria-label": t("outcome_title") },
    h("h2", {}, `${describeSource(b)} · ${fmtTime(b.created_at)}`),
    b.error ? h("p", { class: "error" }, b.error) : null,
    table([t("speakers_title"), t("state"), ""], b.speakers.map((r) => [
      state.info.get(r.speaker)?.name || r.speaker, t(`ss_${r.state}`),
      r.cut_by ? `← ${r.cut_by}` : (r.error || "")])),
    h("form", { method: "dialog" }, h("button", { class: "primary" }, t("close"))));
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
}

/** The audit log rows touching the caller's scope. */
export function auditView(state) {
  const el = h("section", { class: "panel wide", "aria-labelledby": "audit-h" });
  const body = h("div", {}, t("loading"));
  const load = async () => {
    try {
      const r = await api("GET", "/api/audit", undefined, { limit: 200 });
      fill(body, table([t("when"), t("audit_actor"), t("audit_action"), t("targets"), t("audit_detail")],
        r.rows.map((row) => [fmtTime(row.at), row.actor, row.action,
          (row.targets || []).map((x) => zoneName(state, x)).join("、"),
          summarize(row.what, row.outcome)]), "audit"));
    } catch (e) {
      failBox(body, e);
    }
  };
  fill(el, h("div", { class: "panel-head" }, h("h2", { id: "audit-h" }, t("tab_audit")),
    h("button", { type: "button", class: "small", onclick: load }, t("refresh"))), body);
  load();
  return el;
}

function summarize(what, outcome) {
  const parts = [];
  for (const obj of [what, outcome]) {
    if (!obj || typeof obj !== "object") continue;
    for (const [k, v] of Object.entries(obj)) {
      if (v === null || v === undefined || typeof v === "object") continue;
      parts.push(`${k}: ${String(v).slice(0, 60)}`);
    }
  }
  return parts.join("; ");
}

function scopeOptions(zone, depth = 0) {
  const out = [h("option", { value: zone.id }, `${"　".repeat(depth)}${zone.name}`)];
  for (const c of zone.children || []) out.push(...scopeOptions(c, depth + 1));
  return out;
}

/** Users inside an admin's scope: list, add, delete. */
export function usersView(state, me) {
  const el = h("section", { class: "panel wide", "aria-labelledby": "users-h" });
  const list = h("div", {}, t("loading"));
  const load = async () => {
    try {
      const r = await api("GET", "/api/users");
      fill(list, table([t("name"), t("scope"), t("role"), ""], r.users.map((u) => [
        u.name, u.scope_name || u.scope, t(`role_${u.role}`),
        u.name === me.name ? "" : h("button", { type: "button", class: "danger small",
          onclick: async () => {
            if (!window.confirm(t("confirm_remove", { name: u.name }))) return;
            try {
              await api("DELETE", `/api/users/${encodeURIComponent(u.name)}`);
              flash(t("user_removed", { name: u.name }));
              load();
            } catch (e) { flash(errorText(e), "error"); }
          } }, t("remove"))]), "users"));
    } catch (e) {
      failBox(list, e);
    }
  };
  const name = h("input", { type: "text", id: "new-user", autocomplete: "off", required: true });
  const pw = h("input", { type: "password", id: "new-user-pw", autocomplete: "new-password", required: true });
  const scope = h("select", { id: "new-user-scope" }, scopeOptions(state.scope));
  const role = h("select", { id: "new-user-role" },
    h("option", { value: "operator" }, t("role_operator")), h("option", { value: "admin" }, t("role_admin")));
  const form = h("form", { class: "add-user", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/api/users", { name: name.value.trim(), password: pw.value,
        scope: scope.value, role: role.value });
      flash(t("user_added", { name: name.value.trim() }));
      name.value = "";
      pw.value = "";
      load();
    } catch (err) { flash(errorText(err), "error"); }
  } }, h("h3", {}, t("add_user")),
  h("div", { class: "row" }, field(t("name"), name), field(t("password"), pw),
    field(t("scope"), scope), field(t("role"), role)),
  h("button", { type: "submit", class: "primary" }, t("add_user")));
  fill(el, h("h2", { id: "users-h" }, t("users_title")), list, form);
  load();
  return el;
}

/** The caller's own account: who, where, and a password change. */
export function accountView(me) {
  const old = h("input", { type: "password", id: "pw-old", autocomplete: "current-password", required: true });
  const nw = h("input", { type: "password", id: "pw-new", autocomplete: "new-password", required: true });
  const nw2 = h("input", { type: "password", id: "pw-new2", autocomplete: "new-password", required: true });
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    if (nw.value !== nw2.value) { flash(t("password_mismatch"), "error"); return; }
    try {
      await api("POST", "/api/me/password", { old: old.value, new: nw.value });
      flash(t("password_changed"));
      form.reset();
    } catch (err) { flash(errorText(err), "error"); }
  } }, field(t("old_password"), old), field(t("new_password"), nw), field(t("new_password2"), nw2),
  h("button", { type: "submit", class: "primary" }, t("change_password")));
  return h("section", { class: "panel narrow", "aria-labelledby": "acct-h" },
    h("h2", { id: "acct-h" }, t("tab_account")),
    h("p", {}, `${me.name} · ${me.scope_name} · ${t(`role_${me.role}`)}`), form);
}

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function ruleText(w) {
  if (!w) return "";
  if (w.kind === "once") return `${t("k_once")} ${w.at}`;
  const times = (w.times || []).join(", ");
  if (w.kind === "daily") return `${t("k_daily")} ${times}`;
  if (w.kind === "weekly") return `${t("k_weekly")} ${(w.days || []).map((d) => t(`d_${d}`)).join("")} ${times}`;
  return `${w.kind} ${times || w.cron || ""}`;
}

/** Schedules in the caller's scope: list, pause/resume, delete, and a simple new one. */
export function schedulesView(state, getTargets) {
  const el = h("section", { class: "panel wide", "aria-labelledby": "sched-h" });
  const list = h("div", {}, t("loading"));
  let clips = [];
  const act = async (path, method = "POST") => {
    try { await api(method, path); load(); } catch (e) { flash(errorText(e), "error"); }
  };
  const load = async () => {
    try {
      const r = await api("GET", "/api/schedules");
      fill(list, r.schedules.length ? table(
        [t("title"), t("sched_kind"), t("targets"), t("sched_next"), ""],
        r.schedules.map((s) => [s.title, ruleText(s.when),
          s.targets.map((x) => zoneName(state, x)).join("、"),
          s.paused ? t("sched_paused") : (s.next || []).slice(0, 1).map((x) => fmtTime(x)).join(""),
          h("span", { class: "buttons" },
            h("button", { type: "button", class: "small", onclick: () => act(
              `/api/schedules/${encodeURIComponent(s.id)}/${s.paused ? "resume" : "pause"}`) },
            s.paused ? t("sched_resume") : t("sched_pause")),
            h("button", { type: "button", class: "small danger", onclick: () => act(
              `/api/schedules/${encodeURIComponent(s.id)}`, "DELETE") }, t("remove")))]), "schedules")
        : h("p", { class: "muted" }, t("sched_none")));
    } catch (e) {
      if (e.status === 404 || e.code === "no_scheduler") fill(list, h("p", { class: "muted" }, t("sched_unavailable")));
      else failBox(list, e);
    }
  };
  const title = h("input", { type: "text", id: "sched-title" });
  const kind = h("select", { id: "sched-kind" }, ["daily", "weekly", "once"].map((k) => h("option", { value: k }, t(`k_${k}`))));
  const at = h("input", { type: "datetime-local", id: "sched-at" });
  const times = h("input", { type: "text", id: "sched-times", value: "08:00" });
  const days = DAYS.map((d) => h("label", { class: "check day" }, h("input", { type: "checkbox", value: d, checked: d !== "sat" && d !== "sun" }), t(`d_${d}`)));
  const clip = h("select", { id: "sched-clip" });
  const tts = h("textarea", { id: "sched-tts", rows: "2" });
  api("GET", "/api/library").then((lib) => {
    clips = lib.clips.filter((c) => c.kind !== "chime");
    fill(clip, h("option", { value: "" }, "—"), clips.map((c) => h("option", { value: c.id }, c.title)));
  }).catch(() => {});
  const form = h("form", { class: "sched-form", onsubmit: async (e) => {
    e.preventDefault();
    const to = getTargets();
    if (!to.length) { flash(t("need_targets"), "error"); return; }
    let when;
    if (kind.value === "once") when = { kind: "once", at: at.value.replace("T", " ") + (at.value.length === 16 ? ":00" : "") };
    else {
      when = { kind: kind.value, times: times.value.split(/[,，\s]+/).filter(Boolean) };
      if (kind.value === "weekly") when.days = days.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
    }
    const body = { to, when, title: title.value.trim() || undefined };
    if (tts.value.trim()) body.tts = tts.value.trim();
    else if (clip.value) body.clip = clip.value;
    else { flash(t("sched_need_audio"), "error"); return; }
    try {
      await api("POST", "/api/schedules", body);
      flash(t("sched_saved"));
      load();
    } catch (err) { flash(errorText(err), "error"); }
  } }, h("h3", {}, t("sched_add")),
  h("p", { class: "muted" }, t("targets_title"), "：", h("span", { id: "sched-targets" },
    getTargets().map((x) => zoneName(state, x)).join("、") || t("nothing_selected"))),
  h("div", { class: "row" }, field(t("title"), title), field(t("sched_kind"), kind)),
  h("div", { class: "row" }, field(t("sched_at"), at), field(t("sched_times"), times)),
  h("fieldset", { class: "days" }, h("legend", {}, t("sched_days")), days),
  h("div", { class: "row" }, field(t("sched_audio"), clip), field(t("or_tts"), tts)),
  h("button", { type: "submit", class: "primary" }, t("save")));
  fill(el, h("div", { class: "panel-head" }, h("h2", { id: "sched-h" }, t("sched_title")),
    h("button", { type: "button", class: "small", onclick: () => load() }, t("refresh"))), list, form);
  load();
  return el;
}
