"""Example plugin process: `word_count` counts lines, words and characters of a text and
lists its most frequent words.

Run it next to AgentOps (it finds NATS through NATS_URL, default nats://127.0.0.1:4222):

    python examples/plugins/word_count.py

Agents of every type see the tool within a moment, without a restart; stop the process
(Ctrl-C) and the tool disappears at once, or kill it and it disappears after its TTL.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agentops.tools.plugin_sdk import Plugin, PluginCall, PluginError

plugin = Plugin(
    name="word_count",
    description="Count the lines, words and characters of a text and list its most frequent words.",
    parameters={
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": 1_000_000},
            "top": {"type": "integer", "minimum": 0, "maximum": 100, "default": 5},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
    idempotent=True,  # no side effect: safe to run again after a crash
)


@plugin.handler
async def word_count(arguments: dict[str, Any], call: PluginCall) -> dict[str, Any]:
    text: str = arguments["text"]
    if not text.strip():
        raise PluginError("text is empty; pass the text to count", code="empty_text")
    words = re.findall(r"[\w']+", text.lower())
    return {
        "lines": len(text.splitlines()),
        "words": len(words),
        "characters": len(text),
        "top_words": Counter(words).most_common(arguments.get("top", 5)),
    }


if __name__ == "__main__":
    plugin.run()
