// The API client: the bearer token (asked for once, kept in this tab's sessionStorage),
// JSON in and out, errors as ApiError with the edge's code and message.
import { add, h } from "./dom.js";

const TOKEN_KEY = "agentops-token";
let asking = null; // the open token dialog: every request that got a 401 waits for it

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** An endpoint this edge does not have yet (404 "no such route", or 405). */
export function missingRoute(err) {
  return err instanceof ApiError && (err.status === 405 || (err.status === 404 && err.message === "no such route"));
}

function askToken() {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const input = h("input", { type: "password", autocomplete: "off", placeholder: "API token", required: true });
    const dialog = h("form", { class: "token-dialog", role: "dialog", "aria-label": "API token" },
      h("p", { text: "This AgentOps needs its API token (AGENTOPS_API_TOKEN). It is kept in this tab only." }),
      input, h("button", { type: "submit", text: "Use token" }));
    dialog.addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      dialog.remove();
      asking = null;
      resolve();
    });
    add(document.body, dialog);
    input.focus();
  });
  return asking;
}

/** `fetch` with the token; a 401 asks for the token once and retries. */
export async function request(method, path, body, accept) {
  for (;;) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (accept) headers.Accept = accept;
    if (token()) headers.Authorization = "Bearer " + token();
    const resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
    if (resp.status === 401) {
      await askToken();
      continue;
    }
    if (!resp.ok) {
      const data = await resp.json().catch(() => ({}));
      const err = data.error || {};
      throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText, err.details);
    }
    return resp;
  }
}

export async function api(method, path, body) {
  const resp = await request(method, path, body);
  return resp.status === 204 ? {} : resp.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);

/** A query string from the set values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, String(v));
  const s = q.toString();
  return s ? "?" + s : "";
}

export const enc = encodeURIComponent;

/** Save a response body as a file (an archive, a file of the workspace). */
export async function download(path, filename) {
  const blob = await (await request("GET", path)).blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  add(document.body, a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
