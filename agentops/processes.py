"""The AgentOps processes: which there are, and the command line that runs each.

`agentops up` starts them all (`runtime.Supervisor`), `agentops run P` one of them, and the
Procfile lists the same; a process name is `edge`, `orchestrator`, `tool-executor`,
`llm-gateway` or `agent-<type>` (`protocol.subjects.all_processes`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
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


def service_entry(process: str) -> tuple[str, list[str]]:
    """The module that runs `process` and its arguments, e.g. `("agentops.services.agent",
    ["--agent-type", "devops_engineer"])`."""
    if process not in subjects.all_processes():
        known = ", ".join(subjects.all_processes())
        raise ConfigError(f"unknown process {process!r}; known processes: {known}")
    if process in SERVICE_MODULES:
        return SERVICE_MODULES[process], []
    return AGENT_MODULE, ["--agent-type", process.removeprefix("agent-")]


def process_command(process: str) -> list[str]:
    """The command line that runs one AgentOps process with this interpreter."""
    module, args = service_entry(process)
    return [sys.executable, "-m", module, *args]


def select_processes(without: Iterable[str] = ()) -> dict[str, list[str]]:
    """The command line of every AgentOps process except those in `without`."""
    skipped = set(without)
    for process in skipped:
        service_entry(process)  # ConfigError naming the known processes
    if skipped >= set(subjects.all_processes()):
        raise ConfigError("--without leaves no process to start")
    return {p: process_command(p) for p in subjects.all_processes() if p not in skipped}
