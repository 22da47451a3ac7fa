"""The lines `agentops up` prints once everything answers (pure: text from facts).

What runs and where: the URL, NATS (a URL shown only through `mask_url` by the caller), the
data dir, logs, processes and those left to another machine, the code-execution isolation
`GET /health` reports, and warnings an operator should act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

RULE: Final = "-" * 64


def text(
    healthy: bool,
    *,
    url: str,
    nats: str,
    data_dir: str,
    logs: str,
    processes: Sequence[str],
    elsewhere: Sequence[str] = (),
    health: dict[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    title = "AgentOps is up" if healthy else "AgentOps started, but is not healthy yet"
    lines = [
        RULE,
        f"  {title}",
        f"    URL        {url}",
        f"    NATS       {nats}",
        f"    data dir   {data_dir}",
        f"    logs       {logs}",
        f"    processes  {', '.join(processes)}",
    ]
    if elsewhere:
        lines.append(
            f"    elsewhere  {', '.join(elsewhere)} (not started here; /health waits for it)"
        )
    sandbox = sandbox_line(health)
    if sandbox:
        lines.append(f"    sandbox    {sandbox}")
    lines += [f"    warning    {w}" for w in warnings]
    lines += ["  Ctrl-C (or SIGTERM) stops everything.", RULE]
    return "\n".join(lines)


def sandbox_line(health: dict[str, Any] | None) -> str:
    """The code-execution isolation the tool executor reports in /health, in one line."""
    executor = ((health or {}).get("services") or {}).get("tool-executor") or {}
    iso = executor.get("isolation")
    if not isinstance(iso, dict):
        return ""
    match iso.get("mode"):
        case "bwrap":
            return f"bubblewrap; network {iso.get('network')}; runs as {iso.get('user')}"
        case "none":
            return f"NONE: {iso.get('warning')}"
        case _:
            return f"REFUSED: {iso.get('reason')}"
