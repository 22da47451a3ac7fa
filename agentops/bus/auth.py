"""How a process authenticates to NATS: the options `bus.connection.connect` adds.

In order, the first that applies:
1. `NATS_CREDS`: a creds file (user JWT + seed) of a NATS the operator runs in JWT mode;
2. `NATS_NKEY_SEED`: an nkey seed, or the path of a file holding one;
3. a user and password (or a token) in `NATS_URL`: nats-py reads them from the URL;
4. the process's own credential in the data dir (`<data-dir>/credentials/<name>.nk`,
   written by `agentops up` / `agentops init`; a replica's `<process>@<n>.nk`, else its
   process's): least privilege, so the process does not
   declare streams unless it is the one allowed to (`Auth.own`);
5. nothing: an open server (a test's, or a local one the operator left open).
TLS (`NATS_CA`, `NATS_CERT` + `NATS_KEY`) applies with any of them.

Rules: nothing here logs a secret; `Auth.describe()` names where the credential came from
(a variable or a file path), never its content.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentops import credentials
from agentops.config import Settings
from agentops.natsconf import REPLICA
from agentops.protocol.errors import ConfigError


@dataclass(frozen=True)
class Auth:
    source: str  # what authenticates: "NATS_CREDS", "credential <path>", "url", "none"
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    own: bool = False  # a per-process credential from the data dir (generated permissions)

    def describe(self) -> str:
        tls = " over TLS" if "tls" in self.options else ""
        return f"{self.source}{tls}"


def url_has_credentials(url: str) -> bool:
    for server in url.split(","):
        server = server.strip()
        if "@" in (urlsplit(server if "://" in server else f"nats://{server}").netloc or ""):
            return True
    return False


def principal(process: str, replica: str | None) -> str:
    """Who a process connects as: `<process>@<n>` for replica n > 1 (AGENTOPS_REPLICA)."""
    if replica and replica.isdigit() and int(replica) > 1:
        return f"{process}{REPLICA}{int(replica)}"
    return process


def nats_auth(settings: Settings, principal: str) -> Auth:
    """How `principal` (a process or plugin name) connects with these settings."""
    tls = tls_options(settings)
    if settings.nats_creds is not None:
        return Auth("NATS_CREDS", {"user_credentials": str(settings.nats_creds), **tls})
    if settings.nats_nkey_seed is not None:
        seed = settings.nats_nkey_seed
        if seed.startswith("S"):
            return Auth("NATS_NKEY_SEED", {"nkeys_seed_str": seed, **tls})
        return Auth(f"NATS_NKEY_SEED ({seed})", {"nkeys_seed": seed, **tls})
    if settings.nats_url is not None and url_has_credentials(settings.nats_url):
        return Auth("url", tls)
    path = credentials.seed_path(settings.data_dir, principal)
    if not path.exists() and REPLICA in principal:  # a replica without a key of its own
        path = credentials.seed_path(settings.data_dir, principal.split(REPLICA, 1)[0])
    if path.exists():
        credentials.load(path, principal)  # a bad file fails now, naming itself
        return Auth(f"credential {path}", {"nkeys_seed": str(path), **tls}, own=True)
    return Auth("none", tls)


def tls_options(settings: Settings) -> dict[str, Any]:
    if settings.nats_ca is None and settings.nats_cert is None:
        return {}
    if (settings.nats_cert is None) != (settings.nats_key is None):
        raise ConfigError("NATS_CERT and NATS_KEY: give both (a client certificate and its key)")
    try:
        context = ssl.create_default_context(
            cafile=str(settings.nats_ca) if settings.nats_ca else None
        )
        if settings.nats_cert is not None and settings.nats_key is not None:
            context.load_cert_chain(str(settings.nats_cert), str(settings.nats_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"NATS_CA/NATS_CERT/NATS_KEY: cannot be used: {exc}") from None
    options: dict[str, Any] = {"tls": context}
    host = _tls_hostname(settings.effective_nats_url)
    if host:
        options["tls_hostname"] = host
    return options


def _tls_hostname(url: str) -> str | None:
    first = url.split(",")[0].strip()
    return urlsplit(first if "://" in first else f"nats://{first}").hostname


def secret_paths(settings: Settings) -> tuple[Path, ...]:
    """Files and directories holding NATS or API secrets, to hide from sandboxed code."""
    found: list[Path] = [settings.data_dir]
    for value in (settings.nats_creds, settings.nats_key, settings.config_file):
        if value is not None:
            found.append(Path(value))
    seed = settings.nats_nkey_seed
    if seed is not None and not seed.startswith("S"):
        found.append(Path(seed))
    return tuple(found)
