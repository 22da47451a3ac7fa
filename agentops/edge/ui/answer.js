// The controls that answer one open human request, fitted to the question (core/answers.py):
// yes/no buttons, one button per choice, approve/refuse with the exact held call, a budget
// field (or stop), free text. The widget is made once per request and never rebuilt, so
// what a person types survives every live update around it.
import { ApiError, enc, post } from "./api.js";
import { add, h, json, money } from "./dom.js";

/** The answer widget for `request` (a `human_request` of `GET /agents/{id}/status`). */
export function answerWidget(agentId, request, { onAnswered } = {}) {
  const error = h("div", { class: "error", role: "alert" });
  const buttons = [];
  const root = h("div", { class: "answer", dataset: { requestId: request.request_id, reason: request.reason } });

  async function send(response) {
    error.textContent = "";
    for (const b of buttons) b.disabled = true;
    try {
      const out = await post(`/agents/${enc(agentId)}/human-response`, { response, request_id: request.request_id });
      root.classList.add("answered");
      status.textContent = out.status === "response_queued" ? "answer queued" : "answered";
      onAnswered?.(out);
    } catch (e) {
      error.textContent = e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e);
      for (const b of buttons) b.disabled = false;
    }
  }

  const btn = (label, cls, fn) => {
    const b = h("button", { type: "button", class: cls, text: label, onclick: fn });
    buttons.push(b);
    return b;
  };

  const status = h("span", { class: "answer-status" });
  add(root, 
    h("div", { class: "question" },
      h("span", { class: "tag tag-" + request.reason, text: request.reason }),
      request.urgency && request.urgency !== "medium" ? h("span", { class: "tag", text: request.urgency }) : null,
      // An approval's question repeats the call and how to answer over the API: the
      // controls below show both, so only its first line is shown.
      h("span", { class: "question-text", text: request.reason === "approval" ? request.question.split("\n")[0] : request.question }),
      status),
    request.context ? h("div", { class: "muted pre", text: request.context }) : null,
  );

  const details = request.details || {};
  if (request.reason === "approval") {
    const comment = h("input", { type: "text", class: "comment", placeholder: "comment (optional; the model reads it on a refusal)" });
    const withComment = (approved) => {
      const c = comment.value.trim();
      return c ? { approved, comment: c } : { approved };
    };
    add(root, 
      h("div", { class: "held-call" },
        h("div", {}, "held call: ", h("code", { class: "tool-name", text: details.tool || "?" })),
        h("pre", { class: "args", text: json(details.arguments ?? {}) })),
      h("div", { class: "row" },
        btn("Approve", "primary approve", () => send(withComment(true))),
        btn("Refuse", "danger refuse", () => send(withComment(false))),
        comment));
  } else if (request.reason === "budget") {
    const spent = Number(details.spent_usd || 0);
    const next = Number(details.next_call_estimate_usd || 0);
    const field = h("input", {
      type: "number", class: "budget", min: "0", step: "any", "aria-label": "new budget in USD",
      value: String(Math.max(Number(details.budget_usd || 0) * 2, Math.ceil((spent + next) * 2 * 100) / 100)),
    });
    add(root, 
      h("div", { class: "muted" },
        `budget ${money(details.budget_usd)} · spent ${money(spent)} · next call up to ${money(next)}`),
      h("div", { class: "row" },
        h("label", {}, "new budget $ ", field),
        btn("Raise budget", "primary raise", () => {
          const value = Number(field.value);
          if (!(value > 0)) { error.textContent = "enter a budget in USD"; return; }
          send({ budget_usd: value });
        }),
        btn("Stop task", "danger stop", () => send({ stop: true }))));
  } else if (request.format === "yes_no") {
    add(root, h("div", { class: "row" },
      btn("Yes", "primary yes", () => send("yes")),
      btn("No", "no", () => send("no"))));
  } else if (request.format === "multiple_choice" && request.choices && request.choices.length) {
    add(root, h("div", { class: "row choices" },
      request.choices.map((choice) => btn(choice, "choice", () => send(choice)))));
  } else {
    const box = h("textarea", { class: "free-text", rows: 3, placeholder: "your answer", "aria-label": "answer" });
    const sendText = () => {
      if (!box.value.trim()) { error.textContent = "write an answer first"; return; }
      send(box.value);
    };
    box.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) sendText();
    });
    add(root, box, h("div", { class: "row" }, btn("Send answer", "primary send", sendText),
      h("span", { class: "muted", text: "Ctrl+Enter sends" })));
  }
  add(root, error);
  root.setPaused = (paused) => {
    root.classList.toggle("paused", paused);
    for (const b of buttons) b.disabled = paused || root.classList.contains("answered");
    status.textContent = paused ? "agent paused: resume it to answer" : (root.classList.contains("answered") ? status.textContent : "");
  };
  return root;
}
