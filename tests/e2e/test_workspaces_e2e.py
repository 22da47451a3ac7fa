"""Code in, results out, end to end (DESIGN §4b): a task on a local git repository, an upload,
archives that must be refused, a follow-up in the same workspace, steering, and kill -9 of the
tool executor while it clones."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System, start_system
from tests.e2e.test_system import create, task_status, ws_events
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

APP = "def add(a, b):\n    return a + b\n"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    return done.stdout.decode().strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return path


@pytest.fixture(scope="module")
def code_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, Path]]:
    root = tmp_path_factory.mktemp("code")
    repos = root / "repos"
    config = root / "agentops.toml"
    config.write_text(f'[workspaces]\nallow = ["https://*", "{repos}/*"]\nmax_upload_mb = 5\n')
    system = start_system(root / "data", config=config)
    try:
        yield system, repos
    finally:
        system.stop()


def edit_and_add() -> dict[str, Any]:
    return {
        "mock": {
            "script": [
                {"tool": "edit_file", "args": {"path": "app.py", "old": "a + b", "new": "b + a"}},
                {"tool": "write_file", "args": {"path": "test_app.py", "content": "ok\n"}},
            ]
        }
    }


async def test_a_task_on_a_local_repository_and_its_files_diff_and_archive(
    code_system: tuple[System, Path],
) -> None:
    """A task cloned from a local repo edits a file and adds one: files, diff and archive
    show exactly that, and the run is committed on top of the repository's commit."""
    system, repos = code_system
    repo = make_repo(repos / "calc", {"app.py": APP, "README.md": "calc\n"})
    start = git(repo, "rev-parse", "HEAD")
    body = {"agent_type": "backend_developer", "description": "Swap the operands",
            "context": edit_and_add(), "workspace": {"git": {"url": str(repo), "ref": "main"}}}  # fmt: skip
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = await create(http, body)
        task_id = created["task_id"]
        await task_status(http, task_id, "completed")

        async def committed() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{task_id}")).json()
            return record if record.get("head") else None

        record = await eventually(committed, timeout=30, what="the run committed")
        files = (await http.get(f"/tasks/{task_id}/files")).json()["files"]
        app = await http.get(f"/tasks/{task_id}/files/app.py")
        diff = (await http.get(f"/tasks/{task_id}/diff")).text
        archive = (await http.get(f"/tasks/{task_id}/archive?format=tar.gz")).content
        zipped = (await http.get(f"/tasks/{task_id}/archive?format=zip")).content
        outside = await http.get(f"/tasks/{task_id}/files/..%2F..%2Fetc%2Fpasswd")
    assert record["base"] == start and record["head"] != start
    assert sorted(f["path"] for f in files) == ["README.md", "app.py", "test_app.py"]
    assert app.status_code == 200 and app.text == APP.replace("a + b", "b + a")
    assert app.headers["X-Content-Type-Options"] == "nosniff"
    assert "-    return a + b" in diff and "+    return b + a" in diff
    assert "+++ b/test_app.py" in diff and "README.md" not in diff
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = sorted(m.name.removeprefix("./") for m in tar.getmembers() if m.isfile())
    assert names == ["README.md", "app.py", "test_app.py"]
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped)).namelist()) == names
    assert outside.status_code == 404


async def test_a_source_not_allowed_or_missing_is_refused_or_fails_clearly(
    code_system: tuple[System, Path],
) -> None:
    """A file:// URL or path not allowed is a 422; a repository or ref that does not exist
    fails the task with reason workspace_error."""
    system, repos = code_system
    make_repo(repos / "small", {"a.txt": "a\n"})
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        refused = await http.post("/tasks", json={
            "agent_type": "backend_developer", "description": "x",
            "workspace": {"git": {"url": "/etc"}}})  # fmt: skip
        dash = await http.post("/tasks", json={
            "agent_type": "backend_developer", "description": "x",
            "workspace": {"git": {"url": "--upload-pack=touch /tmp/x"}}})  # fmt: skip
        bad_ref = await create(http, {
            "agent_type": "backend_developer", "description": "x",
            "workspace": {"git": {"url": str(repos / "small"), "ref": "no-such-branch"}}})  # fmt: skip
        failed = await task_status(http, bad_ref["task_id"], "failed")
        events = await ws_events(system, f"since=0&task_id={bad_ref['task_id']}", "task.failed")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "source_not_allowed"
    assert dash.status_code == 422
    assert failed["error"]["code"] == "ref_not_found"
    assert [e["data"]["reason"] for e in events if e["type"] == "task.failed"] == [
        "workspace_error"
    ]


def tar_of(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return out.getvalue()


async def test_an_upload_round_trips_and_unsafe_archives_are_refused(
    code_system: tuple[System, Path],
) -> None:
    """A .tar.gz upload starts a task with its files and comes back as the archive; zip-slip,
    a link out and a file over the limit are refused naming the problem."""
    system, _ = code_system
    files = {"src/main.py": b"print('hi')\n", "docs/a.md": b"# a\n"}
    link = tarfile.TarInfo("evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as z:
        z.writestr("../../escape.txt", "x")
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        uploaded = await http.post("/uploads", content=tar_of(files))
        zip_slip = await http.post("/uploads", content=slip.getvalue())
        link_out = await http.post("/uploads", content=tar_of({}, [link]))
        not_archive = await http.post("/uploads", content=b"hello")
        too_big = await http.post("/uploads", content=b"x" * (6 * 1024 * 1024))
        assert uploaded.status_code == 201, uploaded.text
        upload_id = uploaded.json()["upload_id"]
        created = await create(http, {
            "agent_type": "backend_developer", "description": "look",
            "context": {"mock": {"script": []}}, "workspace": {"upload": upload_id}})  # fmt: skip
        await task_status(http, created["task_id"], "completed")
        archive = (await http.get(f"/tasks/{created['task_id']}/archive")).content
        unknown = await http.post("/tasks", json={
            "agent_type": "backend_developer", "description": "x",
            "workspace": {"upload": "upload_nope"}})  # fmt: skip
    assert uploaded.json()["files"] == 2
    assert zip_slip.status_code == 422 and "escape.txt" in zip_slip.text
    assert link_out.status_code == 422 and link_out.json()["error"]["code"] == "link_outside"
    assert not_archive.status_code == 422
    assert too_big.status_code == 413
    assert unknown.status_code == 404
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        back = {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}  # fmt: skip
    assert back == files


async def test_a_follow_up_continues_in_the_same_workspace(
    code_system: tuple[System, Path],
) -> None:
    """A message to a completed task runs it again: it reads the file its first run wrote,
    task.resumed, run 2, and its thread holds both runs."""
    system, _ = code_system
    first = {
        "mock": {"script": [{"tool": "write_file", "args": {"path": "n.txt", "content": "1"}}]}
    }
    second = {"mock": {"script": [{"tool": "read_file", "args": {"path": "n.txt"}}]}}
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = await create(http, {"agent_type": "backend_developer",
                                      "description": "count", "context": first})  # fmt: skip
        task_id = created["task_id"]
        await task_status(http, task_id, "completed")
        resumed = await http.post(f"/tasks/{task_id}/messages",
                                  json={"message": "now read it", "context": second})  # fmt: skip
        assert resumed.status_code in (200, 202), resumed.text

        async def second_run_done() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{task_id}")).json()
            return record if record["run"] == 2 and record["status"] == "completed" else None

        record = await eventually(second_run_done, timeout=60, what="run 2 completed")
        thread = (await http.get(f"/agents/{created['agent_id']}/state")).json()["thread"]
        missing = await http.post("/tasks/task_nope/messages", json={"message": "hi"})
    assert record["run"] == 2
    reads = [i for i in thread if i["kind"] == "tool_result" and i["name"] == "read_file"]
    assert reads and reads[0]["ok"] and reads[0]["result"]["content"] == "1"
    kinds = [i["kind"] for i in thread]
    assert kinds.index("user_message") > kinds.index("tool_result")
    assert missing.status_code == 404


async def test_kill_9_of_the_executor_while_it_clones(
    code_system: tuple[System, Path], tmp_path: Path
) -> None:
    """kill -9 of the tool executor during a clone: the task starts once (or fails clearly)."""
    system, repos = code_system
    big = {f"blob{i}.bin": os.urandom(256 * 1024).hex() for i in range(12)}
    repo = make_repo(repos / "big", big)
    body = {"agent_type": "backend_developer", "description": "x",
            "context": {"mock": {"script": []}}, "workspace": {"git": {"url": str(repo)}}}  # fmt: skip
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        old = system.pids()["tool-executor"]
        created = await create(http, body)
        os.kill(old, signal.SIGKILL)

        async def restarted() -> bool:
            pid = system.pids().get("tool-executor")
            return pid is not None and pid != old

        await eventually(restarted, timeout=30, what="executor restarted")
        record = await task_status(http, created["task_id"], "completed", "failed")
        events = await ws_events(
            system, f"since=0&task_id={created['task_id']}", f"task.{record['status']}"
        )
    starts = [e for e in events if e["type"] == "agent.status" and e["data"]["status"] == "running"]
    if record["status"] == "completed":
        assert len(starts) == 1
        assert len(list((system.data_dir / "workspaces" / created["task_id"]).iterdir())) == 12
    else:
        assert record["error"]["code"] in ("clone_failed", "workspace_exists")


def cli(system: System, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "AGENTOPS_URL": system.url}
    return subprocess.run(
        [sys.executable, "-m", "agentops.cli", *args], env=env, capture_output=True, timeout=120
    )


async def test_the_cli_sends_code_in_and_gets_results_out(
    code_system: tuple[System, Path], tmp_path: Path
) -> None:
    """`agentops submit --upload`, `files`, `diff`, `download` and `say` work end to end."""
    system, _ = code_system
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(tar_of({"hello.py": b"print('hello')\n"}))
    script = json.dumps({"mock": {"script": [
        {"tool": "edit_file", "args": {"path": "hello.py", "old": "hello", "new": "world"}}]}})  # fmt: skip
    submitted = cli(system, "submit", "backend_developer", "Say world", "-o", "json",
                    "--upload", str(archive), "--context", script)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        await task_status(http, task_id, "completed")
    listed = cli(system, "files", task_id, "-o", "json")
    diffed = cli(system, "diff", task_id)
    target = tmp_path / "out.zip"
    downloaded = cli(system, "download", task_id, "--format", "zip", "-O", str(target))
    said = cli(system, "say", task_id, "and now stop", "-o", "json",
               "--context", json.dumps({"mock": {"script": []}}))  # fmt: skip
    assert [f["path"] for f in json.loads(listed.stdout)["files"]] == ["hello.py"]
    assert b"-print('hello')" in diffed.stdout and b"+print('world')" in diffed.stdout
    assert downloaded.returncode == 0, downloaded.stderr
    assert zipfile.ZipFile(target).read("hello.py") == b"print('world')\n"
    assert said.returncode == 0, said.stderr
    assert json.loads(said.stdout)["run"] == 2
