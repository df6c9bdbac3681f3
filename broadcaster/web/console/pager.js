// Live paging from the browser's microphone over the controller's paging WebSocket
// (GET /api/page, docs/paging.md): a start message with the targets, then 20 ms binary frames
// of 16 kHz s16le mono once the controller says "ready", then {"type": "end"}. Everything the
// controller reports (speakers playing, offline, refused, a cut and by what, the end) is passed
// on as events. The microphone is open only while a page runs.

import { csrf } from "./api.js";

const RATE = 16000;

/** Why the microphone cannot be used here, or "" if it can. */
export function micProblem() {
  if (!window.isSecureContext) return "insecure";
  if (!navigator.mediaDevices?.getUserMedia) return "unsupported";
  return "";
}

export class Pager extends EventTarget {
  constructor() {
    super();
    this.phase = "idle"; // idle | connecting | ready | ending
    this.broadcast = null;
    this.startedAt = null;
    this._ws = null;
    this._ctx = null;
    this._stream = null;
    this._node = null;
    this._sending = false;
    this._endRequested = false;
  }

  /** Start a page to `to` (target ids); priority "live" or "emergency"; optional chime. */
  async start({ to, priority = "live", chime = null }) {
    if (this.phase !== "idle") return;
    this._endRequested = false;
    this.broadcast = null;
    this.startedAt = null;
    this._set("connecting");
    try {
      await this._openMic();
    } catch (e) {
      this._fail({ code: e.name === "NotAllowedError" ? "mic_denied" : "mic_error",
        message: String(e.message || e) });
      return;
    }
    if (this._endRequested) { this._cleanup(); this._set("idle"); return; }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/page?csrf=${encodeURIComponent(csrf())}`);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "start", to, priority, chime: chime || null, rate: RATE,
        csrf: csrf() }));
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== "string") return;
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (this._ws === ws) this._message(msg);
      else if (msg.type === "recorded") this._emit("recorded", msg); // after the page ended
    };
    ws.onclose = () => {
      if (this._ws !== ws) return; // a page that already ended
      const wasOpen = this.phase !== "idle";
      this._cleanup();
      if (wasOpen) this._set("idle");
    };
    ws.onerror = () => {
      if (this._ws === ws && this.phase === "connecting") {
        this._fail({ code: "network", message: "paging socket failed" });
      }
    };
  }

  /** End the page (the talk button released). */
  end() {
    this._endRequested = true;
    if (this.phase === "idle") return;
    this._sending = false;
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify({ type: "end" }));
      this._set("ending");
      this._stopMic();
      // the controller answers "ended" and closes; never hang on a silent one
      const ws = this._ws;
      setTimeout(() => {
        if (this._ws === ws && this.phase === "ending") {
          ws.close();
          this._cleanup();
          this._set("idle");
        }
      }, 5000);
    } else if (this.phase !== "connecting" || this._ws) {
      const ws = this._ws;
      this._cleanup();
      ws?.close();
      this._set("idle");
    }
  }

  _message(msg) {
    switch (msg.type) {
      case "accepted":
        this.broadcast = msg.broadcast;
        this._emit("accepted", msg);
        break;
      case "ready":
        this.startedAt = performance.now();
        this._sending = true;
        this._set("ready");
        if (this._endRequested) this.end();
        break;
      case "speakers":
        this._emit("speakers", msg);
        break;
      case "cut":
        this._emit("cut", msg);
        if (msg.all) this.end();
        break;
      case "ended":
        // the page is over; the socket stays open a little for the recording's id
        this._cleanup();
        this._emit("ended", msg);
        this._set("idle");
        break;
      case "recorded":
        this._emit("recorded", msg);
        break;
      case "error":
        this._fail({ code: msg.error, message: msg.message, status: msg.status });
        break;
      default:
        break;
    }
  }

  async _openMic() {
    this._stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true,
        channelCount: 1 },
    });
    const ctx = new AudioContext();
    this._ctx = ctx;
    await ctx.audioWorklet.addModule("/console/pcm-worklet.js");
    const src = ctx.createMediaStreamSource(this._stream);
    const node = new AudioWorkletNode(ctx, "pcm-capture", { numberOfOutputs: 1 });
    node.port.onmessage = (e) => {
      const { pcm, peak, rms } = e.data;
      this._emit("level", { peak, rms });
      if (this._sending && this._ws?.readyState === WebSocket.OPEN) this._ws.send(pcm);
    };
    const mute = ctx.createGain();
    mute.gain.value = 0; // the worklet must be pulled by the graph; nothing is heard locally
    src.connect(node).connect(mute).connect(ctx.destination);
    this._node = node;
    if (ctx.state === "suspended") await ctx.resume();
  }

  _stopMic() {
    this._node?.port.close();
    this._node?.disconnect();
    this._node = null;
    this._stream?.getTracks().forEach((tr) => tr.stop());
    this._stream = null;
    if (this._ctx && this._ctx.state !== "closed") this._ctx.close().catch(() => {});
    this._ctx = null;
  }

  _cleanup() {
    this._sending = false;
    this._stopMic();
    this._ws = null;
  }

  _fail(err) {
    this._emit("error", err);
    const ws = this._ws;
    this._cleanup();
    ws?.close();
    this._set("idle");
  }

  _set(phase) {
    this.phase = phase;
    this._emit("phase", { phase });
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
