// The inbox: every open human request, with the controls that answer it (answer.js), and
// workflow stages waiting for approval (when this edge has workflows).
// Rules:
// - Loaded once (`GET /agents?status=awaiting_human`, then each one's status for its exact
//   question); afterwards only the agent an event names is read again, batched.
// - An entry is keyed by agent and request and never rebuilt: typed text, focus and caret
//   survive everything that streams in. It goes when its request is answered or its agent
//   ends; while the agent is paused it stays, with its buttons off.
import { enc, get, missingRoute, post, query } from "./api.js";
import { answerWidget } from "./answer.js";
import { debounce, h, link, reconcile, TERMINAL } from "./dom.js";

const CONCURRENCY = 4;

async function pool(items, n, fn) {
  const queue = [...items];
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, async () => {
    while (queue.length) await fn(queue.shift()).catch((e) => console.error(e));
  }));
}

export class Inbox {
  constructor() {
    this.entries = new Map(); // key -> {agentId, requestId, node, widget}
    this.order = []; // keys, newest first
    this.stale = new Set(); // agent ids to read again
    this.workflows = true; // until the edge says it has none
    this.onCount = () => {};
    this.list = h("div", { class: "inbox-list" });
    this.empty = h("p", { class: "muted empty", text: "Nobody is waiting for an answer." });
    this.el = h("div", {}, this.empty, this.list);
    this.refetch = debounce(() => this._refetch(), 150);
    this.refetchWorkflows = debounce(() => this._loadWorkflows(), 500);
  }

  get count() { return this.entries.size; }

  async load() {
    const { agents } = await get("/agents" + query({ status: "awaiting_human" }));
    await pool(agents.map((a) => a.agent_id), CONCURRENCY, (id) => this._read(id));
    await this._loadWorkflows();
    this._render();
  }

  resync() {
    for (const e of this.entries.values()) this.stale.add(e.agentId);
    this.load().catch((e) => console.error(e));
  }

  onEvents(batch) {
    let changed = false;
    for (const ev of batch) {
      const agentId = ev.agent_id;
      if (ev.type === "human.request" && agentId) {
        this.stale.add(agentId);
      } else if (ev.type === "human.response" && agentId) {
        changed = this._drop(agentId, ev.data?.request_id) || changed;
      } else if (ev.type === "agent.status" && agentId) {
        const status = ev.data?.status;
        const mine = [...this.entries.values()].filter((e) => e.agentId === agentId);
        if (status === "awaiting_human") {
          if (mine.length) mine.forEach((e) => e.widget.setPaused(false));
          else this.stale.add(agentId);
        } else if (status === "paused") {
          mine.forEach((e) => e.widget.setPaused(true));
        } else if (status === "running" || TERMINAL.has(status)) {
          changed = this._drop(agentId) || changed;
        }
      } else if (ev.type.startsWith("workflow.") && this.workflows) {
        this.refetchWorkflows();
      }
    }
    if (this.stale.size) this.refetch();
    if (changed) this._render();
  }

  async _refetch() {
    const ids = [...this.stale];
    this.stale.clear();
    await pool(ids, CONCURRENCY, (id) => this._read(id));
    this._render();
  }

  async _read(agentId) {
    const st = await get(`/agents/${enc(agentId)}/status`);
    const req = st.human_request;
    const open = req && (st.status === "awaiting_human" || st.status === "paused");
    const key = open ? `${agentId}:${req.request_id}` : null;
    for (const [k, e] of this.entries) if (e.agentId === agentId && k !== key) this.entries.delete(k);
    if (!open) return;
    let entry = this.entries.get(key);
    if (!entry) {
      const widget = answerWidget(agentId, req, { onAnswered: () => this._drop(agentId, req.request_id, true) });
      const node = h("article", { class: "card inbox-entry", dataset: { agentId } },
        h("header", {},
          h("strong", { text: st.name || st.agent_type }), " ",
          link("#/tasks/" + enc(st.task.task_id), st.task.task_id, "mono"), " ",
          h("span", { class: "muted", text: st.task.description || "" })),
        widget);
      entry = { agentId, requestId: req.request_id, node, widget };
      this.entries.set(key, entry);
      this.order.unshift(key);
    }
    entry.widget.setPaused(st.status === "paused");
  }

  _drop(agentId, requestId, later) {
    let dropped = false;
    for (const [k, e] of this.entries) {
      if (e.agentId === agentId && (!requestId || e.requestId === requestId)) {
        if (later) { // just answered here: leave the "answered" mark up a moment
          setTimeout(() => { if (this.entries.get(k) === e) { this.entries.delete(k); this._render(); } }, 1500);
          continue;
        }
        this.entries.delete(k);
        dropped = true;
      }
    }
    return dropped;
  }

  async _loadWorkflows() {
    if (!this.workflows) return;
    let workflows;
    try {
      ({ workflows } = await get("/workflows" + query({ status: "awaiting_human" })));
    } catch (e) {
      if (missingRoute(e)) { this.workflows = false; return; }
      throw e;
    }
    const waiting = (workflows || []).filter((w) => w.status === "awaiting_human");
    const keep = new Set(waiting.map((w) => "wf:" + w.workflow_id));
    for (const k of [...this.entries.keys()]) if (k.startsWith("wf:") && !keep.has(k)) this.entries.delete(k);
    for (const w of waiting) {
      const key = "wf:" + w.workflow_id;
      if (!this.entries.has(key)) {
        this.entries.set(key, { agentId: null, requestId: key, node: workflowApproval(w), widget: { setPaused() {} } });
        this.order.unshift(key);
      }
    }
    this._render();
  }

  _render() {
    this.order = this.order.filter((k) => this.entries.has(k));
    reconcile(this.list, this.order, (k) => this.entries.get(k).node);
    this.empty.hidden = this.entries.size > 0;
    this.onCount(this.entries.size);
  }
}

/** Approve or refuse a workflow stage that waits before it starts. */
export function workflowApproval(w) {
  const error = h("div", { class: "error" });
  const comment = h("input", { type: "text", class: "comment", placeholder: "comment (optional)" });
  const answer = async (approved) => {
    const c = comment.value.trim();
    try {
      await post(`/workflows/${enc(w.workflow_id)}/human-response`, { response: c ? { approved, comment: c } : { approved } });
      node.classList.add("answered");
    } catch (e) { error.textContent = e.message; }
  };
  const stage = (w.stages || []).find((s) => s.status === "awaiting_human" || s.status === "pending");
  const node = h("article", { class: "card inbox-entry" },
    h("header", {}, h("strong", { text: "Workflow approval" }), " ",
      link("#/workflows/" + enc(w.workflow_id), w.name || w.workflow_id)),
    h("div", { class: "question" }, h("span", { class: "tag tag-approval", text: "approval" }),
      h("span", { class: "question-text", text: stage ? `Start stage ${stage.id} (${stage.agent_type})?` : "Start the next stage?" })),
    h("div", { class: "row" },
      h("button", { type: "button", class: "primary approve", text: "Approve", onclick: () => answer(true) }),
      h("button", { type: "button", class: "danger refuse", text: "Refuse", onclick: () => answer(false) }),
      comment),
    error);
  return node;
}
