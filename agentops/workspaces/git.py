"""Task workspaces as git repositories whose git directory lives outside the workspace.

`Workspaces(data_dir)` is the API the tool executor (the owner of workspaces) calls; every
method blocks, so the executor runs it in a thread. Commands are built and run by `gitcmd`
(why git's CLI, and its safety rules, are there); sources are checked by `sources`.

Rules:
- Layout under `data_dir`: the work tree is `workspaces/<id>` (what tools and the sandbox
  see, as `tools.workspace.workspace_for` makes it); its git directory is `git/<id>.git`, never
  inside the workspace and never bound into the sandbox. `git/` is 0700; `git/.home` is git's
  empty HOME; `git/.staging/` holds creations in progress. Ids are checked by `check_id`.
- A workspace exists when its git directory does. `init`, `clone`, `copy_from` and `upload`
  (an archive, `archives.extract`, committed as the base) build in staging and move the work
  tree, then the git directory, into place only when complete: on any failure everything
  made is removed and a `WorkspaceError` raised. A crash mid-creation leaves only staging
  (`sweep_staging()` clears it at start-up). `init` adopts files already in the workspace
  (they become the first changes after an empty base commit); the others refuse a workspace
  that has files (`workspace_exists`).
- The starting commit is `refs/agentops/base` (`base()`); HEAD is detached and each commit
  moves it. Repository config is ours: rewritten after creation keeping only format keys and
  the source URL without credentials, so no filter, driver or hook setting can be in it.
- Clones check the source (`sources.check_source`; https ones are pinned to a checked address,
  `sources.pin`), use git's transport even for local paths (`--no-local`: no hard links to,
  or copies of, the source's object files), stop at `timeout_s` and at `max_bytes` of git
  directory (watched while cloning) and again at `max_bytes` of checked-out files (summed from
  the tree before checkout, so a highly compressible repository cannot fill the disk).
- `commit` (and `discard`) is serialised per workspace by an flock on `git/<id>.lock` and made of
  plumbing (`add -A`, `write-tree`, `commit-tree`, `update-ref` against the old HEAD), so no
  template, hook or editor is involved. It commits what `git add -A` sees: the workspace's
  `.gitignore` applies, a `.git` path is never added, and a subdirectory that is itself a git
  repository is recorded as git records one (a gitlink, without its files). Listings and
  archives (`tree.walk`) skip every `.git` path.
- `diff(base)` without `head` compares with the work tree through a temporary index (the real
  index is untouched), so new untracked files show (ignored ones do not).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentops.workspaces import gitcmd
from agentops.workspaces.archives import DEFAULT_LIMITS, ArchiveLimits, extract
from agentops.workspaces.checks import (
    SHA,
    check_ref,
    check_sha,
    check_size,
    checked,
    locked,
    over,
    quoted,
    read_depth,
    write_depth,
)
from agentops.workspaces.gitcmd import GitFailed, git_argv, git_env
from agentops.workspaces.sources import (
    DEFAULT_ALLOW,
    Resolver,
    Source,
    WorkspaceError,
    check_source,
    pin,
    resolve,
)
from agentops.workspaces.tree import walk

DEFAULT_TIMEOUT_S = 120.0
BACKGROUND_NICE = 10
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
BASE_REF = "refs/agentops/base"
COMMITTER = ("agentops", "agentops@agentops.local")
_AUTHOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEPT_CONFIG = ("core.repositoryformatversion", "core.filemode", "extensions.")


class Workspaces:
    """Git-backed workspaces under one data directory."""

    def __init__(self, data_dir: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "git"
        self.home = self.root / ".home"
        self.staging = self.root / ".staging"
        self.timeout_s = timeout_s

    # ---- paths ----
    def workspace(self, workspace_id: str) -> Path:
        return self.data_dir / "workspaces" / checked(workspace_id)

    def git_dir(self, workspace_id: str) -> Path:
        return self.root / f"{checked(workspace_id)}.git"

    def exists(self, workspace_id: str) -> bool:
        return self.git_dir(workspace_id).is_dir()

    # ---- creation ----
    def init(self, workspace_id: str) -> str:
        """Make the workspace a repository whose base is an empty commit; its files (if any)
        become the first changes. Returns the base sha."""
        with self._creating(workspace_id, adopt=True) as (git_dir, _work):
            self._init(git_dir)
            return self._record(git_dir, self._new_base(git_dir, None, "agentops: empty workspace"))

    def clone(
        self,
        workspace_id: str,
        url: str,
        ref: str | None = None,
        *,
        timeout_s: float = 300.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow: Iterable[str] = DEFAULT_ALLOW,
        net_allow: Iterable[str] = (),
        resolver: Resolver = resolve,
    ) -> str:
        """Clone `url` (checked against `allow`; https addresses against `net_allow`) and
        check out `ref` (a branch, tag or sha; default the remote's HEAD). Returns the base.

        Codes: invalid_source, source_not_allowed, address_not_allowed, invalid_ref,
        clone_failed, ref_not_found, clone_timeout, too_large, workspace_exists."""
        source = check_source(url, allow)
        check_ref(ref)
        config: list[str] = []
        if source.kind == "https":
            curlopt = pin(source, net_allow, resolver).curlopt()
            if curlopt is not None:
                config.append(f"http.curloptResolve={curlopt}")
        deadline = time.monotonic() + timeout_s
        with self._creating(workspace_id, adopt=False) as (git_dir, work):
            argv = ["clone", "--bare", "--no-local", "--quiet", "--", source.url, str(git_dir)]
            try:
                gitcmd.run(
                    git_argv(None, None, argv, allow_file=source.kind == "file", config=config),
                    self._env(),
                    timeout_s=timeout_s,
                    watch=lambda: over(git_dir, max_bytes, "the clone"),
                    timeout_code="clone_timeout",
                )
            except GitFailed as exc:
                raise WorkspaceError(
                    "clone_failed", f"cannot clone {source.shown}: {exc.stderr}"
                ) from None
            except WorkspaceError as exc:  # clone_timeout, too_large: say what was cloned
                raise WorkspaceError(exc.code, f"cannot clone {source.shown}: {exc}") from None
            sha = self._resolve_ref(git_dir, ref, source)
            if sha is None:  # an empty repository
                sha = self._new_base(git_dir, None, "agentops: empty repository")
            else:
                self._check_out(git_dir, work, sha, deadline, max_bytes)
            return self._record(git_dir, sha, source)

    def copy_from(
        self, workspace_id: str, source_id: str, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> str:
        """Start from another workspace's last commit (its history shared; uncommitted files
        of the source are not copied: commit it first). Returns the base (= its HEAD)."""
        source_git = self.git_dir(source_id)
        if not source_git.is_dir():
            raise WorkspaceError("workspace_missing", f"workspace {source_id!r} does not exist")
        with self._creating(workspace_id, adopt=False) as (git_dir, work):
            self._init(git_dir)
            fetch = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--"]
            self._git(git_dir, None, [*fetch, str(source_git), f"+HEAD:{BASE_REF}"], local=True)
            sha = self._rev(git_dir, BASE_REF)
            assert sha is not None
            self._check_out(git_dir, work, sha, time.monotonic() + self.timeout_s, max_bytes)
            return self._record(git_dir, sha)

    def upload(
        self, workspace_id: str, archive: Path, limits: ArchiveLimits = DEFAULT_LIMITS
    ) -> str:
        """Start from the files of an uploaded archive (`archives.extract` rules and codes),
        committed as the base. Returns the base sha."""
        with self._creating(workspace_id, adopt=False) as (git_dir, work):
            work.rmdir()  # extract makes it, and only when the whole archive passed
            extract(archive, work, limits)
            self._init(git_dir)
            return self._record(git_dir, self._new_base(git_dir, work, "agentops: upload"))

    # ---- reading and committing ----
    def head(self, workspace_id: str) -> str:
        return self._must_rev(workspace_id, "HEAD")

    def base(self, workspace_id: str) -> str:
        return self._must_rev(workspace_id, BASE_REF)

    def depth(self, workspace_id: str) -> int:
        """How many commits this workspace made (its base is 1): later commits have more, so
        of two heads of one workspace the deeper is the newer. Kept in a file beside the
        repository, updated under the commit lock (counting with git costs a process)."""
        git_dir, _ = self._existing(workspace_id)
        return read_depth(git_dir)

    def commit(
        self, workspace_id: str, author: str, message: str, *, background: bool = False
    ) -> str | None:
        """Commit every change in the workspace as `author <author@agentops.local>`; the new
        sha, or None when nothing changed. Serialised per workspace. `background`: nothing
        waits for it, so its git commands run at a lower priority than the agents' work."""
        if not _AUTHOR.fullmatch(author):
            raise WorkspaceError("invalid_author", f"invalid author {author!r}")
        nice = BACKGROUND_NICE if background else 0
        with self.locked(workspace_id):
            git_dir, work = self._existing(workspace_id)
            self._git(git_dir, work, ["add", "-A"], nice=nice)
            tree = self._git(git_dir, None, ["write-tree"], nice=nice).decode().strip()
            head, head_tree = self._head_and_tree(git_dir)
            if head is not None and tree == head_tree:
                return None
            sha = self._commit_tree(git_dir, tree, head, author, message)
            update = ["update-ref", "--no-deref", "HEAD", sha, *([head] if head else [])]
            self._git(git_dir, None, update, nice=nice)
            write_depth(git_dir, read_depth(git_dir) + 1)
            return sha

    def _head_and_tree(self, git_dir: Path) -> tuple[str | None, str | None]:
        """HEAD's commit and tree in one git call (None, None: no HEAD yet)."""
        try:
            out = self._git(git_dir, None, ["rev-parse", "HEAD^{commit}", "HEAD^{tree}"])
        except WorkspaceError as exc:
            if exc.code == "git_failed":
                return None, None
            raise
        lines = out.decode().split()
        return (lines[0], lines[1]) if len(lines) == 2 else (None, None)

    def diff(
        self, workspace_id: str, base: str, head: str | None = None
    ) -> Generator[bytes, None, None]:
        """The unified diff `base..head`, or `base..`the work tree (new files included) when
        `head` is None, as chunks of bytes. Close the iterator to stop git early."""
        git_dir, work = self._existing(workspace_id)
        revs = [check_sha(base)] + ([] if head is None else [check_sha(head)])
        opts = ["diff", "--no-ext-diff", "--no-textconv", "--no-color"]
        if head is not None:
            return self._stream(git_dir, work, [*opts, "--end-of-options", *revs, "--"], {})
        return self._diff_work_tree(git_dir, work, [*opts, "--cached", "--end-of-options", *revs])

    def _diff_work_tree(
        self, git_dir: Path, work: Path, argv: list[str]
    ) -> Generator[bytes, None, None]:
        scratch = Path(tempfile.mkdtemp(prefix="diff-", dir=git_dir))
        try:
            index = scratch / "index"
            with contextlib.suppress(FileNotFoundError):  # a copy keeps git's stat cache
                shutil.copyfile(git_dir / "index", index)
            env = {"GIT_INDEX_FILE": str(index)}
            self._git(git_dir, work, ["add", "-A"], env=env)
            yield from self._stream(git_dir, work, [*argv, "--"], env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def list_files(self, workspace_id: str) -> list[dict[str, Any]]:
        """`[{path, size, modified}]` of the workspace's regular files (`tree.walk` rules:
        no links followed or listed, no `.git`), sorted by path; `modified` is ISO 8601 UTC."""
        work = self.workspace(workspace_id)
        if not work.is_dir():
            raise WorkspaceError("workspace_missing", f"workspace {workspace_id!r} does not exist")
        return [
            {
                "path": e.path,
                "size": e.size,
                "modified": datetime.fromtimestamp(e.mtime, UTC).isoformat(timespec="seconds"),
            }
            for e in walk(os.path.realpath(work))
            if e.kind == "file"
        ]

    # ---- removal ----
    def discard(self, workspace_id: str) -> None:
        """Remove the workspace and its git directory (retention, deletion); waits for a
        commit in progress, so none makes them again."""
        with self.locked(workspace_id):
            shutil.rmtree(self.workspace(workspace_id), ignore_errors=True)
            shutil.rmtree(self.git_dir(workspace_id), ignore_errors=True)

    @contextlib.contextmanager
    def locked(self, workspace_id: str) -> Iterator[None]:
        """The workspace's lock (a file beside its git directory, outlives a deletion):
        commits, first commits and deletions of one workspace run one at a time."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locked(self.root / f"{checked(workspace_id)}.lock"):
            yield

    def sweep_staging(self) -> None:
        """Remove creations a crash left half-done. Call at start-up, before any creation."""
        shutil.rmtree(self.staging, ignore_errors=True)

    # ---- internals ----
    def _init(self, git_dir: Path) -> None:
        self._git(git_dir, None, ["init", "--bare", "--quiet", "--", str(git_dir)], bare=True)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        committer = {"GIT_COMMITTER_NAME": COMMITTER[0], "GIT_COMMITTER_EMAIL": COMMITTER[1]}
        return git_env(self.home, {**committer, **(extra or {})})

    def _git(
        self,
        git_dir: Path,
        work: Path | None,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        bare: bool = False,
        local: bool = False,
        timeout_s: float | None = None,
        nice: int = 0,
    ) -> bytes:
        argv = git_argv(None if bare else git_dir, work, args, allow_file=local)
        try:
            return gitcmd.run(
                argv, self._env(env), timeout_s=timeout_s or self.timeout_s, cwd=work,
                input=input, nice=nice,
            )  # fmt: skip
        except GitFailed as exc:
            raise WorkspaceError("git_failed", f"git {args[0]} failed: {exc.stderr}") from None

    def _stream(
        self, git_dir: Path, work: Path, args: list[str], env: dict[str, str]
    ) -> Generator[bytes, None, None]:
        argv = git_argv(git_dir, work, args)
        try:
            yield from gitcmd.stream(argv, self._env(env), timeout_s=self.timeout_s, cwd=work)
        except GitFailed as exc:
            raise WorkspaceError("git_failed", f"git {args[0]} failed: {exc.stderr}") from None

    def _rev(self, git_dir: Path, rev: str) -> str | None:
        try:
            out = self._git(
                git_dir, None, ["rev-parse", "--verify", "--quiet", "--end-of-options", rev]
            )
        except WorkspaceError as exc:
            if exc.code == "git_failed":
                return None
            raise
        return out.decode().strip() or None

    def _must_rev(self, workspace_id: str, rev: str) -> str:
        git_dir, _ = self._existing(workspace_id)
        sha = self._rev(git_dir, f"{rev}^{{commit}}")
        if sha is None:
            raise WorkspaceError("git_failed", f"workspace {workspace_id!r} has no {rev}")
        return sha

    def _existing(self, workspace_id: str) -> tuple[Path, Path]:
        git_dir = self.git_dir(workspace_id)
        if not git_dir.is_dir():
            raise WorkspaceError(
                "workspace_missing", f"workspace {workspace_id!r} is not a repository"
            )
        work = self.workspace(workspace_id)
        work.mkdir(parents=True, exist_ok=True)
        return git_dir, work

    def _resolve_ref(self, git_dir: Path, ref: str | None, source: Source) -> str | None:
        """The commit `ref` names in the fresh clone (branch, then tag, then sha); None for an
        empty repository cloned without a ref."""
        if ref is None:
            sha = self._rev(git_dir, "HEAD^{commit}")
            if sha is None and self._git(git_dir, None, ["for-each-ref", "--count=1"]).strip():
                raise WorkspaceError("ref_not_found", f"{source.shown} has no default branch")
            return sha
        candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}"]
        if SHA.fullmatch(ref):
            candidates.append(ref)
        for candidate in candidates:
            sha = self._rev(git_dir, f"{candidate}^{{commit}}")
            if sha is not None:
                return sha
        raise WorkspaceError(
            "ref_not_found", f"{ref!r} is not a branch, tag or commit of {source.shown}"
        )

    def _new_base(self, git_dir: Path, work: Path | None, message: str) -> str:
        """Commit the work tree as it is (None: nothing, an empty tree) as the base."""
        if work is not None:
            self._git(git_dir, work, ["add", "-A"])
        tree = self._git(git_dir, None, ["write-tree"]).decode().strip()
        return self._commit_tree(git_dir, tree, None, COMMITTER[0], message)

    def _commit_tree(
        self, git_dir: Path, tree: str, parent: str | None, author: str, message: str
    ) -> str:
        env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@agentops.local"}
        text = message.strip() or "agentops: workspace changes"
        argv = ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"]
        out = self._git(git_dir, None, argv, env=env, input=text.encode("utf-8"))
        return out.decode().strip()

    def _check_out(self, git_dir: Path, work: Path, sha: str, deadline: float, cap: int) -> None:
        """Check `sha` out into the (empty) work tree, if its files fit in `cap` bytes."""
        check_size(self._git(git_dir, None, ["ls-tree", "-r", "-l", "-z", sha]), cap)
        left = max(deadline - time.monotonic(), 0.001)
        self._git(git_dir, work, ["read-tree", "--reset", "-u", sha], timeout_s=left)

    def _record(self, git_dir: Path, sha: str, source: Source | None = None) -> str:
        """Our config, HEAD detached at the base, and the base ref: the last creation step."""
        self._write_config(git_dir, source)
        refs = f"option no-deref\nupdate HEAD {sha}\nupdate {BASE_REF} {sha}\n"
        self._git(git_dir, None, ["update-ref", "--stdin"], input=refs.encode())
        write_depth(git_dir, 1)
        return sha

    def _write_config(self, git_dir: Path, source: Source | None) -> None:
        """The repository's config is ours: git's format keys from `git init`/`clone`
        (`_KEPT_CONFIG`), then ours. Written here rather than with `git config` per key (a
        process each); the values written are plain tokens or quoted."""
        config = git_dir / "config"
        section, kept = "", []
        for raw in config.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip().lower()
                continue
            key, sep, value = line.partition("=")
            name = f"{section}.{key.strip().lower()}"
            if sep and not section.count('"') and name.startswith(_KEPT_CONFIG):
                kept.append((name, value.strip()))
        kept += [("core.bare", "false"), ("core.logallrefupdates", "true")]
        if source is not None:
            kept.append(('remote "origin".url', quoted(source.shown)))
        text: list[str] = []
        for name, value in kept:
            group, _, key = name.rpartition(".")
            if f"[{group}]" not in text:
                text.append(f"[{group}]")
            text.append(f"\t{key} = {value}")
        config.write_text("\n".join(text) + "\n", encoding="utf-8")

    @contextlib.contextmanager
    def _creating(self, workspace_id: str, *, adopt: bool) -> Iterator[tuple[Path, Path]]:
        final_git, final_work = self.git_dir(workspace_id), self.workspace(workspace_id)
        if final_git.exists():
            raise WorkspaceError("workspace_exists", f"workspace {workspace_id!r} exists")
        if not adopt and final_work.is_dir() and any(os.scandir(final_work)):
            raise WorkspaceError(
                "workspace_exists", f"workspace {workspace_id!r} already has files"
            )
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.staging.mkdir(mode=0o700, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f"{workspace_id}.", dir=self.staging))
        git_dir, work = stage / "git", stage / "work"
        try:
            work.mkdir()
            yield git_dir, work
            final_work.parent.mkdir(parents=True, exist_ok=True)
            if adopt:
                final_work.mkdir(exist_ok=True)
            else:
                os.rename(work, final_work)  # replaces an empty directory atomically
            os.rename(git_dir, final_git)  # last: the workspace now exists
        except OSError as exc:
            raise WorkspaceError(
                "workspace_exists" if final_git.exists() else "io_error",
                f"cannot create workspace {workspace_id!r}: {exc.strerror}",
            ) from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
