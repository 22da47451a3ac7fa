"""Own the context window: estimate a request's size and compact old tool output to fit.

Pure. Token counts are the estimates of `llm/tokens.py` (no tokenizer is downloaded), which
err high, so a request that fits by the estimate fits for real.

Compaction rules, applied only when the rendered request would not fit the budget
(`context_window - max_output_tokens`, times `FILL`):
- Never touched: the system prompt, the task, every human answer (results of
  `request_human_input`, guidance after an escalation) and the newest `KEEP_RECENT` tool
  results. Assistant messages keep their tool calls (providers require each result to
  follow its call), only long text is shortened.
- Older tool results are cut to a head and a tail with a marker that says how much was
  left out, oldest first; if that is not enough they are replaced by the marker alone.
- If it still does not fit, the request goes out as it is and the provider answers with a
  context-length error, which reaches the model and the human like any LLM error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentops.core.memo import GrowingMap, IdentityMemo
from agentops.llm.tokens import message_tokens, tools_tokens
from agentops.llm.types import Message, ToolSchema

# Estimates of the frozen messages and tool lists that successive steps share.
_message_tokens = IdentityMemo(message_tokens)
_sizes = GrowingMap(_message_tokens)
_tools_tokens: IdentityMemo[Sequence[ToolSchema], int] = IdentityMemo(tools_tokens, limit=256)

FILL = 0.9  # leave room for the estimate being low
KEEP_RECENT = 4
HEAD_CHARS = 600
TAIL_CHARS = 300
HUMAN_TOOL = "request_human_input"


@dataclass(frozen=True, slots=True)
class Fitted:
    messages: tuple[Message, ...]
    estimated_tokens: int  # input tokens of the request as sent (messages + tool schemas)
    compacted: int  # how many messages were shortened


def marker(omitted: int) -> str:
    return f"[compacted: {omitted} older characters omitted to fit the context window]"


def _shorten(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS + 200:
        return text
    omitted = len(text) - HEAD_CHARS - TAIL_CHARS
    return f"{text[:HEAD_CHARS]}\n{marker(omitted)}\n{text[-TAIL_CHARS:]}"


def fit(
    messages: Sequence[Message],
    tools: Sequence[ToolSchema],
    *,
    context_window: int,
    max_output_tokens: int,
    owner: str = "",
) -> Fitted:
    """`messages` as they fit in the window, compacted by the rules in the module docstring.
    `owner` (an agent id) lets successive calls reuse the estimates of the messages they
    share."""
    budget = int((context_window - max_output_tokens) * FILL)
    fixed = _tools_tokens(tools)
    messages = tuple(messages)
    sizes = list(_sizes(owner, messages) if owner else map(_message_tokens, messages))
    total = fixed + sum(sizes)
    if total <= budget:
        return Fitted(tuple(messages), total, 0)

    candidates = _compactable(messages)
    out = list(messages)
    compacted: set[int] = set()
    # Pass 1 cuts to head + tail, pass 2 leaves only the marker; oldest first in each.
    for shorten in (_shorten, lambda text: marker(len(text))):
        for i in candidates:
            if total <= budget:
                break
            original = messages[i]
            new_content = shorten(original.content)
            if new_content == out[i].content or len(new_content) >= len(out[i].content):
                continue
            out[i] = out[i].model_copy(update={"content": new_content})
            new_size = message_tokens(out[i])
            total -= sizes[i] - new_size
            sizes[i] = new_size
            compacted.add(i)
    return Fitted(tuple(out), total, len(compacted))


def _compactable(messages: Sequence[Message]) -> list[int]:
    """Indexes of tool results and assistant texts that may be shortened, oldest first."""
    tool_results = [i for i, m in enumerate(messages) if m.role == "tool" and m.name != HUMAN_TOOL]
    recent = set(tool_results[-KEEP_RECENT:])
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return [
        i
        for i, m in enumerate(messages)
        if (m.role == "tool" and i in tool_results and i not in recent)
        or (m.role == "assistant" and i != last_assistant and m.content)
    ]
