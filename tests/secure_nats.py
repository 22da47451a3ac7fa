"""A nats-server with the generated config (a user per process), and clients connecting as one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from agentops import credentials, embedded
from agentops.natsserver import NatsServer, free_port
from agentops.protocol import subjects as s


@dataclass
class SecureNats:
    data_dir: Path
    server: NatsServer
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log(self) -> str:
        assert self.server.log_file is not None
        return self.server.log_file.read_text()

    def seed(self, name: str) -> Path:
        return credentials.seed_path(self.data_dir, name)

    async def connect(self, name: str, **options: Any) -> Client:
        """Connect as the user `name` (its credential, its inbox prefix); permission errors
        the server sends are collected in `errors[name]`."""
        seen = self.errors.setdefault(name, [])

        async def on_error(exc: Exception) -> None:
            seen.append(str(exc))

        defaults: dict[str, Any] = {
            "nkeys_seed": str(self.seed(name)),
            "inbox_prefix": s.inbox_prefix(name),
            "error_cb": on_error,
            "allow_reconnect": False,
            "name": s.connection_name(name),
        }
        return await nats.connect(self.url, **{**defaults, **options})

    def violations(self, name: str) -> str:
        return "\n".join(self.errors.get(name, ())).lower()


def start_secure(tmp_path: Path, plugins: tuple[str, ...] = ()) -> SecureNats:
    data_dir = tmp_path / "data"
    credentials.ensure(data_dir, [s.plugin_process(p) for p in plugins])
    port, monitor = free_port(), free_port()
    config, _ = embedded.write_config(data_dir, port=port, monitor_port=monitor)
    server = NatsServer(
        store_dir=data_dir / "jetstream", port=port, monitor_port=monitor,
        log_file=tmp_path / "nats.log", config=config,
    )  # fmt: skip
    return SecureNats(data_dir, server.start())
