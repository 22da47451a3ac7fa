// A task's workspace: its files, the diff of its work and a download, read when opened.
// The endpoints come with the code-in/code-out work (DESIGN §4b); an edge without them
// answers 404 "no such route" or 405, and this panel then says so instead of its content.
import { download, enc, get, missingRoute, request } from "./api.js";
import { add, count, fill, h, when } from "./dom.js";

const MAX_VIEW_BYTES = 512 * 1024;

function diffView(text) {
  const pre = h("pre", { class: "diff" });
  for (const line of text.split("\n")) {
    const cls = line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ") ? "d-file"
      : line.startsWith("@@") ? "d-hunk" : line.startsWith("+") ? "d-add" : line.startsWith("-") ? "d-del" : "";
    add(pre, h("span", { class: cls, text: line + "\n" }));
  }
  return pre;
}

export class Workspace {
  constructor(taskId) {
    this.taskId = taskId;
    this.loaded = false;
    this.body = h("div", { class: "ws-body" });
    this.view = h("div", { class: "ws-view" });
    this.error = h("div", { class: "error" });
    this.el = h("details", { class: "card workspace" }, h("summary", { text: "Workspace: files, diff, download" }),
      this.body, this.error, this.view);
    this.el.addEventListener("toggle", () => { if (this.el.open && !this.loaded) this.refresh(); });
  }

  /** Read the file list again (only once opened). */
  async refresh() {
    if (!this.el.open) { this.loaded = false; return; }
    this.loaded = true;
    const base = `/tasks/${enc(this.taskId)}`;
    let files;
    try {
      ({ files } = await get(base + "/files"));
    } catch (e) {
      fill(this.body, h("p", { class: "muted unavailable", text: missingRoute(e)
        ? "This edge does not serve workspaces yet (GET /tasks/{id}/files): files, diff and downloads appear once it does."
        : `could not list the files: ${e.message}` }));
      return;
    }
    const rows = files.map((f) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "linkish mono", text: f.path, onclick: () => this.show(f) })),
      h("td", { class: "num", text: count(f.size) + " B" }), h("td", { class: "muted", text: when(f.modified) })));
    fill(this.body, 
      h("div", { class: "row" },
        h("button", { type: "button", class: "show-diff", text: "Show diff", onclick: () => this.diff() }),
        h("button", { type: "button", text: "Download .zip", onclick: () => this._download("zip") }),
        h("button", { type: "button", text: "Download .tar.gz", onclick: () => this._download("tar.gz") }),
        h("button", { type: "button", text: "Refresh", onclick: () => this.refresh() })),
      files.length ? h("table", { class: "files" }, h("tbody", {}, rows)) : h("p", { class: "muted", text: "no files" }));
  }

  async show(file) {
    const path = `/tasks/${enc(this.taskId)}/files/` + file.path.split("/").map(enc).join("/");
    if (file.size > MAX_VIEW_BYTES) return this._save(path, file.path.split("/").pop());
    try {
      const text = await (await request("GET", path)).text();
      fill(this.view, h("h4", { class: "mono", text: file.path }), h("pre", { class: "file", text }));
    } catch (e) { this.error.textContent = e.message; }
  }

  async diff() {
    try {
      const text = await (await request("GET", `/tasks/${enc(this.taskId)}/diff`, undefined, "text/x-diff")).text();
      fill(this.view, h("h4", { text: "Diff" }), text.trim() ? diffView(text) : h("p", { class: "muted", text: "no changes" }));
    } catch (e) {
      this.error.textContent = missingRoute(e) ? "this edge has no diff endpoint yet" : e.message;
    }
  }

  _download(format) {
    return this._save(`/tasks/${enc(this.taskId)}/archive?format=${format}`, `${this.taskId}.${format}`);
  }

  async _save(path, name) {
    try { await download(path, name); } catch (e) { this.error.textContent = e.message; }
  }
}
