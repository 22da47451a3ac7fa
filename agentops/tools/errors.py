"""The error a tool handler raises when a call cannot be carried out.

Rules:
- A `ToolError` is the model's problem, not the system's: the executor turns it into an
  `ErrorInfo` on the tool result and the model reads it on its next step. So the message is
  written for a model to act on (what was wrong and what to do instead), and it is never
  retryable by the consumer: running the same call again gives the same answer.
- Codes are short snake_case facts (`path_outside_workspace`, `file_not_found`, ...), stable
  enough for tests and dashboards; the message carries the detail.
"""

from __future__ import annotations

from agentops.protocol.errors import AgentOpsError


class ToolError(AgentOpsError):
    """A tool call that failed in a way the model should see and can correct."""

    code = "tool_error"
    retryable = False
