"""NATS credentials in the data dir: one nkey per process, plugin, operator and node.

Layout: `<data-dir>/credentials/<name>.nk` holds the seed of user `<name>` (`edge`,
`agent-backend_developer`, `plugin-word_count`, `admin`, `system`, a replica's
`<process>@<n>`): the file `nats --nkey` and nats-py's `nkeys_seed` read. The server config
names only public keys (`natsconf.py`), so it holds no secret; an embedded cluster's route
password is `route.secret` beside them (its nodes' configs name it).

Why nkeys and not passwords: the server authenticates a signature of its own nonce, so no
secret crosses the connection and the server config can be read by anyone; the operator's
`nats` CLI takes the same file (`--nkey`); and a remote `NATS_NKEY_SEED` needs the same
library anyway.

Rules:
- The directory is 0700 and every seed 0600, written to a temporary file and renamed, so a
  reader never sees half a seed; a seed found readable by others is tightened to 0600.
- `ensure` creates what is missing and keeps what exists (reused across restarts; an old data
  dir without credentials gets them on its next start). `rotate` replaces every seed.
- A malformed seed file is a `ConfigError` naming the file; a seed never appears in an error,
  a log line or a repr.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nkeys

from agentops.protocol.errors import ConfigError

DIRECTORY: Final = "credentials"
SUFFIX: Final = ".nk"
ADMIN: Final = "admin"  # every right in the AgentOps account: the operator's `nats` CLI
SYSTEM: Final = "system"  # the system account: `nats server report ...`
PLUGIN_PREFIX: Final = "plugin-"


@dataclass(frozen=True)
class Credential:
    name: str
    path: Path
    public_key: str
    seed: bytes = field(repr=False)


def directory(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


def seed_path(data_dir: Path, name: str) -> Path:
    return directory(data_dir) / f"{name}{SUFFIX}"


def new_seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes, where: str) -> str:
    try:
        key = nkeys.from_seed(bytearray(seed)).public_key
    except (nkeys.NkeysError, ValueError, TypeError):
        raise ConfigError(f"{where} is not a NATS user nkey seed (S...): replace it") from None
    value: str = key.decode()
    if not value.startswith("U"):
        raise ConfigError(f"{where} is not a NATS *user* nkey seed (SU...)")
    return value


def load(path: Path, name: str | None = None) -> Credential:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
        seed = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"credential {path} cannot be read: {exc.strerror or exc}") from None
    key = public_key(seed, f"credential {path}")
    return Credential(name or path.name.removesuffix(SUFFIX), path, key, seed)


def existing(data_dir: Path) -> dict[str, Credential]:
    """Every credential in the data dir, by name."""
    folder = directory(data_dir)
    if not folder.is_dir():
        return {}
    return {p.name.removesuffix(SUFFIX): load(p) for p in sorted(folder.glob(f"*{SUFFIX}"))}


def ensure(data_dir: Path, names: Iterable[str]) -> dict[str, Credential]:
    """The credentials of `names` (created where missing) plus every other one present."""
    found = existing(data_dir)
    for name in names:
        if name not in found:
            found[name] = write(data_dir, name, new_seed())
    return found


def rotate(data_dir: Path, names: Iterable[str] = ()) -> dict[str, Credential]:
    """A new seed for every credential present (and for `names`), replacing the old ones."""
    current = set(existing(data_dir)) | set(names)
    return {name: write(data_dir, name, new_seed()) for name in sorted(current)}


def write(data_dir: Path, name: str, seed: bytes) -> Credential:
    folder = directory(data_dir)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        path = seed_path(data_dir, name)
        write_private(path, seed + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot write credentials in {folder}: {exc.strerror or exc}") from None
    return Credential(name, path, public_key(seed, f"credential {path}"), seed)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a 0600 file, atomically (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def route_secret(data_dir: Path) -> str:
    """The embedded cluster's route password (`<data-dir>/credentials/route.secret`, 0600):
    created once, reused, replaced by `rotate`'s caller deleting it. Never logged."""
    path = directory(data_dir) / ROUTE_SECRET
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    folder = directory(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(24)  # hex: nothing a URL's userinfo would need escaped
    write_private(path, value.encode() + b"\n")
    return value


ROUTE_SECRET: Final = "route.secret"


def plugin_names(found: Iterable[str]) -> list[str]:
    """The tool names of the plugin credentials among `found`."""
    return sorted(n.removeprefix(PLUGIN_PREFIX) for n in found if n.startswith(PLUGIN_PREFIX))
