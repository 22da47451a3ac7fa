"""The supervisor behind `agentops up`: an embedded nats-server plus one child per process.

Invariants:
- It only signals processes it started, through the handle it got when starting them, and
  only while that handle is unreaped (so a recycled PID is never hit). Never by name, never
  from a PID read back from a file.
- Children run in their own session: a terminal's Ctrl-C reaches only the supervisor, which
  stops them in order: SIGTERM to every child, SIGKILL after `stop_timeout` (or at a second
  signal), and the embedded nats-server last, so children can drain.
- A replica `<process>@<n>` (`--scale`, `[scale]`) is a child like any other: the same command,
  AGENTOPS_PROCESS=<process> and AGENTOPS_REPLICA=<n> (its own credential `<process>@<n>`).
- `--nats-cluster N` embeds N nodes on loopback (`embedded.py`); each is watched and
  restarted on its own; children get every node's URL.
- A child that exits while the supervisor is not stopping is restarted after a backoff that
  doubles from 0.5 s to 30 s and resets once the child has stayed up 30 s.
- `<data_dir>/processes.json` maps each live child's process name (and `nats-server` when
  embedded, `nats-server@<n>` for node n of `--nats-cluster`) to its PID; it is replaced
  atomically on every start and exit. `<data_dir>/agentops.pid` holds the supervisor's PID.
  Both are removed on a clean stop.
- Children get their settings as environment variables (`Settings.child_env()`, NATS_URL set
  to the server actually used) plus AGENTOPS_PROCESS; nothing else crosses over.
- A NATS URL is shown (banner, logs) only through `mask_url`: it may carry a password.
- A stdout/stderr whose reader is gone never stops a stop: the signal handler sets the stop
  flag before it writes anything, and writes that fail are dropped (`streams.py`).
- `up --without P` leaves process P to another machine (the LLM gateway on a GPU pod); the
  banner names it, and `/health` stays degraded until it connects from there.
- The embedded nats-server requires a credential per process (`embedded.py`); the operator's
  NATS variables (NATS_CREDS, ...) are not passed to children then. SIGHUP puts new
  credentials in force: the server reloads, the children whose key changed restart at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import re
import signal
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TextIO

import httpx
import structlog

import agentops
from agentops import banner, pidfile, preflight, streams
from agentops.agents.loader import agent_types
from agentops.config import EXTERNAL_NATS_VARS, Settings, load_nats, mask_url
from agentops.embedded import EmbeddedNats
from agentops.natsconf import REPLICA
from agentops.natsserver import NatsServer, die_with_parent
from agentops.processes import NATS_SERVER, process_command
from agentops.protocol import subjects
from agentops.protocol.errors import ConfigError
from agentops.protocol.permissions import Scope

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}(@[0-9]{1,2})?$")  # become log file names


@dataclass(frozen=True)
class RestartPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 30.0  # a child up this long counts as healthy again

    def delay(self, failures: int) -> float:
        """Backoff before restart number `failures` (1-based) of a quick-exit streak."""
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.maximum))

    def next_failures(self, failures: int, uptime: float) -> int:
        return 1 if uptime >= self.reset_after else failures + 1


class _Default(enum.Enum):
    TOKEN = 0


DEFAULT: Final = _Default.TOKEN


class Supervisor:
    """Runs until `request_stop()` or SIGINT/SIGTERM; `run()` returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        processes: Mapping[str, Sequence[str]] | None = None,
        nats_port: int = 4222,
        foreground_logs: bool = False,
        health_url: str | _Default | None = DEFAULT,
        health_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        restart: RestartPolicy = RestartPolicy(),
        out: TextIO | None = None,
        handle_signals: bool = True,
        elsewhere: Sequence[str] = (),
        warnings: Sequence[str] = (),
        nats_cluster: int = 1,
    ) -> None:
        self.settings = settings
        self.elsewhere = list(elsewhere)  # processes expected to run on another machine
        if processes is None:
            types = agent_types(settings)
            processes = {p: process_command(p, types) for p in subjects.all_processes(types)}
        for name in processes:
            if not _NAME.match(name) or name.startswith(NATS_SERVER):
                raise ValueError(f"invalid process name {name!r}")
        self.processes = {name: list(cmd) for name, cmd in processes.items()}
        self.nats_port = nats_port
        self.foreground_logs = foreground_logs
        self.health_url = (
            f"{settings.base_url}/health" if isinstance(health_url, _Default) else health_url
        )
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.out = out if out is not None else sys.stdout
        self.handle_signals = handle_signals
        self.data_dir = settings.data_dir
        self.logs_dir = settings.data_dir / "logs"
        self.pid_file = settings.data_dir / pidfile.NAME
        self.processes_file = settings.data_dir / "processes.json"
        self.nats_url: str | None = settings.nats_url
        self.nats: NatsServer | None = None  # the embedded server (node 1 of a cluster)
        self.nats_cluster = nats_cluster  # embedded nodes
        self.embedded: EmbeddedNats | None = None
        self.warnings = list(warnings)  # shown in the banner
        self.restarts: dict[str, int] = dict.fromkeys(self.processes, 0)
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._announcer: asyncio.Task[None] | None = None
        self._nats_watchers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._shut_down = False
        self._restarting: set[str] = set()  # children stopped to be started again at once
        self._applying: asyncio.Task[None] | None = None

    # ---- lifecycle ----

    async def run(self) -> int:
        preflight.prepare_data_dir(self.data_dir, self.logs_dir)
        pidfile.claim(self.data_dir)  # before `try`: on failure the file is another's
        loop = asyncio.get_running_loop()
        try:
            if self.handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                loop.add_signal_handler(signal.SIGHUP, self.apply_credentials)
            preflight.check_ports(
                self.settings.host if "edge" in self.processes else None,
                self.settings.port,
                self.nats_port if self.nats_url is None else None,
            )
            self._say(
                f"starting AgentOps ({len(self.processes)} processes, data in {self.data_dir})"
            )
            if self.nats_url is None:
                await self._start_nats()
                assert self.embedded is not None
                self._nats_watchers = [
                    asyncio.create_task(self._watch_nats(server), name=f"nats-{i}")
                    for i, server in enumerate(self.embedded.servers, 1)
                ]
            else:
                await preflight.reach_nats(self.nats_url, self._stopping)
            self._write_processes()
            for name, cmd in self.processes.items():
                self._tasks[name] = asyncio.create_task(self._supervise(name, cmd), name=name)
            self._announcer = asyncio.create_task(self._announce(), name="announce")
            await self._stopping.wait()
            return 0
        finally:
            await self.shutdown()
            if self.handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            for path in (self.processes_file, self.pid_file):
                path.unlink(missing_ok=True)

    def request_stop(self) -> None:
        self._stopping.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        # The flag first: the lines below go to a terminal or pipe that may be gone (Ctrl-C
        # of `agentops up | tee` kills tee too), and the stop must never depend on them.
        if self._stopping.is_set():
            self._force.set()
            with contextlib.suppress(*streams.WRITE_ERRORS):
                log.warning("supervisor.force_stop", signal=sig.name)
            return
        self._stopping.set()
        with contextlib.suppress(*streams.WRITE_ERRORS):
            log.info("supervisor.stopping", signal=sig.name)
        self._say("stopping AgentOps (again to force)...")

    async def shutdown(self) -> None:
        """SIGTERM every child, SIGKILL stragglers, then stop the embedded nats-server."""
        if self._shut_down:
            return
        self._shut_down = True
        self._stopping.set()
        if self._announcer is not None:
            self._announcer.cancel()
        if self._applying is not None:
            self._applying.cancel()
        for proc in list(self._procs.values()):
            _signal(proc, signal.SIGTERM)
        if self._tasks:
            children: asyncio.Future[Any] = asyncio.gather(
                *self._tasks.values(), return_exceptions=True
            )
            force: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                {children, force}, timeout=self.stop_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            force.cancel()
            if not children.done():
                for name, proc in list(self._procs.items()):
                    log.warning("child.killed", child=name, pid=proc.pid)
                    _signal(proc, signal.SIGKILL)
                await asyncio.wait({children}, timeout=5.0)
                children.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await children
        # Not cancelled: a watcher returns by itself once a restart in flight has finished,
        # so the `stop()` below also covers a server that restart just started.
        await asyncio.gather(*self._nats_watchers, return_exceptions=True)
        if self.embedded is not None:
            await asyncio.gather(
                *(asyncio.to_thread(server.stop) for server in self.embedded.servers)
            )
        log.info("supervisor.stopped")

    # ---- children ----

    async def _supervise(self, name: str, cmd: list[str]) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            started = loop.time()
            pid: int | None = None
            returncode: int | None = None
            try:
                proc = await self._spawn(name, cmd)
            except OSError as exc:
                log.error("child.spawn_failed", child=name, command=cmd, error=str(exc))
            else:
                pid = proc.pid
                self._procs[name] = proc
                self._write_processes()
                log.info("child.started", child=name, pid=pid)
                if self._stopping.is_set():  # stop began while it was spawning
                    _signal(proc, signal.SIGTERM)
                returncode = await proc.wait()
                self._procs.pop(name, None)
                self._write_processes()
            if self._stopping.is_set():
                log.info("child.stopped", child=name, pid=pid, returncode=returncode)
                return
            if name in self._restarting:  # asked for (new credentials): no backoff
                self._restarting.discard(name)
                log.info("child.restarted", child=name, pid=pid)
                continue
            uptime = loop.time() - started
            failures = self.restart.next_failures(failures, uptime)
            delay = self.restart.delay(failures)
            self.restarts[name] += 1
            log.warning(
                "child.restarting",
                child=name,
                pid=pid,
                exit=_describe_exit(returncode),
                uptime_s=round(uptime, 3),
                restart_in_s=delay,
                restarts=self.restarts[name],
                log_file=None if self.foreground_logs else str(self.logs_dir / f"{name}.log"),
            )
            if await self._sleep_unless_stopping(delay):
                return

    async def _spawn(self, name: str, cmd: list[str]) -> asyncio.subprocess.Process:
        out = None if self.foreground_logs else self._open_log(name)
        try:  # the child keeps its own descriptor of the log file
            return await asyncio.create_subprocess_exec(
                *cmd, env=self._child_env(name), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=None if out is None else asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()

    def _open_log(self, name: str) -> IO[bytes]:
        return open(self.logs_dir / f"{name}.log", "ab")  # the caller closes it

    def _child_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.child_env())
        if self.embedded is not None:  # the operator's NATS credentials are not for this one
            for var in EXTERNAL_NATS_VARS:
                env.pop(var, None)
        if self.nats_url is not None:
            env["NATS_URL"] = self.nats_url
        process, _, replica = name.partition(REPLICA)
        env["AGENTOPS_PROCESS"] = process
        if replica:  # its own credential, `<process>@<n>` (bus/auth.py)
            env["AGENTOPS_REPLICA"] = replica
        else:
            env.pop("AGENTOPS_REPLICA", None)
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they happen
        pythonpath = _pythonpath(env.get("PYTHONPATH"))
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    # ---- embedded nats-server ----

    async def _start_nats(self) -> None:
        monitor = load_nats(self.settings).monitor_port
        scope = Scope(agent_types=agent_types(self.settings))
        replicas = [name for name in self.processes if REPLICA in name]
        self.embedded = EmbeddedNats(
            self.data_dir, self.nats_port, self.logs_dir, monitor, scope,
            nodes=self.nats_cluster, extra=replicas,
        )  # fmt: skip
        self.nats = self.embedded.server
        # Every node before any waits for a cluster: each is ready once it accepts clients.
        await asyncio.gather(*(asyncio.to_thread(n.start) for n in self.embedded.servers))
        self.nats_url = self.embedded.url
        log.info("nats.started", url=self.nats_url, monitor=self.nats.monitor_url)

    def apply_credentials(self) -> None:
        """SIGHUP: put the credentials now in the data dir in force (`embedded.py`): written
        by `agentops rotate-credentials` or `agentops init --plugin`. With an external NATS,
        every child is restarted to read its credential again."""
        if self._stopping.is_set() or (self._applying and not self._applying.done()):
            return
        self._applying = asyncio.create_task(self._apply(), name="credentials")

    async def _apply(self) -> None:
        try:
            if self.embedded is not None:
                await self.embedded.apply(self._restart_children)
            else:
                await self._restart_children(set(self.processes))
        except Exception:  # the old keys stay in force; the CLI reports it was not applied
            log.exception("nats.credentials_not_applied")

    async def _restart_children(self, names: set[str]) -> None:
        """Stop these children gracefully and start them again at once; return once the old
        ones are gone."""
        old = {n: proc for n, proc in self._procs.items() if n in names}
        for name, proc in old.items():
            self._restarting.add(name)
            _signal(proc, signal.SIGTERM)
        waits = [asyncio.ensure_future(proc.wait()) for proc in old.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.stop_timeout)
            if pending:
                for proc in old.values():
                    _signal(proc, signal.SIGKILL)
                await asyncio.wait(waits, timeout=5.0)

    async def _watch_nats(self, server: NatsServer) -> None:
        """Restart an embedded server (a node) if it dies; children reconnect on their own."""
        loop = asyncio.get_running_loop()
        failures, started = 0, loop.time()
        while not await self._sleep_unless_stopping(0.25):
            proc = server.proc
            if proc is None or proc.poll() is None:
                continue
            uptime = loop.time() - started
            failures = self.restart.next_failures(failures, uptime)
            delay = self.restart.delay(failures)
            log.error(
                "nats.exited", exit=_describe_exit(proc.returncode), restart_in_s=delay,
                log_file=str(server.log_file), url=server.url,
            )  # fmt: skip
            self._write_processes()
            if await self._sleep_unless_stopping(delay):
                return
            try:
                await asyncio.to_thread(server.start)
            except ConfigError as exc:  # e.g. the port is still held; next loop retries
                log.error("nats.restart_failed", error=exc.message)
            started = loop.time()
            self._write_processes()

    # ---- readiness ----

    async def _announce(self) -> None:
        healthy, health = True, None
        if self.health_url is not None:
            healthy, health = await self._wait_healthy(self.health_url)
        if not self._stopping.is_set():
            self._say(self._banner(healthy, health))

    async def _wait_healthy(self, url: str) -> tuple[bool, dict[str, Any] | None]:
        """(healthy, the /health body once healthy) after waiting at most `health_timeout`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_progress = start + 5.0
        last = "no answer yet"
        # trust_env=False: a proxy from the environment must not intercept a loopback probe.
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while not self._stopping.is_set():
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                else:
                    if response.status_code == 200:
                        try:
                            body = response.json()
                        except ValueError:  # healthy is the status; the body is a bonus
                            body = None
                        return True, body if isinstance(body, dict) else None
                    last = f"HTTP {response.status_code}"
                now = loop.time()
                if now - start >= self.health_timeout:
                    self._say(
                        f"warning: {url} is not healthy after {self.health_timeout:.0f}s "
                        f"({last}); still supervising, see {self.logs_dir}"
                    )
                    return False, None
                if now >= next_progress:
                    self._say(f"  waiting for {url} ({now - start:.0f}s, {last})")
                    next_progress += 5.0
                if await self._sleep_unless_stopping(0.25):
                    break
        return False, None

    def _banner(self, healthy: bool, health: dict[str, Any] | None = None) -> str:
        if self.nats is not None:
            monitor = self.nats.monitor_url or "monitoring off"
            nodes = f"{self.nats_cluster} nodes; " if self.nats_cluster > 1 else ""
            nats = f"{self.nats_url} (embedded; {nodes}authenticated; {monitor})"
        else:
            nats = f"{mask_url(self.nats_url or '')} (external)"
        logs = "inherited (--foreground-logs)" if self.foreground_logs else f"{self.logs_dir}/"
        return banner.text(
            healthy, url=self.settings.base_url, nats=nats, data_dir=str(self.data_dir),
            logs=logs, processes=list(self.processes), elsewhere=self.elsewhere, health=health,
            warnings=self.warnings,
        )  # fmt: skip

    # ---- files and helpers ----

    def _write_processes(self) -> None:
        pids: dict[str, int] = {name: proc.pid for name, proc in self._procs.items()}
        servers = self.embedded.servers if self.embedded is not None else []
        for i, server in enumerate(servers, 1):
            if server.proc is not None and server.proc.poll() is None:
                key = NATS_SERVER if len(servers) == 1 else f"{NATS_SERVER}{REPLICA}{i}"
                pids[key] = server.proc.pid
        _write_json_atomic(self.processes_file, pids)

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True as soon as a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    def _say(self, text: str) -> None:
        streams.write_line(self.out, text)


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "did not start"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _pythonpath(current: str | None) -> str | None:
    """Let children import this very `agentops` package even when it is not installed."""
    root = str(Path(agentops.__file__).resolve().parent.parent)
    site_dirs = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    parts = current.split(os.pathsep) if current else []
    if root in site_dirs or root in parts:
        return current
    return os.pathsep.join([root, *parts])


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
