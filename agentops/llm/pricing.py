"""Prices per million tokens, and the cost of a call in USD.

Rules:
- `DEFAULT_PRICES` ships list prices (USD per million input / output tokens) of common hosted
  models; they go stale, so `[llm.prices."<model>"]` in the config file overrides or adds any.
- A model is looked up by exact name, then by the longest known prefix (dated snapshots such as
  `claude-sonnet-4-20250514` or `gpt-4o-2024-08-06` price like their family), after dropping
  an OpenRouter-style vendor prefix (`openai/gpt-4o`). Unknown, local and mock models cost 0.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call with these token counts, rounded to 1e-10 (no float noise in sums)."""
        usd = (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6
        return round(usd, 10)


FREE = Price()

DEFAULT_PRICES: Mapping[str, Price] = {
    name: Price(input_per_mtok=i, output_per_mtok=o)
    for name, (i, o) in {
        # OpenAI
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00),
        "gpt-5-nano": (0.05, 0.40),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        # Anthropic
        "claude-opus-4-5": (5.00, 25.00),
        "claude-opus-4-1": (15.00, 75.00),
        "claude-opus-4": (15.00, 75.00),
        "claude-sonnet-4-5": (3.00, 15.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-haiku-4-5": (1.00, 5.00),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-haiku": (0.25, 1.25),
    }.items()
}


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price:
    """The price of `model`: an override, else the shipped table, else free."""
    table = {**DEFAULT_PRICES, **(overrides or {})}
    if model in table:  # an override may name a vendor-prefixed model exactly
        return table[model]
    name = model.rsplit("/", 1)[-1]
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return table[best] if best is not None else FREE
