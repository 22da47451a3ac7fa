// The dashboard's entry: header (health, live state, inbox count), hash routes, boot order.
// Boot: open the event stream, then load each list once with it already subscribed, then
// apply live events (live.js). Routes: #/tasks (list, filters in the hash), #/tasks/<id>,
// #/inbox, #/workflows, #/workflows/<id>.
import { forgetToken, get } from "./api.js";
import { add, fill, h, setText } from "./dom.js";
import { Inbox } from "./inbox.js";
import { live } from "./live.js";
import { TaskPage } from "./task.js";
import { TaskList } from "./tasks.js";
import { WorkflowList, WorkflowPage } from "./workflows.js";

const HEALTH_EVERY_MS = 30000;
const $ = (id) => document.getElementById(id);

const views = { tasks: $("view-tasks"), task: $("view-task"), inbox: $("view-inbox"), workflows: $("view-workflows"), workflow: $("view-workflow") };
const navigate = (hash) => { if (location.hash !== hash) location.hash = hash; else route(); };

const taskList = new TaskList({ types: [], navigate });
const inbox = new Inbox();
const workflows = new WorkflowList();
let page = null; // the open TaskPage or WorkflowPage

add(views.tasks, taskList.el);
add(views.inbox, inbox.el);
add(views.workflows, workflows.el);
inbox.onCount = (n) => {
  setText($("inbox-count"), n ? String(n) : "");
  document.title = n ? `(${n}) AgentOps` : "AgentOps";
};

function show(name) {
  for (const [key, el] of Object.entries(views)) el.hidden = key !== name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === (name === "task" ? "tasks" : name === "workflow" ? "workflows" : name));
}

function route() {
  const [path, q] = (location.hash.slice(1) || "/tasks").split("?");
  const params = new URLSearchParams(q || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "tasks" && parts[1]) {
    const id = decodeURIComponent(parts[1]);
    if (!(page instanceof TaskPage && page.taskId === id)) {
      page = new TaskPage(id, { navigate });
      fill(views.task, page.el);
      page.load().catch((e) => console.error(e));
    }
    show("task");
  } else if (parts[0] === "inbox") {
    show("inbox");
  } else if (parts[0] === "workflows" && parts[1]) {
    const id = decodeURIComponent(parts[1]);
    if (!(page instanceof WorkflowPage && page.id === id)) {
      page = new WorkflowPage(id);
      fill(views.workflow, page.el);
      page.load().catch((e) => console.error(e));
    }
    show("workflow");
  } else if (parts[0] === "workflows") {
    if (!workflows.loaded) workflows.load().catch((e) => console.error(e));
    show("workflows");
  } else {
    show("tasks");
    return taskList.show(params);
  }
  return null;
}

async function health() {
  const el = $("health");
  try {
    const resp = await fetch("/health", { cache: "no-store" });
    const body = await resp.json();
    const missing = Object.entries(body.services || {}).filter(([, v]) => v.status !== "up").map(([k]) => k);
    setText(el, body.status === "healthy" ? "healthy" : `degraded${missing.length ? ": " + missing.join(", ") + " missing" : ""}`);
    el.className = body.status === "healthy" ? "ok" : "bad";
  } catch {
    setText(el, "edge unreachable");
    el.className = "bad";
  }
}

const listener = (batch) => {
  taskList.onEvents(batch);
  inbox.onEvents(batch);
  workflows.onEvents(batch);
  page?.onEvents(batch);
};
listener.resync = () => {
  taskList.resync();
  inbox.resync();
  page?.resync();
};

live.onState = (state) => {
  const el = $("live");
  setText(el, state === "live" ? "● live" : "○ " + state);
  el.className = state === "live" ? "ok" : "bad";
};

$("token-forget").addEventListener("click", () => { forgetToken(); location.reload(); });

async function boot() {
  live.listen(listener);
  setInterval(() => { if (!document.hidden) health(); }, HEALTH_EVERY_MS);
  // A first small read: with a token required, this is where the page asks for it, so the
  // WebSocket below already carries it.
  const types = get("/agent-types");
  await types.catch(() => {});
  await live.start(); // subscribed: from here on no event is missed
  window.addEventListener("hashchange", route);
  types.then((b) => taskList.setTypes(b.agent_types || [])).catch((e) => console.error(e));
  // The view asked for first; health and the inbox (a scan of the agents and a read per open
  // question) after it, so they do not compete with it for the edge.
  await Promise.resolve(route()).catch(() => {});
  health();
  inbox.load().catch((e) => console.error(e)).finally(() => {
    performance.mark("inbox-loaded");
    document.body.dataset.inboxLoaded = "1";
  });
}

boot();
