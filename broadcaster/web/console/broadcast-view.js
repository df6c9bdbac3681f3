// The main screen: the speakers of the caller's scope with their live state (also the place to
// choose targets), the talk button, playing a clip, uploading audio, text to speech, and the
// broadcasts running now with their stop buttons.

import { api, upload, hasPath } from "./api.js";
import { h, fill, flash, field } from "./dom.js";
import { t, errorText, fmtDuration, fmtTime } from "./i18n.js";
import { ACTIVE, findZone, speakersUnder } from "./state.js";
import { Pager, micProblem } from "./pager.js";

const PRIORITIES = ["announcement", "background", "emergency"];

export class BroadcastView {
  constructor(state, me) {
    this.state = state;
    this.me = me;
    this.whole = me.scope === state.tree.id; // subdistrict scope: may use emergency
    this.selection = new Set();
    if (state.scope && state.scope.kind === "village") this.selection.add(state.scope.id);
    this.buttons = new Map(); // target id -> its button in the map
    this.pager = new Pager();
    this.clips = [];
    this.chimes = [];
    this.latched = false;
    this.el = h("div", { class: "broadcast" });
    this._onChange = () => this.update();
    state.addEventListener("change", this._onChange);
    this._wirePager();
  }

  /** Detach from the live state and end any page (leaving the screen). */
  destroy() {
    this.state.removeEventListener("change", this._onChange);
    if (this.pager.phase !== "idle") this.pager.end();
    clearInterval(this._tick);
  }

  render() {
    this.mapBox = h("section", { class: "panel map", "aria-labelledby": "map-h" });
    this.actions = h("div", { class: "actions" });
    fill(this.el, h("div", { class: "split" }, this.mapBox, this.actions));
    this._renderMap();
    fill(this.actions, this._talkPanel(), this._activePanel(), this._playPanel(),
      this._ttsPanel(), this._uploadPanel());
    this.update();
    this._loadLibrary();
    return this.el;
  }

  // --- the speaker map and target choice -----------------------------------------------------

  _renderMap() {
    const scope = this.state.scope;
    const groups = (this.state.tree.groups || []).filter((g) => {
      const mine = new Set(this.state.scopeSpeakers());
      const ids = g.speakers.concat(...g.zones.map((z) => {
        const zone = findZone(this.state.tree, z);
        return zone ? speakersUnder(zone) : [];
      }));
      return ids.length > 0 && ids.every((id) => mine.has(id));
    });
    this.summary = h("p", { class: "selection", id: "selection" });
    this.buttons.clear();
    const all = this._targetButton(scope.id, t("all_in_scope", { name: scope.name }), "all");
    fill(this.mapBox,
      h("div", { class: "panel-head" }, h("h2", { id: "map-h" }, t("targets_title")),
        h("button", { type: "button", class: "link", onclick: () => this._clear() }, t("clear"))),
      h("div", { class: "chips" }, all,
        groups.length ? groups.map((g) => this._targetButton(g.id, g.name, "group")) : null),
      this.summary,
      this._legend(),
      h("div", { class: `tree ${scope.kind === "village" ? "large" : "compact"}` },
        this._zone(scope, 0)));
  }

  _legend() {
    const item = (cls, label) => h("span", { class: "legend-item" },
      h("span", { class: `dot ${cls}`, "aria-hidden": "true" }), label);
    return h("p", { class: "legend", "aria-label": t("legend") },
      item("online", t("st_online")), item("offline", t("st_offline")),
      item("pr-announcement", t("pr_announcement")), item("pr-live", t("pr_live")),
      item("pr-emergency", t("pr_emergency")), item("alert", t("st_alert")));
  }

  _zone(zone, depth) {
    const ids = speakersUnder(zone);
    const head = depth === 0 ? null : this._targetButton(zone.id,
      `${zone.name} · ${ids.length}`, `zone ${zone.kind}`);
    const own = zone.speakers.length
      ? h("div", { class: "speakers" }, zone.speakers.map((s) => this._speakerButton(s)))
      : null;
    const kids = (zone.children || []).map((c) => this._zone(c, depth + 1));
    return h("div", { class: `zone z-${zone.kind} depth-${depth}`, dataset: { zone: zone.id } },
      head, own, kids.length ? h("div", { class: "children" }, kids) : null);
  }

  _targetButton(id, label, kind) {
    const b = h("button", { type: "button", class: `target ${kind}`, "aria-pressed": "false",
      dataset: { target: id }, onclick: () => this._toggle(id) }, label);
    this.buttons.set(id, b);
    return b;
  }

  _speakerButton(s) {
    const label = s.name.replace(/^.*?(\d+)号?$/, "$1") || s.name;
    const b = h("button", { type: "button", class: "spk", "aria-pressed": "false",
      dataset: { target: s.id, speaker: s.id }, onclick: () => this._toggle(s.id) },
      h("span", { class: "spk-label" }, this.state.scope.kind === "village" ? s.name : label),
      h("span", { class: "spk-state" }));
    this.buttons.set(s.id, b);
    return b;
  }

  _toggle(id) {
    if (this.selection.has(id)) this.selection.delete(id);
    else {
      // choosing a zone replaces the choices inside it
      const zone = findZone(this.state.tree, id);
      if (zone) {
        const inner = new Set([...speakersUnder(zone), ...this._zoneIds(zone)]);
        for (const x of [...this.selection]) if (inner.has(x)) this.selection.delete(x);
      }
      this.selection.add(id);
    }
    this.update();
  }

  _zoneIds(zone) {
    const out = [];
    for (const c of zone.children || []) out.push(c.id, ...this._zoneIds(c));
    return out;
  }

  _clear() {
    this.selection.clear();
    this.update();
  }

  /** The speakers the current choice reaches. */
  chosenSpeakers() {
    const out = new Set();
    for (const id of this.selection) {
      const zone = findZone(this.state.tree, id);
      if (zone) { speakersUnder(zone).forEach((s) => out.add(s)); continue; }
      const g = (this.state.tree.groups || []).find((x) => x.id === id);
      if (g) {
        g.speakers.forEach((s) => out.add(s));
        g.zones.forEach((z) => { const zz = findZone(this.state.tree, z); if (zz) speakersUnder(zz).forEach((s) => out.add(s)); });
        continue;
      }
      out.add(id);
    }
    return out;
  }

  _targetName(id) {
    const zone = findZone(this.state.tree, id);
    if (zone) return zone.name;
    const g = (this.state.tree.groups || []).find((x) => x.id === id);
    if (g) return g.name;
    return this.state.info.get(id)?.name || id;
  }

  // --- live update -----------------------------------------------------------------------------

  /** Bring the map, counts and running broadcasts up to date with the live state. */
  update() {
    const chosen = this.chosenSpeakers();
    for (const [id, b] of this.buttons) {
      const on = this.selection.has(id);
      b.setAttribute("aria-pressed", on ? "true" : "false");
      if (b.dataset.speaker) this._paintSpeaker(b, id, chosen.has(id));
      else b.classList.toggle("covered", !on && this._covered(id));
    }
    if (this.summary) {
      this.summary.textContent = this.selection.size
        ? t("selected", { what: [...this.selection].map((id) => this._targetName(id)).join("、"),
          n: chosen.size })
        : t("nothing_selected");
    }
    this._paintActive();
  }

  _covered(id) {
    const zone = findZone(this.state.tree, id);
    if (!zone) return false;
    const ids = speakersUnder(zone);
    const chosen = this.chosenSpeakers();
    return ids.length > 0 && ids.every((s) => chosen.has(s));
  }

  _paintSpeaker(b, id, chosen) {
    const st = this.state.speakerState(id);
    const info = this.state.info.get(id) || { name: id };
    const cls = ["spk", st.online ? "online" : "offline"];
    const words = [info.name, st.online ? t("st_online") : t("st_offline")];
    if (st.playing) {
      cls.push("playing", `pr-${st.playing.priority}`);
      words.push(`${t("st_playing")} ${t(`pr_${st.playing.priority}`)}：${describeSource(st.playing)}（${st.playing.owner}）`);
    }
    if (st.alert || Object.values(st.attacks || {}).some((n) => n > 0)) {
      cls.push("alert");
      words.push(t("attacks"));
    }
    if (!st.online && st.error) words.push(`${t("offline_reason")}：${st.error}`);
    if (chosen) cls.push("chosen");
    b.className = cls.join(" ");
    b.dataset.state = st.playing ? `playing-${st.playing.priority}` : (st.online ? "online" : "offline");
    b.title = words.join(" · ");
    b.setAttribute("aria-label", words.join("，"));
    const mark = b.querySelector(".spk-state");
    if (mark) {
      mark.textContent = this.state.scope.kind === "village"
        ? (st.playing ? t(`pr_${st.playing.priority}`) : (st.online ? t("st_online") : t("st_offline")))
        : "";
    }
  }

  // --- running broadcasts ------------------------------------------------------------------

  _activePanel() {
    this.activeList = h("ul", { class: "active-list", id: "active" });
    this.counts = h("p", { class: "counts", id: "counts" });
    return h("section", { class: "panel", "aria-labelledby": "active-h" },
      h("h2", { id: "active-h" }, t("active_title")), this.counts, this.activeList);
  }

  _paintActive() {
    if (!this.activeList) return;
    const c = this.state.counts();
    this.counts.textContent = `${t("online_count", c)} · ${t("playing_count", { n: c.running })}`;
    const running = [...this.state.broadcasts.values()].filter((b) => ACTIVE.has(b.state));
    if (!running.length) {
      fill(this.activeList, h("li", { class: "muted" }, t("none_active")));
      return;
    }
    fill(this.activeList, running.map((b) => {
      const canStop = b.owner === this.me.name || this.me.role === "admin";
      return h("li", { class: `bc pr-${b.priority}`, dataset: { broadcast: b.id } },
        h("span", { class: `badge pr-${b.priority}` }, t(`pr_${b.priority}`)),
        h("span", { class: "bc-what" }, describeSource(b)),
        h("span", { class: "bc-meta" }, `${b.owner} · ${b.targets.map((x) => this._targetName(x)).join("、")} · `
          + t("speakers_n", { n: b.speakers.length }) + ` · ${fmtTime(b.created_at, false)}`),
        canStop ? h("button", { type: "button", class: "danger small",
          onclick: (e) => this._stop(b.id, e.currentTarget) }, t("stop")) : null);
    }));
  }

  async _stop(id, button) {
    button.disabled = true;
    try {
      await api("POST", `/api/broadcasts/${encodeURIComponent(id)}/stop`);
      flash(t("stopped"));
    } catch (e) {
      flash(errorText(e), "error");
      button.disabled = false;
    }
  }

  // --- talk ------------------------------------------------------------------------------------

  _talkPanel() {
    const problem = micProblem();
    this.talk = h("button", { type: "button", class: "talk", id: "talk", disabled: !!problem,
      title: t("talk_key_hint"), "aria-keyshortcuts": "Space" }, t("talk_hold"));
    this.meter = h("div", { class: "meter", role: "meter", "aria-label": t("level"),
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, h("div", { class: "bar" }));
    this.timer = h("span", { class: "timer", "aria-label": t("elapsed") }, "0:00");
    this.talkStatus = h("p", { class: "talk-status", id: "talk-status", role: "status" },
      problem === "insecure" ? t("mic_insecure") : problem ? t("mic_denied") : "");
    this.cutBanner = h("p", { class: "cut-banner", id: "cut-banner", role: "alert", hidden: true });
    this.outcome = h("div", { class: "outcome", id: "talk-outcome" });
    const latch = h("input", { type: "checkbox", id: "latched", onchange: (e) => {
      this.latched = e.target.checked;
      if (this.pager.phase === "idle") this.talk.textContent = this.latched ? t("talk_latched") : t("talk_hold");
    } });
    this.emergency = h("input", { type: "checkbox", id: "emergency" });
    this.talkChime = h("select", { id: "talk-chime" }, h("option", { value: "" }, t("no_chime")));
    this._wireTalk();
    return h("section", { class: "panel talk-panel", "aria-labelledby": "talk-h" },
      h("h2", { id: "talk-h" }, t("talk_title")),
      this.cutBanner,
      h("div", { class: "talk-row" }, this.talk,
        h("div", { class: "talk-side" }, this.meter, this.timer)),
      this.talkStatus,
      h("div", { class: "options" },
        h("label", { class: "check" }, latch, t("latched_mode")),
        this.whole ? h("label", { class: "check emergency" }, this.emergency, t("emergency_mode")) : null,
        field(t("chime"), this.talkChime)),
      this.outcome);
  }

  _wireTalk() {
    const b = this.talk;
    const down = (e) => {
      if (this.latched) return;
      if (e.button !== undefined && e.button !== 0) return;
      e.preventDefault();
      b.setPointerCapture?.(e.pointerId);
      this._startTalk();
    };
    const up = () => { if (!this.latched && this.pager.phase !== "idle") this.pager.end(); };
    b.addEventListener("pointerdown", down);
    b.addEventListener("pointerup", up);
    b.addEventListener("pointercancel", up);
    b.addEventListener("contextmenu", (e) => e.preventDefault());
    b.addEventListener("click", () => {
      if (!this.latched) return;
      if (this.pager.phase === "idle") this._startTalk();
      else this.pager.end();
    });
    // hold to talk from the keyboard: Space (or Enter) held on the focused talk button talks,
    // releasing it ends the page; so does the button losing focus while the key is held (the
    // release would never reach it: never an open microphone on the horns)
    let heldKey = null;
    b.addEventListener("keydown", (e) => {
      if (this.latched || e.repeat || (e.key !== " " && e.key !== "Enter")) return;
      e.preventDefault();
      if (heldKey) return;
      heldKey = e.key;
      this._startTalk();
    });
    b.addEventListener("keyup", (e) => {
      if (this.latched || e.key !== heldKey) return;
      e.preventDefault();
      heldKey = null;
      up();
    });
    b.addEventListener("blur", () => {
      if (!heldKey) return;
      heldKey = null;
      up();
    });
  }

  _startTalk() {
    if (this.pager.phase !== "idle") return;
    const to = [...this.selection];
    if (!to.length) {
      this.talkStatus.textContent = t("need_targets");
      flash(t("need_targets"), "error");
      return;
    }
    this.cutBanner.hidden = true;
    fill(this.outcome);
    this.talkStatus.textContent = t("talk_connecting");
    this.pager.start({ to, priority: this.emergency.checked && this.whole ? "emergency" : "live",
      chime: this.talkChime.value || null });
  }

  _wirePager() {
    const p = this.pager;
    p.addEventListener("phase", (e) => {
      const phase = e.detail.phase;
      this.talk.classList.toggle("on", phase === "connecting" || phase === "ready");
      this.talk.classList.toggle("live", phase === "ready");
      this.talk.setAttribute("aria-pressed", phase === "idle" ? "false" : "true");
      if (phase === "ready") {
        this.talkStatus.textContent = t("talk_ready");
        clearInterval(this._tick);
        this._tick = setInterval(() => {
          if (p.startedAt) this.timer.textContent = fmtDuration((performance.now() - p.startedAt) / 1000);
        }, 250);
      } else if (phase === "ending") {
        this.talkStatus.textContent = t("talk_ending");
      } else if (phase === "idle") {
        clearInterval(this._tick);
        this._level(0);
      }
      if (phase === "idle" || phase === "connecting") {
        this.talk.textContent = this.latched ? t("talk_latched") : t("talk_hold");
      } else {
        this.talk.textContent = this.latched ? t("talk_stop") : t("talk_release");
      }
    });
    p.addEventListener("level", (e) => this._level(e.detail.peak));
    p.addEventListener("speakers", (e) => this._speakersMsg(e.detail));
    p.addEventListener("cut", (e) => {
      const m = e.detail;
      const vars = { priority: t(`prn_${m.priority || "emergency"}`), owner: m.owner || "?",
        n: (m.speakers || []).length };
      this.cutBanner.textContent = m.all ? t("talk_cut_all", vars) : t("talk_cut", vars);
      this.cutBanner.hidden = false;
    });
    p.addEventListener("ended", (e) => this._ended(e.detail));
    p.addEventListener("error", (e) => {
      const msg = t("talk_refused", { why: errorText(e.detail) });
      this.talkStatus.textContent = msg;
      flash(msg, "error");
    });
  }

  _level(peak) {
    const pct = Math.round(Math.min(1, Math.sqrt(peak)) * 100);
    this.meter.firstChild.style.width = `${pct}%`;
    this.meter.setAttribute("aria-valuenow", String(pct));
  }

  _speakersMsg(m) {
    const rows = [];
    for (const id of m.playing || []) rows.push([id, "playing"]);
    for (const id of m.offline || []) rows.push([id, "offline"]);
    for (const [id] of Object.entries(m.refused || {})) rows.push([id, "refused"]);
    this._outcomeList(rows);
  }

  async _ended(msg) {
    const s = msg.summary || {};
    this.talkStatus.textContent = t("talk_ended", { heard: s.heard ?? 0, total: s.speakers ?? 0 });
    try {
      const b = await api("GET", `/api/broadcasts/${encodeURIComponent(msg.broadcast)}`);
      this._outcomeList(b.speakers.map((r) => [r.speaker, r.state]));
    } catch (e) {
      console.warn("outcome", e.message);
    }
  }

  _outcomeList(rows) {
    const counts = {};
    for (const [, st] of rows) counts[st] = (counts[st] || 0) + 1;
    fill(this.outcome,
      h("p", { class: "outcome-sum" }, Object.entries(counts).map(([st, n]) => `${t(`ss_${st}`)} ${n}`).join(" · ")),
      h("ul", { class: "outcome-list" }, rows.map(([id, st]) =>
        h("li", { class: `o-${st}`, dataset: { speaker: id, state: st } },
          h("span", {}, this.state.info.get(id)?.name || id), h("span", { class: "o-state" }, t(`ss_${st}`))))));
  }

  // --- play a clip --------------------------------------------------------------------------

  _priorityOptions() {
    return PRIORITIES.filter((p) => p !== "emergency" || this.whole)
      .map((p) => h("option", { value: p }, t(`pr_${p}`)));
  }

  _playPanel() {
    this.clipSelect = h("select", { id: "clip" });
    this.playChime = h("select", { id: "play-chime" }, h("option", { value: "" }, t("no_chime")));
    this.playPriority = h("select", { id: "play-priority" }, this._priorityOptions());
    this.repeat = h("input", { type: "number", id: "repeat", min: "1", max: "10", value: "1" });
    return h("section", { class: "panel", "aria-labelledby": "play-h" },
      h("h2", { id: "play-h" }, t("play_title")),
      field(t("clip"), this.clipSelect),
      h("div", { class: "row" }, field(t("chime"), this.playChime),
        field(t("priority"), this.playPriority), field(t("repeat"), this.repeat)),
      h("button", { type: "button", class: "primary", id: "play",
        onclick: (e) => this._play({ clip: this.clipSelect.value }, e.currentTarget) }, t("play")));
  }

  async _loadLibrary() {
    try {
      const lib = await api("GET", "/api/library");
      this.clips = lib.clips.filter((c) => c.kind !== "chime");
      this.chimes = lib.chimes || [];
    } catch (e) {
      flash(errorText(e), "error");
    }
    this._fillClips();
    for (const sel of [this.talkChime, this.playChime]) {
      fill(sel, h("option", { value: "" }, t("no_chime")), this.chimes.map((c) => h("option", { value: c }, c)));
    }
  }

  _fillClips(selected) {
    const chosen = selected || this.clipSelect.value;
    fill(this.clipSelect, this.clips.length
      ? this.clips.map((c) => h("option", { value: c.id }, `${c.title}（${fmtDuration(c.duration)}）`))
      : h("option", { value: "" }, t("no_clips")));
    if (chosen) this.clipSelect.value = chosen;
  }

  async _play(what, button) {
    const to = [...this.selection];
    if (!to.length) { flash(t("need_targets"), "error"); return; }
    if (!what.clip) { flash(t("no_clips"), "error"); return; }
    button.disabled = true;
    try {
      const body = { to, priority: this.playPriority.value, ...what };
      if (this.playChime.value) body.chime = this.playChime.value;
      const rep = Number(this.repeat.value) || 1;
      if (rep !== 1) body.repeat = rep;
      const b = await api("POST", "/api/broadcasts", body);
      flash(t("started", { n: b.speakers.length }));
      this.state.broadcasts.set(b.id, b);
      this.update();
    } catch (e) {
      flash(errorText(e), "error");
    } finally {
      button.disabled = false;
    }
  }

  // --- text to speech -------------------------------------------------------------------------

  _ttsPanel() {
    const text = h("textarea", { id: "tts-text", rows: "3", maxlength: "2000" });
    const result = h("p", { class: "tts-result", id: "tts-result", role: "status" });
    const preview = h("audio", { controls: true, hidden: true, id: "tts-audio", preload: "none" });
    const playIt = h("button", { type: "button", class: "primary", id: "tts-play", hidden: true }, t("tts_play"));
    const make = h("button", { type: "button", id: "tts-make" }, t("tts_make"));
    make.addEventListener("click", async () => {
      if (!text.value.trim()) { flash(errorText({ code: "empty_text" }), "error"); return; }
      make.disabled = true;
      result.textContent = t("processing");
      try {
        const clip = await api("POST", "/api/library/tts", { text: text.value.trim(),
          title: text.value.trim().slice(0, 24) });
        result.textContent = t("tts_made", { title: clip.title, s: clip.duration.toFixed(1) });
        this.clips = [clip, ...this.clips.filter((c) => c.id !== clip.id)];
        this._fillClips(clip.id);
        playIt.hidden = false;
        playIt.onclick = (e) => this._play({ clip: clip.id }, e.currentTarget);
        const path = `/api/library/${encodeURIComponent(clip.id)}/audio`;
        if (await hasPath("/api/library/{id}/audio")) {
          preview.src = path;
          preview.hidden = false;
        } else {
          result.textContent += ` · ${t("tts_no_preview")}`;
        }
      } catch (e) {
        result.textContent = errorText(e);
        flash(errorText(e), "error");
      } finally {
        make.disabled = false;
      }
    });
    return h("section", { class: "panel", "aria-labelledby": "tts-h" },
      h("h2", { id: "tts-h" }, t("tts_title")), field(t("tts_text"), text),
      h("div", { class: "buttons" }, make, playIt), result, preview);
  }

  // --- upload ---------------------------------------------------------------------------------

  _uploadPanel() {
    const file = h("input", { type: "file", id: "upload-file", accept: "audio/*,.wav,.mp3,.m4a,.amr,.ogg,.opus,.flac,.aac,.wma" });
    const title = h("input", { type: "text", id: "upload-title", maxlength: "100" });
    const bar = h("progress", { id: "upload-progress", max: "100", value: "0", hidden: true });
    const status = h("p", { class: "upload-status", id: "upload-status", role: "status" });
    const go = h("button", { type: "button", id: "upload" }, t("upload"));
    go.addEventListener("click", async () => {
      const f = file.files[0];
      if (!f) { flash(t("choose_file"), "error"); return; }
      go.disabled = true;
      bar.hidden = false;
      bar.value = 0;
      try {
        const clip = await upload("/api/library", f, { name: f.name, title: title.value.trim() || f.name },
          (frac) => {
            bar.value = Math.round(frac * 100);
            status.textContent = frac < 1 ? t("uploading", { p: Math.round(frac * 100) }) : t("processing");
          });
        status.textContent = t("uploaded", { title: clip.title });
        this.clips = [clip, ...this.clips.filter((c) => c.id !== clip.id)];
        this._fillClips(clip.id);
        file.value = "";
        title.value = "";
      } catch (e) {
        status.textContent = errorText(e);
        flash(errorText(e), "error");
      } finally {
        go.disabled = false;
        bar.hidden = true;
      }
    });
    return h("section", { class: "panel", "aria-labelledby": "upload-h" },
      h("h2", { id: "upload-h" }, t("upload_title")),
      field(t("choose_file"), file), field(t("title"), title),
      h("div", { class: "buttons" }, go), bar, status);
  }
}

/** A broadcast's source in words: clip title, TTS text, file name or live. */
export function describeSource(b) {
  const s = b.source || {};
  const kind = s.kind || "live";
  const detail = s.title || s.text || s.name || s.label || "";
  if (kind === "sequence" && Array.isArray(s.parts)) {
    return s.parts.map((p) => describeSource({ source: p })).join(" + ");
  }
  const label = t(`src_${kind}`);
  if (kind === "live") return label;
  return detail ? `${label}：${String(detail).slice(0, 40)}` : label;
}
