"""Per-task workspaces and the one function that turns a model's path into a host path.

Rules:
- Every file a tool touches goes through `resolve_in_workspace`. It accepts only relative
  paths that stay inside the workspace after `..` is applied *and* after symlinks are
  followed, so neither `../../etc/passwd` nor a symlink the task planted pointing at `/`
  lets a call reach outside. Refusals are `ToolError`s worded for the model.
- A workspace is `data_dir/workspaces/<task_id>`, the task id validated by
  `protocol.subjects.check_id` (so it can never be `..` or contain a slash). It is created
  on demand: the first tool call of a task makes it.
- Files are opened with `open_in_workspace`: no symlink as the last component, never blocking
  on a FIFO, regular files only, no file with other hard links (it may be a link to a file
  outside), and after opening, the path the kernel reports for the open file must still be
  inside the workspace, so a directory swapped for a symlink between check and use is caught.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
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
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    return path


def delete_workspace(data_dir: Path, workspace_id: str) -> None:
    """Remove a workspace and everything in it (gone already: nothing to do)."""
    try:
        check_id(workspace_id, "workspace id")
    except InvalidName as exc:
        raise PermanentError(str(exc), code="invalid_task_id") from None
    path = data_dir / "workspaces" / workspace_id
    _REAL_ROOTS.pop(str(path), None)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# Real paths of workspaces already resolved. Kept, not re-resolved: a workspace later swapped
# for a symlink (to `/` or to another task's workspace) then fails every containment check
# against the path it had, instead of being followed.
_REAL_ROOTS: dict[str, str] = {}
_REAL_ROOTS_LIMIT = 4096


def real_root(root: Path) -> str:
    """The workspace's real path; a tool call computes it once and passes it as `base`."""
    key = str(root)
    real = _REAL_ROOTS.get(key)
    if real is not None:
        return real
    try:
        real = os.path.realpath(root, strict=True)
    except FileNotFoundError:
        raise ToolError("the task workspace does not exist", code="workspace_missing") from None
    except (OSError, RuntimeError) as exc:
        raise ToolError(f"cannot resolve the workspace: {exc}", code="invalid_path") from None
    if len(_REAL_ROOTS) >= _REAL_ROOTS_LIMIT:
        del _REAL_ROOTS[next(iter(_REAL_ROOTS))]
    _REAL_ROOTS[key] = real
    return real


def resolve_in_workspace(root: Path, rel: str, base: str | None = None) -> Path:
    """The absolute, symlink-free path for `rel` inside `root`, or a `ToolError`. `base` is
    `real_root(root)` when the caller has it already."""
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
    if base is None:
        base = real_root(root)
    target = _plainly_below(base, normal)
    if target is None:
        try:
            # realpath follows every symlink that exists, dangling ones included, so the
            # containment check below sees where a write would really land.
            target = os.path.realpath(os.path.join(base, normal), strict=False)
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            raise ToolError(f"cannot resolve path {rel!r}: {exc}", code="invalid_path") from None
    if not _inside(target, base):
        raise ToolError(
            f"path {rel!r} resolves outside the workspace (through a symlink); {_HINT}",
            code="path_outside_workspace",
        )
    return Path(target)


def _plainly_below(base: str, normal: str) -> str | None:
    """`base/normal` when neither the workspace nor any existing component of `normal` is a
    symlink: what realpath would give, with one lstat per component from the workspace down
    instead of one per component from `/`. None when one is a link or cannot be examined:
    the caller follows it with realpath. `normal` is normalised, so it has no `..`."""
    try:  # the workspace itself may have been swapped for a link since it was resolved
        if not stat.S_ISDIR(os.lstat(base).st_mode):
            return None
    except OSError:
        return None
    if normal == ".":
        return base
    path = base
    parts = normal.split("/")
    for i, part in enumerate(parts):
        path = f"{path}/{part}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:  # nothing below exists, so nothing below is a link
            return "/".join((path, *parts[i + 1 :]))
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    return path


def _inside(path: str, base: str) -> bool:
    """`path` is `base` or below it (both absolute and normalised, as realpath gives them)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def relative_name(root: Path, path: Path, base: str | None = None) -> str:
    """How a resolved path is shown back to the model: relative, POSIX, never a host path."""
    base = base or real_root(root)
    text = os.fspath(path)
    if text.startswith(f"{base}/") and "/.." not in text:  # as resolve_in_workspace gives it
        return text[len(base) + 1 :]
    rel = os.path.relpath(path, base)
    return "." if rel == "." else PurePosixPath(rel).as_posix()


def open_in_workspace(root: Path, path: Path, shown: str, *, write: bool, base: str) -> int:
    """An fd for the regular file `path` (resolved by `resolve_in_workspace`), or a ToolError.

    For writing, the file is created if missing and left untruncated (the caller decides).
    """
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    flags |= (os.O_WRONLY | os.O_CREAT) if write else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        raise ToolError(
            f"file {shown!r} not found in the workspace", code="file_not_found"
        ) from None
    except IsADirectoryError:
        raise ToolError(f"{shown!r} is a directory, not a file", code="not_a_file") from None
    except OSError as exc:  # ELOOP: the last component became a symlink
        raise ToolError(f"cannot open {shown!r}: {exc.strerror}", code="io_error") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
            raise ToolError(
                f"{shown!r} is {kind}; only regular files can be used", code="not_a_file"
            )
        if st.st_nlink > 1:
            raise ToolError(
                f"{shown!r} has other hard links (it may be a link to a file outside the "
                "workspace), so it is refused; copy its content to a new file instead",
                code="path_outside_workspace",
            )
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not _inside(real, base):
            raise ToolError(
                f"path {shown!r} resolves outside the workspace; {_HINT}",
                code="path_outside_workspace",
            )
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
