"""The `agentops up` supervisor against a real embedded nats-server, with small dummy children.

The supervisor runs in its own Python process (as `agentops up` does), so the tests exercise
its real signal handling; the children are `python -c` loops that record their environment.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentops import preflight
from agentops.agents.loader import shipped_specs
from agentops.config import load_settings
from agentops.natsserver import find_binary, free_port, port_is_free
from agentops.processes import NATS_SERVER, process_command
from agentops.protocol.errors import ConfigError
from agentops.runtime import RestartPolicy, Supervisor
from tests.helpers import eventually, eventually_sync

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import asyncio, json, sys
from agentops.config import load_settings
from agentops.logging import configure_logging
from agentops.runtime import RestartPolicy, Supervisor

data_dir, nats_port, processes, health_url = sys.argv[1:5]
configure_logging("supervisor", "debug", "json")
supervisor = Supervisor(
    load_settings(environ={}, data_dir=data_dir),
    processes=json.loads(processes),
    nats_port=int(nats_port),
    health_url=health_url or None,
    health_timeout=20.0,
    stop_timeout=2.0,
    restart=RestartPolicy(initial=0.1, maximum=1.0),
)
sys.exit(asyncio.run(supervisor.run()))
"""

# Records what the supervisor handed over, then idles; `{marker}` makes the command line
# recognisable, so cleanup only ever signals processes this test started.
CHILD = """# {marker}
import json, os, pathlib, signal
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
keys = ("NATS_URL", "AGENTOPS_PROCESS", "AGENTOPS_DATA_DIR", "AGENTOPS_PORT")
env = {{k: os.environ.get(k) for k in keys}}
tmp = pathlib.Path({out!r} + ".tmp")
tmp.write_text(json.dumps(env))
tmp.replace({out!r})  # atomically: the test may read it at any moment
while True:
    signal.pause()  # idle until a signal ends it
"""


@pytest.fixture(autouse=True)
def _no_leaked_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The supervisor under test must not pick up a developer's real NATS or port settings.
    for var in ("NATS_URL", "AGENTOPS_PORT", "AGENTOPS_HOST", "AGENTOPS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield


def child_command(tmp_path: Path, name: str, *, ignore_term: bool = False) -> list[str]:
    code = CHILD.format(
        marker=tmp_path, ignore_term=ignore_term, out=str(tmp_path / f"{name}.env.json")
    )
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pids(data_dir: Path) -> dict[str, int]:
    try:
        return dict(json.loads((data_dir / "processes.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def nats_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def kill_if_ours(pid: int, marker: str) -> None:
    """Cleanup: SIGKILL `pid` only if its command line shows this test started it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if marker.encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


class SupervisorProcess:
    def __init__(self, tmp_path: Path, processes: dict[str, list[str]], health_url: str = ""):
        self.data_dir = tmp_path / "data"
        self.nats_port = free_port()
        self.stdout = tmp_path / "supervisor.out"
        self.stderr = tmp_path / "supervisor.err"
        self.marker = str(tmp_path)
        self.seen: set[int] = set()
        args = [str(self.data_dir), str(self.nats_port), json.dumps(processes), health_url]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", DRIVER, *args], stdout=out, stderr=err, env=env
            )

    def pids(self) -> dict[str, int]:
        pids = read_pids(self.data_dir)
        self.seen.update(pids.values())
        return pids

    def pids_with(self, names: set[str]) -> dict[str, int] | None:
        pids = self.pids()
        return pids if names <= pids.keys() else None

    def replaced(self, name: str, old_pid: int) -> int | None:
        pid = self.pids().get(name)
        return pid if pid not in (None, old_pid) else None

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen:
            kill_if_ours(pid, self.marker)


TYPES = tuple(shipped_specs())


def test_process_commands_map_every_process_to_a_service_module() -> None:
    """Each AgentOps process runs `python -m agentops.services.<module>` with its arguments."""
    assert process_command("edge", TYPES) == [sys.executable, "-m", "agentops.services.edge"]
    assert process_command("tool-executor", TYPES)[-1] == "agentops.services.tool_executor"
    assert process_command("llm-gateway", TYPES)[-1] == "agentops.services.llm_gateway"
    assert process_command("agent-devops_engineer", TYPES)[2:] == [
        "agentops.services.agent",
        "--agent-type",
        "devops_engineer",
    ]
    with pytest.raises(ConfigError, match="unknown process"):
        process_command("agent-poet", TYPES)


def test_restart_backoff_doubles_to_the_cap_and_resets_after_a_long_run() -> None:
    """Quick exits double the delay from 0.5 s to 30 s; a child up 30 s starts over at 0.5 s."""
    policy = RestartPolicy()
    failures, delays = 0, []
    for _ in range(9):
        failures = policy.next_failures(failures, uptime=1.0)
        delays.append(policy.delay(failures))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert policy.delay(policy.next_failures(failures, uptime=30.0)) == 0.5


def test_supervisor_restarts_killed_child_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """Children get NATS settings, a SIGKILLed child comes back, SIGTERM stops all and NATS."""
    processes = {
        "worker": child_command(tmp_path, "worker"),
        "stubborn": child_command(tmp_path, "stubborn", ignore_term=True),
    }
    sup = SupervisorProcess(tmp_path, processes)
    try:
        pids = eventually_sync(
            lambda: sup.pids_with({"worker", "stubborn", NATS_SERVER}),
            timeout=20,
            what="nats-server and both children in processes.json",
        )
        assert nats_answers(sup.nats_port)
        assert (sup.data_dir / "agentops.pid").read_text().strip() == str(sup.proc.pid)
        env = eventually_sync(
            lambda: (
                json.loads(p.read_text()) if (p := tmp_path / "worker.env.json").exists() else None
            ),
            what="worker's recorded environment",
        )
        assert env["NATS_URL"] == f"nats://127.0.0.1:{sup.nats_port}"
        assert env["AGENTOPS_PROCESS"] == "worker"
        assert env["AGENTOPS_DATA_DIR"] == str(sup.data_dir)
        eventually_sync(lambda: "AgentOps is up" in sup.output(), what="the banner")

        os.kill(pids["worker"], signal.SIGKILL)
        new_pid = eventually_sync(
            lambda: sup.replaced("worker", pids["worker"]), what="worker restarted with a new pid"
        )
        assert alive(new_pid)
        assert sup.pids()["stubborn"] == pids["stubborn"]  # its sibling was left alone
        assert "child.restarting" in sup.output()

        started = {*sup.pids().values(), *pids.values()}
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(20) == 0
        assert not any(alive(pid) for pid in started), "a child or nats-server survived"
        assert not nats_answers(sup.nats_port)
        assert not (sup.data_dir / "processes.json").exists()
        assert not (sup.data_dir / "agentops.pid").exists()
        assert "child.killed" in sup.output()  # the SIGTERM-ignoring child needed SIGKILL
    finally:
        sup.cleanup()


def test_banner_waits_for_health_endpoint(tmp_path: Path) -> None:
    """The banner appears only once the health URL answers 200."""
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "health").write_text("ok")  # http.server answers GET /health with 200
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server += ["--directory", str(www)]
    sup = SupervisorProcess(tmp_path, {"web": server}, health_url=f"http://127.0.0.1:{port}/health")
    try:
        eventually_sync(lambda: "AgentOps is up" in sup.output(), timeout=20, what="the banner")
        assert "web" in sup.pids()
        assert (sup.data_dir / "logs" / "web.log").exists()
    finally:
        sup.proc.send_signal(signal.SIGTERM)
        try:
            sup.proc.wait(20)
        finally:
            sup.cleanup()


async def test_nats_port_in_use_is_a_clear_config_error(tmp_path: Path) -> None:
    """A taken NATS port fails start-up with a message suggesting --nats-port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = Supervisor(
            load_settings(environ={}, data_dir=tmp_path),
            processes={"worker": child_command(tmp_path, "worker")},
            nats_port=port,
            health_url=None,
            handle_signals=False,
        )
        with pytest.raises(ConfigError, match="--nats-port"):
            await supervisor.run()
    assert not (tmp_path / "agentops.pid").exists()
    assert read_pids(tmp_path) == {}


async def test_data_dir_that_is_a_file_is_a_clear_config_error(tmp_path: Path) -> None:
    """A --data-dir that is a regular file fails start-up naming the dir, not a traceback."""
    data_dir = tmp_path / "afile"
    data_dir.write_text("not a directory")
    supervisor = Supervisor(
        load_settings(environ={}, data_dir=data_dir),
        processes={"worker": child_command(tmp_path, "worker")},
        nats_port=free_port(),
        health_url=None,
        handle_signals=False,
    )
    with pytest.raises(ConfigError, match=r"data dir .*afile cannot be used.*--data-dir"):
        await supervisor.run()
    assert data_dir.read_text() == "not a directory"


async def test_unreachable_nats_url_is_a_clear_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --nats-url where nothing answers, start-up fails saying so and starts nothing."""
    monkeypatch.setattr(preflight, "NATS_REACH_S", 1.0)
    url = f"nats://127.0.0.1:{free_port()}"
    supervisor = Supervisor(
        load_settings(environ={"NATS_URL": url}, data_dir=tmp_path),
        processes={"worker": child_command(tmp_path, "worker")},
        health_url=None,
        handle_signals=False,
    )
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot reach NATS at {url} (Connection refused)")
    ):
        await supervisor.run()
    assert not (tmp_path / "worker.env.json").exists()  # the child never started
    assert read_pids(tmp_path) == {}


def test_port_check_tells_a_taken_port_from_an_unusable_address() -> None:
    """In use is False; an address not on this machine is a ConfigError; IPv6 is probed too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert port_is_free("127.0.0.1", taken.getsockname()[1]) is False
    assert port_is_free("127.0.0.1", free_port()) is True
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1:"):
        port_is_free("192.0.2.1", free_port())  # TEST-NET-1: never a local address
    if socket.has_ipv6:
        try:
            taken6 = socket.socket(socket.AF_INET6)
            taken6.bind(("::1", 0))
        except OSError:
            return  # no IPv6 loopback here
        with taken6:
            taken6.listen()
            assert port_is_free("::1", taken6.getsockname()[1]) is False


def test_a_missing_nats_server_bin_override_is_a_clear_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENTOPS_NATS_SERVER_BIN naming no executable is an error, not silently skipped."""
    monkeypatch.setenv("AGENTOPS_NATS_SERVER_BIN", str(tmp_path / "nope" / "nats-server"))
    with pytest.raises(ConfigError, match=r"AGENTOPS_NATS_SERVER_BIN=.*not an executable"):
        find_binary()


async def test_in_process_supervisor_stops_on_request(tmp_path: Path) -> None:
    """`request_stop()` ends `run()` with 0 after its child and nats-server are gone."""
    supervisor = Supervisor(
        load_settings(environ={}, data_dir=tmp_path),
        processes={"worker": child_command(tmp_path, "worker")},
        nats_port=free_port(),
        health_url=None,
        handle_signals=False,
        out=io.StringIO(),
    )
    run = asyncio.create_task(supervisor.run())
    seen: set[int] = set()
    try:
        pids = await eventually(
            lambda: _pids_with(tmp_path, {"worker", NATS_SERVER}), timeout=20, what="start-up"
        )
        seen.update(pids.values())
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 20) == 0
        assert not any(alive(pid) for pid in seen)
    finally:
        supervisor.request_stop()
        await asyncio.wait({run}, timeout=20)
        for pid in seen:
            kill_if_ours(pid, str(tmp_path))


async def _pids_with(data_dir: Path, names: set[str]) -> dict[str, int] | None:
    pids = read_pids(data_dir)
    return pids if names <= pids.keys() else None
