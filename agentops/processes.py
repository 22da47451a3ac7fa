"""The AgentOps processes: which there are, and the command line that runs each.

`agentops up` starts them all (`runtime.Supervisor`), `agentops run P` one of them, and the
Procfile lists the same; a process name is `edge`, `orchestrator`, `tool-executor`,
`llm-gateway` or `agent-<type>`, one for each configured agent type
(`protocol.subjects.all_processes(agent_types)`; the types come from `agents.loader`).
`up --scale P=N` (or `[scale]`) runs replicas `P@2` .. `P@N` beside P (`with_replicas`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from agentops.natsconf import REPLICA  # replica n > 1 of P runs as `P@n`, its own key
from agentops.protocol import subjects
from agentops.protocol.errors import ConfigError

SERVICE_MODULES: Final[Mapping[str, str]] = {
    "edge": "agentops.services.edge",
    "orchestrator": "agentops.services.orchestrator",
    "tool-executor": "agentops.services.tool_executor",
    "llm-gateway": "agentops.services.llm_gateway",
}
AGENT_MODULE: Final = "agentops.services.agent"
NATS_SERVER: Final = "nats-server"  # its key in processes.json; no AgentOps process has it


def service_entry(process: str, agent_types: Sequence[str]) -> tuple[str, list[str]]:
    """The module that runs `process` and its arguments, e.g. `("agentops.services.agent",
    ["--agent-type", "devops_engineer"])`; `ConfigError` unless it is a process of a system
    with these agent types."""
    known = subjects.all_processes(agent_types)
    if process not in known:
        raise ConfigError(f"unknown process {process!r}; known processes: {', '.join(known)}")
    if process in SERVICE_MODULES:
        return SERVICE_MODULES[process], []
    return AGENT_MODULE, ["--agent-type", process.removeprefix("agent-")]


def process_command(process: str, agent_types: Sequence[str]) -> list[str]:
    """The command line that runs one AgentOps process with this interpreter."""
    module, args = service_entry(process, agent_types)
    return [sys.executable, "-m", module, *args]


def select_processes(
    agent_types: Sequence[str], without: Iterable[str] = ()
) -> dict[str, list[str]]:
    """The command line of every AgentOps process (one per agent type) except `without`."""
    skipped = set(without)
    for process in skipped:
        service_entry(process, agent_types)  # ConfigError naming the known processes
    every = subjects.all_processes(agent_types)
    if skipped >= set(every):
        raise ConfigError("--without leaves no process to start")
    return {p: process_command(p, agent_types) for p in every if p not in skipped}


NOT_SCALED: Final = ("edge",)  # one port per edge: more edges run behind a load balancer


def parse_scale(raw: Iterable[str]) -> dict[str, int]:
    """`--scale P=N[,Q=M]` (repeatable) as {process: replicas}; `ConfigError` when malformed."""
    out: dict[str, int] = {}
    for part in (p.strip() for item in raw for p in item.split(",")):
        if not part:
            continue
        name, sep, count = part.partition("=")
        if not sep or not count.strip().isdigit() or not 1 <= int(count) <= 64:
            raise ConfigError(f"--scale {part!r}: give PROCESS=N with N from 1 to 64")
        out[name.strip()] = int(count)
    return out


def with_replicas(
    processes: Mapping[str, list[str]], scale: Mapping[str, int], agent_types: Sequence[str]
) -> dict[str, list[str]]:
    """Every process, and `P@2` .. `P@n` after each process P scaled to n replicas (the same
    command). A scaled process must be one of `processes`; the edge is not scaled here."""
    for name in scale:
        service_entry(name, agent_types)  # ConfigError naming the known processes
        if name in NOT_SCALED and scale[name] > 1:
            raise ConfigError(
                f"scale {name}={scale[name]}: one edge per `agentops up` (one port); run more "
                "edges with `agentops run edge` behind a load balancer"
            )
        if name not in processes:
            raise ConfigError(f"scale {name}: it does not run here (--without {name})")
    out: dict[str, list[str]] = {}
    for name, cmd in processes.items():
        out[name] = list(cmd)
        for n in range(2, scale.get(name, 1) + 1):
            out[f"{name}{REPLICA}{n}"] = list(cmd)
    return out
