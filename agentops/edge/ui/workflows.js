// Workflows (DESIGN §4c): the list, and one workflow's stages as a tree by `depends_on`.
// An edge without `GET /workflows` (404 "no such route" or 405) gets a short note instead.
// Live: `workflow.*` events (and the events of a stage's task) schedule one debounced read.
import { enc, get, missingRoute } from "./api.js";
import { badge, clip, debounce, fill, h, link, money, reconcile, setBadge, setText } from "./dom.js";
import { workflowApproval } from "./inbox.js";

const UNAVAILABLE = "This edge has no workflows yet (GET /workflows). They appear here once it does.";

export class WorkflowList {
  constructor() {
    this.rows = new Map();
    this.tbody = h("tbody");
    this.note = h("p", { class: "muted" });
    this.el = h("div", {}, this.note, h("table", { class: "workflows" },
      h("thead", {}, h("tr", {}, ["workflow", "status", "stages", "cost", "created"].map((t) => h("th", { text: t })))), this.tbody));
    this.refresh = debounce(() => this.load(), 1000);
    this.loaded = false;
  }

  async load() {
    let body;
    try { body = await get("/workflows"); } catch (e) {
      this.note.textContent = missingRoute(e) ? UNAVAILABLE : "could not load workflows: " + e.message;
      this.el.classList.add("unavailable");
      return;
    }
    this.loaded = true;
    const list = body.workflows || [];
    this.note.textContent = list.length ? "" : "No workflows yet.";
    for (const w of list) this.rows.set(w.workflow_id, w);
    const made = reconcile(this.tbody, list.map((w) => w.workflow_id), (id) => h("tr", {},
      h("td", {}, link("#/workflows/" + enc(id), id, "mono"), h("div", { class: "desc" })), h("td", {}, badge("")),
      h("td", { class: "num" }), h("td", { class: "num" }), h("td", { class: "muted" })));
    for (const [id, tr] of made) {
      const w = this.rows.get(id);
      const [first, status, stages, cost, created] = tr.children;
      setText(first.lastChild, w.name || "");
      setBadge(status.firstChild, w.status);
      setText(stages, (w.stages || []).length || w.stage_count || "");
      setText(cost, money(w.cost_usd_total ?? w.cost_usd));
      setText(created, (w.created_at || "").slice(0, 16).replace("T", " "));
    }
  }

  onEvents(batch) {
    if (this.loaded && batch.some((ev) => ev.type.startsWith("workflow."))) this.refresh();
  }
}

export class WorkflowPage {
  constructor(id) {
    this.id = id;
    this.taskIds = new Set();
    this.el = h("div", { class: "workflow-page" }, h("p", { class: "muted", text: "loading…" }));
    this.refresh = debounce(() => this.load(), 700);
  }

  async load() {
    let w;
    try { w = await get(`/workflows/${enc(this.id)}`); } catch (e) {
      fill(this.el, h("p", { class: "muted", text: missingRoute(e) ? UNAVAILABLE : e.message }), link("#/workflows", "back"));
      return;
    }
    const stages = w.stages || [];
    this.taskIds = new Set(stages.map((s) => s.task_id).filter(Boolean));
    const byId = new Map(stages.map((s) => [s.id, s]));
    // A stage hangs under the last stage it depends on (the one it waits for last in the
    // list); the others it depends on are named on its line.
    const kids = new Map();
    const roots = [];
    for (const s of stages) {
      const deps = (s.depends_on || []).filter((d) => byId.has(d));
      if (!deps.length) roots.push(s);
      else {
        const parent = deps[deps.length - 1];
        if (!kids.has(parent)) kids.set(parent, []);
        kids.get(parent).push(s);
      }
    }
    const node = (s) => h("li", {}, badge(s.status), " ", h("b", { text: s.id }), " ", h("span", { text: s.agent_type }),
      s.task_id ? [" ", link("#/tasks/" + enc(s.task_id), s.task_id, "mono")] : null,
      s.approval ? h("span", { class: "tag tag-approval", text: "approval" }) : null,
      (s.depends_on || []).length > 1 ? h("span", { class: "muted", text: " after " + s.depends_on.join(", ") }) : null,
      s.cost_usd != null ? h("span", { class: "muted", text: " " + money(s.cost_usd) }) : null,
      s.description ? h("div", { class: "muted", text: clip(s.description, 160) }) : null,
      kids.has(s.id) ? h("ul", { class: "tree" }, kids.get(s.id).map(node)) : null);
    fill(this.el, 
      h("div", { class: "crumbs" }, link("#/workflows", "workflows"), " / ", h("span", { class: "mono", text: this.id })),
      h("h2", {}, badge(w.status), " ", h("span", { text: w.name || this.id })),
      h("div", { class: "facts" }, h("span", { text: "cost " + money(w.cost_usd_total ?? w.cost_usd) })),
      w.status === "awaiting_human" ? workflowApproval(w) : null,
      h("h3", { text: "Stages" }), h("ul", { class: "tree stages" }, roots.map(node)));
  }

  onEvents(batch) {
    if (batch.some((ev) => ev.data?.workflow_id === this.id || this.taskIds.has(ev.task_id) && ev.type.startsWith("task."))) this.refresh();
  }
}
