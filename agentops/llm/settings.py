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
- An agent type's table may ask for a route too (`provider`, `model`: `type_routes`). It is
  the type's preference, `[llm.agents.<type>]` is the operator's deployment: when that table
  sets `provider` or `model`, the type's pair is ignored; otherwise the type's pair applies,
  with the table's other keys (base URL, key, limits) on top.
- `[llm.agents.<type>]` must name a configured agent type (`agent_types`, from
  `agents/loader.py`; unchecked when the caller passes none).
- A key is required for the hosted APIs (OpenAI, OpenRouter, Anthropic, RunPod); servers on
  other hosts (vLLM, llama.cpp, LM Studio, Ollama) may run without one.
- Keys are `SecretStr`: masked in `repr`, `model_dump` and therefore in logs and events.
  `api_key_env` names another variable to read a key from (e.g. OPENROUTER_API_KEY).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, ValidationError

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
    stream: StrictBool | None = None  # a TOML boolean: "yes" in quotes is a mistake
    endpoint_id: str | None = None
    runpod_input: Literal["messages", "openai"] | None = None
    runpod_async: StrictBool | None = None
    poll_interval_s: float | None = Field(default=None, gt=0)


class _LLMTable(_RouteTable):
    agents: dict[str, _RouteTable] = Field(default_factory=dict)
    limits: dict[str, ProviderLimits] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    prices: dict[str, Price] = Field(default_factory=dict)


_PROVIDER_FIELDS: Final = ("model", "base_url", "api_key", "headers", "endpoint_id")


@dataclass(frozen=True)
class TypeRoute:
    """The route an agent type's own table asks for; `source` names that table in errors."""

    provider: str | None
    model: str | None
    source: str


def load_llm_settings(
    section: Mapping[str, Any],
    environ: Mapping[str, str],
    source: str = "config file",
    *,
    agent_types: Collection[str] | None = None,
    type_routes: Mapping[str, TypeRoute] | None = None,
) -> LLMSettings:
    """Settings for the gateway from the `[llm]` table and the environment; `ConfigError` if bad.

    `source` names the table's file in messages (`config file /etc/agentops.toml`); a mistake in
    the table reads `<source>: llm.<key>: <problem>`, one in a variable names the variable."""
    try:
        table = _LLMTable.model_validate(dict(section))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, 'llm')}") from None
    env = {k: v.strip() for k, v in environ.items() if v.strip()}
    for name in table.limits:
        _check_provider(name, f"{source}: llm.limits.{name}")
    known = set(table.agents) if agent_types is None else set(agent_types)
    unknown = sorted(set(table.agents) - known)
    if unknown:
        raise ConfigError(
            f"{source}: llm.agents.{unknown[0]}: unknown agent type {unknown[0]!r}; "
            f"known agent types: {', '.join(sorted(known))}"
        )

    base = table.model_dump(include=set(_RouteTable.model_fields), exclude_none=True)
    provider_what = f"{source}: llm.provider"
    if "AGENTOPS_LLM_PROVIDER" in env:
        base["provider"], provider_what = env["AGENTOPS_LLM_PROVIDER"], "AGENTOPS_LLM_PROVIDER"
    if "AGENTOPS_LLM_MODEL" in env:
        base["model"] = env["AGENTOPS_LLM_MODEL"]
    base.setdefault("provider", "mock")
    default = _build_route(
        base,
        env,
        table.prices,
        "LLM default route",
        table=f"{source}: llm",
        env_first=True,
        provider_what=provider_what,
    )
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
    routes = type_routes or {}
    for agent_type in sorted(set(table.agents) | set(routes)):
        override = table.agents.get(agent_type, _RouteTable())
        fields = override.model_dump(exclude_none=True)
        where = f"{source}: llm.agents.{agent_type}"
        asked = routes.get(agent_type)
        if asked is not None and not {"provider", "model"} & set(fields):
            pair = {"provider": asked.provider, "model": asked.model}
            fields.update({k: v for k, v in pair.items() if v is not None})
            where = asked.source if agent_type not in table.agents else where
        provider = fields.get("provider", base["provider"])
        if str(provider).strip().lower() == default.provider:
            merged = {**base, **fields}
            if "api_key_env" in fields and "api_key" not in fields:
                merged.pop("api_key", None)  # the override names its own key
        else:  # another provider: nothing provider-specific is inherited
            inherited = {k: v for k, v in base.items() if k not in _PROVIDER_FIELDS}
            inherited.pop("api_key_env", None)
            merged = {**inherited, **fields}
        agents[agent_type] = _build_route(
            merged, env, table.prices, where, table=where, env_first=False
        )
    return LLMSettings(default=default, agents=agents, limits=table.limits, retry=table.retry)


def _build_route(
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    prices: Mapping[str, Price],
    where: str,
    *,
    table: str,
    env_first: bool,
    provider_what: str | None = None,
) -> ModelRoute:
    """The route `where` names; `table` is its table in the file (`<source>: llm` or
    `<source>: llm.agents.<type>`), `provider_what` where the provider came from (default:
    the table's `provider` key)."""
    provider = _check_provider(raw["provider"], provider_what or f"{table}.provider")
    base_var = BASE_URL_VARS.get(provider)
    base_url, url_what = raw.get("base_url"), f"{table}.base_url"
    if base_var and base_var in env and (env_first or base_url is None):
        base_url, url_what = env[base_var], base_var
    base_url = _normalise_url(base_url or DEFAULT_BASE_URLS[provider], provider, url_what)

    key_var = raw.get("api_key_env") or KEY_VARS.get(provider)
    api_key = raw.get("api_key")
    if key_var and key_var in env and (env_first or api_key is None):
        api_key = SecretStr(env[key_var])
    if raw.get("api_key_env") and raw["api_key_env"] not in env and api_key is None:
        raise ConfigError(f"{table}.api_key_env names {raw['api_key_env']}, which is not set")
    host = urlsplit(base_url).hostname or ""
    if api_key is None and provider in KEY_VARS and host in HOSTED:
        raise ConfigError(
            f"{where}: LLM provider {provider!r} at {base_url} needs an API key; set {key_var}"
        )

    model = str(raw.get("model") or DEFAULT_MODELS[provider])
    endpoint_id = raw.get("endpoint_id")
    endpoint_what = f"{table}.endpoint_id"
    if not endpoint_id and provider == "runpod":
        endpoint_id, endpoint_what = env.get("RUNPOD_ENDPOINT_ID"), "RUNPOD_ENDPOINT_ID"
    if provider == "runpod" and not endpoint_id:
        raise ConfigError(
            f"{where}: LLM provider 'runpod' needs an endpoint; set RUNPOD_ENDPOINT_ID"
        )
    if endpoint_id and not _ENDPOINT_ID.match(endpoint_id):  # it becomes a URL path segment
        raise ConfigError(
            f"{endpoint_what}: a RunPod endpoint id is letters, digits, - and _; "
            f"got {endpoint_id!r}"
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
        raise ConfigError(f"{where}: {_describe(exc, '')}") from None


def _check_provider(raw: object, what: str) -> str:
    value = str(raw).strip().lower()
    if value not in PROVIDERS:
        raise ConfigError(
            f"{what}: unknown LLM provider {raw!r}; valid providers: {', '.join(PROVIDERS)}"
        )
    return value


_ENDPOINT_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _normalise_url(url: str, provider: str, what: str) -> str:
    """`url` without a trailing slash; `ConfigError` naming `what` (the variable or the file's
    key) unless it is an http(s) URL with a host and, if any, a port in 1-65535."""
    if provider == "mock":
        return ""
    url = url.strip().rstrip("/")
    if provider == "ollama" and "://" not in url:  # OLLAMA_HOST is often host:port
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        raise ConfigError(
            f"{what}: base URL for {provider} is not a valid URL ({exc}): {url!r}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: base URL for {provider} must be an http(s) URL, got {url!r}")
    if port == 0:
        raise ConfigError(f"{what}: base URL for {provider} has port 0: {url!r}")
    return url


def _describe(exc: ValidationError, table: str) -> str:
    """`<table>.<key>: <problem>` for each error; a quoted boolean gets a hint."""
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join([table, *(str(p) for p in err["loc"])]).strip(".") or "value"
        msg = err["msg"]
        if err["type"] == "bool_type":
            msg = f"must be true or false (a TOML boolean, without quotes), got {err['input']!r}"
        problems.append(f"{key}: {msg}")
    return "; ".join(problems)
