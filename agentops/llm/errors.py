"""LLM call failures: one exception with a code a human and the retry policy both understand.

Rules:
- Codes: `rate_limited`, `timeout`, `server_error`, `unavailable` (connection refused, DNS,
  overloaded) are retryable; `bad_request`, `auth`, `context_length`, `invalid_response`,
  `not_found` are not (sending the same request again cannot change the answer).
- `retry_after_s` carries the server's `Retry-After`, parsed (seconds or HTTP date) and capped.
- Messages name the provider, the HTTP status and the provider's own error text, never a key:
  `redact` removes every configured secret from any text before it becomes a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

from agentops.protocol.errors import AgentOpsError, ErrorInfo

RETRYABLE_CODES: Final = frozenset({"rate_limited", "timeout", "server_error", "unavailable"})
MAX_RETRY_AFTER_S: Final = 120.0
MAX_PROVIDER_MESSAGE: Final = 500


class LLMError(AgentOpsError):
    """A failed provider call. `retryable` follows from the code."""

    code = "llm_error"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider: str = "",
    ) -> None:
        details: dict[str, Any] = {"provider": provider}
        if status is not None:
            details["status"] = status
        if retry_after_s is not None:
            details["retry_after_s"] = retry_after_s
        super().__init__(message, code=code, details=details)
        self.retryable = code in RETRYABLE_CODES
        self.status = status
        self.retry_after_s = retry_after_s
        self.provider = provider

    def info(self) -> ErrorInfo:
        return ErrorInfo(
            code=self.code, message=self.message, retryable=self.retryable, details=self.details
        )


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def provider_message(body: bytes | str) -> str:
    """The provider's own error text from an error body (OpenAI, Anthropic, Ollama, RunPod)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:MAX_PROVIDER_MESSAGE]
    found = _find_message(data)
    return (found if found is not None else text.strip())[:MAX_PROVIDER_MESSAGE]


def _find_message(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if key in data:
                found = _find_message(data[key])
                if found is not None:
                    return found
    return None


_CONTEXT_HINTS: Final = (
    "context_length",
    "context length",
    "maximum context",
    "prompt is too long",
    "too many tokens",
    "context window",
)


def from_status(
    provider: str, status: int, body: bytes | str, retry_after: str | None = None
) -> LLMError:
    """Classify an HTTP error response. 408/409/429/5xx/529 retry; other 4xx do not."""
    text = provider_message(body)
    lowered = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).lower()
    if status == 429:
        code = "rate_limited"
    elif status in (408, 504):
        code = "timeout"
    elif status in (503, 529):
        code = "unavailable"
    elif status >= 500 or status == 409:
        code = "server_error"
    elif status in (401, 403):
        code = "auth"
    elif status == 404:
        code = "not_found"
    elif status in (400, 413, 422) and any(h in lowered for h in _CONTEXT_HINTS):
        code = "context_length"
    else:
        code = "bad_request"
    message = f"{provider} answered HTTP {status}: {text or '(no message)'}"
    return LLMError(
        message,
        code=code,
        status=status,
        retry_after_s=parse_retry_after(retry_after),
        provider=provider,
    )


def invalid_response(provider: str, what: str) -> LLMError:
    return LLMError(
        f"{provider} sent a response that cannot be read: {what}",
        code="invalid_response",
        provider=provider,
    )


def error_in_body(provider: str, body: Any, what: str = "returned an error") -> LLMError:
    """An error object inside a 200 reply (or a stream): the provider failed mid-way."""
    return LLMError(
        f"{provider} {what}: {provider_message(json.dumps(body, default=str))}",
        code="server_error",
        provider=provider,
    )
