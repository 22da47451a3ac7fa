"""Where execute_code runs: a bubblewrap sandbox, found and checked once at executor start-up.

Rules:
- `probe(settings)` decides the isolation once and says what it is (`Sandbox.isolation()`,
  logged at start-up, in the executor's status and in `GET /health`). Modes:
  `bwrap` (the sandbox below), `none` (the operator's explicit choice: a plain subprocess with
  resource limits only) and `refused` (no working sandbox in `auto` mode: execute_code answers
  `sandbox_unavailable` instead of running code unconfined).
- Inside the sandbox the program sees a read-only allow-list of the system (`/usr`, `/etc`,
  the interpreters' own directories), the task workspace bound at `/workspace` (its working
  directory and HOME, and the only writable place; no host path of the data directory
  exists there, nor the git directory kept beside it; only `/proc/self/mountinfo` names the
  bound directory, relative to its filesystem, as the kernel does for every bind mount), a
  private `/tmp`, its own pid, IPC, UTS and network namespaces (no network unless the agent
  type is allowed it), no inherited environment, and it runs as an unprivileged uid.
- It holds nothing to authenticate with: no variable is inherited, the executor's processes
  are not in its /proc, and any secret path (`hidden`: the data dir with the NATS
  credentials, NATS_CREDS, the config file) that lies under a directory it sees is masked.
  With network allowed it reaches NATS and the edge, but can authenticate to neither.
- Running as root (as in CI), bwrap joins a user namespace made once at start-up that maps
  root and a block of unprivileged uids (`SANDBOX_UIDS`) to themselves: bwrap mounts as
  root, then `setpriv` drops to the task's uid (a stable hash of the task id into the block)
  with every capability cleared and no_new_privs. So root-only files (`/etc/shadow`) stay
  unreadable and RLIMIT_NPROC is enforced, which is what contains a fork bomb (RLIMIT_NPROC
  does not apply to root); as the count is per uid, one task's fork bomb does not starve
  the others. The workspace is handed to the task's uid before each run (hard-linked files
  excepted, so a link cannot give away a file elsewhere).
- Limits are rlimits set before exec: CPU seconds, data segment (heap + anonymous memory,
  which unlike address space leaves V8's reservations alone), processes, file size, open
  files, no core dumps. Wall time is the caller's: it kills bwrap's process group, and the
  pid namespace takes every process of the run with it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from agentops.protocol.errors import ConfigError
from agentops.tools.policy import Limits, ToolSettings

Mode = Literal["bwrap", "none", "refused"]
LANGUAGES = ("python", "javascript", "bash")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# System directories shown read-only; absent ones are skipped, symlinked ones recreated.
_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Readable by root only on the host; bound over with /dev/null as a second line of defence.
_MASKED = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
_PROBE_TIMEOUT_S = 10.0
INSIDE: Final = "/workspace"  # where the task workspace is, as the program sees it
# (first uid, how many): the block sandboxed code runs as when the executor is root. Above
# the usual /etc/subuid ranges (100000-165535) and below 2^31, so no real account collides.
SANDBOX_UIDS = (1_000_000, 1024)


@dataclass(frozen=True)
class Sandbox:
    mode: Mode
    limits: Limits = field(default_factory=Limits)
    interpreters: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    bwrap: str | None = None
    # Code runs as a uid of [uid, uid + uid_count), one per task (a root executor drops to
    # it); None: the executor's own uid.
    uid: int | None = None
    uid_count: int = 1
    userns_fd: int | None = None
    ro_binds: tuple[str, ...] = ()
    tmpfs_size: bool = False
    hidden: tuple[str, ...] = ()  # secret paths masked wherever they fall under a bound dir

    def isolation(self, network_for: tuple[str, ...] = ()) -> dict[str, Any]:
        """What is in force, in words an operator can check."""
        info: dict[str, Any] = {
            "mode": self.mode,
            "limits": self.limits.model_dump(),
            "languages": sorted(self.interpreters),
        }
        if self.mode == "bwrap":
            info["network"] = f"off, except for {', '.join(network_for)}" if network_for else "off"
            info["filesystem"] = "read-only system allow-list; the task workspace is writable"
            info["user"] = (
                f"uids {self.uid}-{self.uid + self.uid_count - 1}, one per task (unprivileged)"
                if self.uid is not None
                else "the executor's own uid (not root)"
            )
        elif self.mode == "none":
            info["network"] = "host network (no isolation)"
            info["filesystem"] = "host filesystem (no isolation)"
            info["warning"] = (
                "sandbox = none: code runs as a plain subprocess with rlimits only"
                + ("; as root, the process limit is not enforced" if os.geteuid() == 0 else "")
            )
        else:
            info["network"] = "n/a"
            info["reason"] = self.reason
        return info

    # ---- running one program ----
    def uid_for(self, task_key: str) -> int | None:
        """The uid a task's code runs as (stable, so its files stay its own)."""
        if self.mode != "bwrap" or self.uid is None:
            return None
        return self.uid + zlib.crc32(task_key.encode()) % self.uid_count

    def prepare(self, workspace: Path) -> None:
        """Hand the workspace to the task's uid so the program can write its own files."""
        uid = self.uid_for(workspace.name)
        if uid is not None:
            _hand_over(workspace, uid)

    def env(self, workspace: Path) -> dict[str, str]:
        # Built from scratch rather than filtered: nothing inherited can leak (keys, NATS_URL).
        inside = self.mode == "bwrap"
        path = DEFAULT_PATH if inside else os.environ.get("PATH") or DEFAULT_PATH
        return {
            "PATH": path,
            "HOME": INSIDE if inside else str(workspace),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Unbuffered, so a program killed at its timeout still shows what it printed.
            "PYTHONUNBUFFERED": "1",
        }

    def argv(self, program: list[str], workspace: Path | None, network: bool) -> list[str]:
        """The command line that runs `program` in `workspace` (None: an empty private dir)."""
        if self.mode != "bwrap":
            return program
        assert self.bwrap is not None
        # The workspace is bound at INSIDE, never at its host path: the program cannot learn
        # where the data directory is, and the paths it prints are the same on every host.
        where = ["--dir", INSIDE] if workspace is None else ["--bind", str(workspace), INSIDE]
        task_key = "probe" if workspace is None else workspace.name
        return [
            *_bwrap_args(self.bwrap, self.userns_fd, self.ro_binds, network),
            *_masks(self.hidden, (*_SYSTEM_DIRS, *self.ro_binds)),
            *(["--size", str(self.limits.file_size_mb * 1024 * 1024)] if self.tmpfs_size else []),
            *("--tmpfs", "/tmp"),
            *where,
            *("--chdir", INSIDE),
            *_env_args(self.env(Path(INSIDE))),
            "--",
            *_drop_to(self.uid_for(task_key), self.userns_fd),
            *program,
        ]

    def pass_fds(self) -> tuple[int, ...]:
        return (self.userns_fd,) if self.userns_fd is not None else ()

    @contextlib.contextmanager
    def command(
        self, program: list[str], workspace: Path | None, network: bool
    ) -> Iterator[tuple[list[str], tuple[int, ...]]]:
        """(argv, fds to pass) that run `program`: bwrap reads its options from a memfd
        (`--args`, closed once read), so the sandbox's pid 1 (bwrap) shows no host path in
        /proc/1/cmdline, only `bwrap --args N -- <program>`."""
        full = self.argv(program, workspace, network)
        if self.mode != "bwrap":
            yield full, self.pass_fds()
            return
        cut = full.index("--")
        fd = os.memfd_create("sandbox-args", os.MFD_CLOEXEC)
        try:
            os.write(fd, b"".join(arg.encode() + b"\0" for arg in full[1:cut]))
            os.lseek(fd, 0, os.SEEK_SET)
            yield [full[0], "--args", str(fd), *full[cut:]], (*self.pass_fds(), fd)
        finally:
            os.close(fd)

    def process_baseline(self) -> int:
        """Processes already counted against RLIMIT_NPROC for the uid the code runs as.

        The limit counts every process of a uid, so when code runs as the executor's own
        (non-root) user, that user's other processes are added on top of the limit."""
        if (self.mode == "bwrap" and self.uid is not None) or os.geteuid() == 0:
            return 0  # a dedicated task uid, or root (not limited at all)
        return _count_processes(os.getuid())

    def preexec(self, baseline: int = 0) -> Callable[[], None]:
        """Set the limits in the child between fork and exec (inherited by all it starts)."""
        limits = self.limits

        def set_limits() -> None:
            mb = 1024 * 1024
            for which, value in (
                (resource.RLIMIT_CPU, limits.cpu_s),
                (resource.RLIMIT_DATA, limits.memory_mb * mb),
                (resource.RLIMIT_NPROC, limits.processes + baseline),
                (resource.RLIMIT_FSIZE, limits.file_size_mb * mb),
                (resource.RLIMIT_NOFILE, limits.open_files),
                (resource.RLIMIT_CORE, 0),
            ):
                # The hard CPU limit one second later: SIGXCPU (reportable) before SIGKILL.
                hard = value + 1 if which == resource.RLIMIT_CPU else value
                resource.setrlimit(which, (value, hard))

        return set_limits


REFUSED = Sandbox(mode="refused", reason="no sandbox was set up for this executor")


def _bwrap_args(
    bwrap: str, userns_fd: int | None, ro_binds: tuple[str, ...], network: bool
) -> list[str]:
    args = [bwrap]
    if userns_fd is not None:
        args += ["--userns", str(userns_fd), "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try"] + ([] if network else ["--unshare-net"])
        # Only what `setpriv` needs to drop to the task's uid (and for bwrap to enter a 0700
        # workspace owned by it); setpriv clears them all before the program starts.
        caps = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH")
        args += ["--cap-drop", "ALL", *(a for cap in caps for a in ("--cap-add", cap))]
    else:
        args += ["--unshare-all"] + (["--share-net"] if network else [])
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _MASKED:
        if os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    for path in ro_binds:
        args += [*_with_parents(path), "--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    return args


def _masks(hidden: tuple[str, ...], bound: tuple[str, ...]) -> list[str]:
    """Cover each secret path the sandbox would otherwise see (it lies under a bound dir):
    an empty tmpfs over a directory, /dev/null over a file."""
    roots = [os.path.realpath(b) for b in bound if os.path.exists(b)]
    args: list[str] = []
    for path in dict.fromkeys(os.path.realpath(h) for h in hidden):
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            continue
        if os.path.isdir(path):
            args += ["--tmpfs", path]
        elif os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    return args


def _with_parents(path: str) -> list[str]:
    """`--dir` for each ancestor, world-traversable (bwrap would copy the host's modes, and a
    0700 /root or /tmp/pytest-of-root would hide what is bound below it)."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    for i in range(1, len(parts) + 1):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
    return args


def _env_args(env: dict[str, str]) -> list[str]:
    return [arg for name, value in env.items() for arg in ("--setenv", name, value)]


def _drop_to(uid: int | None, userns_fd: int | None) -> list[str]:
    """setpriv to the task's uid, then a shell that closes the user-namespace fd bwrap was
    given (bwrap leaves it open) before it becomes the program."""
    if uid is None:
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    # bash: dash cannot name a file descriptor above 9.
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    close = [] if userns_fd is None else [shell, "-c", f'exec {userns_fd}<&-; exec "$@"', "sh"]
    return [
        setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *close,
    ]  # fmt: skip


def _count_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
    return count


def _hand_over(workspace: Path, uid: int) -> None:
    def give(path: str, st: os.stat_result) -> None:
        if st.st_uid == uid:
            return
        # A regular file with other links may be a link to a file outside: never give it away.
        if not os.path.isdir(path) and st.st_nlink > 1 and not os.path.islink(path):
            return
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, uid, uid, follow_symlinks=False)

    give(str(workspace), os.lstat(workspace))
    for top, dirs, files in os.walk(workspace, followlinks=False):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            with contextlib.suppress(FileNotFoundError):
                give(path, os.lstat(path))


# ---- the probe ----
def probe(settings: ToolSettings, *, uids: tuple[int, int] = SANDBOX_UIDS) -> Sandbox:
    """The sandbox this machine can give, checked by running each interpreter inside it.

    `ConfigError` when `sandbox = "bwrap"` was asked for and cannot be had.
    """
    limits = settings.limits
    if settings.sandbox == "none":
        found = {lang: p for lang in LANGUAGES if (p := _host_interpreter(lang)) is not None}
        return Sandbox(mode="none", limits=limits, interpreters=found)
    problem, sandbox = _try_bwrap(limits, uids)
    if sandbox is not None:
        return sandbox
    if settings.sandbox == "bwrap":
        raise ConfigError(f"sandbox = 'bwrap' was configured but {problem}")
    return Sandbox(
        mode="refused",
        limits=limits,
        reason=f"{problem}; execute_code is refused. Install bubblewrap, or set "
        "[tools] sandbox = 'none' to accept running code without isolation.",
    )


def _try_bwrap(limits: Limits, uids: tuple[int, int]) -> tuple[str, Sandbox | None]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed", None
    uid: int | None = None
    userns_fd: int | None = None
    if os.geteuid() == 0:
        try:
            userns_fd = _make_userns(*uids)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot make the sandbox user namespace: {exc}", None
        uid = uids[0]
    help_text = _run([bwrap, "--help"]).stdout
    base = Sandbox(
        mode="bwrap", limits=limits, bwrap=bwrap, uid=uid, uid_count=uids[1],
        userns_fd=userns_fd, tmpfs_size="--size" in help_text,
    )  # fmt: skip
    check = _run_inside(base, ["/bin/sh", "-c", "exit 0"], ())
    if check.returncode != 0:
        _close(userns_fd)
        return f"bwrap does not work here: {check.stderr.strip()[-300:]}", None
    found: dict[str, str] = {}
    binds: list[str] = []
    for lang in LANGUAGES:
        for interpreter, extra in _candidates(lang):
            trial = (*binds, *(b for b in extra if b not in binds))
            if _run_inside(base, [interpreter, *_SMOKE[lang]], trial).returncode == 0:
                found[lang] = interpreter
                binds = list(trial)
                break
    return "", Sandbox(
        mode="bwrap", limits=limits, interpreters=found, bwrap=bwrap, uid=uid,
        uid_count=uids[1], userns_fd=userns_fd, ro_binds=tuple(binds), tmpfs_size=base.tmpfs_size,
    )  # fmt: skip


_SMOKE = {"python": ["-c", "pass"], "javascript": ["-e", "0"], "bash": ["-c", ":"]}


def _candidates(language: str) -> list[tuple[str, tuple[str, ...]]]:
    """Interpreters to try, each with the directories it needs bound (beyond /usr)."""
    if language == "python":
        prefixes = tuple(
            dict.fromkeys(
                p
                for p in (sys.prefix, sys.base_prefix, _prefix_of(sys.executable))
                if not _under_usr(p)
            )
        )
        return [
            (sys.executable, prefixes),
            ("/usr/bin/python3", ()),
            ("/usr/local/bin/python3", ()),
        ]
    if language == "javascript":
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            return []
        prefix = _prefix_of(node)
        return [(node, () if _under_usr(prefix) else (prefix,))]
    return [("/bin/bash", ())]


def _under_usr(path: str) -> bool:
    return path == "/usr" or path.startswith("/usr/")


def _prefix_of(executable: str) -> str:
    """/x/y/bin/python3 (after symlinks) → /x/y."""
    return str(Path(os.path.realpath(executable)).parent.parent)


def _host_interpreter(language: str) -> str | None:
    if language == "python":
        return sys.executable
    if language == "javascript":
        return shutil.which("node", path=os.environ.get("PATH") or DEFAULT_PATH)
    return "/bin/bash" if os.access("/bin/bash", os.X_OK) else None


def _run_inside(
    base: Sandbox, program: list[str], binds: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    sandbox = Sandbox(
        mode="bwrap", limits=base.limits, bwrap=base.bwrap, uid=base.uid,
        uid_count=base.uid_count, userns_fd=base.userns_fd, ro_binds=binds, tmpfs_size=base.tmpfs_size,
    )  # fmt: skip
    with sandbox.command(program, None, network=False) as (argv, fds):
        return _run(argv, pass_fds=fds)


def _run(argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, pass_fds=pass_fds,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _make_userns(uid: int, count: int) -> int:
    """A user namespace mapping root and `count` uids from `uid` to themselves; returns an fd
    that keeps it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise OSError("the `unshare` command (util-linux) is missing")
    if shutil.which("setpriv") is None:
        raise OSError("the `setpriv` command (util-linux) is missing")
    holder = subprocess.Popen(
        [unshare, "--user", "--", "sleep", "60"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        mine = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        while os.readlink(f"/proc/{holder.pid}/ns/user") == mine:
            if holder.poll() is not None or time.monotonic() > deadline:
                raise OSError("unshare --user did not start")
            time.sleep(0.005)  # start-up only: the holder is entering its namespace
        mapping = f"0 0 1\n{uid} {uid} {count}\n"
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{holder.pid}/{name}").write_text(mapping)
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
