"""An agent type as the core sees it: `AgentSpec`, plain frozen data.

Rules:
- Types are data (DESIGN §4c): `agents/loader.py` reads them from the shipped type files, an
  agents directory and the config file; nothing here lists them.
- The pure core receives a spec as an argument; the agent process binds the facts of its LLM
  route and its approval policy (`services/agent.py: bind_spec`) and the live plugin tools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentops.llm.types import ToolSchema
from agentops.tools.policy import ApprovalRule


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
    # How the task's first user message is worded (`{description}`, `{context}`); None: the
    # built-in wording (core/render.py: task_message).
    task_prompt_template: str | None = None
    # Plugin tools this type may be offered, by name; "*": every one announced for the type.
    allowed_plugin_tools: tuple[str, ...] = ("*",)
    # The type's own approval rules (checked before [tools.approvals], tools/policy.py).
    approvals: tuple[ApprovalRule, ...] = ()
    # The LLM route the type asks for ([llm.agents.<type>] wins, llm/settings.py); None: the
    # default route's.
    route_provider: str | None = None
    route_model: str | None = None
    # Where the type was defined, as error messages name it (`config file <path>`).
    source: str = ""

    @property
    def tool_names(self) -> frozenset[str]:
        """Every tool this type may call right now (builtin and plugin)."""
        return frozenset(self.allowed_tools).union(t.name for t in self.plugin_tools)

    def offers_plugin(self, name: str) -> bool:
        """Whether a plugin tool of this name may be offered to this type."""
        return "*" in self.allowed_plugin_tools or name in self.allowed_plugin_tools

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
            "plugin_tools": list(self.allowed_plugin_tools),
            "max_steps": self.max_steps,
            "temperature": self.temperature,
        }
