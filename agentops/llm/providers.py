"""Thin provider adapters: URL and headers, one HTTP call (or a job and its polls), the mapper.

Rules:
- An adapter holds no state but the shared `HTTPClient`; everything about a call (model, base
  URL, key, timeout, streaming) comes from the `ModelRoute` it is given, so one adapter serves
  every route of its provider.
- The pure mapping lives in `wire_<provider>.py`; adapters only do I/O and raise `LLMError`.
  Retries, limits, usage estimates and prices are the gateway's job, not theirs.
- `on_delta` gets the text of each streamed chunk (OpenAI and Anthropic SSE when
  `route.stream`); adapters that do not stream ignore it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentops.llm import wire_anthropic, wire_ollama, wire_openai, wire_runpod
from agentops.llm.client import HTTPClient
from agentops.llm.errors import LLMError
from agentops.llm.mock import MockProvider
from agentops.llm.settings import PROVIDERS, ModelRoute
from agentops.llm.types import LLMRequest, LLMResult
from agentops.protocol.errors import ConfigError

OnDelta = Callable[[str], Awaitable[None]]


class Accumulator(Protocol):
    """A provider's stream reader: text delta per event, the whole result at the end."""

    def feed(self, event: Any) -> str: ...

    def result(self) -> LLMResult: ...


class Provider(Protocol):
    name: str

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult: ...


def _bearer(route: ModelRoute) -> dict[str, str]:
    headers = dict(route.headers)
    if route.api_key is not None:
        headers["Authorization"] = f"Bearer {route.api_key.get_secret_value()}"
    return headers


class MockAdapter:
    """The deterministic mock; the request's own model name is kept (the mock's replies use it)."""

    name = "mock"

    def __init__(self) -> None:
        self._mock = MockProvider()

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult:
        return await self._mock.complete(request)


class _HTTPAdapter:
    """What every HTTP adapter shares: the client, and one JSON call bounded by the route."""

    name = ""

    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    async def _json(
        self, method: str, url: str, route: ModelRoute, headers: dict[str, str], body: Any
    ) -> Any:
        return await self.http.request_json(
            method, url, provider=self.name, timeout_s=route.timeout_s, headers=headers, body=body
        )

    async def _stream(
        self,
        url: str,
        route: ModelRoute,
        headers: dict[str, str],
        body: Any,
        acc: Accumulator,
        on_delta: OnDelta | None,
    ) -> LLMResult:
        events = self.http.stream_sse(
            url, provider=self.name, timeout_s=route.timeout_s, headers=headers, body=body
        )
        async for event in events:
            delta = acc.feed(event)
            if delta and on_delta is not None:
                await on_delta(delta)
        return acc.result()


class OpenAIProvider(_HTTPAdapter):
    name = "openai"

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult:
        url = f"{route.base_url}/chat/completions"
        body = wire_openai.to_request(request, route, stream=route.stream)
        if not route.stream:
            reply = await self._json("POST", url, route, _bearer(route), body)
            return wire_openai.from_response(reply, request)
        acc = wire_openai.StreamAccumulator(request)
        return await self._stream(url, route, _bearer(route), body, acc, on_delta)


class AnthropicProvider(_HTTPAdapter):
    name = "anthropic"

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult:
        key = route.api_key.get_secret_value() if route.api_key else None
        headers = {**route.headers, **wire_anthropic.headers(key)}
        url = f"{route.base_url}/v1/messages"
        body = wire_anthropic.to_request(request, route, stream=route.stream)
        if not route.stream:
            reply = await self._json("POST", url, route, headers, body)
            return wire_anthropic.from_response(reply, request)
        acc = wire_anthropic.StreamAccumulator(request)
        return await self._stream(url, route, headers, body, acc, on_delta)


class OllamaProvider(_HTTPAdapter):
    name = "ollama"

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult:
        body = wire_ollama.to_request(request, route)
        reply = await self._json("POST", f"{route.base_url}/api/chat", route, route.headers, body)
        return wire_ollama.from_response(reply, request)


class RunPodProvider(_HTTPAdapter):
    """`/runsync`, or `/run`, then `/status/<id>` every `poll_interval_s` until the job ends or
    `timeout_s` passes (a job that outlives /runsync's wait is polled the same way)."""

    name = "runpod"

    async def complete(
        self, request: LLMRequest, route: ModelRoute, on_delta: OnDelta | None = None
    ) -> LLMResult:
        base = f"{route.base_url}/{route.endpoint_id}"
        deadline = time.monotonic() + route.timeout_s
        op = "run" if route.runpod_async else "runsync"
        job = await self._call(
            "POST", f"{base}/{op}", route, wire_runpod.to_request(request, route)
        )
        state, job_id = wire_runpod.job_state(job)
        while state == "pending":
            if job_id is None:
                raise LLMError(
                    "runpod job is pending but has no id to poll",
                    code="invalid_response",
                    provider=self.name,
                )
            if time.monotonic() + route.poll_interval_s > deadline:
                # Do not leave the job burning GPU time for an answer nobody will read.
                await self._cancel(f"{base}/cancel/{job_id}", route)
                raise LLMError(
                    f"runpod job {job_id} did not finish within {route.timeout_s:g} s",
                    code="timeout",
                    provider=self.name,
                )
            await asyncio.sleep(route.poll_interval_s)
            job = await self._call("GET", f"{base}/status/{job_id}", route, None)
            state, polled_id = wire_runpod.job_state(job)
            job_id = polled_id or job_id
        return wire_runpod.from_output(job.get("output"), request, route)

    async def _call(self, method: str, url: str, route: ModelRoute, body: Any) -> Any:
        return await self._json(method, url, route, _bearer(route), body)

    async def _cancel(self, url: str, route: ModelRoute) -> None:
        with contextlib.suppress(LLMError):  # best effort: the timeout is the error to report
            await self._call("POST", url, route, None)


def make_provider(name: str, http: HTTPClient | None = None) -> Provider:
    """The adapter for a provider name; `ConfigError` for an unknown one."""
    if name == "mock":
        return MockAdapter()
    if name not in PROVIDERS:
        raise ConfigError(f"unknown LLM provider {name!r}; valid: {', '.join(PROVIDERS)}")
    shared = http or HTTPClient()
    adapters: dict[str, Callable[[HTTPClient], Provider]] = {
        "openai": OpenAIProvider,
        "anthropic": AnthropicProvider,
        "ollama": OllamaProvider,
        "runpod": RunPodProvider,
    }
    return adapters[name](shared)
