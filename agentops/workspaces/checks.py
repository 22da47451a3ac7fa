"""Small checks and files of `git.py`'s workspaces: ids, refs and shas checked, sizes
capped, config values quoted, the commit depth file, the workspace lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from agentops.protocol.subjects import InvalidName, check_id
from agentops.workspaces.gitcmd import tree_bytes
from agentops.workspaces.sources import WorkspaceError

_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}")  # matched whole (fullmatch)
SHA = re.compile(r"[0-9a-f]{4,64}")  # matched whole
DEPTH_FILE = "agentops.depth"


def quoted(value: str) -> str:
    """A git config value in double quotes (backslash and quote escaped, no newline)."""
    clean = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{clean}"'


def read_depth(git_dir: Path) -> int:
    try:
        return int((git_dir / DEPTH_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_depth(git_dir: Path, depth: int) -> None:
    (git_dir / DEPTH_FILE).write_text(f"{depth}\n")


def checked(workspace_id: str) -> str:
    try:
        return check_id(workspace_id, "workspace id")
    except InvalidName as exc:
        raise WorkspaceError("invalid_workspace_id", str(exc)) from None


def check_ref(ref: str | None) -> None:
    if ref is not None and (not _REF.fullmatch(ref) or ".." in ref or ref.endswith(".lock")):
        raise WorkspaceError(
            "invalid_ref", f"invalid ref {ref!r}: give a branch name, a tag name or a sha"
        )


def check_sha(rev: str) -> str:
    if not SHA.fullmatch(rev):
        raise WorkspaceError("invalid_ref", f"invalid commit {rev!r}: give a sha")
    return rev


def over(path: Path, max_bytes: int, what: str) -> str | None:
    size = tree_bytes(path)
    if size <= max_bytes:
        return None
    return f"{what} passed {max_bytes} bytes (the workspace size limit) and was stopped"


def check_size(ls_tree: bytes, max_bytes: int) -> None:
    """Refuse a checkout whose blobs add up to more than `max_bytes`."""
    total = 0
    for line in ls_tree.split(b"\0"):
        fields = line.split(b"\t", 1)[0].split()
        if len(fields) == 4 and fields[1] == b"blob" and fields[3].isdigit():
            total += int(fields[3])
    if total > max_bytes:
        raise WorkspaceError(
            "too_large",
            f"the checkout would be {total} bytes, over the {max_bytes}-byte workspace limit",
        )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
