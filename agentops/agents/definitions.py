"""Specialist agent types as data. Prompts are files beside this module (own your prompts).

Reading the prompt files is the only I/O here and happens once at import; the resulting
`AgentSpec` values are plain frozen data that the pure core receives as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentops.llm.types import ToolSchema
from agentops.protocol.subjects import AGENT_TYPES

_PROMPTS = Path(__file__).with_name("prompts")

_STANDARD_TOOLS = (
    "list_files",
    "search_files",
    "read_file",
    "edit_file",
    "write_file",
    "execute_code",
    "api_call",
    "request_human_input",
    "complete_task",
)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_type: str
    name: str
    role: str
    system_prompt: str
    capabilities: tuple[str, ...]
    allowed_tools: tuple[str, ...]
    max_steps: int = 20
    temperature: float = 0.2
    model: str = "mock-1"
    # Facts of the model this type runs on (the LLM settings' route for the type fills them in
    # the agent process); the pure core uses them to fit the context and to check the budget.
    context_window: int = 32_768
    max_output_tokens: int = 2048
    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    # The approval policy for this type: (tool, arguments) -> why a human must approve, or
    # None. A pure function the agent process binds from the tool settings.
    needs_approval: Callable[[str, Mapping[str, Any]], str | None] | None = None
    # Tools that plugins offer this type right now (the agent process refreshes them live).
    # The executor validates their arguments against the schema.
    plugin_tools: tuple[ToolSchema, ...] = ()
    # Delegation limits (`core/delegation.py`).
    max_delegation_depth: int = 3
    max_children: int = 20

    @property
    def tool_names(self) -> frozenset[str]:
        """Every tool this type may call right now (builtin and plugin)."""
        return frozenset(self.allowed_tools).union(t.name for t in self.plugin_tools)

    def plugin_tool(self, name: str) -> ToolSchema | None:
        return next((t for t in self.plugin_tools if t.name == name), None)

    def call_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000

    def public(self) -> dict[str, object]:
        return {
            "agent_type": self.agent_type,
            "name": self.name,
            "role": self.role,
            "capabilities": list(self.capabilities),
            "allowed_tools": list(self.allowed_tools),
            "max_steps": self.max_steps,
        }


def _prompt(agent_type: str) -> str:
    return (_PROMPTS / f"{agent_type}.md").read_text(encoding="utf-8").strip()


AGENT_SPECS: dict[str, AgentSpec] = {
    spec.agent_type: spec
    for spec in (
        AgentSpec(
            agent_type="backend_developer",
            name="Backend Developer",
            role="Designs and implements server-side code, APIs, data models and their tests.",
            system_prompt=_prompt("backend_developer"),
            capabilities=("python", "rest_apis", "databases", "authentication", "testing"),
            allowed_tools=_STANDARD_TOOLS,
        ),
        AgentSpec(
            agent_type="devops_engineer",
            name="DevOps Engineer",
            role="Builds deployment, CI/CD, containers, infrastructure as code and monitoring.",
            system_prompt=_prompt("devops_engineer"),
            capabilities=("ci_cd", "containers", "infrastructure_as_code", "monitoring", "bash"),
            allowed_tools=_STANDARD_TOOLS,
        ),
        AgentSpec(
            agent_type="frontend_developer",
            name="Frontend Developer",
            role="Builds user interfaces, components, styling and client-side logic.",
            system_prompt=_prompt("frontend_developer"),
            capabilities=("javascript", "html_css", "components", "accessibility", "ui_testing"),
            allowed_tools=_STANDARD_TOOLS,
        ),
    )
}

assert tuple(AGENT_SPECS) == AGENT_TYPES, "agent types must match protocol.subjects.AGENT_TYPES"
