"""Start the real system (`agentops up`: embedded nats-server + every process) for e2e tests.

The embedded server has a user per process (the generated config): a test talks to NATS as
the operator (`System.admin`), and stopping a system fails the test if the server logged a
permissions violation by any AgentOps process (what each does must be what it may).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentops import credentials
from agentops.natsserver import free_port
from tests.helpers import eventually_sync


@dataclass
class System:
    data_dir: Path
    port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    external_nats: str | None = None  # `agentops up --nats-url` instead of the embedded server
    without: tuple[str, ...] = ()  # `agentops up --without P`: P runs elsewhere
    config: Path | None = None  # AGENTOPS_CONFIG
    agents_dir: Path | None = None  # `agentops up --agents-dir`
    nats_cluster: int = 1  # `agentops up --nats-cluster N`
    scale: str | None = None  # `agentops up --scale P=N,...`
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        """What `agentops up` printed (banner, errors)."""
        return self.data_dir.parent / f"up-{self.port}.log"

    @property
    def nats_url(self) -> str:
        if self.external_nats is None and self.nats_cluster > 1:  # every node, from the log
            for line in self.supervisor_log().splitlines():
                if '"nats.started"' in line:
                    return str(json.loads(line)["url"])
        return self.external_nats or f"nats://127.0.0.1:{self.nats_port}"

    def supervisor_log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    @property
    def admin(self) -> dict[str, str]:
        """nats.connect options for the operator's credential (the embedded server's)."""
        if self.external_nats is not None:
            return {}
        return {"nkeys_seed": str(credentials.seed_path(self.data_dir, credentials.ADMIN))}

    @property
    def nats_log(self) -> Path:
        return self.data_dir / "logs" / "nats.log"

    def violations(self) -> list[str]:
        """Permissions violations the embedded server (every node) logged for AgentOps
        processes."""
        lines = [
            line
            for log in sorted((self.data_dir / "logs").glob("nats*.log"))
            for line in log.read_text(errors="replace").splitlines()
        ]
        return [x for x in lines if "Violation" in x and ":agentops-" in x]

    def start(self) -> System:
        cmd = [
            sys.executable,
            "-m",
            "agentops.cli",
            "up",
            "--port",
            str(self.port),
            "--nats-port",
            str(self.nats_port),
            "--data-dir",
            str(self.data_dir),
            *(["--nats-url", self.external_nats] if self.external_nats else []),
            *(arg for process in self.without for arg in ("--without", process)),
            *(["--agents-dir", str(self.agents_dir)] if self.agents_dir else []),
            *(["--nats-cluster", str(self.nats_cluster)] if self.nats_cluster > 1 else []),
            *(["--scale", self.scale] if self.scale else []),
        ]
        log = open(self.output, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "AGENTOPS_LOG_LEVEL": "info",
                **({"AGENTOPS_CONFIG": str(self.config)} if self.config else {}),
            },
        )
        log.close()
        eventually_sync(self._healthy, timeout=60, interval=0.1, what="agentops up healthy")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"agentops up exited with {self.proc.returncode}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self) -> dict[str, int]:
        data = json.loads((self.data_dir / "processes.json").read_text())
        procs = data.get("processes", data)
        return {
            name: int(info["pid"] if isinstance(info, dict) else info)
            for name, info in procs.items()
        }

    def stop(self) -> None:
        if self.proc is None:
            return
        children = self.pids() if (self.data_dir / "processes.json").exists() else {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in children.values():  # the supervisor should have stopped them; make sure
            if _is_ours(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc = None
        assert self.violations() == [], "a process did what its NATS user may not"


def _is_ours(pid: int) -> bool:
    """Alive and still one of the system's processes (not a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"agentops" in cmdline or b"nats-server" in cmdline


def start_system(
    data_dir: Path,
    nats_url: str | None = None,
    without: tuple[str, ...] = (),
    config: Path | None = None,
    agents_dir: Path | None = None,
    nats_cluster: int = 1,
    scale: str | None = None,
) -> System:
    data_dir.mkdir(parents=True, exist_ok=True)
    return System(
        data_dir=data_dir,
        external_nats=nats_url,
        without=without,
        config=config,
        agents_dir=agents_dir,
        nats_cluster=nats_cluster,
        scale=scale,
    ).start()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    sys_ = start_system(tmp_path_factory.mktemp("system") / "data")
    try:
        yield sys_
    finally:
        sys_.stop()


def wait_for(probe: object, timeout: float = 30.0, what: str = "condition") -> object:
    return eventually_sync(probe, timeout=timeout, interval=0.05, what=what)  # type: ignore[arg-type]
