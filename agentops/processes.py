"""The AgentOps processes: which there are, and the command line that runs each.

`agentops up` starts them all (`runtime.Supervisor`), `agentops run P` one of them, and the
Procfile lists the same; a process name is `edge`, `orchestrator`, `tool-executor`,
`llm-gateway` or `agent-<type>`, one for each configured agent type
(`protocol.subjects.all_processes(agent_types)`; the types come from `agents.loader`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

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
