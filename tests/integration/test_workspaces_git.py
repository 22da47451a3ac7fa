"""Git-backed workspaces with the real git CLI: clones, refs, commits, diffs, and what a hostile
repository or task cannot make our git do."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentops.workspaces.archive_stream import archive_chunks
from agentops.workspaces.archives import extract
from agentops.workspaces.git import Workspaces
from agentops.workspaces.sources import WorkspaceError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    """The test's own git (not the code under test) for building source repositories."""
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
         *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A repository: main (a.txt, b.txt), tag v1 (a.txt only), branch feature (+ f.txt)."""
    repo = tmp_path / "src" / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("alpha\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    git(repo, "tag", "v1")
    (repo / "b.txt").write_text("beta\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "two")
    git(repo, "checkout", "-qb", "feature")
    (repo / "f.txt").write_text("feature\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "three")
    git(repo, "checkout", "-q", "main")
    return repo


@pytest.fixture
def ws(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "data", timeout_s=30)


def allow(source: Path) -> list[str]:
    return [f"{source.parent}/*"]


def files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def nothing_left(ws: Workspaces, workspace_id: str) -> bool:
    return (
        not ws.git_dir(workspace_id).exists()
        and not ws.workspace(workspace_id).exists()
        and not any(ws.staging.iterdir())
    )


def error(call: object, *args: object, **kw: object) -> WorkspaceError:
    with pytest.raises(WorkspaceError) as info:
        call(*args, **kw)  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (None, {"a.txt", "b.txt"}),
        ("main", {"a.txt", "b.txt"}),
        ("v1", {"a.txt"}),
        ("feature", {"a.txt", "b.txt", "f.txt"}),
        ("sha", {"a.txt"}),
    ],
)
def test_clone_checks_out_a_branch_tag_or_sha(
    ws: Workspaces, source: Path, ref: str | None, expected: set[str]
) -> None:
    """A local repository allowed by a glob clones at a branch, a tag or a sha; base is it."""
    first = git(source, "rev-list", "--max-parents=0", "HEAD")
    want = first if ref in ("v1", "sha") else git(source, "rev-parse", ref or "HEAD")
    base = ws.clone("task_1", str(source), first if ref == "sha" else ref, allow=allow(source))
    assert base == want == ws.base("task_1") == ws.head("task_1")
    assert files(ws.workspace("task_1")) == expected
    assert not (ws.workspace("task_1") / ".git").exists()
    assert ws.git_dir("task_1").is_dir() and not ws.git_dir("task_1").is_relative_to(
        ws.workspace("task_1")
    )


def test_file_url_clones_when_allowed(ws: Workspaces, source: Path) -> None:
    """A file:// URL is matched as its real path against the allow-list."""
    base = ws.clone("task_1", f"file://{source}", allow=allow(source))
    assert base == git(source, "rev-parse", "HEAD")


def test_missing_ref_is_ref_not_found_and_leaves_nothing(ws: Workspaces, source: Path) -> None:
    """A ref that is neither branch, tag nor commit fails clearly; nothing half-created."""
    exc = error(ws.clone, "task_1", str(source), "nope", allow=allow(source))
    assert exc.code == "ref_not_found" and "'nope'" in exc.message
    assert nothing_left(ws, "task_1")


def test_missing_repository_is_clone_failed(ws: Workspaces, tmp_path: Path) -> None:
    """A path that is no repository fails with clone_failed and leaves nothing."""
    exc = error(ws.clone, "task_1", str(tmp_path / "none"), allow=[f"{tmp_path}/*"])
    assert exc.code == "clone_failed"
    assert nothing_left(ws, "task_1")


@pytest.mark.parametrize(
    "url", ["-uhack", "--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/pwned"]
)
def test_option_and_helper_urls_are_refused(ws: Workspaces, url: str) -> None:
    """A URL starting with '-' or naming a remote helper never reaches git."""
    exc = error(ws.clone, "task_1", url, allow=["*"])
    assert exc.code in ("invalid_source", "source_not_allowed")
    assert not Path("/tmp/pwned").exists()


def test_file_url_is_not_allowed_by_default(ws: Workspaces, source: Path) -> None:
    """The default allow-list is https only."""
    assert error(ws.clone, "task_1", f"file://{source}").code == "source_not_allowed"
    assert error(ws.clone, "task_1", str(source)).code == "source_not_allowed"


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/repo.git", "https://localhost/r.git", "https://[::1]/r.git"]
)
def test_https_to_a_loopback_address_is_refused(ws: Workspaces, url: str) -> None:
    """https clones obey api_call's address rules: loopback is refused unless allow-listed."""
    exc = error(ws.clone, "task_1", url)
    assert exc.code == "address_not_allowed" and "loopback" in exc.message


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a clone that hangs)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_hanging_clone_times_out_and_leaves_nothing(ws: Workspaces) -> None:
    """The clone is killed at its timeout (the whole process group) and cleaned up."""
    with silent_server() as port:
        url = f"https://user:s3cret@127.0.0.1:{port}/repo.git"
        exc = error(ws.clone, "task_1", url, timeout_s=1, net_allow=["127.0.0.1"])
    assert exc.code == "clone_timeout"
    assert "s3cret" not in exc.message
    assert nothing_left(ws, "task_1")
    survivors = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True)
    assert survivors.stdout == b""


def test_failed_https_clone_never_shows_credentials(ws: Workspaces) -> None:
    """A refused connection is clone_failed, and the error holds no user:password."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"https://user:s3cret@localhost:{port}/repo.git"
    exc = error(ws.clone, "task_1", url, net_allow=["127.0.0.1", "::1"])
    assert exc.code == "clone_failed" and f"localhost:{port}" in exc.message
    assert "s3cret" not in exc.message and "user" not in exc.message


def test_https_clone_connects_to_the_checked_address_only(ws: Workspaces) -> None:
    """git connects to the address the guard checked (pinned), never resolving the name."""
    with silent_server() as port, socket.socket() as probe:
        url = f"https://git.example.invalid:{port}/repo.git"
        exc = error(
            ws.clone, "task_1", url, timeout_s=1, net_allow=["127.0.0.1"],
            resolver=lambda host, p: [ipaddress.ip_address("127.0.0.1")],
        )  # fmt: skip
        assert exc.code == "clone_timeout"  # it connected: the name itself does not resolve
        del probe


def test_clone_over_the_size_limit_is_too_large(ws: Workspaces, source: Path) -> None:
    """A repository whose files exceed max_bytes is refused and removed."""
    (source / "big.bin").write_bytes(b"\0" * 2_000_000)  # compresses to almost nothing
    git(source, "add", ".")
    git(source, "commit", "-qm", "big")
    exc = error(ws.clone, "task_1", str(source), allow=allow(source), max_bytes=1_000_000)
    assert exc.code == "too_large"
    assert nothing_left(ws, "task_1")


def test_clone_into_a_workspace_with_files_is_refused(ws: Workspaces, source: Path) -> None:
    """A workspace that already has files is never overwritten by a clone."""
    ws.workspace("task_1").mkdir(parents=True)
    (ws.workspace("task_1") / "mine.txt").write_text("keep")
    assert error(ws.clone, "task_1", str(source), allow=allow(source)).code == "workspace_exists"
    assert (ws.workspace("task_1") / "mine.txt").read_text() == "keep"


def test_commit_then_diff_shows_exactly_the_edit_and_the_new_file(
    ws: Workspaces, source: Path
) -> None:
    """The diff from base names the edited and the added file, and nothing else."""
    base = ws.clone("task_1", str(source), allow=allow(source))
    work = ws.workspace("task_1")
    (work / "a.txt").write_text("alpha, edited\n")
    (work / "new.py").write_text("print('new')\n")
    live = b"".join(ws.diff("task_1", base)).decode()
    sha = ws.commit("task_1", "backend_developer", "Edit a.txt, add new.py")
    assert sha is not None and sha == ws.head("task_1")
    committed = b"".join(ws.diff("task_1", base, sha)).decode()
    assert live == committed
    changed = [line for line in committed.splitlines() if line.startswith("diff --git")]
    assert changed == ["diff --git a/a.txt b/a.txt", "diff --git a/new.py b/new.py"]
    assert "+alpha, edited" in committed and "+print('new')" in committed
    author = git(ws.git_dir("task_1"), "log", "-1", "--format=%an <%ae>|%s", sha)
    assert author == "backend_developer <backend_developer@agentops.local>|Edit a.txt, add new.py"
    assert ws.commit("task_1", "backend_developer", "again") is None


def test_concurrent_commits_are_serialised(ws: Workspaces) -> None:
    """Two commits at once on one workspace both land, one after the other."""
    base = ws.init("task_1")
    work = ws.workspace("task_1")
    results: list[str | None] = []

    def commit(name: str) -> None:
        (work / f"{name}.txt").write_text(name)
        results.append(ws.commit("task_1", "backend_developer", name))

    threads = [threading.Thread(target=commit, args=(n,)) for n in ("one", "two", "three")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = git(ws.git_dir("task_1"), "rev-list", "HEAD").splitlines()
    assert history[-1] == base and len(history) == 1 + sum(r is not None for r in results)
    assert git(ws.git_dir("task_1"), "ls-tree", "--name-only", "HEAD").split() == [
        "one.txt", "three.txt", "two.txt"
    ]  # fmt: skip


def test_init_adopts_existing_files_as_changes(ws: Workspaces) -> None:
    """init's base is an empty commit; files already there are the first changes."""
    ws.workspace("task_1").mkdir(parents=True)
    (ws.workspace("task_1") / "old.txt").write_text("old\n")
    base = ws.init("task_1")
    assert git(ws.git_dir("task_1"), "ls-tree", base) == ""
    assert b"+old" in b"".join(ws.diff("task_1", base))


def test_copy_from_starts_at_the_other_workspaces_commit(ws: Workspaces, source: Path) -> None:
    """copy_from shares history: base is the source's HEAD, its files are checked out."""
    ws.clone("task_1", str(source), allow=allow(source))
    (ws.workspace("task_1") / "c.txt").write_text("c\n")
    head = ws.commit("task_1", "backend_developer", "add c")
    assert ws.copy_from("task_2", "task_1") == head
    assert files(ws.workspace("task_2")) == {"a.txt", "b.txt", "c.txt"}
    assert error(ws.copy_from, "task_3", "task_9").code == "workspace_missing"


def test_upload_is_committed_as_the_base(ws: Workspaces, tmp_path: Path) -> None:
    """An uploaded archive's files are the base commit; the diff from base is empty."""
    src = tmp_path / "up"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("x = 1\n")
    archive = tmp_path / "up.zip"
    archive.write_bytes(b"".join(archive_chunks(str(src), "zip")))
    base = ws.upload("task_1", archive)
    assert git(ws.git_dir("task_1"), "ls-tree", "-r", "--name-only", base) == "pkg/m.py"
    assert b"".join(ws.diff("task_1", base)) == b""


def hook(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)


def test_hooks_and_configs_planted_anywhere_never_run(
    ws: Workspaces, source: Path, tmp_path: Path
) -> None:
    """Hooks in the source, in our git dir and in a .git the task wrote, and an fsmonitor
    or filters in any config of theirs, never run; the task's .git is not committed."""
    marker = tmp_path / "pwned"
    (source / ".gitattributes").write_text("* filter=evil diff=evil\n")
    git(source, "add", ".")
    git(source, "commit", "-qm", "attributes")
    # Planted after the test's own commit, which they would otherwise hit.
    for name in ("post-checkout", "pre-commit", "post-commit", "pre-upload", "reference"):
        hook(source / ".git" / "hooks" / name, marker)
    git(source, "config", "core.fsmonitor", f"touch {marker}")
    git(source, "config", "filter.evil.smudge", f"touch {marker}; cat")
    git(source, "config", "filter.evil.clean", f"touch {marker}; cat")
    git(source, "config", "diff.evil.textconv", f"touch {marker}; cat")
    base = ws.clone("task_1", str(source), allow=allow(source))
    for name in ("pre-commit", "post-commit", "post-index-change", "reference-transaction"):
        hook(ws.git_dir("task_1") / "hooks" / name, marker)
    work = ws.workspace("task_1")
    planted = work / ".git"
    for name in ("pre-commit", "post-commit"):
        hook(planted / "hooks" / name, marker)
    (planted / "config").write_text(
        f"[core]\n\tfsmonitor = touch {marker}\n\thooksPath = hooks\n\tworktree = /\n"
        f'[filter "evil"]\n\tclean = touch {marker}; cat\n\tsmudge = touch {marker}; cat\n'
        f'[diff "evil"]\n\ttextconv = touch {marker}; cat\n\tcommand = touch {marker}\n'
    )
    (work / "a.txt").write_text("changed\n")
    diff = b"".join(ws.diff("task_1", base)).decode()
    sha = ws.commit("task_1", "backend_developer", "edit")
    assert sha is not None
    assert not marker.exists()
    assert "+changed" in diff and ".git/" not in diff
    tree = git(ws.git_dir("task_1"), "ls-tree", "-r", "--name-only", sha).split()
    assert sorted(tree) == [".gitattributes", "a.txt", "b.txt"]
    assert all(".git/" not in f["path"] for f in ws.list_files("task_1"))
    out = tmp_path / "out"
    archive = tmp_path / "a.tgz"
    archive.write_bytes(b"".join(archive_chunks(os.path.realpath(work), "tar.gz")))
    extract(archive, out)
    assert files(out) == {".gitattributes", "a.txt", "b.txt"}
    config = (ws.git_dir("task_1") / "config").read_text()
    assert "filter" not in config and "fsmonitor" not in config


def test_links_out_and_fifos_are_committed_safely(ws: Workspaces) -> None:
    """A symlink to /etc/passwd is committed as a link (its target, not the file's bytes);
    a FIFO the task left is skipped instead of blocking git."""
    base = ws.init("task_1")
    work = ws.workspace("task_1")
    (work / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(work / "pipe")
    (work / "ok.txt").write_text("ok\n")
    sha = ws.commit("task_1", "backend_developer", "links")
    assert sha is not None
    tree = git(ws.git_dir("task_1"), "ls-tree", sha)
    assert "120000 blob" in tree and "passwd" in tree and "pipe" not in tree
    assert git(ws.git_dir("task_1"), "cat-file", "-p", f"{sha}:passwd") == "/etc/passwd"
    assert [f["path"] for f in ws.list_files("task_1")] == ["ok.txt"]
    assert b"root:" not in b"".join(ws.diff("task_1", base))


def test_an_empty_repository_gets_an_empty_base(ws: Workspaces, tmp_path: Path) -> None:
    """Cloning a repository without commits gives an empty base commit to work from."""
    empty = tmp_path / "src" / "empty"
    empty.mkdir(parents=True)
    git(empty, "init", "-q")
    base = ws.clone("task_1", str(empty), allow=[f"{tmp_path}/src/*"])
    assert git(ws.git_dir("task_1"), "ls-tree", base) == "" and ws.list_files("task_1") == []
    assert error(ws.clone, "task_2", str(empty), "main", allow=[f"{tmp_path}/src/*"]).code == (
        "ref_not_found"
    )


def test_a_diff_read_in_part_stops_git(ws: Workspaces) -> None:
    """A diff is streamed in chunks; closing it early kills git instead of leaving it."""
    base = ws.init("task_1")
    (ws.workspace("task_1") / "big.txt").write_text("line of text\n" * 200_000)
    chunks = ws.diff("task_1", base)
    first = next(chunks)
    assert first.startswith(b"diff --git a/big.txt b/big.txt") and len(first) <= 64 * 1024
    chunks.close()
    running = subprocess.run(["pgrep", "-f", str(ws.git_dir("task_1"))], capture_output=True)
    assert running.stdout == b""
    assert not [p for p in ws.git_dir("task_1").iterdir() if p.name.startswith("diff-")]
