"""Executor tool handlers against a real temporary workspace, real subprocesses and a local
HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentops.protocol.errors import AgentOpsError, PermanentError
from agentops.tools import handlers
from agentops.tools.errors import ToolError
from agentops.tools.handlers import (
    MAX_OUTPUT_BYTES,
    MAX_READ_BYTES,
    MAX_RESPONSE_BYTES,
    ToolContext,
    run_tool,
)
from agentops.tools.policy import ApiCallSettings, ToolSettings
from agentops.tools.registry import (
    ApiCallArgs,
    CompleteTaskArgs,
    ExecuteCodeArgs,
    ReadFileArgs,
    WriteFileArgs,
)
from agentops.tools.sandbox import Sandbox, probe
from agentops.tools.workspace import resolve_in_workspace, workspace_for
from tests.helpers import eventually_sync

# These tests check the executor's own process handling (process groups, pipes, output
# caps), so code runs unsandboxed here; tests/integration/test_sandbox.py covers bubblewrap.
PLAIN = probe(ToolSettings(sandbox="none"))
LOOPBACK = ToolSettings(api_call=ApiCallSettings(allow=("127.0.0.1",)))


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path / "ws", timeout_s=20.0, sandbox=PLAIN, settings=LOOPBACK)


async def write(ctx: ToolContext, path: str, content: str, mode: str = "write") -> dict[str, Any]:
    args = WriteFileArgs.model_validate({"path": path, "content": content, "mode": mode})
    return await run_tool("write_file", args, ctx)


async def run_code(ctx: ToolContext, language: str, code: str, **kw: Any) -> dict[str, Any]:
    args = ExecuteCodeArgs.model_validate({"language": language, "code": code, **kw})
    return await run_tool("execute_code", args, ctx)


async def tool_error(coro: Any) -> ToolError:
    with pytest.raises(ToolError) as info:
        await coro
    return info.value


# ---- workspace paths ----
def test_workspace_for_creates_the_task_directory(tmp_path: Path) -> None:
    """workspace_for returns data_dir/workspaces/<task_id> and creates it."""
    path = workspace_for(tmp_path, "task-1")
    assert path == tmp_path / "workspaces" / "task-1"
    assert path.is_dir()


def test_workspace_for_rejects_a_task_id_that_could_escape(tmp_path: Path) -> None:
    """A task id like '../x' is a permanent (bad message) error, and nothing is created."""
    with pytest.raises(PermanentError) as info:
        workspace_for(tmp_path, "../x")
    assert info.value.code == "invalid_task_id"
    assert not (tmp_path / "workspaces").exists()


@pytest.mark.parametrize(
    ("rel", "code"),
    [
        ("../secret", "path_outside_workspace"),
        ("a/../../secret", "path_outside_workspace"),
        ("/etc/passwd", "path_outside_workspace"),
        ("bad\x00name", "invalid_path"),
        ("  ", "invalid_path"),
    ],
)
def test_resolve_refuses_paths_outside_the_workspace(tmp_path: Path, rel: str, code: str) -> None:
    """Absolute paths, '..' escapes, NUL bytes and blank paths are refused with a hint."""
    with pytest.raises(ToolError) as info:
        resolve_in_workspace(tmp_path, rel)
    assert info.value.code == code
    assert "relative to the workspace" in info.value.message


def test_resolve_refuses_a_symlink_that_points_outside(tmp_path: Path) -> None:
    """A symlink inside the workspace to a directory outside it cannot be used to escape."""
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "not-yet")
    for rel in ("link/file.txt", "link", "dangling"):
        with pytest.raises(ToolError) as info:
            resolve_in_workspace(root, rel)
        assert info.value.code == "path_outside_workspace"
        assert "symlink" in info.value.message


def test_resolve_allows_dotdot_and_symlinks_that_stay_inside(tmp_path: Path) -> None:
    """'a/../b' and a symlink to a workspace directory resolve inside the workspace."""
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "alias").symlink_to(root / "src")
    assert resolve_in_workspace(root, "a/../b.txt") == root.resolve() / "b.txt"
    assert resolve_in_workspace(root, "alias/x.py") == root.resolve() / "src" / "x.py"
    assert resolve_in_workspace(root, ".") == root.resolve()


def test_tool_error_is_an_agentops_error_the_model_can_read() -> None:
    """ToolError joins the one exception root and is never retryable."""
    info = ToolError("nope", code="file_not_found").info()
    assert isinstance(ToolError("x"), AgentOpsError)
    assert (info.code, info.message, info.retryable) == ("file_not_found", "nope", False)


# ---- files ----
async def test_write_then_read_round_trips_and_creates_parents(ctx: ToolContext) -> None:
    """write_file creates parent directories; read_file returns the same text and size."""
    written = await write(ctx, "src/pkg/mod.py", "print('héllo')\n")
    assert written == {"path": "src/pkg/mod.py", "bytes_written": 16, "mode": "write"}
    read = await run_tool("read_file", ReadFileArgs(path="src/pkg/mod.py"), ctx)
    assert read == {"path": "src/pkg/mod.py", "content": "print('héllo')\n", "bytes": 16}


async def test_write_append_mode_appends(ctx: ToolContext) -> None:
    """mode=append adds to the end of an existing file instead of replacing it."""
    await write(ctx, "log.txt", "one\n")
    result = await write(ctx, "log.txt", "two\n", mode="append")
    assert result["mode"] == "append"
    assert (ctx.workspace / "log.txt").read_text() == "one\ntwo\n"


async def test_write_through_outside_symlink_is_refused(ctx: ToolContext, tmp_path: Path) -> None:
    """Writing through a symlink that points outside the workspace leaves the target alone."""
    ctx.workspace.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    (ctx.workspace / "innocent.txt").symlink_to(victim)
    err = await tool_error(write(ctx, "innocent.txt", "pwned"))
    assert err.code == "path_outside_workspace"
    assert victim.read_text() == "original"


async def test_a_workspace_swapped_for_a_link_after_use_is_not_followed(
    ctx: ToolContext, tmp_path: Path
) -> None:
    """A workspace swapped for a link (to another task's workspace or /) is not written through."""
    # Unsandboxed code makes the swap after the first call; later calls must not follow it.
    await write(ctx, "a.txt", "mine")
    other = tmp_path / "other_task"
    other.mkdir()
    ctx.workspace.rename(tmp_path / "moved")
    ctx.workspace.symlink_to(other)
    err = await tool_error(write(ctx, "b.txt", "into another task"))
    assert err.code == "path_outside_workspace"
    assert list(other.iterdir()) == []


async def test_write_under_a_file_is_an_invalid_path(ctx: ToolContext) -> None:
    """A path whose parent is a regular file fails with a message naming the problem."""
    await write(ctx, "notes", "x")
    err = await tool_error(write(ctx, "notes/today.txt", "y"))
    assert err.code == "invalid_path"
    assert "not a directory" in err.message


async def test_read_missing_file_lists_what_is_there(ctx: ToolContext) -> None:
    """A missing file is file_not_found, and the message lists the nearest directory."""
    await write(ctx, "src/app.py", "")
    err = await tool_error(run_tool("read_file", ReadFileArgs(path="src/main.py"), ctx))
    assert err.code == "file_not_found"
    assert "app.py" in err.message


async def test_read_refuses_directories_and_fifos(ctx: ToolContext) -> None:
    """read_file refuses a directory and a FIFO (which would block) as not_a_file."""
    await write(ctx, "dir/x.txt", "")
    os.mkfifo(ctx.workspace / "pipe")
    for rel in ("dir", "pipe"):
        err = await tool_error(run_tool("read_file", ReadFileArgs(path=rel), ctx))
        assert err.code == "not_a_file"


async def test_read_refuses_files_over_one_mib(ctx: ToolContext) -> None:
    """A file over 1 MiB is file_too_large; exactly 1 MiB is still read."""
    ctx.workspace.mkdir()
    (ctx.workspace / "ok.bin").write_bytes(b"a" * MAX_READ_BYTES)
    (ctx.workspace / "big.bin").write_bytes(b"a" * (MAX_READ_BYTES + 1))
    ok = await run_tool("read_file", ReadFileArgs(path="ok.bin"), ctx)
    assert ok["bytes"] == MAX_READ_BYTES
    err = await tool_error(run_tool("read_file", ReadFileArgs(path="big.bin"), ctx))
    assert err.code == "file_too_large"


async def test_read_replaces_invalid_utf8(ctx: ToolContext) -> None:
    """Bytes that are not UTF-8 come back as replacement characters, not an error."""
    ctx.workspace.mkdir()
    (ctx.workspace / "bin.dat").write_bytes(b"ok\xff\xfe")
    read = await run_tool("read_file", ReadFileArgs(path="bin.dat"), ctx)
    assert read["content"] == "ok\ufffd\ufffd"


# ---- execute_code ----
async def test_python_runs_in_the_workspace(ctx: ToolContext) -> None:
    """Python runs with cwd = workspace and can import the task's own modules."""
    await write(ctx, "helper.py", "VALUE = 41\n")
    result = await run_code(
        ctx, "python", "import helper, os\nprint(helper.VALUE + 1, os.getcwd())"
    )
    assert result["exit_code"] == 0
    assert result["stdout"].split() == ["42", str(ctx.workspace.resolve())]
    assert result["timed_out"] is False
    assert result["duration_ms"] > 0


async def test_nonzero_exit_and_stderr_are_a_result(ctx: ToolContext) -> None:
    """A failing program returns its exit code and stderr instead of raising."""
    result = await run_code(
        ctx, "python", "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)"
    )
    assert (result["exit_code"], result["stderr"]) == (3, "boom\n")


async def test_bash_runs(ctx: ToolContext) -> None:
    """Bash programs run under /bin/bash."""
    result = await run_code(ctx, "bash", 'set -e\necho "$((6 * 7))"')
    assert (result["exit_code"], result["stdout"]) == (0, "42\n")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_javascript_runs_under_node(ctx: ToolContext) -> None:
    """JavaScript runs under node and can require files from the workspace."""
    await write(ctx, "lib.js", "module.exports = { twice: (n) => n * 2 };\n")
    result = await run_code(ctx, "javascript", "console.log(require('./lib.js').twice(21))")
    assert (result["exit_code"], result["stdout"]) == (0, "42\n")


async def test_missing_runtime_is_reported(tmp_path: Path) -> None:
    """A language without an interpreter fails with runtime_not_available, naming the others."""
    no_node = Sandbox(mode="none", interpreters={"python": sys.executable})
    ctx = ToolContext(workspace=tmp_path / "ws", timeout_s=5, sandbox=no_node)
    err = await tool_error(run_code(ctx, "javascript", "console.log(1)"))
    assert err.code == "runtime_not_available"
    assert "python" in err.message


async def test_without_a_sandbox_code_is_refused(tmp_path: Path) -> None:
    """The default context has no sandbox: execute_code is refused and nothing runs."""
    ctx = ToolContext(workspace=tmp_path / "ws", timeout_s=5)
    err = await tool_error(run_code(ctx, "bash", "touch ran"))
    assert err.code == "sandbox_unavailable"
    assert not (ctx.workspace / "ran").exists()


async def test_child_environment_is_minimal(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets in the executor's environment do not reach the program; HOME is the workspace."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("NATS_URL", "nats://secret:4222")
    result = await run_code(ctx, "python", "import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(result["stdout"])
    assert "OPENAI_API_KEY" not in env and "NATS_URL" not in env
    assert env["HOME"] == str(ctx.workspace)
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "LC_CTYPE",
    }


async def test_program_file_is_removed_after_the_run(ctx: ToolContext) -> None:
    """The temporary program file does not stay in the workspace."""
    await run_code(ctx, "bash", "echo hi")
    assert list(ctx.workspace.iterdir()) == []


def _gone(pid: int) -> bool:
    """True when pid no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_timeout_kills_the_whole_process_group(ctx: ToolContext) -> None:
    """On timeout the program and its children are killed at once and timed_out is set."""
    started = time.monotonic()
    result = await run_code(ctx, "bash", "sleep 30 &\necho $!\nsleep 30\n", timeout=0.5)
    assert time.monotonic() - started < 5
    assert result["timed_out"] is True
    assert result["exit_code"] == -9
    child = int(result["stdout"].split()[0])  # printed before the kill: output is kept
    eventually_sync(lambda: _gone(child), timeout=5, what=f"sleep child {child} to die")


async def test_background_child_does_not_hold_the_call_open(ctx: ToolContext) -> None:
    """A program that exits leaving a child holding stdout returns at once; the child dies."""
    started = time.monotonic()
    result = await run_code(ctx, "bash", "(sleep 30 & echo $!)\necho done\n")
    assert time.monotonic() - started < 5
    assert (result["exit_code"], result["timed_out"]) == (0, False)
    child, done = result["stdout"].split()
    assert done == "done"
    eventually_sync(lambda: _gone(int(child)), timeout=5, what=f"sleep child {child} to die")


async def test_escaped_process_delays_the_result_only_by_the_drain_grace(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setsid'd process outside the group cannot hold the call open past the drain grace."""
    monkeypatch.setattr(handlers, "_DRAIN_GRACE_S", 0.2)
    started = time.monotonic()
    result = await run_code(ctx, "bash", "setsid sleep 30 &\necho $!\n")
    try:
        assert time.monotonic() - started < 3
        assert (result["exit_code"], result["timed_out"]) == (0, False)
    finally:
        os.kill(int(result["stdout"]), signal.SIGKILL)  # the test started it, the test ends it


async def test_args_timeout_overrides_context_timeout(tmp_path: Path) -> None:
    """Without args.timeout, the context's timeout_s applies."""
    ctx = ToolContext(workspace=tmp_path / "ws", timeout_s=0.3, sandbox=PLAIN)
    result = await run_code(ctx, "python", "import time\ntime.sleep(30)")
    assert result["timed_out"] is True


async def test_output_is_capped_with_a_marker(ctx: ToolContext) -> None:
    """stdout and stderr are each cut at 64 KiB with a note saying how much was dropped."""
    code = "import sys\nsys.stdout.write('x' * 200000)\nsys.stderr.write('e' * 70000)"
    result = await run_code(ctx, "python", code)
    assert (
        result["stdout"]
        == "x" * MAX_OUTPUT_BYTES + f"\n…[truncated {200000 - MAX_OUTPUT_BYTES} bytes]"
    )
    assert result["stderr"].endswith(f"\n…[truncated {70000 - MAX_OUTPUT_BYTES} bytes]")


# ---- dispatch ----
async def test_control_and_unknown_tools_are_not_run_here(ctx: ToolContext) -> None:
    """complete_task and unknown names are not executor tools: not_found."""
    err = await tool_error(run_tool("complete_task", CompleteTaskArgs(summary="done"), ctx))
    assert err.code == "not_found"
    err = await tool_error(run_tool("format_disk", ReadFileArgs(path="x"), ctx))
    assert err.code == "not_found"


async def test_mismatched_args_model_is_refused(ctx: ToolContext) -> None:
    """Arguments validated for another tool are refused instead of misread."""
    err = await tool_error(run_tool("read_file", WriteFileArgs(path="x", content=""), ctx))
    assert err.code == "invalid_arguments"


# ---- api_call ----
@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "content_type": request.headers.get("Content-Type"),
                "x_test": request.headers.get("X-Test"),
                "body": await request.text(),
            }
        )

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="plain words", headers={"X-Reply": "yes"})

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/text")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"b" * (MAX_RESPONSE_BYTES * 4), content_type="application/json")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/text", text)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def call(ctx: ToolContext, url: str, **kw: Any) -> dict[str, Any]:
    return await run_tool("api_call", ApiCallArgs(url=url, **kw), ctx)


async def test_api_call_sends_json_and_parses_json(ctx: ToolContext, http_base: str) -> None:
    """A non-string body is sent as JSON and a JSON reply is parsed."""
    result = await call(
        ctx, f"{http_base}/echo", method="POST", body={"a": [1, 2]}, headers={"X-Test": "1"}
    )
    assert result["status"] == 200
    assert result["truncated"] is False
    body = result["body"]
    assert body["method"] == "POST" and body["x_test"] == "1"
    assert body["content_type"] == "application/json"
    assert json.loads(body["body"]) == {"a": [1, 2]}


async def test_api_call_sends_a_string_body_as_is(ctx: ToolContext, http_base: str) -> None:
    """A string body is sent verbatim, with the caller's content type."""
    result = await call(
        ctx,
        f"{http_base}/echo",
        method="PUT",
        body="a=1&b=2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result["body"]["body"] == "a=1&b=2"
    assert result["body"]["content_type"] == "application/x-www-form-urlencoded"


async def test_api_call_returns_text_and_headers(ctx: ToolContext, http_base: str) -> None:
    """A text reply comes back as a string with the response headers."""
    result = await call(ctx, f"{http_base}/text")
    assert (result["status"], result["body"]) == (200, "plain words")
    assert result["headers"]["x-reply"] == "yes"


async def test_api_call_follows_allowed_redirects(ctx: ToolContext, http_base: str) -> None:
    """A redirect to an allowed place is followed, and the hops are shown to the model."""
    result = await call(ctx, f"{http_base}/redirect")
    assert (result["status"], result["body"]) == (200, "plain words")
    assert result["url"] == f"{http_base}/text"
    assert result["redirects"] == [f"{http_base}/redirect"]


async def test_api_call_caps_the_body(ctx: ToolContext, http_base: str) -> None:
    """A body over 256 KiB is cut, marked truncated, and not parsed as JSON."""
    result = await call(ctx, f"{http_base}/big")
    assert result["truncated"] is True
    assert result["body"].startswith("b" * MAX_RESPONSE_BYTES)
    assert result["body"].endswith(f"…[truncated at {MAX_RESPONSE_BYTES} bytes]")


async def test_api_call_timeout_is_an_http_error(http_base: str, tmp_path: Path) -> None:
    """A server slower than the timeout gives http_error quickly."""
    ctx = ToolContext(workspace=tmp_path / "ws", timeout_s=0.3, settings=LOOPBACK)
    started = time.monotonic()
    err = await tool_error(call(ctx, f"{http_base}/slow"))
    assert time.monotonic() - started < 5
    assert err.code == "http_error"
    assert "timed out" in err.message


async def test_api_call_connection_refused_is_an_http_error(ctx: ToolContext) -> None:
    """A refused connection is http_error naming the request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = await tool_error(call(ctx, f"http://127.0.0.1:{port}/"))
    assert err.code == "http_error"
    assert f"GET http://127.0.0.1:{port}/" in err.message


async def test_api_call_needs_an_http_url(ctx: ToolContext) -> None:
    """Non-HTTP schemes are refused before any connection."""
    err = await tool_error(call(ctx, "file:///etc/passwd"))
    assert err.code == "invalid_url"


def test_process_limit_is_on_top_of_the_users_own_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code run as the executor's own user gets that user's processes added to the process limit."""
    # RLIMIT_NPROC counts all of a uid's processes, so the user's running ones are added; a
    # task uid gets nothing added.
    from agentops.tools import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    own = Sandbox(mode="none").process_baseline()
    mine = 0
    for pid in os.listdir("/proc"):
        with contextlib.suppress(FileNotFoundError):  # exited meanwhile
            mine += pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == os.getuid()
    assert own > 0 and abs(own - mine) < 50  # other processes come and go meanwhile
    assert Sandbox(mode="bwrap", uid=1_000_000).process_baseline() == 0
