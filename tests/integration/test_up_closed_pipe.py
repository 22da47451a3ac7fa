"""`agentops up 2>&1 | tee up.log`, then Ctrl-C: the reader of its output is gone when the
stop begins. The real `agentops up` (nats-server and the orchestrator, the rest left out with
`--without`) must still stop everything and exit, whatever its writes to the pipe do."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentops.agents.loader import shipped_specs
from agentops.natsserver import free_port
from agentops.processes import NATS_SERVER
from agentops.protocol import subjects
from tests.helpers import eventually_sync
from tests.integration.test_supervisor import alive, read_pids

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BANNER_END = b"Ctrl-C (or SIGTERM) stops everything."


def _start_up(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`agentops up` with stdout and stderr on one pipe (as `2>&1 | tee`)."""
    without = [p for p in subjects.all_processes(shipped_specs()) if p != "orchestrator"]
    argv = [sys.executable, "-m", "agentops.cli", "up", "--data-dir", str(tmp_path / "data")]
    argv += ["--nats-port", str(free_port()), "--without", ",".join(without)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AGENTOPS_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """What the pipe carried up to and including `marker` (select's timeout, not a sleep)."""
    assert proc.stdout is not None
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout} s; got {seen[-2000:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"output ended before {marker!r}: {seen[-2000:]!r}"
            seen += chunk
    return seen


@pytest.mark.parametrize(
    ("sig", "close_at_once"),
    [(signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["ctrl-c-after-the-banner", "sigterm-reader-gone-from-the-start"],
)
def test_up_stops_when_the_reader_of_its_output_is_gone(
    tmp_path: Path, sig: signal.Signals, close_at_once: bool
) -> None:
    """With its output pipe's reader closed, a signal still stops every child and the supervisor."""
    proc = _start_up(tmp_path)
    data_dir = tmp_path / "data"
    seen: set[int] = set()
    try:
        assert proc.stdout is not None
        if close_at_once:
            proc.stdout.close()  # every write, the first line included, meets EPIPE
        else:
            _read_until(proc, BANNER_END, timeout=30)
        pids = eventually_sync(
            lambda: (
                p if {"orchestrator", NATS_SERVER} <= (p := read_pids(data_dir)).keys() else None
            ),
            timeout=30,
            what="nats-server and the orchestrator in processes.json",
        )
        seen.update(pids.values())
        if not close_at_once:
            proc.stdout.close()  # tee is gone: the stop's own lines now meet EPIPE
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert not any(alive(pid) for pid in seen), "a child survived the stop"
        assert not (data_dir / "processes.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in seen:
            _kill_if_ours(pid, str(data_dir))


def _kill_if_ours(pid: int, data_dir: str) -> None:
    """Cleanup: SIGKILL `pid` only if its command line or environment names this data dir."""
    try:
        proc = Path(f"/proc/{pid}")
        found = (
            data_dir.encode()
            in proc.joinpath("cmdline").read_bytes() + proc.joinpath("environ").read_bytes()
        )
    except OSError:
        return
    if found:
        os.kill(pid, signal.SIGKILL)
