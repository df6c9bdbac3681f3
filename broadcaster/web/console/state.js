// The live picture of the caller's scope: the zone tree, every speaker's health, and what each
// speaker is playing. Kept current from the event feed (Server-Sent Events at
// /api/events/stream, or polling /api/events?since= when the feed is unavailable) — never by
// reloading the page. Listeners get a "change" event after every update.

import { api } from "./api.js";

export const ACTIVE = new Set(["queued", "starting", "playing"]);
const TAKING = new Set(["pending", "playing"]);
const RANK = { background: 1, announcement: 2, live: 3, emergency: 4 };
const POLL_MS = 2000;

/** Find a zone by id in a tree. */
export function findZone(zone, id) {
  if (zone.id === id) return zone;
  for (const c of zone.children || []) {
    const f = findZone(c, id);
    if (f) return f;
  }
  return null;
}

/** Every speaker id under a zone, its own and its children's. */
export function speakersUnder(zone) {
  const out = zone.speakers.map((s) => s.id);
  for (const c of zone.children || []) out.push(...speakersUnder(c));
  return out;
}

export class LiveState extends EventTarget {
  constructor() {
    super();
    this.tree = null; // the whole site
    this.scope = null; // the caller's zone within it
    this.info = new Map(); // speaker id -> its zones.yaml entry (name, kind, place) + zone
    this.health = new Map(); // speaker id -> /api/speakers row
    this.broadcasts = new Map(); // id -> broadcast (active ones, and recently ended)
    this.alerts = new Map(); // speaker id -> last attack event
    this.seq = 0;
    this.feed = "none"; // "sse" | "poll" | "none"
    this.feedOk = true;
    this._source = null;
    this._timer = null;
    this._pending = new Map();
    this._closed = false;
  }

  /** Load the tree, the speakers and the broadcasts running now. */
  async load() {
    const tree = await api("GET", "/api/zones");
    this.tree = tree;
    this.scope = findZone(tree, tree.scope) || tree;
    this.info.clear();
    const walk = (z, path) => {
      for (const s of z.speakers) this.info.set(s.id, { ...s, zone: z.id, zoneName: z.name, path });
      for (const c of z.children || []) walk(c, [...path, c]);
    };
    walk(tree, [tree]);
    await this.refresh();
  }

  /** Re-read health and the running broadcasts (after a gap in the feed). */
  async refresh() {
    const [sp, bl, ev] = await Promise.all([
      api("GET", "/api/speakers"),
      api("GET", "/api/broadcasts", undefined, { limit: 50 }),
      api("GET", "/api/events", undefined, { limit: 1 }),
    ]);
    this.health = new Map(sp.speakers.map((s) => [s.id, s]));
    this.broadcasts = new Map(bl.broadcasts.filter((b) => ACTIVE.has(b.state)).map((b) => [b.id, b]));
    const last = ev.events[ev.events.length - 1];
    if (last && last.seq > this.seq) this.seq = last.seq;
    this._changed();
  }

  /** The speakers in the caller's scope, in tree order. */
  scopeSpeakers() { return this.scope ? speakersUnder(this.scope) : []; }

  /** What a speaker is doing now: {online, playing: broadcast|null, alert, error}. */
  speakerState(id) {
    const h = this.health.get(id) || {};
    let playing = null;
    for (const b of this.broadcasts.values()) {
      if (!ACTIVE.has(b.state)) continue;
      const r = b.speakers.find((x) => x.speaker === id);
      if (r && TAKING.has(r.state) && (!playing || RANK[b.priority] > RANK[playing.priority])) {
        playing = b;
      }
    }
    return { online: !!h.online, playing, alert: this.alerts.get(id) || null,
      error: h.last_error || null, attacks: h.attacks || {} };
  }

  /** Online and total counts in scope, and how many broadcasts run now. */
  counts() {
    const ids = this.scopeSpeakers();
    const online = ids.filter((id) => this.health.get(id)?.online).length;
    const running = [...this.broadcasts.values()].filter((b) => ACTIVE.has(b.state)).length;
    return { online, total: ids.length, running };
  }

  /** Follow the event feed: SSE if the controller has it, else polling. */
  start() {
    this._closed = false;
    if (typeof EventSource === "function") this._sse();
    else this._poll();
  }

  /** Stop following (logout). */
  stop() {
    this._closed = true;
    this._source?.close();
    this._source = null;
    clearTimeout(this._timer);
  }

  _sse() {
    const src = new EventSource("/api/events/stream");
    this._source = src;
    this.feed = "sse";
    let failed = false;
    src.onopen = () => {
      if (failed) this.refresh().catch(() => {});
      failed = false;
      this._feedOk(true);
    };
    src.onmessage = (m) => {
      try { this._event(JSON.parse(m.data)); } catch (e) { console.warn("bad event", e); }
    };
    src.onerror = () => {
      failed = true;
      if (src.readyState === EventSource.CLOSED) {
        // the feed is missing or refused: fall back to polling (which also notices a logout)
        src.close();
        this._source = null;
        if (!this._closed) this._poll();
      } else {
        this._feedOk(false);
      }
    };
  }

  _poll() {
    this.feed = "poll";
    const tick = async () => {
      if (this._closed) return;
      try {
        const r = await api("GET", "/api/events", undefined, { since: this.seq, limit: 1000 });
        for (const ev of r.events) this._event(ev);
        this._feedOk(true);
      } catch (e) {
        this._feedOk(false);
        if (e.status === 401) return;
      }
      this._timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  _feedOk(ok) {
    if (ok !== this.feedOk) {
      this.feedOk = ok;
      this._changed();
    }
  }

  _event(ev) {
    if (ev.seq && ev.seq <= this.seq) return;
    if (ev.seq) this.seq = ev.seq;
    this.dispatchEvent(new CustomEvent("event", { detail: ev }));
    const h = ev.speaker ? (this.health.get(ev.speaker) || { id: ev.speaker }) : null;
    switch (ev.kind) {
      case "online":
        this.health.set(ev.speaker, { ...h, online: true, last_error: null });
        break;
      case "offline":
        this.health.set(ev.speaker, { ...h, online: false, last_error: ev.reason || null });
        break;
      case "attack":
        this.alerts.set(ev.speaker, ev);
        break;
      case "broadcast":
      case "broadcast_ended":
        this._fetchBroadcast(ev.broadcast);
        return;
      default:
        return;
    }
    this._changed();
  }

  _fetchBroadcast(id) {
    // several events for one broadcast arrive together: one request answers them all
    if (this._pending.has(id)) return;
    this._pending.set(id, setTimeout(async () => {
      this._pending.delete(id);
      try {
        const b = await api("GET", `/api/broadcasts/${encodeURIComponent(id)}`);
        this.broadcasts.set(b.id, b);
        if (!ACTIVE.has(b.state)) setTimeout(() => {
          if (!ACTIVE.has(this.broadcasts.get(id)?.state)) this.broadcasts.delete(id);
          this._changed();
        }, 60000);
        this.dispatchEvent(new CustomEvent("broadcast", { detail: b }));
        this._changed();
      } catch (e) {
        console.warn("broadcast", id, e.message);
      }
    }, 120));
  }

  _changed() { this.dispatchEvent(new Event("change")); }
}
