"""Canonical LLM types: what agents ask for and what every provider adapter returns.

These are pure data. Provider adapters map them to and from each wire format; the core
renders a request from the thread and reads a response back into it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ToolCall(_Frozen):
    id: str
    name: str
    # Parsed JSON arguments; `arguments_error` is set instead when the model sent invalid JSON.
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_error: str | None = None


class Message(_Frozen):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class ToolSchema(_Frozen):
    name: str
    description: str
    parameters: dict[str, Any]


class LLMRequest(_Frozen):
    model: str
    messages: tuple[Message, ...] = ()
    tools: tuple[ToolSchema, ...] = ()
    temperature: float = 0.2
    max_output_tokens: int = 2048
    # Routing facts for adapters that need them (the mock reads agent_type, call_index, mock).
    metadata: dict[str, Any] = Field(default_factory=dict)


class Usage(_Frozen):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 10),
        )


class LLMResult(_Frozen):
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    provider: str = ""
    latency_ms: float = 0.0
    finish_reason: str = "stop"
