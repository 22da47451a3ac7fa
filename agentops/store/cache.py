"""The agent process's cache of whole agent states, bounded by count and by bytes.

An entry is what the process last stored or read for an agent (`Loaded`); least recently
used entries go first once either bound is passed. The bounds are set well above the agents
a process runs at once (a process holds the ones it is stepping), so active agents are not
evicted by each other; an evicted agent is read again from its head and thread when its next
message comes.
"""

from __future__ import annotations

from collections import OrderedDict

from agentops.store.agents import Loaded

MAX_AGENTS = 10_000
MAX_BYTES = 1024 * 1024 * 1024


class AgentCache:
    def __init__(self, max_agents: int = MAX_AGENTS, max_bytes: int = MAX_BYTES) -> None:
        self.max_agents = max_agents
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.evicted = 0
        self._entries: OrderedDict[str, Loaded] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, agent_id: str) -> Loaded | None:
        entry = self._entries.get(agent_id)
        if entry is not None:
            self._entries.move_to_end(agent_id)
        return entry

    def put(self, agent_id: str, entry: Loaded) -> None:
        self.drop(agent_id)
        self._entries[agent_id] = entry
        self.nbytes += entry.nbytes
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_agents or self.nbytes > self.max_bytes
        ):
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evicted += 1

    def drop(self, agent_id: str) -> None:
        old = self._entries.pop(agent_id, None)
        if old is not None:
            self.nbytes -= old.nbytes
