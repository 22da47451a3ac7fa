"""Executor handlers for working on a code base: edit_file, list_files, search_files.

Rules:
- Confined like read_file/write_file: paths go through `workspace.resolve_in_workspace`, files
  are opened through `workspace.open_in_workspace`, and directories are walked by
  `workspaces.tree.walk` (each directory opened without following links; `.git`, links,
  devices and hard-linked files skipped). Results name paths relative to the workspace root,
  so the model can pass them straight to read_file or edit_file.
- `edit_file` replaces exact text. `old` must occur at least once and at most `count` times,
  and then every occurrence is replaced; otherwise the error says how many times it occurs
  and what to do. The file must be UTF-8 text within the file-size limit; it is rewritten in
  place (same inode, so its mode is kept).
- `list_files` and `search_files` cap their output (`LIST_LIMIT` files; `MATCH_LIMIT`
  matches or `OUTPUT_BYTES` of matched text; `SCAN_LIMIT` entries looked at) and say so in a
  `note` ending in a `…[truncated ...]` marker. Patterns without `/` match file names, with
  `/` the path relative to the listed directory (`fnmatch`: `*` also crosses `/`).
- `search_files` compiles the regular expression here (a bad one is an error the model reads)
  and runs the search in a child process (`tools.search_worker`, importing this process's
  agentops) killed at the tool's timeout: Python's `re` cannot be interrupted, and a
  catastrophic pattern would otherwise hold an executor thread and a core forever. Binary files (a NUL in the first 8 KiB) and
  files over `MAX_SEARCH_FILE_BYTES` are skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import agentops
from agentops.tools.errors import ToolError
from agentops.tools.registry import EditFileArgs, ListFilesArgs, SearchFilesArgs
from agentops.tools.search_worker import glob_matches
from agentops.tools.workspace import (
    open_in_workspace,
    real_root,
    relative_name,
    resolve_in_workspace,
)
from agentops.workspaces.tree import walk

if TYPE_CHECKING:
    from agentops.tools.handlers import ToolContext

LIST_LIMIT = 500
SCAN_LIMIT = 100_000
MATCH_LIMIT = 200
OUTPUT_BYTES = 64 * 1024
LINE_CHARS = 300
MAX_SEARCH_FILE_BYTES = 1024 * 1024
_PREVIEW = 80
_PACKAGE_ROOT = str(Path(agentops.__file__).resolve().parent.parent)


# ---- edit_file ----
async def edit_file(args: EditFileArgs, ctx: ToolContext) -> dict[str, Any]:
    if args.old == args.new:
        raise ToolError("`old` and `new` are the same: nothing would change", code="no_change")
    base = real_root(ctx.workspace)
    path = resolve_in_workspace(ctx.workspace, args.path, base)
    cap = ctx.settings.limits.file_size_mb * 1024 * 1024
    return await asyncio.to_thread(_edit_sync, ctx.workspace, base, path, args, cap)


def _edit_sync(root: Path, base: str, path: Path, args: EditFileArgs, cap: int) -> dict[str, Any]:
    shown = args.path
    with os.fdopen(open_in_workspace(root, path, shown, write=False, base=base), "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ToolError(f"{shown!r} is over the {cap}-byte file size limit", code="file_too_large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(
            f"{shown!r} is not UTF-8 text; edit_file changes text files only", code="not_text"
        ) from None
    found = text.count(args.old)
    if found == 0:
        raise ToolError(_not_found(text, args.old, shown), code="old_text_not_found")
    if found > args.count:
        raise ToolError(
            f"`old` occurs {found} times in {shown!r}, more than count={args.count}; include "
            f"more surrounding lines in `old` to make it unique, or pass count={found} to "
            "replace every occurrence",
            code="too_many_matches",
        )
    out = text.replace(args.old, args.new).encode("utf-8")
    if len(out) > cap:
        raise ToolError(
            f"{shown!r} would be {len(out)} bytes, over the {cap}-byte file size limit",
            code="file_too_large",
        )
    with os.fdopen(open_in_workspace(root, path, shown, write=True, base=base), "wb") as fh:
        try:
            fh.truncate(0)
            fh.write(out)
        except OSError as exc:
            raise ToolError(f"cannot write {shown!r}: {exc.strerror}", code="io_error") from None
    return {
        "path": relative_name(root, path, base),
        "replacements": found,
        "line": text.count("\n", 0, text.index(args.old)) + 1,
        "bytes": len(out),
    }


def _not_found(text: str, old: str, shown: str) -> str:
    preview = old if len(old) <= _PREVIEW else old[:_PREVIEW] + "…"
    message = f"`old` ({preview!r}) does not occur in {shown!r}"
    stripped = old.strip()
    if "\r\n" in text and "\n" in old and old.replace("\n", "\r\n") in text:
        hint = "the file has CRLF line endings: use \\r\\n in `old` and `new`"
    elif stripped and stripped != old and stripped in text:
        hint = "it does occur without its leading/trailing whitespace: copy it exactly"
    else:
        hint = "it must match the file exactly, including whitespace and indentation"
    return f"{message}; {hint} (read_file shows the current content)"


# ---- list_files ----
async def list_files(args: ListFilesArgs, ctx: ToolContext) -> dict[str, Any]:
    base = real_root(ctx.workspace)
    rel = _directory(ctx.workspace, base, args.path)
    return await asyncio.to_thread(_list_sync, base, rel, args.pattern)


def _directory(root: Path, base: str, shown: str) -> str:
    """The workspace-relative path of directory `shown`, or a ToolError."""
    path = resolve_in_workspace(root, shown, base)
    if not path.is_dir():
        what = "a file" if path.exists() else "not found"
        raise ToolError(
            f"{shown!r} is {what}; give a directory of the workspace (default '.')",
            code="not_a_directory",
        )
    return relative_name(root, path, base)


def _list_sync(base: str, rel: str, pattern: str | None) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    matched = scanned = 0
    prefix = "" if rel == "." else rel + "/"
    try:
        for entry in walk(base, rel):
            scanned += 1
            if scanned > SCAN_LIMIT:
                break
            if entry.kind != "file" or (
                pattern and not glob_matches(entry.path.removeprefix(prefix), pattern)
            ):
                continue
            matched += 1
            if len(files) < LIST_LIMIT:
                files.append({"path": entry.path, "size": entry.size})
    except OSError as exc:
        raise ToolError(f"cannot list {rel!r}: {exc.strerror or exc}", code="io_error") from None
    result: dict[str, Any] = {"path": rel, "files": files, "count": matched}
    if scanned > SCAN_LIMIT or matched > len(files):
        more = "or more " if scanned > SCAN_LIMIT else ""
        result["truncated"] = True
        result["note"] = (
            f"…[truncated: showing {len(files)} of {more}{matched} files; narrow the listing "
            "with path or pattern]"
        )
    return result


# ---- search_files ----
async def search_files(args: SearchFilesArgs, ctx: ToolContext) -> dict[str, Any]:
    try:
        re.compile(args.pattern)
    except re.error as exc:
        raise ToolError(
            f"invalid regular expression {args.pattern!r}: {exc}", code="invalid_pattern"
        ) from None
    base = real_root(ctx.workspace)
    path = resolve_in_workspace(ctx.workspace, args.path, base)
    rel = relative_name(ctx.workspace, path, base)
    if not path.is_dir() and not path.is_file():
        raise ToolError(f"{args.path!r} not found in the workspace", code="file_not_found")
    job = {
        "root": base, "path": rel, "pattern": args.pattern, "glob": args.glob,
        "max_matches": MATCH_LIMIT, "max_bytes": OUTPUT_BYTES, "line_chars": LINE_CHARS,
        "max_file_bytes": MAX_SEARCH_FILE_BYTES, "max_scan": SCAN_LIMIT,
    }  # fmt: skip
    result = await _run_worker(job, ctx.timeout_s)
    if result.get("error"):
        raise ToolError(f"cannot search {rel!r}: {result['error']}", code="io_error")
    if result.get("truncated"):
        result["note"] = (
            f"…[truncated at {len(result['matches'])} matches; narrow the search with path, "
            "glob or a more specific pattern]"
        )
    return result


async def _run_worker(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    # The same agentops as this process (PYTHONPATH), nothing else from the environment, and
    # `/` as the working directory so no stray module there can shadow it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-s", "-m", "agentops.tools.search_worker",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
             "PYTHONPATH": _PACKAGE_ROOT},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps(job).encode()), timeout=max(timeout_s - 1, 1)
        )
    except TimeoutError:
        raise ToolError(
            f"the search took longer than {timeout_s:g}s and was stopped; use a simpler "
            "pattern (no nested repetition) or narrow it with path or glob",
            code="search_timeout",
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"search worker failed: {err.decode(errors='replace')[-500:]}")
    result: dict[str, Any] = json.loads(out)
    return result
