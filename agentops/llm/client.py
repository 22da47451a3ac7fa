"""The one HTTP shell every provider adapter uses: JSON in, JSON (or SSE events) out.

Rules:
- Foreign exceptions are translated here, once: httpx timeouts -> `timeout`, connection and
  protocol failures -> `unavailable`, HTTP error statuses -> `errors.from_status` (with the
  `Retry-After` header), a body that is not JSON -> `invalid_response`.
- Request headers (which hold keys) are never put into a message, log line or exception.
- One `httpx.AsyncClient` per gateway process (connection pooling); `timeout_s` is per call
  and bounds each read, connect is capped at 10 s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentops.llm.errors import LLMError, from_status, invalid_response

CONNECT_TIMEOUT_S = 10.0
MAX_ERROR_BODY = 64 * 1024


class HTTPClient:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        try:
            response = await self._client.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=_timeout(timeout_s),
            )
        except httpx.HTTPError as exc:
            raise _transport_error(provider, exc, timeout_s) from None
        if response.status_code >= 400:
            raise from_status(
                provider,
                response.status_code,
                response.content[:MAX_ERROR_BODY],
                response.headers.get("retry-after"),
            )
        try:
            return response.json()
        except ValueError:
            raise invalid_response(
                provider, f"HTTP {response.status_code} body is not JSON"
            ) from None

    async def stream_sse(
        self,
        url: str,
        *,
        provider: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> AsyncIterator[Any]:
        """POST `body` and yield each SSE `data:` payload parsed as JSON, until `[DONE]`."""
        try:
            async with self._client.stream(
                "POST", url, json=body, headers=headers, timeout=_timeout(timeout_s)
            ) as response:
                if response.status_code >= 400:
                    content = await response.aread()
                    raise from_status(
                        provider,
                        response.status_code,
                        content[:MAX_ERROR_BODY],
                        response.headers.get("retry-after"),
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments, `event:` names, blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except ValueError:
                        raise invalid_response(provider, "a stream event is not JSON") from None
        except httpx.HTTPError as exc:
            raise _transport_error(provider, exc, timeout_s) from None


def _timeout(timeout_s: float) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))


def _transport_error(provider: str, exc: httpx.HTTPError, timeout_s: float) -> LLMError:
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(
            f"{provider} did not answer within {timeout_s:g} s ({type(exc).__name__})",
            code="timeout",
            provider=provider,
        )
    # The URL is configuration the operator wrote; it holds no key (keys go in headers).
    where = exc.request.url.copy_with(query=None) if _has_request(exc) else "the server"
    return LLMError(
        f"{provider} could not be reached at {where}: {type(exc).__name__}: {exc}",
        code="unavailable",
        provider=provider,
    )


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the exception has no request
    except RuntimeError:
        return False
    return True
