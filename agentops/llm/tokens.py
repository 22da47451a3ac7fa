"""Token estimates without a tokenizer: nothing here downloads or loads a vocabulary.

Rules:
- `estimate_tokens(text)` is pure and monotonic in the text's length: about one token per four
  characters (the usual figure for English and code with BPE tokenizers), rounded up, with a
  floor of one token for any non-empty text. It overestimates slightly rather than under, so a
  context budget built on it errs on the safe side.
- Providers' own counts win whenever a response carries them; estimates fill the gaps.
"""

from __future__ import annotations

import json
import math

from agentops.llm.types import LLMRequest

CHARS_PER_TOKEN = 4.0
# Every chat message costs a few tokens of framing (role markers, separators).
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """An estimate of the tokens in `text`: ceil(len / 4), at least 1 unless empty."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def estimate_request_tokens(request: LLMRequest) -> int:
    """An estimate of the input tokens of a whole request: messages, tool calls, tool schemas."""
    total = 0
    for message in request.messages:
        total += MESSAGE_OVERHEAD + estimate_tokens(message.content)
        for call in message.tool_calls:
            total += estimate_tokens(call.name) + estimate_tokens(json.dumps(call.arguments))
    for tool in request.tools:
        total += estimate_tokens(tool.name) + estimate_tokens(tool.description)
        total += estimate_tokens(json.dumps(tool.parameters, separators=(",", ":")))
    return total
