// The task list: filters (status, agent type), paging, a form for a new task.
// Rules:
// - One `GET /tasks` per filter or page change; live events then patch the rows they name
//   (status, step, tokens, cost, result) and a new task is inserted from its `task.created`
//   event: streaming events cause no API calls here at all.
// - Events that arrive while a page loads are applied after it only where they cannot count
//   twice (a status newer than the record, the higher step); additive figures (tokens, cost)
//   are taken from events that arrive after the page, and corrected by the task's end event.
import { enc, get, post, query } from "./api.js";
import { add, badge, clip, count, h, link, money, reconcile, setBadge, setClass, setText, TERMINAL, when } from "./dom.js";

export const PAGE = 50;
const STATUSES = ["queued", "running", "paused", "awaiting_human", "completed", "failed", "cancelled"];

function zeroUsage() { return { input_tokens: 0, output_tokens: 0, cost_usd: 0 }; }

export class TaskList {
  constructor({ types, navigate }) {
    this.types = types;
    this.navigate = navigate;
    this.filters = { status: "", type: "", offset: 0 };
    this.rows = new Map(); // task_id -> {record, tr, cells, updated}
    this.order = [];
    this.total = 0;
    this.loading = null;
    this.pending = [];
    this.firstRender = true;

    this.statusSel = h("select", { class: "f-status", "aria-label": "status", onchange: () => this._filter() },
      h("option", { value: "", text: "any status" }), STATUSES.map((s) => h("option", { value: s, text: s })));
    this.typeSel = h("select", { class: "f-type", "aria-label": "agent type", onchange: () => this._filter() },
      h("option", { value: "", text: "any type" }));
    this.totalEl = h("span", { class: "muted total" });
    this.prev = h("button", { type: "button", class: "prev", text: "‹ newer", onclick: () => this._page(-1) });
    this.next = h("button", { type: "button", class: "next", text: "older ›", onclick: () => this._page(1) });
    this.tbody = h("tbody", { id: "task-rows" });
    this.note = h("div", { class: "muted note" });
    this.el = h("div", {},
      this._form(),
      h("div", { class: "toolbar" }, this.statusSel, this.typeSel, this.totalEl, h("span", { class: "grow" }), this.prev, this.next),
      this.note,
      h("table", { class: "tasks" },
        h("thead", {}, h("tr", {}, ["task", "type", "status", "step", "tokens", "cost", "created", "result"].map((t) => h("th", { text: t })))),
        this.tbody));
  }

  setTypes(types) {
    this.types = types;
    for (const sel of [this.typeSel, this.formType]) {
      const keep = sel.value;
      add(sel, ...types.map((t) => h("option", { value: t.agent_type, text: t.name || t.agent_type })));
      if (keep) sel.value = keep;
    }
  }

  _form() {
    this.formType = h("select", { name: "agent_type", "aria-label": "agent type", required: true });
    const desc = h("textarea", { name: "description", rows: 2, placeholder: "What should the agent do?", required: true });
    const budget = h("input", { type: "number", name: "budget_usd", min: "0", step: "any", placeholder: "budget $ (optional)" });
    const steps = h("input", { type: "number", name: "max_steps", min: "1", max: "200", placeholder: "max steps" });
    const context = h("textarea", { name: "context", rows: 3, class: "mono", placeholder: '{"mock": {"script": [...]}}' });
    const error = h("div", { class: "error", role: "alert" });
    const form = h("form", { class: "new-task card" },
      h("div", { class: "row" }, this.formType, desc),
      h("details", {}, h("summary", { text: "options" }),
        h("div", { class: "row" }, budget, steps), h("label", { class: "block" }, "context (JSON object)", context)),
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary", text: "Submit task" }), error));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      const body = { agent_type: this.formType.value, description: desc.value };
      if (budget.value) body.budget_usd = Number(budget.value);
      if (steps.value) body.max_steps = Number(steps.value);
      if (context.value.trim()) {
        try { body.context = JSON.parse(context.value); } catch (err) { error.textContent = "context: " + err.message; return; }
      }
      try {
        const created = await post("/tasks", body);
        desc.value = "";
        this.navigate("#/tasks/" + enc(created.task_id));
      } catch (err) {
        const fields = Array.isArray(err.details) ? " — " + err.details.map((d) => `${d.field}: ${d.message}`).join("; ") : "";
        error.textContent = `${err.message}${fields}`;
      }
    });
    return form;
  }

  /** Show with the filters of the hash (`#/tasks?status=&type=&offset=`). */
  show(params) {
    const f = { status: params.get("status") || "", type: params.get("type") || "", offset: Number(params.get("offset") || 0) };
    if (this.loaded && f.status === this.filters.status && f.type === this.filters.type && f.offset === this.filters.offset) return;
    this.filters = f;
    this.statusSel.value = f.status;
    this.typeSel.value = f.type;
    return this.load();
  }

  _filter() {
    this.navigate("#/tasks" + query({ status: this.statusSel.value, type: this.typeSel.value }));
  }

  _page(dir) {
    const offset = Math.max(0, this.filters.offset + dir * PAGE);
    this.navigate("#/tasks" + query({ status: this.filters.status, type: this.filters.type, offset: offset || "" }));
  }

  async load() {
    const load = (async () => {
      const f = this.filters;
      const body = await get("/tasks" + query({ status: f.status, agent_type: f.type, limit: PAGE, offset: f.offset }));
      if (load !== this.loading) return; // a newer load started meanwhile
      const before = this.rows;
      this.rows = new Map();
      this.order = [];
      for (const record of body.tasks) {
        const row = this._add(record, false);
        const kept = before.get(record.task_id); // its <tr> stays: only changed cells are written
        if (kept) Object.assign(row, { tr: kept.tr, cells: kept.cells, changed: true });
      }
      this.total = body.total;
      this.loaded = true;
    })();
    this.loading = load;
    try {
      await load;
    } catch (e) {
      this.note.textContent = "could not load tasks: " + e.message;
      throw e;
    } finally {
      if (this.loading === load) {
        this.loading = null;
        this.note.textContent = "";
        const pending = this.pending;
        this.pending = [];
        this._apply(pending, false);
        this._render();
      }
    }
  }

  resync() { this.loaded = false; this.load().catch(() => {}); }

  _add(record, top) {
    if (!record.usage) record.usage = zeroUsage();
    const row = { record, updated: record.updated_at || record.created_at, tr: null, cells: null };
    this.rows.set(record.task_id, row);
    if (top) this.order.unshift(record.task_id);
    else this.order.push(record.task_id);
    return row;
  }

  _matches(agentType, status) {
    return (!this.filters.type || this.filters.type === agentType) && (!this.filters.status || this.filters.status === status);
  }

  onEvents(batch) {
    if (this.loading) { this.pending.push(...batch); return; }
    if (this._apply(batch, true)) this._render();
  }

  /** Patch rows from events; `fresh`: the events are newer than every row shown. */
  _apply(batch, fresh) {
    let dirty = false;
    for (const ev of batch) {
      const d = ev.data || {};
      if (ev.type === "task.created") {
        if (this.rows.has(ev.task_id) || !this._matches(d.agent_type, d.status || "queued")) continue;
        this.total += 1;
        dirty = true;
        if (this.filters.offset > 0) continue; // shown on the first page only
        this._add({ task_id: ev.task_id, agent_id: ev.agent_id, agent_type: d.agent_type, description: d.description,
          status: d.status || "queued", current_step: 0, created_at: ev.ts, updated_at: ev.ts, usage: zeroUsage(),
          parent_task_id: d.parent_task_id }, true).changed = true;
        if (this.order.length > PAGE) this.rows.delete(this.order.pop());
        continue;
      }
      if (ev.type === "task.deleted") {
        if (this.rows.delete(ev.task_id)) {
          this.order = this.order.filter((id) => id !== ev.task_id);
          this.total = Math.max(0, this.total - 1);
          dirty = true;
        }
        continue;
      }
      const row = this.rows.get(ev.task_id);
      if (!row || (ev.agent_id && row.record.agent_id && ev.agent_id !== row.record.agent_id)) continue;
      const r = row.record;
      if (ev.type === "agent.status" && d.status) {
        if (ev.ts < row.updated || TERMINAL.has(r.status) && !fresh) continue;
        r.status = d.status === "idle" ? "queued" : d.status;
        row.updated = ev.ts;
      } else if (ev.type === "agent.step") {
        r.current_step = Math.max(r.current_step || 0, d.step || 0);
      } else if (ev.type === "llm.response" && fresh && !TERMINAL.has(r.status)) {
        const u = d.usage || {};
        r.usage = { input_tokens: r.usage.input_tokens + (u.input_tokens || 0), output_tokens: r.usage.output_tokens + (u.output_tokens || 0),
          cost_usd: r.usage.cost_usd + (d.cost_usd || 0) };
      } else if (ev.type === "task.completed" || ev.type === "task.failed" || ev.type === "task.cancelled") {
        r.status = d.status || ev.type.slice(5);
        r.result = d.result; r.error = d.error;
        if (d.usage) r.usage = d.usage;
        if (d.steps != null) r.current_step = d.steps;
        row.updated = ev.ts;
      } else continue;
      row.changed = true;
      dirty = true;
    }
    return dirty;
  }

  _render() {
    const made = reconcile(this.tbody, this.order, (id) => this._row(this.rows.get(id)));
    for (const [id, tr] of made) {
      const row = this.rows.get(id);
      if (row.tr !== tr) tr.replaceWith(this._row(row)); // (never expected: keys are task ids)
      if (row.changed || !row.updatedOnce) this._update(row);
      row.updatedOnce = true;
      row.changed = false;
    }
    const { offset } = this.filters;
    const shown = this.order.length;
    setText(this.totalEl, shown ? `${offset + 1}–${offset + shown} of ${this.total}` : `${this.total} tasks`);
    this.prev.disabled = offset === 0;
    this.next.disabled = offset + PAGE >= this.total;
    if (this.firstRender) {
      this.firstRender = false;
      performance.mark("tasks-rendered");
      document.body.dataset.tasksRendered = "1";
    }
  }

  _row(row) {
    const r = row.record;
    const cells = {
      status: badge(r.status), step: h("td", { class: "num" }), tokens: h("td", { class: "num" }),
      cost: h("td", { class: "num" }), created: h("td", { class: "muted" }), result: h("td", { class: "result" }),
    };
    const first = h("td", {}, link("#/tasks/" + enc(r.task_id), r.task_id, "mono"),
      r.parent_task_id ? h("span", { class: "muted", text: " ↳ sub-task" }) : null,
      h("div", { class: "desc", text: clip(r.description, 140) }));
    row.tr = h("tr", {}, first, h("td", { text: r.agent_type }), h("td", {}, cells.status), cells.step, cells.tokens,
      cells.cost, cells.created, cells.result);
    row.cells = cells;
    return row.tr;
  }

  _update(row) {
    const r = row.record;
    const c = row.cells;
    setBadge(c.status, r.status);
    setText(c.step, r.current_step ? (r.max_steps ? `${r.current_step}/${r.max_steps}` : r.current_step) : "");
    setText(c.tokens, r.usage ? `${count(r.usage.input_tokens)} / ${count(r.usage.output_tokens)}` : "");
    setText(c.cost, money(r.cost_usd_total ?? r.usage?.cost_usd));
    setText(c.created, when(r.created_at));
    setText(c.result, r.result ? clip(r.result.summary, 160) : r.error ? clip(`${r.error.code}: ${r.error.message}`, 160) : "");
    setClass(c.result, "bad", !!r.error);
    setClass(row.tr, "off-filter", !this._matches(r.agent_type, r.status));
  }
}
