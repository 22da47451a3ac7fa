"""The runs the mock LLM plays when a task gives no script: one short plan per agent type.

Rules:
- Pure: plain data and string assembly. No clock, no randomness, no I/O, so the same
  (agent type, task line) always gives the same steps, byte for byte.
- A plan is a tuple of `(tool name, arguments)` steps, one per LLM call, ending with
  `complete_task`. Each plan works as a real agent would: it looks at the workspace
  (`list_files`), writes a small working project, runs its check with `execute_code`, then
  finds a spot to improve (`search_files`, `read_file`), changes it with `edit_file`, runs
  the check again and finishes with a summary and the files as artifacts.
- Every `edit_file` `old` spans a line break, so it can never occur inside the task line
  (one line) and stays unique in the file whatever the task says.
- The generated code really runs: the backend tests print "all tests passed" under
  `python test_auth_service.py`, the devops check passes `bash -n`, the frontend check runs
  under node. Unit tests run every plan through the real tool handlers to keep it so.
- A type without a plan of its own (a type defined as data, DESIGN §4c) gets the generic run
  (`generic_plan`): it looks at the workspace, writes `notes/<type>.md` about the task, reads
  it back and completes with a summary naming the type, using only the tools it is offered.
- The task's first line goes into one comment per main file, made safe for the comment
  syntax (printable characters only; no `--` inside an HTML comment). It is placed after
  the first lines so it can never act as a shebang, a Python coding cookie or a Dockerfile
  parser directive.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

PlanStep = tuple[str, dict[str, Any]]

_MAX_TASK_LINE = 160
_FALLBACK_TASK = "the requested change"


def task_line(text: str) -> str:
    """The first non-blank line of a task description, printable and bounded."""
    for line in text.splitlines():
        # Control characters become spaces; runs of whitespace collapse to one.
        clean = " ".join("".join(ch if ch.isprintable() else " " for ch in line).split())
        if clean:
            return clean[:_MAX_TASK_LINE]
    return ""


def default_plan(agent_type: str, task: str) -> tuple[PlanStep, ...]:
    """The scripted steps for `agent_type`; empty for an agent type without a plan."""
    builder = _PLANS.get(agent_type)
    return builder(task or _FALLBACK_TASK) if builder else ()


def generic_plan(agent_type: str, task: str, tools: Collection[str]) -> tuple[PlanStep, ...]:
    """The run of a type without its own plan, with the tools it is offered (`tools`)."""
    task = task or _FALLBACK_TASK
    who = agent_type or "agent"
    path = f"notes/{who}.md"
    steps: list[PlanStep] = [_look()] if "list_files" in tools else []
    writes = "write_file" in tools
    if writes:
        steps.append(_write(path, _NOTES.format(who=who, task=task)))
        if "read_file" in tools:
            steps.append(_read(path))
    done = f"wrote {path} with a plan for it" if writes else "it has no tool to write files with"
    steps.append(_complete(f"{who} worked on: {task}. Looked at the workspace; {done}.", []))
    if writes:
        steps[-1][1]["artifacts"].append(path)
    return tuple(steps)


_NOTES = """# Notes from {who}

Task: {task}

1. Looked at what the workspace holds.
2. Split the task into small, checkable steps.
3. Wrote these notes so the next agent (or person) can pick the work up.
"""


def _fill(template: str, task: str) -> str:
    return template.replace("__TASK__", task, 1)


def _write(path: str, content: str) -> PlanStep:
    return ("write_file", {"path": path, "content": content})


def _run(language: str, code: str) -> PlanStep:
    return ("execute_code", {"language": language, "code": code})


def _look() -> PlanStep:
    return ("list_files", {"path": "."})


def _search(pattern: str, glob: str) -> PlanStep:
    return ("search_files", {"pattern": pattern, "glob": glob})


def _read(path: str) -> PlanStep:
    return ("read_file", {"path": path})


def _edit(path: str, old: str, new: str) -> PlanStep:
    assert "\n" in old, "an edit's `old` spans lines, so the task line cannot contain it"
    return ("edit_file", {"path": path, "old": old, "new": new})


def _complete(summary: str, artifacts: list[str]) -> PlanStep:
    return ("complete_task", {"summary": summary, "artifacts": artifacts})


def _backend(task: str) -> tuple[PlanStep, ...]:
    run_tests = _run(
        "python", "import runpy\nrunpy.run_path('test_auth_service.py', run_name='__main__')\n"
    )
    return (
        _look(),
        _write("auth_service.py", _fill(_AUTH_SERVICE, task)),
        _write("test_auth_service.py", _TEST_AUTH_SERVICE),
        run_tests,
        _search(r"raise ValueError", "*.py"),
        _read("auth_service.py"),
        _edit("auth_service.py", _SECRET_CHECK, _SECRET_CHECK + _SUBJECT_CHECK),
        _edit("test_auth_service.py", _MAIN_GUARD, _SUBJECT_TEST + _MAIN_GUARD),
        run_tests,
        _complete(
            f"Backend work for: {task}. Added auth_service.py, a standard-library JWT (HS256) "
            "module with create_token/verify_token (signature checked in constant time, "
            "expiry enforced, empty subjects refused) and PBKDF2-SHA256 password hashing, plus "
            "test_auth_service.py; all tests pass (python test_auth_service.py).",
            ["auth_service.py", "test_auth_service.py"],
        ),
    )


def _devops(task: str) -> tuple[PlanStep, ...]:
    return (
        _look(),
        _write("Dockerfile", _fill(_DOCKERFILE, task)),
        _write(".github/workflows/ci.yml", _fill(_CI_WORKFLOW, task)),
        _write("deploy.sh", _fill(_DEPLOY_SH, task)),
        _run("bash", _DEVOPS_CHECK),
        _search(r"^(on|permissions|jobs):", "*.yml"),
        _edit(".github/workflows/ci.yml", _PERMISSIONS, _PERMISSIONS + _CONCURRENCY),
        _run("bash", _DEVOPS_CHECK + _CONCURRENCY_CHECK),
        _complete(
            f"DevOps work for: {task}. Added a slim non-root Dockerfile with a health check, "
            "a GitHub Actions workflow (tests on every push and pull request, image build on "
            "main, superseded runs cancelled) and deploy.sh (staging|production, DRY_RUN=1 "
            "supported); the deploy script passes bash -n and a dry run.",
            ["Dockerfile", ".github/workflows/ci.yml", "deploy.sh"],
        ),
    )


def _frontend(task: str) -> tuple[PlanStep, ...]:
    html_safe = re.sub(r"-{2,}", "-", task)  # `--` may not appear inside an HTML comment
    return (
        _look(),
        _write("index.html", _fill(_INDEX_HTML, html_safe)),
        _write("app.js", _fill(_APP_JS, task)),
        _run("javascript", _FRONTEND_CHECK),
        _search(r"\.trim\(\)", "*.js"),
        _edit("app.js", _EMAIL_LINE, _EMAIL_LINE.replace(".trim();", ".trim().toLowerCase();")),
        _run("javascript", _FRONTEND_CHECK),
        _complete(
            f"Frontend work for: {task}. Added index.html, an accessible sign-in form, and "
            "app.js, which validates email (normalised to lower case) and password before "
            "submit and shows errors inline; the validation checks pass under node.",
            ["index.html", "app.js"],
        ),
    )


# ---- the edits (each `old` spans a line break; see the rules above) ----

_SECRET_CHECK = """    if not secret:
        raise ValueError("secret must not be empty")
"""

_SUBJECT_CHECK = """    if not subject:
        raise ValueError("subject must not be empty")
"""

_MAIN_GUARD = """

if __name__ == "__main__":
"""

_SUBJECT_TEST = """

def test_empty_subject_is_rejected():
    try:
        create_token("", SECRET, now=NOW)
    except ValueError as exc:
        assert "subject" in str(exc)
    else:
        raise AssertionError("expected ValueError")
"""

_PERMISSIONS = """permissions:
  contents: read
"""

_CONCURRENCY = """
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
"""

_CONCURRENCY_CHECK = """grep -q '^concurrency:' .github/workflows/ci.yml && echo "ci.yml cancels superseded runs"
"""

_EMAIL_LINE = """  const email = String((values && values.email) || "").trim();
"""


# ---- file templates (`__TASK__` is replaced by the task line) ----

_AUTH_SERVICE = r'''"""Stateless authentication: HS256 JSON Web Tokens and PBKDF2 password hashes.

Standard library only. Tokens carry `sub`, `iat` and `exp`; verification checks the
signature in constant time before it trusts any claim.
"""

# Task: __TASK__

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from typing import Any

PBKDF2_ITERATIONS = 120_000
DEFAULT_TTL_S = 3600
_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenError(ValueError):
    """The token is malformed, forged or expired."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _sign(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()


def create_token(
    subject: str,
    secret: str,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    claims: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A signed token for `subject`, valid for `ttl_s` seconds."""
    if not secret:
        raise ValueError("secret must not be empty")
    issued = int(time.time() if now is None else now)
    payload = {**(claims or {}), "sub": subject, "iat": issued, "exp": issued + ttl_s}
    signing_input = f"{_b64encode(_json(_HEADER))}.{_b64encode(_json(payload))}"
    signature = _sign(signing_input.encode("ascii"), secret)
    return f"{signing_input}.{_b64encode(signature)}"


def verify_token(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """The token's claims, or TokenError if it is malformed, forged or expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header_b64, payload_b64, signature_b64 = parts
    try:
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        signature = _b64decode(signature_b64)
        header = json.loads(_b64decode(header_b64))
    except (ValueError, binascii.Error) as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("unsupported algorithm")
    if not hmac.compare_digest(signature, _sign(signing_input, secret)):
        raise TokenError("invalid signature")
    try:
        payload = json.loads(_b64decode(payload_b64))
    except (ValueError, binascii.Error) as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise TokenError("malformed claims")
    if payload["exp"] <= (time.time() if now is None else now):
        raise TokenError("token expired")
    return payload


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted PBKDF2-SHA256 hash: `pbkdf2_sha256$<iterations>$<salt>$<digest>`."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64encode(salt)}${_b64encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash made by hash_password (constant-time compare)."""
    try:
        scheme, iterations, salt_b64, digest_b64 = stored.split("$")
        salt, expected = _b64decode(salt_b64), _b64decode(digest_b64)
        rounds = int(iterations)
    except (ValueError, binascii.Error):
        return False
    if scheme != "pbkdf2_sha256" or rounds < 1:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, rounds)
    return hmac.compare_digest(digest, expected)
'''


_TEST_AUTH_SERVICE = r'''"""Tests for auth_service: run with `python test_auth_service.py` (or pytest)."""

from auth_service import (
    TokenError,
    create_token,
    hash_password,
    verify_password,
    verify_token,
)

SECRET = "test-secret"
NOW = 1_700_000_000


def expect_token_error(token, secret=SECRET, now=NOW + 1):
    try:
        verify_token(token, secret, now=now)
    except TokenError as exc:
        return str(exc)
    raise AssertionError("expected TokenError")


def test_token_round_trip():
    token = create_token("alice", SECRET, claims={"role": "admin"}, now=NOW)
    claims = verify_token(token, SECRET, now=NOW + 1)
    assert claims["sub"] == "alice"
    assert claims["role"] == "admin"
    assert claims["exp"] == NOW + 3600


def test_wrong_secret_is_rejected():
    token = create_token("alice", SECRET, now=NOW)
    assert expect_token_error(token, secret="other-secret") == "invalid signature"


def test_tampered_payload_is_rejected():
    header, _, signature = create_token("alice", SECRET, now=NOW).split(".")
    forged_payload = create_token("mallory", SECRET, now=NOW).split(".")[1]
    assert expect_token_error(f"{header}.{forged_payload}.{signature}") == "invalid signature"


def test_expired_token_is_rejected():
    token = create_token("alice", SECRET, ttl_s=60, now=NOW)
    assert expect_token_error(token, now=NOW + 61) == "token expired"


def test_malformed_token_is_rejected():
    assert expect_token_error("not-a-token") == "malformed token"
    assert expect_token_error("a.b") == "malformed token"


def test_password_hash_verifies_only_the_right_password():
    stored = hash_password("correct horse battery staple")
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("wrong password", stored)
    assert not verify_password("anything", "not-a-hash")


def test_password_hashes_are_salted():
    assert hash_password("same") != hash_password("same")


if __name__ == "__main__":
    tests = [fn for name, fn in sorted(globals().items()) if name.startswith("test_")]
    for test in tests:
        test()
        print(f"ok   {test.__name__}")
    print(f"all tests passed ({len(tests)} tests)")
'''


_DOCKERFILE = r"""# syntax=docker/dockerfile:1
FROM python:3.11-slim AS runtime
# Task: __TASK__

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first, so code changes do not invalidate the dependency layer.
COPY requirements.txt* ./
RUN if [ -f requirements.txt ]; then pip install -r requirements.txt; fi

COPY . .

RUN useradd --system --uid 10001 --home-dir /app app && chown -R app /app
USER app

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"

CMD ["python", "-m", "app"]
"""


_CI_WORKFLOW = r"""# Task: __TASK__
name: ci

on:
  push:
    branches: [main]
  pull_request:

permissions:
  contents: read

jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
          cache: pip
      - name: Install dependencies
        run: |
          python -m pip install --upgrade pip
          if [ -f requirements.txt ]; then pip install -r requirements.txt; fi
          pip install pytest
      - name: Test
        run: pytest -q
      - name: Check deploy script
        run: bash -n deploy.sh

  image:
    needs: test
    runs-on: ubuntu-latest
    if: github.ref == 'refs/heads/main'
    steps:
      - uses: actions/checkout@v4
      - name: Build image
        run: docker build -t app:${{ github.sha }} .
"""


_DEPLOY_SH = r"""#!/usr/bin/env bash
# Build, push and roll out the application image.
# Task: __TASK__
#
# Usage: deploy.sh <environment> [version]
#   environment  staging | production
#   version      image tag (default: the current git commit, else "dev")
# Set DRY_RUN=1 to print the commands instead of running them.
set -euo pipefail

REGISTRY="${REGISTRY:-registry.example.com/team}"
IMAGE_NAME="${IMAGE_NAME:-app}"
DRY_RUN="${DRY_RUN:-0}"

usage() {
  sed -n 's/^# \{0,1\}//; 5,8p' "$0" >&2
  exit 2
}

run() {
  if [[ "$DRY_RUN" == "1" ]]; then
    echo "+ $*"
  else
    "$@"
  fi
}

main() {
  [[ $# -ge 1 && $# -le 2 ]] || usage
  local environment="$1"
  case "$environment" in
    staging | production) ;;
    *) echo "unknown environment: $environment" >&2; usage ;;
  esac
  local version="${2:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}"
  local image="$REGISTRY/$IMAGE_NAME:$version"

  echo "deploying $image to $environment"
  run docker build --pull -t "$image" .
  run docker push "$image"
  run kubectl --context "$environment" set image "deployment/$IMAGE_NAME" "$IMAGE_NAME=$image"
  run kubectl --context "$environment" rollout status "deployment/$IMAGE_NAME" --timeout=120s
  echo "deployed $image to $environment"
}

main "$@"
"""


_DEVOPS_CHECK = r"""set -euo pipefail
bash -n deploy.sh && echo "deploy.sh syntax ok"
grep -q '^FROM ' Dockerfile && echo "Dockerfile has a base image"
grep -q '^jobs:' .github/workflows/ci.yml && echo "ci.yml defines jobs"
DRY_RUN=1 bash deploy.sh staging v0.1.0
"""


_INDEX_HTML = r"""<!doctype html>
<!-- Task: __TASK__ -->
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Sign in</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto; padding: 0 1rem; }
    label { display: block; margin-top: 1rem; font-weight: 600; }
    input { width: 100%; padding: 0.5rem; font-size: 1rem; box-sizing: border-box; }
    input[aria-invalid="true"] { border: 2px solid #b00020; }
    .error { color: #b00020; min-height: 1.25rem; margin: 0.25rem 0 0; }
    button { margin-top: 1.5rem; padding: 0.6rem 1.2rem; font-size: 1rem; }
  </style>
</head>
<body>
  <main>
    <h1>Sign in</h1>
    <form id="login-form" novalidate>
      <label for="email">Email</label>
      <input id="email" name="email" type="email" autocomplete="username" aria-describedby="email-error" required>
      <p id="email-error" class="error" aria-live="polite"></p>
      <label for="password">Password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" aria-describedby="password-error" required>
      <p id="password-error" class="error" aria-live="polite"></p>
      <button type="submit">Sign in</button>
    </form>
  </main>
  <script src="app.js"></script>
</body>
</html>
"""


_APP_JS = r"""// Login form: client-side validation with accessible error messages.
// Task: __TASK__
//
// Works in the browser (wires up #login-form) and under Node (exports validateLogin;
// `node app.js` runs a self-check).
"use strict";

const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const MIN_PASSWORD_LENGTH = 8;

function validateLogin(values) {
  const errors = {};
  const email = String((values && values.email) || "").trim();
  const password = String((values && values.password) || "");
  if (!email) {
    errors.email = "Enter your email address.";
  } else if (!EMAIL_PATTERN.test(email)) {
    errors.email = "Enter a valid email address, like name@example.com.";
  }
  if (!password) {
    errors.password = "Enter your password.";
  } else if (password.length < MIN_PASSWORD_LENGTH) {
    errors.password = `Use at least ${MIN_PASSWORD_LENGTH} characters.`;
  }
  return { valid: Object.keys(errors).length === 0, errors, email };
}

function showErrors(form, errors) {
  for (const field of ["email", "password"]) {
    const input = form.elements[field];
    const slot = form.querySelector(`#${field}-error`);
    const message = errors[field] || "";
    slot.textContent = message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }
}

function attachLoginForm(doc) {
  const form = doc.getElementById("login-form");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    const result = validateLogin({
      email: form.elements.email.value,
      password: form.elements.password.value,
    });
    showErrors(form, result.errors);
    if (!result.valid) {
      event.preventDefault();
      const firstBad = Object.keys(result.errors)[0];
      form.elements[firstBad].focus();
    }
  });
}

if (typeof document !== "undefined") {
  attachLoginForm(document);
}

if (typeof module !== "undefined" && module.exports) {
  module.exports = { validateLogin, MIN_PASSWORD_LENGTH };
  if (require.main === module) {
    const assert = require("node:assert");
    assert.strictEqual(validateLogin({ email: "a@b.co", password: "s3cret-pass" }).valid, true);
    assert.ok(validateLogin({ email: "", password: "" }).errors.email);
    assert.ok(validateLogin({ email: "not-an-email", password: "s3cret-pass" }).errors.email);
    assert.ok(validateLogin({ email: "a@b.co", password: "short" }).errors.password);
    console.log("app.js self-check passed");
  }
}
"""


_FRONTEND_CHECK = r"""const assert = require("node:assert");
const fs = require("node:fs");
const { validateLogin, MIN_PASSWORD_LENGTH } = require("./app.js");

const cases = [
  [{ email: "dev@example.com", password: "correct-horse" }, true],
  [{ email: "", password: "correct-horse" }, false],
  [{ email: "dev@example", password: "correct-horse" }, false],
  [{ email: "dev@example.com", password: "x".repeat(MIN_PASSWORD_LENGTH - 1) }, false],
];
for (const [values, expected] of cases) {
  assert.strictEqual(validateLogin(values).valid, expected, JSON.stringify(values));
}
const html = fs.readFileSync("index.html", "utf8");
assert.ok(html.includes('id="login-form"'), "index.html has the login form");
assert.ok(html.includes('src="app.js"'), "index.html loads app.js");
console.log(`login validation: ${cases.length} checks passed`);
"""


_PLANS = {
    "backend_developer": _backend,
    "devops_engineer": _devops,
    "frontend_developer": _frontend,
}
