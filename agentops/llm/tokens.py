"""Token estimates without a tokenizer: nothing here downloads or loads a vocabulary.

Rules:
- One estimate for the whole system: the agent fits its context and checks its budget with
  it, the gateway meters rate limits and fills usage a provider did not report.
- `estimate_tokens(text)` is pure and monotonic: one token per 3 bytes of UTF-8, rounded up.
  BPE tokenizers average about 4 characters a token on English and code, so this errs high,
  and a request that fits by the estimate fits for real.
- Providers' own counts win whenever a response carries them; estimates fill the gaps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from agentops.llm.types import LLMRequest, Message, ToolSchema

BYTES_PER_TOKEN = 3
# Every chat message costs a few tokens of framing (role markers, separators).
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Tokens in `text`, rounded up: ceil(UTF-8 bytes / 3)."""
    if not text:
        return 0
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def message_tokens(message: Message) -> int:
    calls = sum(
        estimate_tokens(c.name) + estimate_tokens(json.dumps(c.arguments, ensure_ascii=False))
        for c in message.tool_calls
    )
    return MESSAGE_OVERHEAD + estimate_tokens(message.content) + calls


def tools_tokens(tools: Iterable[ToolSchema]) -> int:
    return sum(
        estimate_tokens(t.name)
        + estimate_tokens(t.description)
        + estimate_tokens(json.dumps(t.parameters, separators=(",", ":")))
        for t in tools
    )


def estimate_request_tokens(request: LLMRequest) -> int:
    """The input tokens of a whole request: messages, tool calls, tool schemas."""
    return sum(message_tokens(m) for m in request.messages) + tools_tokens(request.tools)
