"""Executor-side handlers for the builtin tools that touch the world.

Rules:
- `run_tool(name, args, ctx)` is the one entry point. `args` is the model the registry already
  validated; the handler only does the effect and returns a JSON-able dict.
- Every failure the model could act on is a `ToolError` whose message says what to do; any
  other exception escaping from here is a bug in the executor, not in the model's call.
- Paths go through `workspace.resolve_in_workspace`; results show paths relative to the
  workspace, never host paths.
- Files are opened through `workspace.open_in_workspace` (regular, single-link files inside
  the workspace only) and written within the file-size limit. The code-base tools
  (`edit_file`, `list_files`, `search_files`) live in `tools.file_tools` under the same rules.
- `execute_code` runs the program in the sandbox the executor probed at start-up
  (`tools.sandbox`), in its own session with a minimal environment (no inherited secrets),
  kills the whole process group on timeout, cancellation or exit (a tool call leaves nothing
  running behind it) and caps each output stream with a `…[truncated N bytes]` marker. A
  non-zero exit, a timeout or a hit limit is a result, not an error: the model reads it.
  Without a sandbox (`refused`) it answers `sandbox_unavailable` and runs nothing.
- `api_call` connects only where `tools.netguard` allows (checked per connection, so per
  redirect hop too), follows at most `max_redirects` redirects, ignores proxy variables and
  caps the body it reads.
- `complete_task` and `request_human_input` are control tools handled by the agent's
  reducer; asking for them here is `not_found`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
from pydantic import BaseModel

from agentops.tools.errors import ToolError
from agentops.tools.file_tools import edit_file, list_files, search_files
from agentops.tools.netguard import AddressRefused, Guard, GuardedBackend
from agentops.tools.policy import ApiCallSettings, Limits, ToolSettings
from agentops.tools.registry import (
    ApiCallArgs,
    EditFileArgs,
    ExecuteCodeArgs,
    ListFilesArgs,
    ReadFileArgs,
    SearchFilesArgs,
    WriteFileArgs,
)
from agentops.tools.sandbox import REFUSED, Sandbox
from agentops.tools.workspace import (
    open_in_workspace,
    real_root,
    relative_name,
    resolve_in_workspace,
)

MAX_READ_BYTES = 1024 * 1024
# The defaults of the configurable limits ([tools.limits] / [tools.api_call]).
MAX_OUTPUT_BYTES = Limits().output_bytes
MAX_RESPONSE_BYTES = ApiCallSettings().max_response_bytes
# After the program exits, how long to wait for its output pipes to drain (a process that
# escaped the group could hold them open forever).
_DRAIN_GRACE_S = 2.0
_LISTING_LIMIT = 20


@dataclass(frozen=True, slots=True)
class ToolContext:
    workspace: Path
    timeout_s: float
    # Where code runs; the default refuses execute_code (a sandbox must be chosen, not assumed).
    sandbox: Sandbox = REFUSED
    settings: ToolSettings = field(default_factory=ToolSettings)
    agent_type: str = ""


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
    if not ctx.workspace.is_dir():
        ctx.workspace.mkdir(parents=True, exist_ok=True)
    return await handler(args, ctx)


# ---- files ----
async def read_file(args: ReadFileArgs, ctx: ToolContext) -> dict[str, Any]:
    base = real_root(ctx.workspace)
    path = resolve_in_workspace(ctx.workspace, args.path, base)
    return await asyncio.to_thread(_read_file_sync, ctx.workspace, base, path, args.path)


def _read_file_sync(root: Path, base: str, path: Path, shown: str) -> dict[str, Any]:
    try:
        fd = open_in_workspace(root, path, shown, write=False, base=base)
    except ToolError as exc:
        if exc.code != "file_not_found":
            raise
        raise ToolError(f"{exc.message}; {_nearby(root, path)}", code=exc.code) from None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fd).st_size
        if size > MAX_READ_BYTES:
            raise ToolError(
                f"file {shown!r} is {size} bytes, over the {MAX_READ_BYTES}-byte limit; "
                "read a part of it with execute_code instead (e.g. head, sed -n)",
                code="file_too_large",
            )
        # Read one byte past the limit: the file may have grown since fstat().
        data = fh.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise ToolError(f"file {shown!r} grew past the read limit", code="file_too_large")
    return {
        "path": relative_name(root, path, base),
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


# A write this small lands in the page cache in microseconds, less than handing it to a
# thread costs; larger ones run in a thread so the executor's other calls are not held up.
INLINE_WRITE_BYTES = 64 * 1024


async def write_file(args: WriteFileArgs, ctx: ToolContext) -> dict[str, Any]:
    base = real_root(ctx.workspace)
    path = resolve_in_workspace(ctx.workspace, args.path, base)
    cap = ctx.settings.limits.file_size_mb * 1024 * 1024
    if len(args.content) <= INLINE_WRITE_BYTES // 4:  # at most 4 UTF-8 bytes a character
        return _write_file_sync(ctx.workspace, base, path, args, cap)
    return await asyncio.to_thread(_write_file_sync, ctx.workspace, base, path, args, cap)


def _write_file_sync(
    root: Path, base: str, path: Path, args: WriteFileArgs, cap: int
) -> dict[str, Any]:
    data = args.content.encode("utf-8")
    if not path.parent.is_dir():
        _make_parents(path, args.path)
        # The parents now exist: check again where the file really lands (a parent may be
        # a link made meanwhile); an existing parent was followed by the first check.
        path = resolve_in_workspace(root, args.path, base)
    fd = open_in_workspace(root, path, args.path, write=True, base=base)
    with os.fdopen(fd, "wb") as fh:
        size = os.fstat(fd).st_size if args.mode == "append" else 0
        if size + len(data) > cap:
            raise ToolError(
                f"{args.path!r} would be {size + len(data)} bytes, over the {cap}-byte file "
                "size limit",
                code="file_too_large",
            )
        try:
            if args.mode == "append":
                fh.seek(0, os.SEEK_END)
            else:
                fh.truncate(0)
            fh.write(data)
        except OSError as exc:
            raise ToolError(
                f"cannot write {args.path!r}: {exc.strerror}", code="io_error"
            ) from None
    return {
        "path": relative_name(root, path, base),
        "bytes_written": len(data),
        "mode": args.mode,
    }


def _make_parents(path: Path, shown: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise ToolError(
            f"cannot create {shown!r}: a parent of it is a file, not a directory",
            code="invalid_path",
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot write {shown!r}: {exc.strerror}", code="io_error") from None


# ---- code ----
_SUFFIX = {"python": ".py", "javascript": ".js", "bash": ".sh"}


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
        return out + f"\n…[truncated {self.dropped} bytes]" if self.dropped else out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, signal.SIGKILL)


async def execute_code(args: ExecuteCodeArgs, ctx: ToolContext) -> dict[str, Any]:
    sandbox = ctx.sandbox
    if sandbox.mode == "refused":
        raise ToolError(
            f"code execution is disabled on this executor: {sandbox.reason}",
            code="sandbox_unavailable",
        )
    interpreter = sandbox.interpreters.get(args.language)
    if interpreter is None:
        raise ToolError(
            f"no {args.language} runtime is available to the executor; use another language "
            f"({', '.join(sorted(sandbox.interpreters)) or 'none available'})",
            code="runtime_not_available",
        )
    limits = sandbox.limits
    timeout = min(args.timeout or ctx.timeout_s, limits.wall_time_s)
    # The program is a file in the workspace root, so `import x` / `require('./x')` find the
    # task's files exactly as when the model runs a file it wrote (no argv size limit either).
    fd, script_name = tempfile.mkstemp(
        prefix=".agentops-exec-", suffix=_SUFFIX[args.language], dir=ctx.workspace
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(args.code.encode("utf-8"))
        await asyncio.to_thread(sandbox.prepare, ctx.workspace)
        baseline = await asyncio.to_thread(sandbox.process_baseline)
        program = [interpreter, os.path.basename(script_name)]
        network = ctx.settings.network_allowed(ctx.agent_type)
        with sandbox.command(program, ctx.workspace, network) as (argv, fds):
            result = await _run_program(
                argv,
                ctx.workspace,
                sandbox.env(ctx.workspace),
                timeout,
                _Launch(sandbox.preexec(baseline), fds, limits.output_bytes),
            )
    finally:
        with contextlib.suppress(FileNotFoundError):  # the program may have deleted itself
            os.unlink(script_name)
    note = _limit_note(result["exit_code"], limits, result["timed_out"], timeout)
    if note:
        result["limit"] = note
    return result


def _limit_note(code: int | None, limits: Limits, timed_out: bool, timeout: float) -> str | None:
    """A plain statement of which limit stopped the program, for the model to read."""
    if timed_out:
        return f"wall-time limit: stopped after {timeout:g}s (the whole process tree was killed)"
    sig = -code if code is not None and code < 0 else (code - 128 if code and code > 128 else 0)
    if sig == signal.SIGXCPU:
        return f"CPU-time limit of {limits.cpu_s}s exceeded"
    if sig == signal.SIGXFSZ:
        return f"file-size limit of {limits.file_size_mb} MB exceeded"
    return None


@dataclass(frozen=True, slots=True)
class _Launch:
    preexec: Callable[[], None] | None = None
    pass_fds: tuple[int, ...] = ()
    output_bytes: int = MAX_OUTPUT_BYTES


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
    argv: list[str], cwd: Path, env: dict[str, str], limit_s: float, launch: _Launch
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
            preexec_fn=launch.preexec,
            pass_fds=launch.pass_fds,
        )
    except OSError as exc:
        raise ToolError(
            f"cannot start {argv[0]}: {exc.strerror}", code="runtime_not_available"
        ) from None
    out, err = _Capture(launch.output_bytes), _Capture(launch.output_bytes)
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
def _client(ctx: ToolContext) -> httpx.AsyncClient:
    """A client whose every connection passes the SSRF guard; redirects are followed by
    httpx, so each hop connects through the guard again."""
    settings = ctx.settings.api_call
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx takes no network backend; its pool is rebuilt with the same defaults and ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=GuardedBackend(Guard(settings.allow)),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=ctx.timeout_s,
        follow_redirects=True,
        max_redirects=settings.max_redirects,
        trust_env=False,  # no proxy from the environment: it would bypass the guard
    )


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
    cap = ctx.settings.api_call.max_response_bytes
    try:
        async with (
            asyncio.timeout(ctx.timeout_s),  # whole exchange, including a slow-drip body
            _client(ctx) as client,
            client.stream(args.method, args.url, **request) as resp,
        ):
            body = bytearray()
            truncated = False
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    del body[cap:]
                    truncated = True
                    break
            return {
                "status": resp.status_code,
                "url": str(resp.url),
                "redirects": [str(r.url) for r in resp.history],
                "headers": dict(resp.headers),
                "body": _decode_body(bytes(body), resp, truncated, cap),
                "truncated": truncated,
            }
    except AddressRefused as exc:
        raise ToolError(f"{args.method} {args.url}: {exc}", code="address_not_allowed") from None
    except TimeoutError:
        raise ToolError(
            f"{args.method} {args.url} timed out after {ctx.timeout_s:g}s", code="http_error"
        ) from None
    except httpx.TooManyRedirects:
        raise ToolError(
            f"{args.method} {args.url} redirected more than "
            f"{ctx.settings.api_call.max_redirects} times",
            code="http_error",
        ) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise ToolError(f"invalid url {args.url!r}: {exc}", code="invalid_url") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(f"{args.method} {args.url} failed: {reason}", code="http_error") from None


def _decode_body(data: bytes, resp: httpx.Response, truncated: bool, cap: int) -> Any:
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
        text += f"\n…[truncated at {cap} bytes]"
    return text


_Handler = Callable[[Any, ToolContext], Awaitable[dict[str, Any]]]

_HANDLERS: dict[str, tuple[type[BaseModel], _Handler]] = {
    "read_file": (ReadFileArgs, read_file),
    "write_file": (WriteFileArgs, write_file),
    "edit_file": (EditFileArgs, edit_file),
    "list_files": (ListFilesArgs, list_files),
    "search_files": (SearchFilesArgs, search_files),
    "execute_code": (ExecuteCodeArgs, execute_code),
    "api_call": (ApiCallArgs, api_call),
}

EXECUTOR_TOOLS: tuple[str, ...] = tuple(_HANDLERS)
