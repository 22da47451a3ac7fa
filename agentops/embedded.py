"""The embedded nats-server's credentials and config, and applying a change to them.

`agentops up` (and `agentops init`, for Procfile and systemd users) keep one nkey per process,
plugin and operator role in the data dir (`credentials.py`) and write the server config that
names them (`natsconf.py`) to `<data-dir>/nats/nats.conf`. A data dir without credentials
(an older version's) gets them on its next start; the JetStream store is kept as it is.

Applying a change (`agentops rotate-credentials`, `agentops init --plugin`) while `agentops
up` runs, in the supervisor (`EmbeddedNats.apply`):
1. the config names the new keys and, for a name whose key changed, the previous one too;
   the server reloads it, and a connection with a new key is checked to be accepted;
2. each process whose key changed is restarted (stopped gracefully while its old key still
   works, started again with the new one);
3. the config drops the previous keys and the server reloads again: what still uses an old
   key (a plugin process run by the operator) is disconnected and must be restarted.
`<data-dir>/nats/applied` then holds the fingerprint of the keys in force, which the CLI
waits for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final

import nats
import structlog

from agentops import credentials, natsconf
from agentops.credentials import Credential
from agentops.natsserver import NatsServer
from agentops.protocol import permissions
from agentops.protocol.permissions import DEFAULT_SCOPE, Scope

log = structlog.get_logger(__name__)

CONFIG: Final = Path("nats") / "nats.conf"
APPLIED: Final = Path("nats") / "applied"
ACCEPT_TIMEOUT_S = 10.0


def standard_names(scope: Scope = DEFAULT_SCOPE) -> list[str]:
    """The credentials every data dir has: each process, the operator, the system user."""
    return [*permissions.processes(scope), credentials.ADMIN, credentials.SYSTEM]


def fingerprint(found: Mapping[str, Credential]) -> str:
    keys = "\n".join(f"{name} {c.public_key}" for name, c in sorted(found.items()))
    return hashlib.sha256(keys.encode()).hexdigest()


def write_config(
    data_dir: Path,
    *,
    port: int,
    monitor_port: int | None = None,
    scope: Scope = DEFAULT_SCOPE,
    previous: Mapping[str, Credential] | None = None,
    found: Mapping[str, Credential] | None = None,
) -> tuple[Path, dict[str, Credential]]:
    """Make sure the credentials exist, write the server config naming them; (its path, the
    credentials)."""
    found = (
        dict(found) if found is not None else credentials.ensure(data_dir, standard_names(scope))
    )
    text = natsconf.server_config(
        found, host="127.0.0.1", port=port, store_dir=data_dir / "jetstream",
        monitor_port=monitor_port, scope=scope, previous=previous,
    )  # fmt: skip
    path = data_dir / CONFIG
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials.write_private(path, text.encode())
    return path, found


def applied(data_dir: Path) -> str | None:
    try:
        return (data_dir / APPLIED).read_text().strip()
    except OSError:
        return None


async def accepts(url: str, credential: Credential, timeout: float = ACCEPT_TIMEOUT_S) -> bool:
    """Does the server at `url` accept this credential (within `timeout`)?"""

    async def quiet(_: Exception) -> None:  # a refusal before the reload is expected
        return None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            nc = await nats.connect(
                url, nkeys_seed_str=credential.seed.decode(), allow_reconnect=False,
                connect_timeout=2, max_reconnect_attempts=0, name="agentops-supervisor",
                error_cb=quiet,
            )  # fmt: skip
        except Exception:  # not reloaded yet, or the server is restarting
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
            continue
        await nc.close()
        return True


class EmbeddedNats:
    """The server `agentops up` runs, with the config it generated."""

    def __init__(
        self, data_dir: Path, port: int, log_file: Path, monitor_port: int | None,
        scope: Scope = DEFAULT_SCOPE,
    ) -> None:  # fmt: skip
        self.data_dir = data_dir
        self.port = port
        self.monitor_port = monitor_port
        self.scope = scope
        self.in_force: dict[str, Credential] = {}
        config, self.in_force = self._write()
        self.server = NatsServer(
            store_dir=data_dir / "jetstream", port=port, monitor_port=monitor_port,
            log_file=log_file, config=config,
        )  # fmt: skip

    def _write(
        self,
        found: Mapping[str, Credential] | None = None,
        previous: Mapping[str, Credential] | None = None,
    ) -> tuple[Path, dict[str, Credential]]:
        config, keys = write_config(
            self.data_dir, port=self.port, monitor_port=self.monitor_port, scope=self.scope,
            previous=previous, found=found,
        )  # fmt: skip
        if previous is None:
            (self.data_dir / APPLIED).write_text(fingerprint(keys) + "\n")
        return config, keys

    async def apply(self, restart: Callable[[set[str]], Awaitable[None]]) -> set[str]:
        """Put the credentials now in the data dir in force (module docstring); the names
        whose key changed or appeared."""
        old = self.in_force
        new = credentials.ensure(self.data_dir, standard_names(self.scope))
        changed = {n for n, c in new.items() if n not in old or old[n].public_key != c.public_key}
        if not changed and set(old) == set(new):
            self._write(new)
            return set()
        self._write(new, previous=old)
        await asyncio.to_thread(self.server.reload)
        probe = new[sorted(changed)[0]] if changed else None
        if probe is not None and not await accepts(self.server.url, probe):
            log.error("nats.reload_not_in_force", config=str(self.data_dir / CONFIG))
        await restart({n for n in changed if n in permissions.processes(self.scope)})
        self._write(new)
        await asyncio.to_thread(self.server.reload)
        self.in_force = new
        log.info("nats.credentials_applied", changed=sorted(changed))
        return changed
