"""Two nats-servers from deploy/hybrid's templates, for tests/e2e/test_hybrid.py.

Only what a loopback test must change is rewritten (the JetStream store directory and the
hub's leaf node port); client and monitoring ports are given as flags, secrets arrive through
the environment exactly as the templates expect them, and the hub's users file is written by
`agentops init --hub-users` from the local system's data dir, as AGENT_OPS_DEPLOY.md says.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentops import credentials
from agentops.natsserver import die_with_parent, find_binary, free_port
from tests.helpers import eventually_sync

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "hybrid"
GATEWAY_PASSWORD = f"gateway{secrets.token_hex(12)}"
# A leaf.conf whose operator removed the local restrictions: only the hub's checks remain.
LEAF_INCLUDE = "include ./gateway-permissions.conf   # defines $GATEWAY_PERMISSIONS"
LEAF_AUTHORIZATION = """authorization {
  users: [
    { user: gateway, password: $GATEWAY_NATS_PASSWORD, permissions: $GATEWAY_PERMISSIONS }
  ]
}"""


def render(
    template: str, out_dir: Path, replacements: dict[str, str], tls_dir: Path | None = None
) -> Path:
    """deploy/hybrid/<template> with each `old` (which must occur once) replaced, beside a copy
    of the permissions file it includes. With `tls_dir`, its commented `tls { }` block is
    enabled as AGENT_OPS_DEPLOY.md says, reading the certificates from `tls_dir`."""
    text = (DEPLOY / template).read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{template} no longer contains {old!r} once"
        text = text.replace(old, new)
    if tls_dir is not None:
        text = enable_tls(text).replace("/etc/agentops/nats/", f"{tls_dir}/")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "gateway-permissions.conf", out_dir)
    (out_dir / template).write_text(text)
    return out_dir / template


def enable_tls(text: str) -> str:
    """Uncomment the `# tls {` ... `# }` block once (notes commented twice stay comments)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s*# tls \{", line))
    end = next(i for i in range(start, len(lines)) if re.fullmatch(r"\s*# \}", lines[i]))
    for i in range(start, end + 1):
        lines[i] = re.sub(r"^(\s*)# ?", r"\1", lines[i], count=1)
    return "\n".join(lines) + "\n"


def make_certificates(out: Path) -> Path:
    """A private CA and a certificate for localhost, made by AGENT_OPS_DEPLOY.md's commands."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "hub.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    for cmd in (
        "req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=AgentOps-NATS-CA"
        " -keyout ca-key.pem -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout hub-key.pem -out hub.csr",
        "x509 -req -in hub.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825"
        " -extfile hub.ext -out hub-cert.pem",
    ):
        subprocess.run(["openssl", *cmd.split()], cwd=out, check=True, capture_output=True)
    return out


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class ConfServer:
    """A nats-server started from a rendered deploy/hybrid config."""

    conf: Path
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"nats://{auth}127.0.0.1:{self.port}"

    def admin(self, data_dir: Path) -> dict[str, str]:
        """nats.connect options of the operator's credential in the local data dir."""
        return {"nkeys_seed": str(credentials.seed_path(data_dir, credentials.ADMIN))}

    def start(self) -> ConfServer:
        cmd = [find_binary(), "-c", str(self.conf), "-p", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "-m", str(self.monitor_port)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        eventually_sync(self._ready, timeout=20, interval=0.05, what=f"{self.conf.name} ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:  # not an AssertionError: fail now, not at the deadline
            raise RuntimeError(f"nats-server exited: {self.log.read_text()}")
        try:
            return httpx.get(self._monitor("/healthz"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _monitor(self, path: str) -> str:
        return f"http://127.0.0.1:{self.monitor_port}{path}"

    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (/connz, /leafz, ...)."""
        return dict(httpx.get(self._monitor(path), timeout=5).json())

    def connection_names(self) -> list[str]:
        return [c.get("name", "") for c in self.monitor("/connz?limit=1000")["connections"]]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def start_hub(root: Path, data_dir: Path, tls_dir: Path | None = None) -> tuple[ConfServer, int]:
    """The hub, its users written from `data_dir`'s credentials (made if missing)."""
    leaf_port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    (root / "hub").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "agentops.cli", "init", "--data-dir", str(data_dir),
         "--hub-users", str(root / "hub" / "agentops-users.conf")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    conf = render(
        "hub.conf",
        root / "hub",
        {
            "store_dir: /var/lib/agentops/jetstream": f'store_dir: "{root / "hub" / "js"}"',
            "listen: 0.0.0.0:7422": f"listen: 127.0.0.1:{leaf_port}",
        },
        tls_dir,
    )
    env = {"GATEWAY_NATS_PASSWORD": GATEWAY_PASSWORD}
    return ConfServer(conf, env, root / "hub.log").start(), leaf_port


def start_leaf(
    root: Path,
    name: str,
    hub_leaf_port: int,
    *,
    open_locally: bool = False,
    tls_dir: Path | None = None,
) -> ConfServer:
    replacements = {"server_name: agentops-leaf": f"server_name: {name}"}
    if open_locally:
        replacements[LEAF_AUTHORIZATION] = ""
        replacements[LEAF_INCLUDE] = ""  # an unused variable is a config error
    conf = render("leaf.conf", root / name, replacements, tls_dir)
    # tls:// makes the leaf insist on TLS; the certificate names localhost.
    hub = "tls://" if tls_dir else "nats-leaf://"
    hub += f"gateway:{GATEWAY_PASSWORD}@{'localhost' if tls_dir else '127.0.0.1'}:{hub_leaf_port}"
    env = {"GATEWAY_NATS_PASSWORD": GATEWAY_PASSWORD, "AGENTOPS_HUB_LEAF_URL": hub}
    leaf = ConfServer(conf, env, root / f"{name}.log").start()
    eventually_sync(
        lambda: leaf.monitor("/leafz")["leafnodes"] == 1, timeout=20, what=f"{name} joined the hub"
    )
    return leaf
