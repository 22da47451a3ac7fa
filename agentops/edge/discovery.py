"""Finding the live AgentOps processes through the NATS micro-service protocol.

Rules:
- One request to `$SRV.PING` (or `$SRV.STATS`) on a fresh inbox; every live service instance
  answers with JSON naming itself (`name`, `id`, `metadata`). Replies are gathered for a fixed
  window, since there is no way to know how many instances exist.
- Replies that are not JSON objects are ignored; a disconnected client gathers nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg


async def gather(nc: Client, subject: str, window_s: float) -> list[dict[str, Any]]:
    if not nc.is_connected:
        return []
    replies: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        try:
            doc = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(doc, dict):
            replies.append(doc)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        # No nc.flush(): in nats-py 2.16 a flush that times out (a frozen server) leaves its
        # PING's future queued, and the late PONG then kills the client's reader for good.
        # The client writes the publish as soon as this coroutine sleeps.
        await nc.publish(subject, b"", reply=inbox)
        await asyncio.sleep(window_s)  # the gathering window itself, not a wait for a state
    finally:
        await sub.unsubscribe()
    return replies


def instances_by_name(replies: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Service name -> the distinct instance ids that answered."""
    out: dict[str, set[str]] = {}
    for reply in replies:
        name, ident = reply.get("name"), reply.get("id")
        if isinstance(name, str) and isinstance(ident, str):
            out.setdefault(name, set()).add(ident)
    return out
