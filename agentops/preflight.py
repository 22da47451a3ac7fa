"""What `agentops up` checks before it starts anything, so a bad set-up is one clear line.

Rules:
- Every problem is a `ConfigError` (printed as `error: ...`, exit 2) naming what to change.
- The data dir must be a directory this user can write (logs, pid file, JetStream store).
- Ports: a port something listens on is "in use"; an address that cannot be used at all (not
  this machine's, an unknown name) says so instead (`natsserver.port_is_free`).
- An external NATS (`--nats-url`) must accept a TCP connection within `NATS_REACH_S`: nats-py's
  own connect keeps retrying a refused server whatever its options say, so it cannot tell.
- A NATS URL is shown only through `mask_url`: it may carry a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from agentops.config import mask_url
from agentops.natsserver import port_is_free
from agentops.protocol.errors import ConfigError

NATS_REACH_S: Final = 10.0  # how long `--nats-url` may take to answer before start-up fails


def prepare_data_dir(data_dir: Path, logs_dir: Path) -> None:
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"data dir {data_dir} cannot be used: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; pass --data-dir DIR"
        ) from None


def check_ports(edge_host: str | None, edge_port: int, nats_port: int | None) -> None:
    """The edge's port (unless no edge runs here) and the embedded server's (unless external)."""
    if edge_host is not None and not port_is_free(edge_host, edge_port):
        raise ConfigError(f"port {edge_host}:{edge_port} is already in use; pass --port PORT")
    if nats_port is not None and not port_is_free("127.0.0.1", nats_port):
        raise ConfigError(
            f"NATS port 127.0.0.1:{nats_port} is already in use (another nats-server?); "
            "pass --nats-port PORT, or --nats-url to use that server"
        )


async def reach_nats(url: str, stopping: asyncio.Event) -> None:
    """Return once one seed URL of `url` accepts a connection; give up after `NATS_REACH_S`
    (silently when `stopping` is set meanwhile: the user asked to stop)."""
    last: BaseException | None = None
    deadline = time.monotonic() + NATS_REACH_S
    while time.monotonic() < deadline and not stopping.is_set():
        for host, port in nats_addresses(url):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, TimeoutError) as exc:  # refused, unknown host, no route
                last = exc
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await asyncio.sleep(0.5)
    if last is not None and not stopping.is_set():
        raise ConfigError(
            f"cannot reach NATS at {mask_url(url)} ({why(last)}); start it, fix "
            "--nats-url / NATS_URL, or drop it to use the embedded server"
        )


def nats_addresses(url: str) -> list[tuple[str, int]]:
    """(host, port) of each seed URL in NATS_URL (validated by `config`); 4222 by default."""
    out: list[tuple[str, int]] = []
    for server in url.split(","):
        server = server.strip()
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        out.append((parts.hostname or "127.0.0.1", parts.port or 4222))
    return out


def why(exc: BaseException) -> str:
    """A connect failure in words: "Connection refused", "Name or service not known"..."""
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "no answer in time"
