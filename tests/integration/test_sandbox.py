"""Programs that try to break out of the bubblewrap sandbox: each is refused or contained, the
next call still works, and the result tells the model what happened.

These run real bubblewrap (no NATS needed); they skip only when `bwrap` is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import agentops
from agentops.tools.errors import ToolError
from agentops.tools.handlers import ToolContext, run_tool
from agentops.tools.policy import Limits, ToolSettings
from agentops.tools.registry import ExecuteCodeArgs, ReadFileArgs
from agentops.tools.sandbox import Sandbox, probe
from tests.helpers import eventually_sync

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"
)

LIMITS = Limits(
    wall_time_s=20, cpu_s=2, memory_mb=256, processes=32, file_size_mb=8, output_bytes=4096
)
SOURCE = agentops.__file__
SETTINGS = ToolSettings(sandbox="bwrap", limits=LIMITS, network=("devops_engineer",))


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = probe(SETTINGS)  # sandbox="bwrap": a sandbox that cannot be set up fails here
    assert box.mode == "bwrap"
    assert set(box.interpreters) >= {"python", "bash"}
    return box


@pytest.fixture
def ctx(tmp_path: Path, sandbox: Sandbox) -> ToolContext:
    ws = tmp_path / "data" / "workspaces" / "task_a"
    ws.mkdir(parents=True)
    return ToolContext(
        workspace=ws, timeout_s=10, sandbox=sandbox, settings=SETTINGS, agent_type="backend"
    )


async def run(ctx: ToolContext, language: str, code: str, **kw: Any) -> dict[str, Any]:
    args = ExecuteCodeArgs.model_validate({"language": language, "code": code, **kw})
    return await run_tool("execute_code", args, ctx)


async def still_healthy(ctx: ToolContext) -> None:
    result = await run(ctx, "python", "print(6 * 7)")
    assert (result["exit_code"], result["stdout"]) == (0, "42\n")


def shadow_first_line() -> str | None:
    try:
        return Path("/etc/shadow").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def processes_in(workspace: Path) -> list[int]:
    """Host pids whose working directory is `workspace` (i.e. the program's tree). Compared by
    inode: inside the sandbox it is /workspace, which is also what readlink shows the host."""
    st = workspace.stat()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.stat(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if (cwd.st_dev, cwd.st_ino) == (st.st_dev, st.st_ino):
                found.append(int(entry))
    return found


def test_isolation_is_described(sandbox: Sandbox) -> None:
    """The probe reports bwrap, no network by default, and the limits in force."""
    info = sandbox.isolation(("devops_engineer",))
    assert info["mode"] == "bwrap"
    assert info["network"] == "off, except for devops_engineer"
    assert info["limits"]["processes"] == 32
    if os.geteuid() == 0:
        assert info["user"] == "uids 1000000-1001023, one per task (unprivileged)"


async def test_code_runs_as_the_tasks_unprivileged_uid(ctx: ToolContext, sandbox: Sandbox) -> None:
    """As root, each task's code runs as its own uid from the sandbox block, never as root."""
    result = await run(ctx, "bash", "id -u; id -g; id -G")
    uid = sandbox.uid_for(ctx.workspace.name)
    if os.geteuid() == 0:
        assert uid is not None and 1_000_000 <= uid < 1_001_024
        assert result["stdout"] == f"{uid}\n{uid}\n{uid}\n"
    else:
        assert result["stdout"].split()[0] == str(os.geteuid())


async def test_etc_shadow_is_not_readable(ctx: ToolContext) -> None:
    """Even with the executor running as root, /etc/shadow cannot be read from the sandbox."""
    code = "try:\n    print(open('/etc/shadow').read())\nexcept OSError as e:\n    print('denied', e.errno)"
    result = await run(ctx, "python", code)
    assert result["stdout"].startswith("denied"), result
    first = shadow_first_line()
    if first is not None:  # we can read it (root): the sandbox must not have
        assert first not in result["stdout"]
    await still_healthy(ctx)


async def test_files_outside_the_workspace_are_invisible(ctx: ToolContext, tmp_path: Path) -> None:
    """Another task's workspace, the data dir, home dirs and the executor's source are not there."""
    other = tmp_path / "data" / "workspaces" / "task_b"
    other.mkdir()
    (other / "secret.txt").write_text("other task's secret")
    code = f"""
import os
print(os.path.exists({str(other / "secret.txt")!r}), os.path.exists('/root/.bashrc'))
print(os.path.exists({str(other.parent)!r}), os.path.exists('/home'), os.path.exists({SOURCE!r}))
"""
    result = await run(ctx, "python", code)
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "False False\nFalse False False\n"


async def test_workspace_is_bound_at_slash_workspace(ctx: ToolContext, tmp_path: Path) -> None:
    """Code runs in /workspace (also HOME); the host path of the data dir does not exist there."""
    (ctx.workspace / "mine.txt").write_text("here")
    data_dir = tmp_path / "data"
    code = f"pwd; echo $HOME; readlink /proc/self/cwd; cat mine.txt; echo; ls {data_dir} 2>&1"
    result = await run(ctx, "bash", code)
    lines = result["stdout"].splitlines()
    assert lines[:4] == ["/workspace", "/workspace", "/workspace", "here"], result
    assert "No such file or directory" in lines[4]
    assert str(data_dir) not in result["stdout"].replace(f"ls: cannot access '{data_dir}'", "")


async def test_only_the_workspace_is_writable(ctx: ToolContext) -> None:
    """Writes to /usr, /etc and / fail; the workspace write lands and read_file sees it."""
    code = """
for p in ['/usr/evil', '/etc/evil', '/evil']:
    try:
        open(p, 'w').write('x'); print('wrote', p)
    except OSError as e:
        print('refused', p)
open('made.txt', 'w').write('from the sandbox')
"""
    result = await run(ctx, "python", code)
    assert result["stdout"].split("\n")[:3] == [
        "refused /usr/evil",
        "refused /etc/evil",
        "refused /evil",
    ]
    read = await run_tool("read_file", ReadFileArgs(path="made.txt"), ctx)
    assert read["content"] == "from the sandbox"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0)
    try:
        yield sock
    finally:
        sock.close()


async def test_no_network_by_default(ctx: ToolContext, listener: socket.socket) -> None:
    """A socket to a host port fails inside the sandbox, and the host sees no connection."""
    port = listener.getsockname()[1]
    code = f"""
import socket
for host in ('127.0.0.1', '1.1.1.1'):
    try:
        socket.create_connection((host, {port}), timeout=2); print('connected', host)
    except OSError as e:
        print('failed', host)
"""
    result = await run(ctx, "python", code)
    assert result["stdout"] == "failed 127.0.0.1\nfailed 1.1.1.1\n", result
    with pytest.raises(BlockingIOError):
        listener.accept()


async def test_network_for_an_allowed_agent_type(
    tmp_path: Path, sandbox: Sandbox, listener: socket.socket
) -> None:
    """An agent type listed in [tools] network reaches the host network."""
    ws = tmp_path / "ws"
    ws.mkdir()
    ctx = ToolContext(
        workspace=ws, timeout_s=10, sandbox=sandbox, settings=SETTINGS,
        agent_type="devops_engineer",
    )  # fmt: skip
    port = listener.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('ok')"
    result = await run(ctx, "python", code)
    assert result["stdout"] == "ok\n", result


async def test_fork_bomb_is_contained(ctx: ToolContext) -> None:
    """A fork bomb hits the process limit, is killed at its timeout, and leaves nothing."""
    started = time.monotonic()
    result = await run(ctx, "bash", ":(){ :|:& };:\nsleep 30", timeout=3)
    assert time.monotonic() - started < 15
    assert result["timed_out"] is True
    assert "Resource temporarily unavailable" in result["stderr"]
    eventually_sync(lambda: not processes_in(ctx.workspace), what="the fork bomb to be gone")
    await still_healthy(ctx)


async def test_memory_is_limited(ctx: ToolContext) -> None:
    """Allocating without limit ends in MemoryError at the memory limit, not an OOM host."""
    result = await run(ctx, "python", "a = []\nwhile True:\n    a.append(bytearray(10**7))")
    assert result["exit_code"] != 0
    assert "MemoryError" in result["stderr"]
    await still_healthy(ctx)


async def test_cpu_time_is_limited(ctx: ToolContext) -> None:
    """A busy loop is stopped by the CPU limit, and the result says which limit."""
    result = await run(ctx, "python", "while True:\n    pass", timeout=15)
    assert result["timed_out"] is False
    assert result["limit"] == "CPU-time limit of 2s exceeded"


async def test_huge_file_is_cut_at_the_file_size_limit(ctx: ToolContext) -> None:
    """Writing past the file-size limit fails, and the file stays at the limit."""
    # Python gets EFBIG; a shell command is killed and the result names the limit.
    code = (
        "with open('big.bin', 'wb') as f:\n    for _ in range(100):\n        f.write(b'x' * 2**20)"
    )
    result = await run(ctx, "python", code)
    assert "File too large" in result["stderr"]
    result = await run(ctx, "bash", "head -c 100000000 /dev/zero > big2.bin")
    assert result["limit"] == "file-size limit of 8 MB exceeded", result
    for name in ("big.bin", "big2.bin"):
        assert (ctx.workspace / name).stat().st_size <= 8 * 2**20


async def test_huge_output_is_truncated_with_a_marker(ctx: ToolContext) -> None:
    """10 MB of output comes back as the first 4 KiB and a marker with the rest's size."""
    result = await run(ctx, "python", "import sys\nsys.stdout.write('y' * 10_000_000)")
    assert result["stdout"] == "y" * 4096 + f"\n…[truncated {10_000_000 - 4096} bytes]"


async def test_sleeping_past_the_timeout_kills_the_whole_tree(ctx: ToolContext) -> None:
    """A program and its setsid'd children are all gone once the timeout fires."""
    started = time.monotonic()
    result = await run(ctx, "bash", "setsid sleep 60 &\nsleep 60 &\nsleep 60", timeout=1)
    assert time.monotonic() - started < 10
    assert result["timed_out"] is True
    assert result["limit"].startswith("wall-time limit: stopped after 1s")
    eventually_sync(lambda: not processes_in(ctx.workspace), what="every sleep to be gone")
    await still_healthy(ctx)


async def test_links_planted_by_code_do_not_escape(ctx: ToolContext) -> None:
    """Symlinks and hard links made inside the sandbox cannot make read_file leave it."""
    code = "import os\nos.symlink('/etc/shadow', 'sym')\ntry:\n    os.link('/etc/passwd', 'hard')\nexcept OSError:\n    print('no hard link')"
    result = await run(ctx, "python", code)
    assert result["stdout"] == "no hard link\n", result
    with pytest.raises(ToolError) as info:
        await run_tool("read_file", ReadFileArgs(path="sym"), ctx)
    assert info.value.code == "path_outside_workspace"


async def test_environment_holds_no_secrets(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor's variables, including secrets, are not visible in the sandbox."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-secret")
    result = await run(ctx, "bash", "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'")
    assert "sk-sandbox-secret" not in result["stdout"]
    assert "HOME=/workspace" in result["stdout"]
    assert str(ctx.workspace) not in result["stdout"]


async def test_no_host_path_credential_or_executor_process_is_visible(
    ctx: ToolContext, tmp_path: Path
) -> None:
    """The workspace is /workspace; a secret under a bound dir is masked; /proc holds the run only."""
    secret_dir = tmp_path / "bound" / "credentials"
    secret_dir.mkdir(parents=True)
    (secret_dir / "edge.nk").write_text("SUSECRETSEED")
    (tmp_path / "bound" / "creds.txt").write_text("SUSECRETTOO")
    box = replace(
        ctx.sandbox,
        ro_binds=(*ctx.sandbox.ro_binds, str(tmp_path / "bound")),
        hidden=(str(secret_dir), str(tmp_path / "bound" / "creds.txt"), str(tmp_path / "data")),
    )
    seen = replace(ctx, sandbox=box)
    code = (
        f"pwd; echo HOME=$HOME; ls {secret_dir} | wc -l; cat {tmp_path}/bound/creds.txt | wc -c; "
        f"test -e {ctx.workspace} && echo host-path-visible; "
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"
    )
    result = await run(seen, "bash", code)
    lines = result["stdout"].splitlines()
    assert lines[:4] == ["/workspace", "HOME=/workspace", "0", "0"], result
    assert "host-path-visible" not in result["stdout"]
    assert "SUSECRET" not in result["stdout"]
    out = result["stdout"]
    assert "pytest" not in out and "agentops.services" not in out and "--bind" not in out, out


async def test_a_private_workspace_directory_works(tmp_path: Path, sandbox: Sandbox) -> None:
    """A workspace the host made 0700 (as pytest's tmp dirs are) is usable by the task."""
    ws = tmp_path / "private"
    ws.mkdir(mode=0o700)
    ctx = ToolContext(workspace=ws, timeout_s=10, sandbox=sandbox, settings=SETTINGS)
    result = await run(ctx, "bash", "echo hi > note.txt && cat note.txt")
    assert (result["exit_code"], result["stdout"]) == (0, "hi\n"), result


async def test_no_executor_file_descriptor_leaks_in(
    ctx: ToolContext, listener: socket.socket
) -> None:
    """Open sockets of the executor and the sandbox's user-namespace fd are not inherited."""
    inode = os.fstat(listener.fileno()).st_ino
    result = await run(ctx, "bash", "for f in /proc/self/fd/*; do readlink $f; done; true")
    assert result["stdout"].startswith("/dev/null\npipe:"), result
    assert f"socket:[{inode}]" not in result["stdout"]
    assert "user:[" not in result["stdout"]
