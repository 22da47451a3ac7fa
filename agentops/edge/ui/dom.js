// DOM helpers: elements from data, keyed lists updated in place, formatting.
// Rules: API data only ever reaches the page as text (textContent, value), never as markup;
// a list is updated node by node under stable keys, so an input inside a row keeps its text,
// focus and caret while the rest of the page changes around it.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key in el && typeof value !== "string") el[key] = value;
      else if (key === "value") el.value = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (null/false skipped, arrays flattened; the DOM's own append writes "null"). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace `el`'s children with these (same rules as `add`). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace `el`'s text only when it changed (no layout work for a same-value update). */
export function setText(el, value) {
  const text = value == null ? "" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

export function setClass(el, name, on) {
  if (el.classList.contains(name) !== Boolean(on)) el.classList.toggle(name, Boolean(on));
}

/**
 * Make `container`'s children the nodes for `keys`, in order: existing nodes (by
 * `data-key`) are kept and only moved when out of place, missing ones made with
 * `make(key)`, others removed. Returns the key → node map.
 */
export function reconcile(container, keys, make) {
  const existing = new Map();
  for (const node of container.children) existing.set(node.dataset.key, node);
  const wanted = new Set(keys);
  for (const [key, node] of existing) if (!wanted.has(key)) node.remove();
  let cursor = container.firstElementChild;
  const out = new Map();
  for (const key of keys) {
    let node = existing.get(key);
    if (!node) {
      node = make(key);
      node.dataset.key = key;
    }
    if (node !== cursor) container.insertBefore(node, cursor);
    else cursor = cursor.nextElementSibling;
    out.set(key, node);
  }
  return out;
}

/** `fn` at most once per `ms`, trailing: calls in between are folded into one. */
export function debounce(fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { console.error(e); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => { if (timer === null) timer = setTimeout(run, ms); };
  return schedule;
}

// ---- formatting ----
export function money(usd) {
  if (usd == null || Number.isNaN(usd)) return "–";
  if (usd === 0) return "$0";
  if (usd < 0.01) return "$" + usd.toPrecision(2);
  return "$" + usd.toFixed(usd < 10 ? 4 : 2);
}

export function tokens(usage) {
  if (!usage) return "–";
  return `${count(usage.input_tokens)} in · ${count(usage.output_tokens)} out`;
}

export function count(n) {
  if (n == null) return "–";
  return n >= 10000 ? (n / 1000).toFixed(n >= 100000 ? 0 : 1) + "k" : String(n);
}

export function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const secs = (Date.now() - t.getTime()) / 1000;
  if (secs < 60) return "just now";
  if (secs < 3600) return Math.floor(secs / 60) + " min ago";
  if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
  return t.toISOString().slice(0, 16).replace("T", " ");
}

export function json(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

export function clip(text, n) {
  const s = text == null ? "" : String(text);
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export function badge(status) {
  return h("span", { class: "badge s-" + (status || "unknown"), text: status || "?" });
}

export function setBadge(el, status) {
  setText(el, status);
  const cls = "badge s-" + (status || "unknown");
  if (el.className !== cls) el.className = cls;
}

export function link(href, text, cls) {
  return h("a", { href, text, class: cls });
}
