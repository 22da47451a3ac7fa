"""The mock LLM's run for `tech_lead`: plan, delegate to three specialists, sum up. Pure.

For a task such as "Build a todo app" the tech lead:
1. looks at the workspace (`list_files`);
2. delegates the API and its tests to `backend_developer`;
3. delegates a page that calls that API to `frontend_developer`;
4. delegates a Dockerfile and a compose file for both to `devops_engineer`;
5. completes with the three results' summaries (read from the delegate calls' results in the
   conversation) and the files they made as artifacts.

Each delegation carries a `context.mock` script, so each child plays a short, real run: the
backend writes `api.py` and `test_api.py` and runs the tests; the frontend lists the files
(it sees the backend's), reads `api.py` and writes `index.html` calling its routes; devops
lists the files (it sees both) and writes `Dockerfile` and `compose.yaml`. The children run
one after the other (one call per answer, and a delegating call waits for its child), in the
tech lead's workspace, so each sees the earlier ones' files.
"""

from __future__ import annotations

import json
from typing import Any

from agentops.llm.types import Message

PlanStep = tuple[str, dict[str, Any]]

API = '''"""A tiny todo API (standard library only): GET/POST /todos, DELETE /todos/<id>."""
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

TODOS: dict[int, dict] = {}


def add(title: str) -> dict:
    todo = {"id": len(TODOS) + 1, "title": title, "done": False}
    TODOS[todo["id"]] = todo
    return todo


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, list(TODOS.values()))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        title = json.loads(self.rfile.read(length) or b"{}").get("title", "")
        self._send(201, add(title))


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''

TESTS = """from api import TODOS, add

TODOS.clear()
first = add("write tests")
assert first == {"id": 1, "title": "write tests", "done": False}
assert len(TODOS) == 1
print("all tests passed")
"""

PAGE = """<!doctype html>
<title>Todos</title>
<ul id="todos"></ul>
<form id="new"><input name="title"><button>Add</button></form>
<script>
async function load() {
  const todos = await (await fetch("/todos")).json();
  document.getElementById("todos").replaceChildren(
    ...todos.map((t) => Object.assign(document.createElement("li"), {textContent: t.title})));
}
document.getElementById("new").addEventListener("submit", async (e) => {
  e.preventDefault();
  const title = new FormData(e.target).get("title");
  await fetch("/todos", {method: "POST", body: JSON.stringify({title})});
  load();
});
load();
</script>
"""

DOCKERFILE = """FROM python:3.11-slim
WORKDIR /app
COPY api.py index.html ./
EXPOSE 8080
CMD ["python", "api.py"]
"""

COMPOSE = """services:
  api:
    build: .
    ports: ["8080:8080"]
  web:
    image: nginx:alpine
    volumes: ["./index.html:/usr/share/nginx/html/index.html:ro"]
    ports: ["8081:80"]
"""


RUN_TESTS = "import runpy; runpy.run_path('test_api.py')"


def _write(path: str, content: str) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": path, "content": content}}


def _delegate(agent_type: str, description: str, script: list[dict[str, Any]]) -> PlanStep:
    return (
        "delegate_task",
        {
            "agent_type": agent_type,
            "description": description,
            "context": {"mock": {"script": script}},
        },
    )


def tech_lead_plan(task: str) -> tuple[PlanStep, ...]:
    """Every step but the last; the last (`complete_task`) is `summary_step`."""
    what = task or "the requested application"
    return (
        ("list_files", {}),
        _delegate(
            "backend_developer",
            f"{what}: the REST API (GET/POST /todos) and its tests",
            [
                _write("api.py", API),
                _write("test_api.py", TESTS),
                {
                    "tool": "execute_code",
                    "args": {
                        "language": "python",
                        "code": RUN_TESTS,
                    },
                },
            ],
        ),
        _delegate(
            "frontend_developer",
            f"{what}: a page that lists and adds todos through the API in api.py",
            [
                {"tool": "list_files", "args": {}},
                {"tool": "read_file", "args": {"path": "api.py"}},
                _write("index.html", PAGE),
            ],
        ),
        _delegate(
            "devops_engineer",
            f"{what}: a Dockerfile and a compose file for the API and the page",
            [
                {"tool": "list_files", "args": {}},
                _write("Dockerfile", DOCKERFILE),
                _write("compose.yaml", COMPOSE),
            ],
        ),
    )


def summary_step(messages: tuple[Message, ...]) -> PlanStep:
    """`complete_task` with the delegated results' summaries and their files."""
    parts: list[str] = []
    artifacts: list[str] = []
    for message in messages:
        if message.role != "tool" or message.name != "delegate_task":
            continue
        try:
            result = json.loads(message.content)
        except ValueError:
            continue
        if not isinstance(result, dict):
            continue
        summary = result.get("summary") or f"no summary ({result.get('status')})"
        parts.append(f"- {result.get('task_id')} ({result.get('status')}): {summary}")
        artifacts += [a for a in result.get("artifacts") or [] if isinstance(a, str)]
    text = "The team's work:\n" + "\n".join(parts) if parts else "Nothing was delegated."
    return ("complete_task", {"summary": text, "artifacts": list(dict.fromkeys(artifacts))})
