"""Per-task workspaces and the one function that turns a model's path into a host path.

Rules:
- Every file a tool touches goes through `resolve_in_workspace`. It accepts only relative
  paths that stay inside the workspace after `..` is applied *and* after symlinks are
  followed, so neither `../../etc/passwd` nor a symlink the task planted pointing at `/`
  lets a call reach outside. Refusals are `ToolError`s worded for the model.
- A workspace is `data_dir/workspaces/<task_id>`, the task id validated by
  `protocol.subjects.check_id` (so it can never be `..` or contain a slash). It is created
  on demand: the first tool call of a task makes it.
- Checks are made at resolve time; a process that swaps a directory for a symlink between
  the check and the use can still race it. Closing that needs a real sandbox (later).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from agentops.protocol.errors import PermanentError
from agentops.protocol.subjects import InvalidName, check_id
from agentops.tools.errors import ToolError

_HINT = "use a path relative to the workspace root, e.g. 'src/app.py'"


def workspace_for(data_dir: Path, task_id: str) -> Path:
    """The task's workspace directory, created if missing."""
    try:
        check_id(task_id, "task id")
    except InvalidName as exc:
        # A bad task id is a bad message, not something a model could fix.
        raise PermanentError(str(exc), code="invalid_task_id") from None
    path = data_dir / "workspaces" / task_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_in_workspace(root: Path, rel: str) -> Path:
    """The absolute, symlink-free path for `rel` inside `root`, or a `ToolError`."""
    if "\x00" in rel:
        raise ToolError(f"path {rel!r} contains a NUL byte; {_HINT}", code="invalid_path")
    if not rel.strip():
        raise ToolError(f"path is empty; {_HINT}", code="invalid_path")
    if PurePosixPath(rel).is_absolute():
        raise ToolError(
            f"path {rel!r} is absolute; files live in the task workspace, so {_HINT}",
            code="path_outside_workspace",
        )
    # Lexical check first: it gives the clearest message for the common `../x` mistake.
    normal = os.path.normpath(rel)
    if normal == ".." or normal.startswith("../"):
        raise ToolError(
            f"path {rel!r} leaves the workspace through '..'; {_HINT}",
            code="path_outside_workspace",
        )
    try:
        base = root.resolve(strict=True)
        # resolve() follows every symlink that exists, dangling ones included, so the
        # containment check below sees where a write would really land.
        target = (base / normal).resolve(strict=False)
    except FileNotFoundError:
        raise ToolError("the task workspace does not exist", code="workspace_missing") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        raise ToolError(f"cannot resolve path {rel!r}: {exc}", code="invalid_path") from None
    if not target.is_relative_to(base):
        raise ToolError(
            f"path {rel!r} resolves outside the workspace (through a symlink); {_HINT}",
            code="path_outside_workspace",
        )
    return target


def relative_name(root: Path, path: Path) -> str:
    """How a resolved path is shown back to the model: relative, POSIX, never a host path."""
    rel = path.relative_to(root.resolve()).as_posix()
    return rel or "."
