// One task's page: its facts and total cost, controls, the open question, a follow-up box,
// the workspace, sub-tasks as a tree, and the timeline.
// Rules:
// - Loaded once (record, agent status, the newest thread page); then the events of this task
//   patch status and step in place and schedule debounced reads of only what they changed:
//   the thread's new items, the record (cost, result), the agent's status (its question).
// - The question's controls are made once per request (answer.js): typing survives updates.
import { ApiError, api, enc, get, missingRoute, post } from "./api.js";
import { answerWidget } from "./answer.js";
import { add, badge, clip, debounce, fill, h, link, money, setBadge, setText, TERMINAL, tokens, when } from "./dom.js";
import { Timeline } from "./timeline.js";
import { Workspace } from "./workspace.js";

const MAX_CHILDREN = 50;

/** Sub-tasks of a task, each a line with its status and its own sub-tasks on demand. */
export class TaskTree {
  constructor() {
    this.nodes = new Map(); // task_id -> {badge}
    this.el = h("ul", { class: "tree" });
  }

  async show(children, into = this.el) {
    const ids = children.map((c) => (typeof c === "string" ? c : c.task_id)).slice(0, MAX_CHILDREN);
    const records = await Promise.all(ids.map((id) => get(`/tasks/${enc(id)}`).catch(() => ({ task_id: id, status: "?" }))));
    fill(into, ...records.map((r) => this._node(r)));
    if (children.length > MAX_CHILDREN) add(into, h("li", { class: "muted", text: `and ${children.length - MAX_CHILDREN} more` }));
  }

  _node(r) {
    const b = badge(r.status);
    this.nodes.set(r.task_id, { badge: b });
    const li = h("li", {}, b, " ", link("#/tasks/" + enc(r.task_id), r.task_id, "mono"), " ",
      h("span", { text: r.agent_type || "" }), " ", h("span", { class: "muted", text: clip(r.description, 100) }),
      " ", h("span", { class: "muted", text: money(r.cost_usd_total ?? r.cost_usd) }));
    if (r.children?.length) {
      const sub = h("ul", { class: "tree" });
      const more = h("details", {}, h("summary", { text: `${r.children.length} sub-tasks` }), sub);
      more.addEventListener("toggle", () => { if (more.open && !sub.childElementCount) this.show(r.children, sub); }, { once: false });
      add(li, more);
    }
    return li;
  }

  onEvent(ev) {
    const node = this.nodes.get(ev.task_id);
    if (!node) return;
    const status = ev.type === "agent.status" ? ev.data?.status : ev.type.startsWith("task.") ? ev.data?.status : null;
    if (status) setBadge(node.badge, status === "idle" ? "queued" : status);
  }
}

export class TaskPage {
  constructor(taskId, { navigate }) {
    this.taskId = taskId;
    this.navigate = navigate;
    this.record = null;
    this.agentId = null;
    this.question = null; // {key, widget}
    this.ready = false;
    this.pending = [];
    this.el = h("div", { class: "task-page" }, h("p", { class: "muted", text: "loading " + taskId + "…" }));
    this.refreshRecord = debounce(() => this._loadRecord(), 700);
    this.refreshStatus = debounce(() => this._loadStatus(), 250);
  }

  async load() {
    try {
      await this._loadRecord();
    } catch (e) {
      fill(this.el, h("p", { class: "error", text: e instanceof ApiError && e.status === 404 ? `no task ${this.taskId}` : e.message }),
        link("#/tasks", "back to the tasks"));
      return;
    }
    this._build();
    this._renderRecord();
    const loads = await Promise.allSettled([this._loadStatus(), this.timeline.load(), this._loadChildren()]);
    for (const failed of loads.filter((l) => l.status === "rejected")) console.error(failed.reason);
    this.ready = true; // events apply from here on, even if a part failed to load
    const pending = this.pending;
    this.pending = [];
    if (pending.length) this.onEvents(pending);
  }

  async _loadRecord() {
    const record = await get(`/tasks/${enc(this.taskId)}`);
    const childrenChanged = this.record && (record.children?.length || 0) !== (this.record.children?.length || 0);
    this.record = record;
    this.agentId = record.agent_id;
    if (this.facts) this._renderRecord();
    if (childrenChanged) this._loadChildren();
  }

  async _loadStatus() {
    let st;
    try { st = await get(`/agents/${enc(this.agentId)}/status`); } catch (e) {
      if (e instanceof ApiError && e.status === 404) return; // the agent is not started yet
      throw e;
    }
    this.agentStatus = st;
    this._renderStatus();
  }

  async _loadChildren() {
    const children = this.record.children || [];
    this.childrenBox.hidden = !children.length;
    if (children.length) await this.tree.show(children);
  }

  _build() {
    const r = this.record;
    this.status = badge(r.status);
    this.facts = h("div", { class: "facts" });
    this.waiting = h("div", { class: "waiting" });
    this.resultBox = h("div", { class: "result-box" });
    this.controlsError = h("div", { class: "error", role: "alert" });
    this.pauseBtn = this._control("Pause", "pause", () => post(`/agents/${enc(this.agentId)}/pause`));
    this.resumeBtn = this._control("Resume", "resume", () => post(`/agents/${enc(this.agentId)}/resume`));
    this.cancelBtn = this._control("Cancel task", "cancel danger", () => post(`/tasks/${enc(this.taskId)}/cancel`), true);
    this.deleteBtn = this._control("Delete task", "delete danger", async () => {
      await api("DELETE", `/tasks/${enc(this.taskId)}`);
      this.navigate("#/tasks");
    }, true);
    this.questionBox = h("section", { class: "card question-box", hidden: true }, h("h3", { text: "Waiting for you" }));
    this.tree = new TaskTree();
    this.childrenBox = h("section", { class: "children", hidden: true }, h("h3", { text: "Sub-tasks" }), this.tree.el);
    this.parent = h("div", { class: "parent" });
    this.timeline = new Timeline(this.agentId);
    this.workspace = new Workspace(this.taskId);
    fill(this.el, 
      h("div", { class: "crumbs" }, link("#/tasks", "tasks"), " / ", h("span", { class: "mono", text: this.taskId })),
      h("h2", {}, this.status, " ", h("span", { class: "task-title", text: clip(r.description, 200) })),
      this.parent, this.facts, this.waiting,
      h("div", { class: "row controls" }, this.pauseBtn, this.resumeBtn, this.cancelBtn, this.deleteBtn, this.controlsError),
      this.questionBox, this.resultBox, this._followUp(), this.childrenBox, this.workspace.el, this.timeline.el);
  }

  /** A control button; `confirm`: the first click asks, a second within 4 s acts. */
  _control(label, cls, action, confirm) {
    const b = h("button", { type: "button", class: cls, text: label });
    let armed = null;
    b.addEventListener("click", async () => {
      if (confirm && !armed) {
        b.textContent = "Really " + label.toLowerCase() + "?";
        armed = setTimeout(() => { armed = null; b.textContent = label; }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      b.textContent = label;
      this.controlsError.textContent = "";
      b.disabled = true;
      try {
        await action();
        this.refreshRecord();
        this.refreshStatus();
      } catch (e) {
        this.controlsError.textContent = missingRoute(e) ? `${label}: not available on this edge` : `${label}: ${e.message}`;
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  _followUp() {
    const box = h("textarea", { class: "follow-up", rows: 2, placeholder: "a follow-up or a steering message for the agent", "aria-label": "message" });
    const note = h("div", { class: "muted" });
    const send = h("button", { type: "button", class: "send-message", text: "Send message" });
    const el = h("section", { class: "card follow-up-box" }, h("h3", { text: "Message the agent" }), box,
      h("div", { class: "row" }, send, note));
    send.addEventListener("click", async () => {
      if (!box.value.trim()) { note.textContent = "write a message first"; return; }
      send.disabled = true;
      try {
        const out = await post(`/tasks/${enc(this.taskId)}/messages`, { message: box.value });
        box.value = "";
        note.textContent = out.status === "message_queued" ? "sent: the agent reads it before its next step"
          : out.status === "resume_queued" ? "sent: the follow-up run starts shortly" : "sent: a follow-up run started";
        this.refreshRecord();
      } catch (e) {
        if (missingRoute(e)) {
          fill(el, h("h3", { text: "Message the agent" }),
            h("p", { class: "muted unavailable", text: "This edge does not take follow-up messages yet (POST /tasks/{id}/messages)." }));
          return;
        }
        note.textContent = e.message;
      } finally {
        send.disabled = false;
      }
    });
    return el;
  }

  _renderRecord() {
    const r = this.record;
    setBadge(this.status, r.status);
    const cost = r.cost_usd_total ?? r.cost_usd;
    fill(this.facts, 
      h("span", {}, h("b", { text: r.agent_type })),
      r.run > 1 ? h("span", { text: `run ${r.run}` }) : null,
      h("span", { text: `step ${r.current_step || 0}${r.max_steps ? " / " + r.max_steps : ""}` }),
      h("span", { class: "tokens", text: tokens(r.usage) }),
      h("span", { class: "cost", text: "cost " + money(cost) + (r.budget_usd ? ` of ${money(r.budget_usd)}` : "") }),
      h("span", { class: "muted", text: "created " + when(r.created_at) }),
      r.finished_at ? h("span", { class: "muted", text: "finished " + when(r.finished_at) }) : null,
      h("span", { class: "muted" }, "agent ", h("code", { text: r.agent_id })));
    fill(this.parent, ...(r.parent_task_id ? ["sub-task of ", link("#/tasks/" + enc(r.parent_task_id), r.parent_task_id, "mono")] : []));
    const parts = [];
    if (r.result) {
      parts.push(h("h3", { text: "Result" }), h("div", { class: "pre summary", text: r.result.summary }));
      if (r.result.artifacts?.length) parts.push(h("div", { class: "muted" }, "artifacts: ", r.result.artifacts.map((a) => h("code", { text: a + " " }))));
    }
    if (r.error) parts.push(h("div", { class: "bad pre", text: `${r.error.code}: ${r.error.message}` }));
    fill(this.resultBox, ...parts);
    this._renderButtons();
  }

  _renderButtons() {
    const status = this.agentStatus?.status || this.record.status;
    const done = TERMINAL.has(this.record.status);
    this.pauseBtn.hidden = !(status === "running" || status === "awaiting_human");
    this.resumeBtn.hidden = status !== "paused";
    this.cancelBtn.hidden = done;
    this.deleteBtn.hidden = !done || !!this.record.parent_task_id;
  }

  _renderStatus() {
    const st = this.agentStatus;
    const w = st.waiting_for;
    const parts = [];
    if (w?.task) parts.push(h("span", {}, "waiting for task ", link("#/tasks/" + enc(w.task), w.task, "mono")));
    if (w?.process) parts.push(h("span", { class: "bad", text: `waiting for process ${w.process} (not running)` }));
    if (w?.human) parts.push(h("span", { text: "waiting for a human" }));
    fill(this.waiting, ...parts);
    const req = st.human_request;
    const key = req ? req.request_id : null;
    if (this.question?.key !== key) {
      this.question?.widget.remove();
      this.question = null;
      if (req) {
        const widget = answerWidget(this.agentId, req, { onAnswered: () => { this.refreshStatus(); this.timeline.tail(); } });
        add(this.questionBox, widget);
        this.question = { key, widget };
      }
    }
    if (this.question) this.question.widget.setPaused(st.status === "paused");
    this.questionBox.hidden = !this.question;
    this._renderButtons();
  }

  /** Events of any task (filtered here). */
  onEvents(batch) {
    if (this.gone) return;
    if (!this.ready) { this.pending.push(...batch.filter((ev) => this._mine(ev) || this.tree?.nodes.has(ev.task_id))); return; }
    for (const ev of batch) {
      this.tree.onEvent(ev);
      if (!this._mine(ev)) continue;
      const d = ev.data || {};
      switch (ev.type) {
        case "agent.status":
          if (d.status) { setBadge(this.status, d.status === "idle" ? "queued" : d.status); this.record.status = d.status; }
          this.refreshStatus();
          this.timeline.tail();
          if (TERMINAL.has(d.status) || d.status === "running") this.refreshRecord();
          break;
        case "agent.step":
          this.record.current_step = Math.max(this.record.current_step || 0, d.step || 0);
          this.refreshRecord();
          break;
        case "human.request":
          this.refreshStatus();
          this.timeline.tail();
          break;
        case "llm.response":
        case "llm.error":
        case "tool.result":
        case "human.response":
          this.timeline.tail();
          this.refreshRecord();
          break;
        case "task.deleted":
          fill(this.el, h("p", { class: "muted", text: `task ${this.taskId} was deleted` }), link("#/tasks", "back to the tasks"));
          this.gone = true; // nothing here to update any more
          return;
        default:
          if (ev.type.startsWith("task.")) {
            this.refreshRecord();
            this.timeline.tail();
            if (this.workspace.loaded) this.workspace.refresh();
          }
      }
    }
  }

  _mine(ev) {
    return ev.task_id === this.taskId || (this.agentId && ev.agent_id === this.agentId);
  }

  resync() {
    this.refreshRecord();
    this.refreshStatus();
    this.timeline.tail();
  }
}
