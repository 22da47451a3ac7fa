"""Choose the LLM provider for the gateway from settings.

Only the deterministic `mock` provider ships in this build; the other names in DESIGN §4 are
recognised and refused at start-up with a clear message (config.py checks the same list).
"""

from __future__ import annotations

from typing import Protocol

from agentops.llm.types import LLMRequest, LLMResult
from agentops.protocol.errors import ConfigError


class Provider(Protocol):
    name: str

    async def complete(self, request: LLMRequest) -> LLMResult: ...


def make_provider(name: str) -> Provider:
    if name == "mock":
        from agentops.llm.mock import MockProvider

        return MockProvider()
    raise ConfigError(f"LLM provider {name!r} is not available in this build; use 'mock'")
