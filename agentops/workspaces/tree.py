"""Walking a workspace: the one view of its files that listings, searches and archives share.

Rules:
- Nothing is followed. The walk opens each directory relative to its parent's descriptor with
  `O_NOFOLLOW`, so a directory the task swaps for a symlink mid-walk (to `/`, or to another
  task's workspace) fails to open instead of being entered; files are opened the same way
  (`Entry.open`). A symlink is reported as a link with its target, never read through.
- Skipped, with everything below: any path component named `.git` (in any case). Our git
  directory lives outside the workspace, so a `.git` here was written by the task; git never
  commits one, and listings, searches and archives never show one either.
- Skipped: devices, FIFOs, sockets, and regular files with other hard links (one may be a
  link to a file outside the workspace; `workspace.open_in_workspace` refuses them too).
- Paths are relative POSIX strings; siblings come in sorted order, a directory before what it
  holds, so the same tree always walks the same way.
- Depth is bounded (`MAX_DEPTH`): one descriptor is held per level, and deeper directories are
  skipped rather than exhausting the process's descriptors.
- Standard library only: the search worker process imports this module.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

MAX_DEPTH = 128
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Kind = Literal["file", "dir", "link"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing in the workspace. `dir_fd` (its parent directory) is open only until the walk
    moves on, so `open()` an entry while the iteration is at it."""

    path: str
    kind: Kind
    size: int
    mtime: float
    mode: int
    target: str | None
    name: str
    dir_fd: int

    def open(self) -> int:
        """A read-only fd of this regular file; OSError if it was replaced by anything else."""
        fd = os.open(self.name, _FILE_FLAGS, dir_fd=self.dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                raise OSError(f"{self.path!r} is no longer a single-link regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of this file."""
        fd = self.open()
        with os.fdopen(fd, "rb") as fh:
            return fh.read(limit)


def is_git_name(name: str) -> bool:
    return name.lower() == ".git"


def has_git_component(rel: str) -> bool:
    """`rel` (a relative POSIX path) passes through a `.git` directory, or is one."""
    return any(is_git_name(part) for part in rel.split("/"))


def open_dir(root: str, rel: str = ".") -> int:
    """An fd of directory `rel` below `root`, every component opened without following a link.

    OSError (ELOOP, ENOTDIR, ENOENT) when a component is a link, not a directory, or missing."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in rel.split("/"):
            if part in ("", "."):
                continue
            if part == ".." or is_git_name(part):
                raise FileNotFoundError(f"{rel!r} is not a directory of the workspace")
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def walk(root: str, rel: str = ".", *, dirs: bool = False) -> Iterator[Entry]:
    """Every file and link below `root/rel` (and directories when `dirs`), as the rules say.

    `root` must be the workspace's real path; OSError when `rel` is not a directory of it."""
    fd = open_dir(root, rel)
    prefix = "" if rel in ("", ".") else rel.strip("/") + "/"
    try:
        yield from _walk_fd(fd, prefix, dirs, 0)
    finally:
        os.close(fd)


def _walk_fd(fd: int, prefix: str, dirs: bool, depth: int) -> Iterator[Entry]:
    try:
        names = sorted(os.listdir(fd))
    except OSError:
        return
    for name in names:
        if is_git_name(name):
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:  # removed meanwhile
            continue
        path = prefix + name
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if depth + 1 >= MAX_DEPTH:
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # swapped for a link or removed since the stat
                continue
            try:
                if dirs:
                    yield Entry(path, "dir", 0, st.st_mtime, mode, None, name, fd)
                yield from _walk_fd(child, path + "/", dirs, depth + 1)
            finally:
                os.close(child)
        elif stat.S_ISLNK(mode):
            target = None
            with contextlib.suppress(OSError):
                target = os.readlink(name, dir_fd=fd)
            if target is not None:
                yield Entry(path, "link", len(target), st.st_mtime, mode, target, name, fd)
        elif stat.S_ISREG(mode) and st.st_nlink == 1:
            yield Entry(path, "file", st.st_size, st.st_mtime, mode, None, name, fd)


def link_stays_inside(path: str, target: str) -> bool:
    """A symlink at `path` (relative, below real directories) whose `target` stays inside the
    tree: relative, its leading `..`s climbing no higher than the root, and no `..` after a
    name (`d/..` escapes when `d` is itself a link to `.`); it may still dangle."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    depth = path.count("/")  # directories above the link, below the root
    named = False
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if named or depth == 0:
                return False
            depth -= 1
        elif is_git_name(part):
            return False
        else:
            named = True
    return True
