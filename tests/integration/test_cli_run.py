"""`agentops run edge` when its HTTP port is taken: one `error: ...` line, exit 2, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from agentops.natsserver import NatsServer

REPO = Path(__file__).resolve().parents[2]


def test_run_edge_on_a_port_in_use_is_a_clean_error(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NATS_URL": nats_server.url,
            "AGENTOPS_HOST": "127.0.0.1",
            "AGENTOPS_PORT": str(port),
            "AGENTOPS_DATA_DIR": str(tmp_path / "data"),
            "AGENTOPS_LOG_FORMAT": "json",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentops.cli", "run", "edge"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    )
