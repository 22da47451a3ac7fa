"""One exception root, and the error value that crosses process boundaries.

Three families, as in pydantic-ai:
- `ErrorInfo` on a message: what went wrong, fed back to the model or shown to a human.
- `RetryableError`: the consumer naks the message with backoff (a dependency is briefly away).
- `PermanentError`: the consumer terminates the message and dead-letters it (bad input).
Foreign exceptions are translated once, at the boundary that catches them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorInfo(BaseModel):
    """A serialisable error: survives crossing processes and lands in state and events."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    message: str
    retryable: bool = False
    details: Any = None


class AgentOpsError(Exception):
    """Root of every AgentOps exception."""

    code = "internal"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def info(self) -> ErrorInfo:
        return ErrorInfo(
            code=self.code, message=self.message, retryable=self.retryable, details=self.details
        )


class RetryableError(AgentOpsError):
    code = "unavailable"
    retryable = True


class PermanentError(AgentOpsError):
    code = "bad_message"


class ConfigError(AgentOpsError):
    code = "config"
