"""An LLM request on the wire: built from the parts an agent sent before, and read back on the
gateway reusing the conversation it already decoded for that agent.

An agent's successive requests repeat its whole conversation and grow it by a message or
two, so both ends keep what they made of the last one:
- `encode_llm_request` (agent): joins the JSON of each message, memoised per agent
  (`GrowingMap`), and names the byte range of the `messages` array's content in the
  `CONVERSATION` header.
- `ConversationDecoder` (gateway): when that range's content starts with the content it
  decoded last for the agent, followed by a comma, only the messages after it are parsed.
  The rest of the document is validated as is, with the array left empty.

The header is a hint, not a second source of truth: a request without it, with a range that
does not delimit a JSON array, or whose parts do not validate is decoded whole (`None` here),
so errors are reported on the whole document exactly as before. The prefix is compared byte
for byte, and it ends on a message boundary (it was a complete list of messages), so the
messages decoded are those the whole document holds.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from agentops.core.memo import GrowingMap, IdentityMemo
from agentops.llm.types import Message, ToolSchema
from agentops.protocol.messages import WORK_ADAPTER, LLMRequested, WorkMessage

CONVERSATION = "Agentops-Conversation"  # "<start>-<end>": the messages array's content

# A message leaves out the fields it has at their defaults (no `"tool_calls":[]`,
# `"name":null`, ...): a third of a conversation's bytes; it decodes the same.
_messages: GrowingMap[Message, bytes] = GrowingMap(
    lambda m: m.model_dump_json(exclude_defaults=True).encode()
)
_tool_schemas: IdentityMemo[ToolSchema, bytes] = IdentityMemo(
    lambda tool: tool.model_dump_json().encode(), limit=1024
)
_ENVELOPE_ONLY: Any = {"request"}
_REQUEST_REST: Any = {"messages", "tools"}
_OPEN = b',"request":{"messages":['
_MESSAGE_LIST: TypeAdapter[tuple[Message, ...]] = TypeAdapter(tuple[Message, ...])


def encode_llm_request(message: LLMRequested) -> tuple[bytes, dict[str, str]]:
    """The request's JSON (the model's document, less the messages' default fields; keys in
    another order) and the header naming where its conversation is."""
    request = message.request
    envelope = message.model_dump_json(exclude=_ENVELOPE_ONLY).encode()[:-1]
    rest = request.model_dump_json(exclude=_REQUEST_REST).encode()
    messages = b",".join(_messages(message.agent_id or "", request.messages))
    tools = b",".join(_tool_schemas(tool) for tool in request.tools)
    start = len(envelope) + len(_OPEN)
    data = b'%s%s%s],"tools":[%s],%s}}' % (envelope, _OPEN, messages, tools, rest[1:-1])
    return data, {CONVERSATION: f"{start}-{start + len(messages)}"}


class ConversationDecoder:
    """Decodes LLM requests for the gateway, parsing only the messages an agent's request
    adds to its previous one. Keeps the last conversation of at most `owners` agents, least
    recently used first out."""

    def __init__(self, owners: int = 256) -> None:
        self.owners = owners
        self._last: dict[str, tuple[bytes, tuple[Message, ...]]] = {}
        self.reused = 0  # messages taken from an earlier request (for tests and status)

    def __call__(self, data: bytes, headers: dict[str, str] | None) -> WorkMessage | None:
        """The decoded request, or None: decode the whole document instead."""
        span = _span(data, (headers or {}).get(CONVERSATION))
        if span is None:
            return None
        start, end = span
        try:
            message = WORK_ADAPTER.validate_json(data[:start] + data[end:])
            if not isinstance(message, LLMRequested) or message.request.messages:
                return None
            messages = self._messages(message.agent_id or "", data[start:end])
        except ValidationError:
            return None
        request = message.request.model_copy(update={"messages": messages})
        return message.model_copy(update={"request": request})

    def _messages(self, owner: str, content: bytes) -> tuple[Message, ...]:
        seen, done = self._last.pop(owner, (b"", ()))
        # The last conversation, then nothing or a comma: a boundary between messages.
        if seen and content.startswith(seen) and content[len(seen) : len(seen) + 1] in b",":
            if len(content) > len(seen):
                tail = _MESSAGE_LIST.validate_json(b"[%s]" % content[len(seen) + 1 :])
                self.reused += len(done)
                done += tail
        else:
            done = _MESSAGE_LIST.validate_json(b"[%s]" % content)
            if len(self._last) >= self.owners:  # the least recently used agent goes
                del self._last[next(iter(self._last))]
        self._last[owner] = (content, done)
        return done


def _span(data: bytes, header: str | None) -> tuple[int, int] | None:
    """The header's range, when it delimits the content of an array in `data`."""
    if not header:
        return None
    first, sep, second = header.partition("-")
    if not sep or not first.isdigit() or not second.isdigit():
        return None
    start, end = int(first), int(second)
    if not 0 < start <= end < len(data):
        return None
    if data[start - 1 : start] != b"[" or data[end : end + 1] != b"]":
        return None
    return start, end
