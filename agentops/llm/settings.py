"""LLM settings: which provider and model serve each agent type, with keys, limits and prices.

Rules:
- `load_llm_settings(section, environ)` is the only reader of the provider variables of DESIGN
  §4 and of the config file's `[llm]` table. It returns valid settings or raises `ConfigError`
  with a message for the person at the terminal (unknown provider, missing key, bad value), so
  `agentops up` fails before it starts anything, not on the first task.
- Precedence for the default route: environment (`AGENTOPS_LLM_PROVIDER`, `AGENTOPS_LLM_MODEL`,
  the SDK variables), then `[llm]`, then built-in defaults. `[llm.agents.<type>]` overrides the
  default route for one agent type; an override that switches provider starts from that
  provider's defaults (its own base URL, key and model), never the other provider's.
- A key is required for the hosted APIs (OpenAI, OpenRouter, Anthropic, RunPod); servers on
  other hosts (vLLM, llama.cpp, LM Studio, Ollama) may run without one.
- Keys are `SecretStr`: masked in `repr`, `model_dump` and therefore in logs and events.
  `api_key_env` names another variable to read a key from (e.g. OPENROUTER_API_KEY).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agentops.llm.pricing import Price, price_for
from agentops.protocol.errors import ConfigError

PROVIDERS: Final = ("mock", "openai", "anthropic", "ollama", "runpod")

DEFAULT_BASE_URLS: Final[Mapping[str, str]] = {
    "mock": "",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
    "runpod": "https://api.runpod.ai/v2",
}
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "mock": "mock-1",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "ollama": "llama3.1",
    "runpod": "default",
}
# The variables each provider's own SDK reads (DESIGN §4).
KEY_VARS: Final[Mapping[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "runpod": "RUNPOD_API_KEY",
}
BASE_URL_VARS: Final[Mapping[str, str]] = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "ollama": "OLLAMA_HOST",
    "runpod": "RUNPOD_BASE_URL",
}
HOSTED: Final = frozenset({"api.openai.com", "openrouter.ai", "api.anthropic.com", "api.runpod.ai"})

# Context windows in tokens, by longest model-name prefix; unknown models get the fallback.
CONTEXT_WINDOWS: Final[Mapping[str, int]] = {
    "mock": 32_768,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
}
FALLBACK_CONTEXT_WINDOW: Final = 8_192


def context_window_for(model: str) -> int:
    name = model.rsplit("/", 1)[-1]
    best = max((k for k in CONTEXT_WINDOWS if name.startswith(k)), key=len, default=None)
    return CONTEXT_WINDOWS[best] if best is not None else FALLBACK_CONTEXT_WINDOW


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRoute(_Frozen):
    """Where the calls of one agent type go."""

    provider: str
    model: str
    base_url: str
    api_key: SecretStr | None = None
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(default=4096, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    # Extra request headers (OpenRouter's HTTP-Referer, X-Title); kept out of repr in case
    # someone puts a credential there (keys belong in api_key / api_key_env).
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    price: Price = Price()
    stream: bool = False
    # RunPod serverless: the endpoint, and how its worker takes input. "messages" (worker-vllm's
    # chat input; tools by the JSON prompt format) or "openai" (its OpenAI route, native tools).
    endpoint_id: str | None = None
    runpod_input: Literal["messages", "openai"] = "messages"
    runpod_async: bool = False  # /run + /status polling instead of /runsync
    poll_interval_s: float = Field(default=1.0, gt=0)

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key.get_secret_value(),) if self.api_key else ()


class ProviderLimits(_Frozen):
    """Per provider, per gateway process: calls in flight and a sliding one-minute budget."""

    max_concurrency: int = Field(default=16, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class RetryPolicy(_Frozen):
    """Attempts per call (1 = no retry); full-jitter exponential backoff between them."""

    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=1.0, ge=0)
    max_delay_s: float = Field(default=30.0, ge=0)


class LLMSettings(_Frozen):
    default: ModelRoute
    agents: dict[str, ModelRoute] = Field(default_factory=dict)
    limits: dict[str, ProviderLimits] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()

    def route(self, agent_type: str) -> ModelRoute:
        return self.agents.get(agent_type, self.default)

    def limits_for(self, provider: str) -> ProviderLimits:
        return self.limits.get(provider, ProviderLimits())

    def providers(self) -> set[str]:
        return {self.default.provider, *(r.provider for r in self.agents.values())}


# ---- the [llm] table as written in the file ----
class _RouteTable(_Frozen):
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    headers: dict[str, str] | None = None
    stream: bool | None = None
    endpoint_id: str | None = None
    runpod_input: Literal["messages", "openai"] | None = None
    runpod_async: bool | None = None
    poll_interval_s: float | None = Field(default=None, gt=0)


class _LLMTable(_RouteTable):
    agents: dict[str, _RouteTable] = Field(default_factory=dict)
    limits: dict[str, ProviderLimits] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    prices: dict[str, Price] = Field(default_factory=dict)


_PROVIDER_FIELDS: Final = ("model", "base_url", "api_key", "headers", "endpoint_id")


def load_llm_settings(section: Mapping[str, Any], environ: Mapping[str, str]) -> LLMSettings:
    """Settings for the gateway from the `[llm]` table and the environment; `ConfigError` if bad."""
    try:
        table = _LLMTable.model_validate(dict(section))
    except ValidationError as exc:
        raise ConfigError(f"config file [llm]: {_describe(exc)}") from None
    env = {k: v.strip() for k, v in environ.items() if v.strip()}
    for name in table.limits:
        _check_provider(name, "[llm.limits] table name")

    base = table.model_dump(include=set(_RouteTable.model_fields), exclude_none=True)
    if "AGENTOPS_LLM_PROVIDER" in env:
        base["provider"] = env["AGENTOPS_LLM_PROVIDER"]
    if "AGENTOPS_LLM_MODEL" in env:
        base["model"] = env["AGENTOPS_LLM_MODEL"]
    base.setdefault("provider", "mock")
    default = _build_route(base, env, table.prices, "LLM default route", env_first=True)
    # Agents of the same provider inherit what the default resolved to (environment included).
    base.update(
        provider=default.provider,
        model=default.model,
        base_url=default.base_url or None,
        api_key=default.api_key,
        endpoint_id=default.endpoint_id,
    )
    base = {k: v for k, v in base.items() if v is not None}

    agents: dict[str, ModelRoute] = {}
    for agent_type, override in table.agents.items():
        fields = override.model_dump(exclude_none=True)
        where = f"[llm.agents.{agent_type}]"
        provider = fields.get("provider", base["provider"])
        if str(provider).strip().lower() == default.provider:
            merged = {**base, **fields}
            if "api_key_env" in fields and "api_key" not in fields:
                merged.pop("api_key", None)  # the override names its own key
        else:  # another provider: nothing provider-specific is inherited
            inherited = {k: v for k, v in base.items() if k not in _PROVIDER_FIELDS}
            inherited.pop("api_key_env", None)
            merged = {**inherited, **fields}
        agents[agent_type] = _build_route(merged, env, table.prices, where, env_first=False)
    return LLMSettings(default=default, agents=agents, limits=table.limits, retry=table.retry)


def _build_route(
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    prices: Mapping[str, Price],
    where: str,
    *,
    env_first: bool,
) -> ModelRoute:
    provider = _check_provider(raw["provider"], where)
    base_var = BASE_URL_VARS.get(provider)
    base_url = raw.get("base_url")
    if base_var and base_var in env and (env_first or base_url is None):
        base_url = env[base_var]
    base_url = _normalise_url(base_url or DEFAULT_BASE_URLS[provider], provider, where)

    key_var = raw.get("api_key_env") or KEY_VARS.get(provider)
    api_key = raw.get("api_key")
    if key_var and key_var in env and (env_first or api_key is None):
        api_key = SecretStr(env[key_var])
    if raw.get("api_key_env") and raw["api_key_env"] not in env and api_key is None:
        raise ConfigError(f"{where}: api_key_env names {raw['api_key_env']}, which is not set")
    host = urlsplit(base_url).hostname or ""
    if api_key is None and provider in KEY_VARS and host in HOSTED:
        raise ConfigError(
            f"{where}: LLM provider {provider!r} at {base_url} needs an API key; set {key_var}"
        )

    model = str(raw.get("model") or DEFAULT_MODELS[provider])
    endpoint_id = raw.get("endpoint_id") or (
        env.get("RUNPOD_ENDPOINT_ID") if provider == "runpod" else None
    )
    if provider == "runpod" and not endpoint_id:
        raise ConfigError(
            f"{where}: LLM provider 'runpod' needs an endpoint; set RUNPOD_ENDPOINT_ID"
        )
    fields = {
        k: raw[k]
        for k in ("max_output_tokens", "timeout_s", "headers", "stream", "runpod_input")
        if k in raw
    }
    fields.update({k: raw[k] for k in ("runpod_async", "poll_interval_s") if k in raw})
    try:
        return ModelRoute(
            provider=provider,
            model=model,
            base_url=base_url,
            api_key=api_key,
            context_window=raw.get("context_window") or context_window_for(model),
            price=price_for(model, prices),
            endpoint_id=endpoint_id,
            **fields,
        )
    except ValidationError as exc:  # pragma: no cover - the table model checked each field
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def _check_provider(raw: object, where: str) -> str:
    value = str(raw).strip().lower()
    if value not in PROVIDERS:
        raise ConfigError(
            f"unknown LLM provider {raw!r} ({where} or AGENTOPS_LLM_PROVIDER); "
            f"valid providers: {', '.join(PROVIDERS)}"
        )
    return value


def _normalise_url(url: str, provider: str, where: str) -> str:
    if provider == "mock":
        return ""
    url = url.strip().rstrip("/")
    if provider == "ollama" and "://" not in url:  # OLLAMA_HOST is often host:port
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: base URL for {provider} must be an http(s) URL, got {url!r}")
    return url


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )
