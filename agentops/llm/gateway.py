"""LLMGateway: route a request, admit it under the provider's limits, call it, retry, account.

Rules:
- The route is `settings.route(request.metadata["agent_type"])`. The route's model, output
  limit and timeout win over the request's (the agent spec's model names the mock's model and
  is kept only for the mock).
- Retryable failures (`rate_limited`, `timeout`, `server_error`, `unavailable`) are retried up
  to `retry.max_attempts` with full-jitter exponential backoff, never sooner than the server's
  `Retry-After`; other failures are raised at once. The final error says how many attempts
  were made. The agent core turns it into an `llm.error` event and, after repeated failures,
  asks a human; the gateway never loops on its own beyond `max_attempts`.
- Every result carries usage: the provider's counts, or estimates (`tokens.py`) when a reply
  has none, and `cost_usd` from the route's price.
- Nothing that leaves the gateway holds a key: error messages are redacted against the route's
  secrets, and unexpected exceptions become `provider_error` with a redacted message.
- The mock is called directly: its scripted errors reach the agent unretried (tests rely on it)
  and it needs no limits.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from agentops.llm.client import HTTPClient
from agentops.llm.errors import LLMError, redact
from agentops.llm.limits import ProviderLimiter, backoff_delay
from agentops.llm.providers import OnDelta, Provider, make_provider
from agentops.llm.settings import LLMSettings, ModelRoute
from agentops.llm.tokens import estimate_request_tokens, estimate_tokens
from agentops.llm.types import LLMRequest, LLMResult, Usage

log = structlog.get_logger(__name__)


class LLMGateway:
    def __init__(
        self,
        settings: LLMSettings,
        *,
        http: HTTPClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.http = http or HTTPClient()
        self._sleep = sleep
        self._rand = rand
        self.providers: dict[str, Provider] = {
            name: make_provider(name, self.http) for name in sorted(settings.providers())
        }
        self.limiters = {
            name: ProviderLimiter(settings.limits_for(name)) for name in self.providers
        }
        self.stats = {"ok": 0, "failed": 0, "retries": 0}

    async def aclose(self) -> None:
        await self.http.aclose()

    def route_for(self, request: LLMRequest) -> ModelRoute:
        agent_type = request.metadata.get("agent_type")
        return self.settings.route(agent_type if isinstance(agent_type, str) else "")

    async def complete(self, request: LLMRequest, on_delta: OnDelta | None = None) -> LLMResult:
        route = self.route_for(request)
        provider = self.providers[route.provider]
        if route.provider == "mock":
            return await provider.complete(request, route, on_delta)
        request = request.model_copy(
            update={"model": route.model, "max_output_tokens": route.max_output_tokens}
        )
        policy = self.settings.retry
        for attempt in range(policy.max_attempts):
            try:
                result = await self._attempt(provider, request, route, on_delta)
            except LLMError as exc:
                last = attempt + 1 >= policy.max_attempts
                if not exc.retryable or last:
                    self.stats["failed"] += 1
                    raise _final(exc, attempt + 1, route) from None
                delay = backoff_delay(attempt, policy, self._rand(), exc.retry_after_s)
                self.stats["retries"] += 1
                log.warning(
                    "llm.retry",
                    provider=route.provider,
                    code=exc.code,
                    status=exc.status,
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                )
                await self._sleep(delay)
            else:
                self.stats["ok"] += 1
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self, provider: Provider, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None
    ) -> LLMResult:
        input_estimate = estimate_request_tokens(request)
        started = time.perf_counter()
        async with self.limiters[route.provider].slot(
            input_estimate + route.max_output_tokens
        ) as reservation:
            try:
                result = await provider.complete(request, route, on_delta)
            except LLMError as exc:
                reservation.settle(input_estimate)
                raise _redacted(exc, route) from None
            except Exception as exc:  # an adapter bug: a clear error, never a crash or a key
                log.exception("llm.adapter_crashed", provider=route.provider)
                message = redact(f"{type(exc).__name__}: {exc}", route.secrets())
                raise LLMError(
                    f"{route.provider} adapter failed: {message}",
                    code="provider_error",
                    provider=route.provider,
                ) from None
            usage = _usage(result, request, input_estimate, route)
            reservation.settle(usage.input_tokens + usage.output_tokens)
        return result.model_copy(
            update={
                "usage": usage,
                "model": result.model or route.model,
                "provider": route.provider,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )


def _usage(result: LLMResult, request: LLMRequest, input_estimate: int, route: ModelRoute) -> Usage:
    input_tokens, output_tokens = result.usage.input_tokens, result.usage.output_tokens
    if input_tokens == 0 and output_tokens == 0:  # the reply had no counts: estimate them
        input_tokens = input_estimate
        output_tokens = estimate_tokens(result.text) + sum(
            estimate_tokens(c.name) + estimate_tokens(json.dumps(c.arguments))
            for c in result.tool_calls
        )
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=route.price.cost(input_tokens, output_tokens),
    )


def _redacted(exc: LLMError, route: ModelRoute) -> LLMError:
    message = redact(exc.message, route.secrets())
    if message == exc.message:
        return exc
    return LLMError(
        message,
        code=exc.code,
        status=exc.status,
        retry_after_s=exc.retry_after_s,
        provider=exc.provider,
    )


def _final(exc: LLMError, attempts: int, route: ModelRoute) -> LLMError:
    if attempts == 1:
        return exc
    return LLMError(
        f"{exc.message} (gave up after {attempts} attempts on {route.provider} {route.model})",
        code=exc.code,
        status=exc.status,
        retry_after_s=exc.retry_after_s,
        provider=exc.provider,
    )
