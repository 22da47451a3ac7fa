"""Executor-side handlers for the builtin tools that touch the world.

Rules:
- `run_tool(name, args, ctx)` is the one entry point. `args` is the model the registry already
  validated; the handler only does the effect and returns a JSON-able dict.
- Every failure the model could act on is a `ToolError` whose message says what to do; any
  other exception escaping from here is a bug in the executor, not in the model's call.
- Paths go through `workspace.resolve_in_workspace`; results show paths relative to the
  workspace, never host paths.
- `execute_code` runs the program in its own session with a minimal environment (no
  inherited secrets), kills the whole process group on timeout, cancellation or exit (a tool
  call leaves nothing running behind it) and caps each output stream. A non-zero exit or a
  timeout is a result, not an error: the model reads it and decides.
- `api_call` never follows redirects and caps the body it reads. Neither handler is a
  sandbox yet (memory limits, network policy): that is a later layer.
- `complete_task` and `request_human_input` are control tools handled by the agent's
  reducer; asking for them here is `not_found`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from agentops.tools.errors import ToolError
from agentops.tools.registry import ApiCallArgs, ExecuteCodeArgs, ReadFileArgs, WriteFileArgs
from agentops.tools.workspace import relative_name, resolve_in_workspace

MAX_READ_BYTES = 1024 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 256 * 1024
# After the program exits, how long to wait for its output pipes to drain (a process that
# escaped the group could hold them open forever).
_DRAIN_GRACE_S = 2.0
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_LISTING_LIMIT = 20


@dataclass(frozen=True, slots=True)
class ToolContext:
    workspace: Path
    timeout_s: float


async def run_tool(name: str, args: BaseModel, ctx: ToolContext) -> dict[str, Any]:
    """Run executor tool `name` with validated `args`; raises `ToolError` on failure."""
    entry = _HANDLERS.get(name)
    if entry is None:
        raise ToolError(
            f"tool {name!r} does not run in the tool executor; executor tools: "
            f"{', '.join(sorted(_HANDLERS))}",
            code="not_found",
        )
    args_model, handler = entry
    if not isinstance(args, args_model):
        raise ToolError(
            f"arguments for {name} must be {args_model.__name__}, got {type(args).__name__}",
            code="invalid_arguments",
        )
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    return await handler(args, ctx)


# ---- files ----
async def read_file(args: ReadFileArgs, ctx: ToolContext) -> dict[str, Any]:
    path = resolve_in_workspace(ctx.workspace, args.path)
    return await asyncio.to_thread(_read_file_sync, ctx.workspace, path, args.path)


def _read_file_sync(root: Path, path: Path, shown: str) -> dict[str, Any]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ToolError(
            f"file {shown!r} not found in the workspace; {_nearby(root, path)}",
            code="file_not_found",
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot read {shown!r}: {exc.strerror}", code="io_error") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ToolError(f"{shown!r} is {kind}; read_file reads files only", code="not_a_file")
    if st.st_size > MAX_READ_BYTES:
        raise ToolError(
            f"file {shown!r} is {st.st_size} bytes, over the {MAX_READ_BYTES}-byte limit; "
            "read a part of it with execute_code instead (e.g. head, sed -n)",
            code="file_too_large",
        )
    with path.open("rb") as fh:
        # Read one byte past the limit: the file may have grown since stat().
        data = fh.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise ToolError(f"file {shown!r} grew past the read limit", code="file_too_large")
    return {
        "path": relative_name(root, path),
        "content": data.decode("utf-8", errors="replace"),
        "bytes": len(data),
    }


def _nearby(root: Path, path: Path) -> str:
    """A short listing of the nearest existing directory, so the model can fix its path."""
    base = root.resolve()
    folder = path.parent
    while folder != base and not folder.is_dir() and folder.is_relative_to(base):
        folder = folder.parent
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "the directory cannot be listed"
    where = relative_name(root, folder)
    if not names:
        return f"directory {where!r} is empty"
    more = f" (+{len(names) - _LISTING_LIMIT} more)" if len(names) > _LISTING_LIMIT else ""
    return f"{where!r} contains: {', '.join(names[:_LISTING_LIMIT])}{more}"


async def write_file(args: WriteFileArgs, ctx: ToolContext) -> dict[str, Any]:
    path = resolve_in_workspace(ctx.workspace, args.path)
    return await asyncio.to_thread(_write_file_sync, ctx.workspace, path, args)


def _write_file_sync(root: Path, path: Path, args: WriteFileArgs) -> dict[str, Any]:
    if path.exists() and not path.is_file():
        # Opening a FIFO for writing would block the executor; a directory cannot be written.
        raise ToolError(
            f"{args.path!r} exists and is not a regular file; choose another path",
            code="not_a_file",
        )
    data = args.content.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab" if args.mode == "append" else "wb") as fh:
            fh.write(data)
    except (NotADirectoryError, FileExistsError):
        raise ToolError(
            f"cannot create {args.path!r}: a parent of it is a file, not a directory",
            code="invalid_path",
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot write {args.path!r}: {exc.strerror}", code="io_error") from None
    return {"path": relative_name(root, path), "bytes_written": len(data), "mode": args.mode}


# ---- code ----
_SUFFIX = {"python": ".py", "javascript": ".js", "bash": ".sh"}


def _interpreter(language: str, path_var: str) -> str:
    found: str | None
    if language == "python":
        found = sys.executable
    elif language == "javascript":
        found = shutil.which("node", path=path_var)
    else:
        found = "/bin/bash" if os.access("/bin/bash", os.X_OK) else None
    if not found:
        raise ToolError(
            f"no {language} runtime is installed on the executor; use another language",
            code="runtime_not_available",
        )
    return found


def _child_env(workspace: Path) -> dict[str, str]:
    # Built from scratch rather than filtered: nothing inherited can leak (API keys, NATS_URL).
    return {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Unbuffered, so a program killed at its timeout still shows what it printed.
        "PYTHONUNBUFFERED": "1",
    }


class _Capture:
    """The first `cap` bytes of a stream and a count of the rest (read, so the pipe drains)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    async def pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            room = max(self.cap - len(self.data), 0)
            self.data += chunk[:room]
            self.dropped += max(len(chunk) - room, 0)

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        return out + f"\n[... truncated {self.dropped} bytes]" if self.dropped else out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, signal.SIGKILL)


async def execute_code(args: ExecuteCodeArgs, ctx: ToolContext) -> dict[str, Any]:
    env = _child_env(ctx.workspace)
    interpreter = _interpreter(args.language, env["PATH"])
    timeout = args.timeout or ctx.timeout_s
    # The program is a file in the workspace root, so `import x` / `require('./x')` find the
    # task's files exactly as when the model runs a file it wrote (no argv size limit either).
    fd, script_name = tempfile.mkstemp(
        prefix=".agentops-exec-", suffix=_SUFFIX[args.language], dir=ctx.workspace
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(args.code.encode("utf-8"))
        return await _run_program(
            [interpreter, os.path.basename(script_name)], ctx.workspace, env, timeout
        )
    finally:
        with contextlib.suppress(FileNotFoundError):  # the program may have deleted itself
            os.unlink(script_name)


class _ExitSignal(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also reports the moment the program itself exits.

    `Process.wait()` returns only once the output pipes close too, and a backgrounded
    grandchild holding stdout would keep them open until the timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _run_program(
    argv: list[str], cwd: Path, env: dict[str, str], limit_s: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitSignal(loop),
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so one killpg reaches children
        )
    except OSError as exc:
        raise ToolError(
            f"cannot start {argv[0]}: {exc.strerror}", code="runtime_not_available"
        ) from None
    out, err = _Capture(MAX_OUTPUT_BYTES), _Capture(MAX_OUTPUT_BYTES)
    pumps = asyncio.gather(out.pump(protocol.stdout), err.pump(protocol.stderr))
    try:
        done, _ = await asyncio.wait({protocol.exited}, timeout=limit_s)
        timed_out = not done
    finally:
        # Also on success and on cancellation: whatever the program started dies with it.
        _kill_group(transport.get_pid())
        await protocol.exited
        await asyncio.wait({pumps}, timeout=_DRAIN_GRACE_S)
        # A process that left the group (setsid) may still hold a pipe: closing our ends
        # gives the readers EOF, and the output so far is kept.
        transport.close()
        await pumps
    return {
        "exit_code": transport.get_returncode(),
        "stdout": out.text(),
        "stderr": err.text(),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "timed_out": timed_out,
    }


# ---- HTTP ----
async def api_call(args: ApiCallArgs, ctx: ToolContext) -> dict[str, Any]:
    if not args.url.startswith(("http://", "https://")):
        raise ToolError(f"url {args.url!r} must start with http:// or https://", code="invalid_url")
    request: dict[str, Any] = {"headers": args.headers or {}}
    if isinstance(args.body, str):
        # A string is sent as given: the model may already have serialised it (and set the
        # content type). Anything else is JSON.
        request["content"] = args.body.encode("utf-8")
    elif args.body is not None:
        request["json"] = args.body
    try:
        async with (
            asyncio.timeout(ctx.timeout_s),  # whole exchange, including a slow-drip body
            httpx.AsyncClient(timeout=ctx.timeout_s, follow_redirects=False) as client,
            client.stream(args.method, args.url, **request) as resp,
        ):
            body = bytearray()
            truncated = False
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    del body[MAX_RESPONSE_BYTES:]
                    truncated = True
                    break
            return {
                "status": resp.status_code,
                "headers": dict(resp.headers),
                "body": _decode_body(bytes(body), resp, truncated),
                "truncated": truncated,
            }
    except TimeoutError:
        raise ToolError(
            f"{args.method} {args.url} timed out after {ctx.timeout_s:g}s", code="http_error"
        ) from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(f"{args.method} {args.url} failed: {reason}", code="http_error") from None


def _decode_body(data: bytes, resp: httpx.Response, truncated: bool) -> Any:
    charset = resp.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    text = data.decode(charset, errors="replace")
    content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if not truncated and (content_type == "application/json" or content_type.endswith("+json")):
        try:
            return json.loads(text)
        except ValueError:
            pass  # a server that lies about its content type: show the text
    if truncated:
        text += f"\n[... truncated at {MAX_RESPONSE_BYTES} bytes]"
    return text


_Handler = Callable[[Any, ToolContext], Awaitable[dict[str, Any]]]

_HANDLERS: dict[str, tuple[type[BaseModel], _Handler]] = {
    "read_file": (ReadFileArgs, read_file),
    "write_file": (WriteFileArgs, write_file),
    "execute_code": (ExecuteCodeArgs, execute_code),
    "api_call": (ApiCallArgs, api_call),
}

EXECUTOR_TOOLS: tuple[str, ...] = tuple(_HANDLERS)
