// Live events over `WS /ws`, resumed from the last sequence after a dropped connection.
// Rules:
// - The page loads its lists once, with the socket already open (so nothing between the two
//   is missed), and then applies events from the stream's current position: it never asks for
//   a replay of history, so a store with thousands of tasks costs nothing here at load.
// - Frames are handed to listeners in batches (at most every BATCH_MS), never one API call
//   per event: listeners patch what they show and debounce any refetch they need.
// - A reconnect uses `since=<last seq>` (no gap, no duplicate). Before the first event there
//   is no position to resume from, so after such a reconnect listeners get `resync()`.
// - The token goes in `?token=` (the form browsers can send; a WebSocket handshake cannot
//   carry an Authorization header).
import { token } from "./api.js";

const BATCH_MS = 100;
const MAX_BACKOFF_MS = 15000;

export class Live {
  constructor() {
    this.lastSeq = null;
    this.listeners = new Set();
    this.queue = [];
    this.timer = null;
    this.backoff = 500;
    this.state = "connecting";
    this.onState = () => {};
    this.primed = false; // the page has loaded its lists: a later gap needs a resync
  }

  /** `fn(events)` for each batch; `fn.resync?.()` when events may have been missed. */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Connect; resolves once the stream is subscribed (or after a failed first try). */
  start() {
    return new Promise((resolve) => this._connect(() => {
      this.primed = true;
      resolve();
    }));
  }

  _url() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (this.lastSeq !== null) url.searchParams.set("since", String(this.lastSeq));
    if (token()) url.searchParams.set("token", token());
    return url;
  }

  _setState(state) {
    this.state = state;
    this.onState(state);
  }

  _connect(resolve) {
    const resuming = this.lastSeq !== null;
    const ws = new WebSocket(this._url());
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff = 500;
      this._setState("live");
      if (this.primed && !resuming) for (const l of this.listeners) l.resync?.();
      resolve?.();
    };
    ws.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      if (typeof ev.seq !== "number") return; // pong or an error frame
      if (this.lastSeq !== null && ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
      this.queue.push(ev);
      if (this.timer === null) this.timer = setTimeout(() => this._flush(), BATCH_MS);
    };
    ws.onclose = () => {
      this._setState("reconnecting");
      if (!opened) resolve?.(); // the page still loads; a resync follows once connected
      setTimeout(() => this._connect(null), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    };
    this.ws = ws;
  }

  _flush() {
    this.timer = null;
    const batch = this.queue;
    this.queue = [];
    for (const l of this.listeners) {
      try { l(batch); } catch (e) { console.error(e); }
    }
  }
}

export const live = new Live();
