"""`<data-dir>/agentops.pid`: which `agentops up` uses a data dir.

The supervisor claims the file at start-up (another live supervisor on the same data dir is
a `ConfigError`) and removes it on a clean stop. `running(data_dir)` lets another command
(`agentops rotate-credentials`, `agentops init --plugin`) find that supervisor to tell it to
apply new credentials: only a live process whose command line names agentops counts, so a
stale file or a recycled PID is never signalled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from agentops.protocol.errors import ConfigError

NAME: Final = "agentops.pid"


def _read(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def claim(data_dir: Path) -> Path:
    path = data_dir / NAME
    other = _read(path)
    if other and other != os.getpid() and is_agentops(other):
        raise ConfigError(
            f"another `agentops up` (pid {other}) is using {data_dir}; stop it or "
            f"pass --data-dir (delete {path} if that process is not AgentOps)"
        )
    path.write_text(f"{os.getpid()}\n")
    return path


def running(data_dir: Path) -> int | None:
    """The PID of the live `agentops up` using `data_dir`, if there is one."""
    pid = _read(data_dir / NAME)
    if pid and pid != os.getpid() and is_agentops(pid, unknown=False):
        return pid
    return None


def is_agentops(pid: int, unknown: bool = True) -> bool:
    """Is `pid` alive and an agentops command? `unknown` when it cannot be checked."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        return b"agentops" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return unknown  # no /proc to check
