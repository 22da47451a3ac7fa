"""Running Debian's `git` safely: the one place that builds a git command line and runs it.

Why the git CLI and not dulwich or pygit2: git is complete (clone of any server, shallow and
partial fetches, every ref and object format, checkout with the same path checks that protect
git users: no `.git` paths, `core.protectNTFS`), maintained by the project that defines the
format and security-patched by Debian, and speaks the smart HTTP protocol v2 with curl
underneath. dulwich lags on protocol and checkout semantics; pygit2 binds a libgit2 that must
be built and patched separately. The cost, a process per operation, is small next to a clone.

Rules:
- Every command runs with `--git-dir=G --work-tree=W` given explicitly: git never discovers a
  repository, so a `.git` file or directory the task writes into its workspace is never read.
- The environment is built from scratch: no system or global config (`GIT_CONFIG_NOSYSTEM=1`,
  `GIT_CONFIG_GLOBAL=/dev/null`, `XDG_CONFIG_HOME` and `HOME` a private empty directory, so no
  `~/.netrc` and no global attributes either), no terminal prompt, no askpass program, no
  proxy, no replace objects, C locale.
- `SAFE_CONFIG` goes on every command line: hooks off (`core.hooksPath=/dev/null`), no
  fsmonitor, no credential helper, no pager, no signing, no automatic gc or maintenance (no
  background process outlives a command), objects checked on fetch (`transfer.fsckObjects`),
  no bundle URIs, no redirects, and a protocol allow-list: `protocol.allow=never` plus
  `https` always, `file` only when the caller says the source is an allowed local one.
- No filter, textconv or external diff can run: none is configured anywhere git reads config
  (repository configs are ours and rewritten by `git.py`), so a `.gitattributes` naming a
  filter or diff driver is ignored; diffs also pass `--no-ext-diff --no-textconv`.
- The workspace belongs to the sandbox's uid while the executor runs as root; git's
  ownership check ("dubious ownership") guards repository discovery, which never happens
  here, so it needs no `safe.directory` exception.
- Each command runs in its own session and is killed with its whole process group on timeout
  or when the caller stops reading (`git clone` starts `git-remote-https`, `index-pack`, ...).
  Arguments that are URLs or paths always follow `--` (callers put them there).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import IO

from agentops.workspaces.sources import WorkspaceError, mask

GIT = "git"
CHUNK = 64 * 1024
_STDERR_TAIL = 600
_POLL_S = 0.1

SAFE_CONFIG: tuple[str, ...] = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.symlinks=true",
    "core.autocrlf=false",
    "core.askPass=",
    "core.pager=cat",
    "credential.helper=",
    "protocol.allow=never",
    "protocol.https.allow=always",
    "http.followRedirects=false",
    "http.proxy=",
    "transfer.fsckObjects=true",
    "transfer.bundleURI=false",
    "submodule.recurse=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "commit.gpgSign=false",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
)


def git_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a git command (nothing inherited)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_PAGER": "cat",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
    }
    env.update(extra or {})
    return env


def git_argv(
    git_dir: Path | None,
    work_tree: Path | None,
    args: Sequence[str],
    *,
    allow_file: bool = False,
    config: Sequence[str] = (),
) -> list[str]:
    """`git [--git-dir --work-tree] -c SAFE_CONFIG... [-c protocol.file.allow] -c config... args`."""
    argv = [GIT]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    if work_tree is not None:
        argv.append(f"--work-tree={work_tree}")
    settings = [*SAFE_CONFIG, *(["protocol.file.allow=always"] if allow_file else []), *config]
    for setting in settings:
        argv += ["-c", setting]
    return [*argv, *args]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(fh: IO[bytes]) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(size - _STDERR_TAIL, 0))
    text = fh.read().decode("utf-8", errors="replace").strip()
    return mask(" ".join(text.split()))


class GitFailed(Exception):
    """A git command exited non-zero; `stderr` is its masked tail."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(stderr or f"git exited with {returncode}")
        self.returncode = returncode
        self.stderr = stderr


def run(
    argv: list[str],
    env: dict[str, str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    input: bytes | None = None,
    watch: Callable[[], str | None] | None = None,
    timeout_code: str = "git_timeout",
    nice: int = 0,
) -> bytes:
    """Run one git command to its end and return its stdout.

    `GitFailed` on a non-zero exit; `WorkspaceError(timeout_code)` past `timeout_s`; when
    `watch()` (called every 0.1 s) returns a message, the command is killed and that message
    raised as `WorkspaceError("too_large")`. Either way the whole process group dies. `nice`
    lowers the command's priority (work nothing waits for)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if nice:  # (not preexec_fn: unsafe in the executor's worker threads)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
        deadline = time.monotonic() + timeout_s
        try:
            if input is not None:
                assert proc.stdin is not None
                with proc.stdin:
                    proc.stdin.write(input)
            while True:
                try:
                    proc.wait(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0.001)))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() >= deadline:
                    raise WorkspaceError(timeout_code, f"git stopped after {timeout_s:g}s")
                problem = watch() if watch is not None else None
                if problem is not None:
                    raise WorkspaceError("too_large", problem)
        finally:
            if proc.returncode is None:
                _kill(proc)
        if proc.returncode != 0:
            raise GitFailed(proc.returncode, _tail(err))
        out.seek(0)
        return out.read()


def stream(
    argv: list[str], env: dict[str, str], *, timeout_s: float, cwd: Path | None = None
) -> Generator[bytes, None, None]:
    """The stdout of one git command, chunk by chunk as it comes. `timeout_s` bounds each
    wait for output (a slow reader is never cut off, a stalled git is). Closing the iterator
    early or the timeout kills the command's process group; `GitFailed` at the end if it
    exited non-zero."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            with selectors.DefaultSelector() as sel, proc.stdout:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while True:
                    if not sel.select(timeout=timeout_s):
                        raise WorkspaceError(
                            "git_timeout", f"git gave no output for {timeout_s:g}s"
                        )
                    chunk = os.read(proc.stdout.fileno(), CHUNK)
                    if not chunk:
                        break
                    yield chunk
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise WorkspaceError("git_timeout", f"git stopped after {timeout_s:g}s") from None
        finally:
            if proc.returncode is None:
                _kill(proc)
        if proc.returncode != 0:
            raise GitFailed(proc.returncode, _tail(err))


def tree_bytes(path: Path) -> int:
    """Bytes of every file below `path` (links not followed; vanishing files skipped)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total
