// A task's timeline: its agent's thread, read page by page from `GET /agents/{id}/thread`.
// Rules:
// - The newest page is shown first; older pages load on request, newer items are fetched
//   from the end already shown (`tail()`, debounced), so a live run costs one small read per
//   burst of events, never the whole thread again.
// - Each tool call shows its arguments and, when its result arrives, the result under it
//   (collapsed when long). LLM turns show their tokens and cost.
import { ApiError, enc, get, query } from "./api.js";
import { add, clip, count, debounce, fill, h, json, money } from "./dom.js";

export const THREAD_PAGE = 200;
const OPEN_BELOW = 400; // outputs shorter than this many characters start expanded

/** `text` under a summary line; open when short, unless `closed`. */
function collapsible(label, text, cls, closed) {
  const body = h("pre", { class: "out", text });
  return h("details", { class: cls, open: !closed && text.length < OPEN_BELOW }, h("summary", {}, label), body);
}

function usageLine(u) {
  if (!u) return null;
  return h("span", { class: "usage", text: `${count(u.input_tokens)} in · ${count(u.output_tokens)} out · ${money(u.cost_usd)}` });
}

export class Timeline {
  constructor(agentId) {
    this.agentId = agentId;
    this.start = 0; // index of the first item shown
    this.end = 0; // one past the last item shown
    this.total = 0;
    this.calls = new Map(); // call_id -> the element its result goes into
    this.steps = new Map(); // step -> {input_tokens, output_tokens, cost_usd}
    this.list = h("ol", { class: "timeline" });
    this.earlier = h("button", { type: "button", class: "earlier", hidden: true, onclick: () => this.loadEarlier() });
    this.summary = h("div", { class: "muted timeline-summary" });
    this.el = h("section", { class: "timeline-box" }, h("h3", { text: "Timeline" }), this.summary, this.earlier, this.list);
    this.tail = debounce(() => this._tail(), 250);
  }

  _path(offset, limit) {
    return `/agents/${enc(this.agentId)}/thread` + query({ offset, limit });
  }

  async load() {
    let page;
    try {
      page = await get(this._path(0, THREAD_PAGE));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      page = { offset: 0, total: 0, items: [] }; // the agent has not started yet
    }
    if (page.total > THREAD_PAGE) page = await get(this._path(page.total - THREAD_PAGE, THREAD_PAGE));
    this.start = page.offset;
    this.end = page.offset;
    fill(this.list);
    this._append(page.items, page.total);
  }

  async loadEarlier() {
    const from = Math.max(0, this.start - THREAD_PAGE);
    const page = await get(this._path(from, this.start - from));
    const nodes = page.items.map((item, i) => this._item(item, from + i));
    this.list.prepend(...nodes.filter(Boolean));
    this.start = from;
    this._meta(page.total);
  }

  async _tail() {
    for (;;) {
      const page = await get(this._path(this.end, THREAD_PAGE));
      this._append(page.items, page.total);
      if (page.items.length < THREAD_PAGE) return;
    }
  }

  _append(items, total) {
    const nodes = items.map((item, i) => this._item(item, this.end + i));
    add(this.list, ...nodes.filter(Boolean));
    this.end += items.length;
    this._meta(total);
  }

  _meta(total) {
    this.total = total;
    this.earlier.hidden = this.start === 0;
    this.earlier.textContent = `show ${Math.min(THREAD_PAGE, this.start)} earlier of ${this.start} items`;
    this.summary.textContent = `${total} items`;
  }

  _item(item, index) {
    const li = h("li", { class: "item k-" + item.kind, dataset: { index: String(index) } });
    const meta = h("div", { class: "meta" });
    if (item.step != null) add(meta, h("span", { class: "step", text: "step " + item.step }));
    switch (item.kind) {
      case "task":
        add(meta, h("strong", { text: "task" }));
        add(li, meta, h("div", { class: "pre", text: item.description }),
          item.context && Object.keys(item.context).length ? collapsible("context", json(item.context), "ctx", true) : null);
        break;
      case "assistant": {
        add(meta, h("strong", { text: "LLM" }), item.model ? h("span", { class: "muted", text: item.model }) : null,
          item.attempt ? h("span", { class: "muted", text: "attempt " + item.attempt }) : null, usageLine(item.usage));
        add(li, meta);
        if (item.text) add(li, h("div", { class: "pre text", text: item.text }));
        for (const call of item.tool_calls || []) {
          const result = h("div", { class: "result-slot" });
          const args = json(call.arguments ?? {});
          add(li, h("div", { class: "call", dataset: { callId: call.id } },
            h("div", {}, "→ ", h("code", { class: "tool-name", text: call.name }),
              h("span", { class: "muted", text: " " + clip(args.replace(/\s+/g, " "), 90) })),
            collapsible("arguments", args, "args", true), result));
          this.calls.set(call.id, result);
        }
        break;
      }
      case "tool_result": {
        const label = item.ok ? `result of ${item.name} ✓` : `error from ${item.name} ✗`;
        const body = item.ok ? json(item.result ?? null) : `${item.error?.code}: ${item.error?.message}` +
          (item.result != null ? "\n" + json(item.result) : "");
        const node = collapsible(label, body, item.ok ? "res ok" : "res bad");
        const slot = this.calls.get(item.call_id);
        if (slot) { add(slot, node); return null; }
        add(meta, h("strong", { text: "tool result" }));
        add(li, meta, node);
        break;
      }
      case "llm_error":
        add(meta, h("strong", { class: "bad", text: "LLM error" }), h("span", { class: "muted", text: "attempt " + item.attempt }));
        add(li, meta, h("div", { class: "bad", text: `${item.error?.code}: ${item.error?.message}` }));
        break;
      case "human_request": {
        add(meta, h("strong", { text: "asks a human" }), h("span", { class: "tag tag-" + item.reason, text: item.reason }),
          h("span", { class: "muted", text: item.format }));
        add(li, meta, h("div", { class: "pre question-text", text: item.question }));
        if (item.choices?.length) add(li, h("div", { class: "muted", text: "choices: " + item.choices.join(" · ") }));
        if (item.details) add(li, collapsible("details", json(item.details), "details"));
        break;
      }
      case "human_response":
        add(meta, h("strong", { text: "human answered" }));
        add(li, meta, h("div", { class: "pre answer-text", text: json(item.response) }));
        break;
      case "user_message":
        add(meta, h("strong", { text: item.starts_run ? `follow-up (run ${item.run})` : "message to the agent" }));
        add(li, meta, h("div", { class: "pre", text: item.message ?? json(item) }),
          item.context && Object.keys(item.context).length ? collapsible("context", json(item.context), "ctx", true) : null);
        break;
      case "control":
        add(meta, h("strong", { text: item.action }), item.reason ? h("span", { class: "muted", text: item.reason }) : null);
        add(li, meta);
        break;
      default:
        add(meta, h("strong", { text: item.kind }));
        add(li, meta, collapsible("item", json(item), "raw"));
    }
    return li;
  }
}
