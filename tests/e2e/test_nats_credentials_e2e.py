"""The embedded NATS's credentials end to end: rotation while running, an old data dir, Procfile."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest

from agentops import credentials, embedded
from agentops.agents.loader import shipped_types
from agentops.natsserver import NatsServer, free_port
from agentops.protocol import subjects as s
from tests.e2e.conftest import System, start_system
from tests.e2e.test_system import SEED, steps
from tests.helpers import eventually, eventually_sync

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentops.cli", *args],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


async def complete_a_task(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        created = (await http.post("/tasks", json={**SEED, "context": steps(2)})).json()

        async def done() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") in ("completed", "failed") else None

        return await eventually(done, timeout=60, what="task finished")


async def refused(url: str, seed: str) -> bool:
    async def quiet(_: Exception) -> None:
        return None

    try:
        nc = await nats.connect(
            url, nkeys_seed_str=seed, allow_reconnect=False, connect_timeout=2, error_cb=quiet
        )
    except nats.errors.Error:
        return True
    await nc.close()
    return False


def test_rotate_credentials_while_running_restarts_processes_with_new_keys(
    tmp_path: Path,
) -> None:
    """rotate-credentials: new seeds, processes restarted with them, old keys refused, work goes on."""
    system = start_system(tmp_path / "data")
    try:
        assert asyncio.run(complete_a_task(system.url))["status"] == "completed"
        before = credentials.existing(system.data_dir)
        pids = system.pids()
        result = cli("rotate-credentials", "--data-dir", str(system.data_dir))
        assert result.returncode == 0, result.stderr
        assert "put them in force" in result.stdout
        after = credentials.existing(system.data_dir)
        assert set(after) == set(before)
        assert all(after[n].public_key != before[n].public_key for n in after)
        assert all(
            (system.data_dir / "credentials" / f"{n}.nk").stat().st_mode & 0o077 == 0 for n in after
        )
        now = system.pids()
        assert all(now[p] != pids[p] for p in s.all_processes(shipped_types())), (pids, now)
        assert now["nats-server"] == pids["nats-server"]  # reloaded, not restarted
        old_admin = before[credentials.ADMIN].seed.decode()
        assert asyncio.run(refused(system.nats_url, old_admin))
        assert not asyncio.run(refused(system.nats_url, after[credentials.ADMIN].seed.decode()))
        eventually_sync(lambda: _healthy(system.url), timeout=60, what="healthy again")
        assert asyncio.run(complete_a_task(system.url))["status"] == "completed"
        config = (system.data_dir / embedded.CONFIG).read_text()
        assert "previous key" not in config and before["edge"].public_key not in config
    finally:
        system.stop()


def test_an_old_data_dir_without_credentials_is_upgraded_and_keeps_its_tasks(
    tmp_path: Path,
) -> None:
    """A data dir with JetStream data but no credentials gets them on start; old tasks remain."""
    data = tmp_path / "data"
    first = start_system(data)
    try:
        old = asyncio.run(complete_a_task(first.url))
    finally:
        first.stop()
    shutil.rmtree(data / "credentials")  # what an older version left: no credentials, no config
    shutil.rmtree(data / "nats")
    second = start_system(data)
    try:
        assert sorted(credentials.existing(data)) == sorted(embedded.standard_names())
        record = httpx.get(f"{second.url}/tasks/{old['task_id']}", timeout=10).json()
        assert record["status"] == "completed"
        assert asyncio.run(complete_a_task(second.url))["status"] == "completed"
        assert asyncio.run(refused(second.nats_url, credentials.new_seed().decode()))
    finally:
        second.stop()


def test_procfile_processes_find_their_credentials_after_agentops_init(tmp_path: Path) -> None:
    """`agentops init`, `nats-server -c` its config, `agentops run P`: each P as its own user."""
    data, port, edge_port = tmp_path / "data", free_port(), free_port()
    result = cli("init", "--data-dir", str(data), "--nats-port", str(port))
    assert result.returncode == 0, result.stderr
    server = NatsServer(
        store_dir=data / "jetstream", port=port, monitor_port=None, config=data / embedded.CONFIG,
        log_file=tmp_path / "nats.log",
    ).start()  # fmt: skip
    env = {
        **os.environ,
        "AGENTOPS_DATA_DIR": str(data),
        "NATS_URL": server.url,
        "AGENTOPS_PORT": str(edge_port),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "agentops.cli", "run", p],
            env=env,
            stdout=(tmp_path / f"{p}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for p in s.all_processes(shipped_types())
    ]
    try:
        eventually_sync(
            lambda: _healthy(f"http://127.0.0.1:{edge_port}"), timeout=90, interval=0.2,
            what="every process up",
        )  # fmt: skip
        assert (
            asyncio.run(complete_a_task(f"http://127.0.0.1:{edge_port}"))["status"] == "completed"
        )
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            asyncio.run(nats.connect(server.url, allow_reconnect=False, connect_timeout=2))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        server.stop()
    log = (tmp_path / "nats.log").read_text()
    assert [x for x in log.splitlines() if "Violation" in x and ":agentops-" in x] == []


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_system_fixture_checks_violations(system: System) -> None:
    """The shared system runs with the generated config: its server log has no violation yet."""
    assert system.violations() == []
    assert (system.data_dir / embedded.CONFIG).exists()
    assert "authorization" in (system.data_dir / embedded.CONFIG).read_text()
