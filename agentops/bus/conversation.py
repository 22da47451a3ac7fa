"""An LLM request on the wire carries only the messages the gateway has not seen.

An agent's successive requests repeat its conversation and grow it by a message or two
(`core/context.py` keeps even a compacted conversation growing by appending between its
checkpoints), so sending it whole on every step would move the whole context across the bus
each time. Instead:
- Agent side (`encode_llm_request`): per agent, the conversation it sent last is remembered
  with a rolling digest of its messages' JSON. A request whose messages extend it (the very
  same objects) carries only the new ones, with `conversation = {base, base_digest, count,
  digest}`: "append these to the `base` messages whose digest is `base_digest`". Otherwise
  (the first request, a conversation compacted since, a process restarted, `whole=True`) it
  carries them all, with `base` 0. Each message's JSON is made once and reused.
- Gateway side (`ConversationCache`): per agent, the last conversation it assembled, with its
  count and digest. A request based on exactly that one is appended to it; any other base is
  a miss (another gateway replica had it, or this one restarted or evicted it): the gateway
  answers `conversation_miss` and the agent sends the request again whole. A miss is not an
  LLM error and costs one round trip.

The digest makes a wrong splice impossible: the gateway only appends to the very conversation
the agent based the request on, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from operator import is_
from typing import Any

from agentops.core.memo import IdentityMemo
from agentops.llm.types import Message, ToolSchema
from agentops.protocol.messages import ConversationRef, LLMRequested

MISS = "conversation_miss"
OWNERS = 4096  # agents whose last conversation is remembered, on either side
MAX_BYTES = 512 * 1024 * 1024  # and at most this much of them (gateway)

# A message leaves out the fields it has at their defaults (no `"tool_calls":[]`,
# `"name":null`, ...): a third of a conversation's bytes; it decodes the same.
_message_json: IdentityMemo[Message, bytes] = IdentityMemo(
    lambda m: m.model_dump_json(exclude_defaults=True).encode(),
    limit=200_000,
    max_weight=256 * 1024 * 1024,
)
_tool_schemas: IdentityMemo[ToolSchema, bytes] = IdentityMemo(
    lambda tool: tool.model_dump_json().encode(), limit=1024
)
_ENVELOPE_ONLY: Any = {"request"}
_REQUEST_REST: Any = {"messages", "tools"}


def _roll(digest: str, data: bytes) -> str:
    return hashlib.blake2b(digest.encode() + data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class _Sent:
    messages: tuple[Message, ...]
    digests: tuple[str, ...]  # digests[i]: of messages[:i]; digests[0] is ""


_sent: OrderedDict[str, _Sent] = OrderedDict()


def _digests(owner: str, messages: tuple[Message, ...]) -> tuple[_Sent | None, _Sent]:
    """What was sent last for `owner` (if these messages extend it) and what these are."""
    last = _sent.pop(owner, None)
    if (
        last is not None
        and len(messages) >= len(last.messages)
        and all(map(is_, messages, last.messages))
    ):
        digests = list(last.digests)
        base: _Sent | None = last
    else:
        digests, base = [""], None
    for m in messages[len(digests) - 1 :]:
        digests.append(_roll(digests[-1], _message_json(m)))
    now = _Sent(messages, tuple(digests))
    _sent[owner] = now
    while len(_sent) > OWNERS:
        _sent.popitem(last=False)
    return base, now


def encode_llm_request(message: LLMRequested) -> tuple[bytes, dict[str, str]]:
    """The request's JSON (the model's document, less the messages' default fields and the
    messages the gateway has, keys in another order); no extra headers."""
    request = message.request
    owner = message.agent_id or ""
    base, now = _digests(owner, request.messages)
    start = 0 if message.whole or base is None or not owner else len(base.messages)
    ref = ConversationRef(
        base=start,
        base_digest=now.digests[start],
        count=len(request.messages),
        digest=now.digests[-1],
    )
    envelope = (
        message.model_copy(update={"conversation": ref})
        .model_dump_json(exclude=_ENVELOPE_ONLY)
        .encode()[:-1]
    )
    rest = request.model_dump_json(exclude=_REQUEST_REST).encode()
    messages = b",".join(_message_json(m) for m in request.messages[start:])
    tools = b",".join(_tool_schemas(tool) for tool in request.tools)
    data = b'%s,"request":{"messages":[%s],"tools":[%s],%s}}' % (
        envelope,
        messages,
        tools,
        rest[1:-1],
    )
    return data, {}


def forget_sent(owner: str) -> None:
    """Send `owner`'s next request whole (its last one may not have reached a gateway)."""
    _sent.pop(owner, None)


@dataclass(frozen=True, slots=True)
class _Held:
    count: int
    digest: str
    messages: tuple[Message, ...]
    nbytes: int


class ConversationCache:
    """The gateway's side: each agent's last conversation, to which a request's new messages
    are appended. Least recently used agents go first past `owners` or `max_bytes`."""

    def __init__(self, owners: int = OWNERS, max_bytes: int = MAX_BYTES) -> None:
        self.owners = owners
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.reused = 0  # messages taken from an earlier request (for tests and status)
        self.misses = 0
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def resolve(self, msg: LLMRequested) -> LLMRequested | None:
        """The request with its whole conversation, or None when its base is not here."""
        ref = msg.conversation
        if ref is None:  # a sender that always sends it whole
            return msg
        owner = msg.agent_id or ""
        delta = msg.request.messages
        if ref.base == 0:
            messages = delta
        else:
            held = self._held.get(owner)
            if held is None or (held.count, held.digest) != (ref.base, ref.base_digest):
                self.misses += 1
                return None
            messages = held.messages + delta
            self.reused += held.count
        if len(messages) != ref.count:
            self.misses += 1
            return None
        self._keep(owner, _Held(ref.count, ref.digest, messages, _size(messages)))
        if ref.base == 0:
            return msg
        return msg.model_copy(
            update={"request": msg.request.model_copy(update={"messages": messages})}
        )

    def _keep(self, owner: str, held: _Held) -> None:
        old = self._held.pop(owner, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._held[owner] = held
        self.nbytes += held.nbytes
        while len(self._held) > 1 and (
            len(self._held) > self.owners or self.nbytes > self.max_bytes
        ):
            _, gone = self._held.popitem(last=False)
            self.nbytes -= gone.nbytes


def _size(messages: tuple[Message, ...]) -> int:
    return sum(len(m.content) for m in messages) + 64 * len(messages)
