"""LLM settings: environment first, the [llm] table, per-agent routes, keys, prices, errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentops.config import load_settings, validate_sections
from agentops.llm.errors import from_status, parse_retry_after, redact
from agentops.llm.pricing import Price, price_for
from agentops.llm.settings import load_llm_settings
from agentops.llm.tokens import estimate_request_tokens, estimate_tokens
from agentops.llm.types import LLMRequest, Message
from agentops.protocol.errors import ConfigError


def test_default_is_mock_without_any_configuration() -> None:
    """With nothing set the route is the mock, free, with a 32k context window."""
    route = load_llm_settings({}, {}).route("backend_developer")
    assert (route.provider, route.model, route.context_window) == ("mock", "mock-1", 32_768)
    assert route.price.cost(1000, 1000) == 0.0


def test_environment_wins_over_the_file_for_the_default_route() -> None:
    """AGENTOPS_LLM_* and the SDK variables override the [llm] table's values."""
    section = {"provider": "anthropic", "model": "file-model", "base_url": "http://file:1"}
    env = {
        "AGENTOPS_LLM_PROVIDER": "openai",
        "AGENTOPS_LLM_MODEL": "gpt-4o",
        "OPENAI_API_KEY": "sk-env",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/",
    }
    route = load_llm_settings(section, env).default
    assert (route.provider, route.model) == ("openai", "gpt-4o")
    assert route.base_url == "http://127.0.0.1:9/v1"
    assert route.api_key is not None and route.api_key.get_secret_value() == "sk-env"
    assert route.price == Price(input_per_mtok=2.5, output_per_mtok=10.0)
    assert route.context_window == 128_000


def test_per_agent_override_on_another_provider_inherits_nothing_provider_specific() -> None:
    """devops on Anthropic gets Anthropic's URL, key and default model; others keep OpenAI."""
    section = {
        "timeout_s": 30,
        "agents": {
            "devops_engineer": {"provider": "anthropic"},
            "frontend_developer": {"model": "gpt-4.1"},
        },
    }
    env = {"AGENTOPS_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"}
    settings = load_llm_settings(section, env)
    devops = settings.route("devops_engineer")
    assert (devops.provider, devops.base_url) == ("anthropic", "https://api.anthropic.com")
    assert devops.api_key is not None and devops.api_key.get_secret_value() == "ak"
    assert devops.model.startswith("claude") and devops.timeout_s == 30
    frontend = settings.route("frontend_developer")
    assert (frontend.provider, frontend.model) == ("openai", "gpt-4.1")
    assert frontend.api_key is not None and frontend.api_key.get_secret_value() == "sk"
    assert settings.route("backend_developer").model == "gpt-4o-mini"
    assert settings.providers() == {"openai", "anthropic"}


def test_api_key_env_names_another_variable() -> None:
    """OpenRouter: api_key_env reads its own variable; extra headers are kept."""
    section = {
        "provider": "openai",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_env": "OPENROUTER_API_KEY",
        "headers": {"HTTP-Referer": "https://example.org", "X-Title": "AgentOps"},
    }
    route = load_llm_settings(section, {"OPENROUTER_API_KEY": "or-key"}).default
    assert route.api_key is not None and route.api_key.get_secret_value() == "or-key"
    assert route.headers["X-Title"] == "AgentOps"


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        ({}, {"AGENTOPS_LLM_PROVIDER": "gemini"}, "unknown LLM provider 'gemini'"),
        ({"provider": "nope"}, {}, "valid providers: mock, openai, anthropic, ollama, runpod"),
        ({}, {"AGENTOPS_LLM_PROVIDER": "openai"}, "set OPENAI_API_KEY"),
        ({}, {"AGENTOPS_LLM_PROVIDER": "anthropic"}, "set ANTHROPIC_API_KEY"),
        (
            {"agents": {"devops_engineer": {"provider": "anthropic"}}},
            {},
            r"llm.agents.devops_engineer: .*ANTHROPIC_API_KEY",
        ),
        ({}, {"AGENTOPS_LLM_PROVIDER": "runpod", "RUNPOD_API_KEY": "k"}, "RUNPOD_ENDPOINT_ID"),
        ({"timeout_s": -1}, {}, "timeout_s"),
        ({"tiemout_s": 5}, {}, "tiemout_s"),
        ({"provider": "openai", "base_url": "ftp://x"}, {}, "http"),
        ({"api_key_env": "MISSING_KEY"}, {}, "MISSING_KEY"),
        ({"limits": {"opneai": {}}}, {}, "opneai"),
    ],
)
def test_bad_llm_configuration_is_a_clear_error(
    section: dict[str, Any], env: dict[str, str], message: str
) -> None:
    """Unknown providers, missing keys (per-agent too), bad values fail with a clear message."""
    with pytest.raises(ConfigError, match=message):
        load_llm_settings(section, env)


@pytest.mark.parametrize(
    ("provider", "var"),
    [
        ("openai", "OPENAI_BASE_URL"),
        ("anthropic", "ANTHROPIC_BASE_URL"),
        ("ollama", "OLLAMA_HOST"),
        ("runpod", "RUNPOD_BASE_URL"),
    ],
)
@pytest.mark.parametrize(
    "url", ["http://[bad", "http://h:99999/v1", "http://h:abc/v1", "http://h:0/v1"]
)
def test_bad_provider_url_variable_names_the_variable(provider: str, var: str, url: str) -> None:
    """An unparseable URL or a bad port in any provider URL variable is a ConfigError naming it."""
    env = {
        "AGENTOPS_LLM_PROVIDER": provider,
        f"{provider.upper()}_API_KEY": "k",
        "RUNPOD_ENDPOINT_ID": "ep1",
        var: url,
    }
    with pytest.raises(ConfigError, match=rf"^{var}: base URL for {provider} "):
        load_llm_settings({}, env)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"provider": "openai", "base_url": "http://[bad"}, "llm.base_url: "),
        ({"provider": "ollama", "base_url": "h:70000"}, "llm.base_url: "),
        (
            {"agents": {"devops_engineer": {"provider": "openai", "base_url": "http://h:x/v1"}}},
            "llm.agents.devops_engineer.base_url: ",
        ),
        (
            {"provider": "runpod", "api_key": "k", "endpoint_id": "ep/../x"},
            "llm.endpoint_id: a RunPod endpoint id",
        ),
    ],
)
def test_bad_provider_url_in_the_file_names_the_key(section: dict[str, Any], message: str) -> None:
    """A bad base URL or RunPod endpoint id in [llm] or [llm.agents.*] names the file's key."""
    with pytest.raises(ConfigError, match=rf"^config file /x\.toml: {re.escape(message)}"):
        load_llm_settings(section, {}, "config file /x.toml")


def test_bad_runpod_endpoint_variable_is_refused() -> None:
    """RUNPOD_ENDPOINT_ID becomes a URL path segment: one with / or ? is refused by name."""
    env = {"AGENTOPS_LLM_PROVIDER": "runpod", "RUNPOD_API_KEY": "k", "RUNPOD_ENDPOINT_ID": "a/b?c"}
    with pytest.raises(ConfigError, match=r"^RUNPOD_ENDPOINT_ID: "):
        load_llm_settings({}, env)


def test_good_provider_urls_with_ports_are_kept() -> None:
    """A URL with a valid port, IPv6 literal included, passes unchanged but for a trailing /."""
    env = {"AGENTOPS_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": "http://[::1]:8080/v1/"}
    assert load_llm_settings({}, env).default.base_url == "http://[::1]:8080/v1"


@pytest.mark.parametrize("key", ["stream", "runpod_async"])
@pytest.mark.parametrize("value", ["yes", "true", 1])
def test_file_booleans_must_be_toml_booleans(key: str, value: object) -> None:
    """`stream = "yes"` (or 1) in the file is refused with a hint; a TOML boolean is taken."""
    with pytest.raises(ConfigError) as info:
        load_llm_settings({key: value}, {}, "config file /x.toml")
    assert info.value.message == (
        f"config file /x.toml: llm.{key}: must be true or false "
        f"(a TOML boolean, without quotes), got {value!r}"
    )
    agents = {"agents": {"devops_engineer": {key: "on"}}}
    with pytest.raises(ConfigError, match=rf"llm\.agents\.devops_engineer\.{key}: must be true"):
        load_llm_settings(agents, {})
    assert getattr(load_llm_settings({key: True}, {}).default, key) is True


def test_unknown_agent_type_and_limits_provider_are_named() -> None:
    """[llm.agents.<type>] must be a known agent type; [llm.limits.<name>] a known provider."""
    with pytest.raises(ConfigError) as info:
        load_llm_settings(
            {"agents": {"nosuch_type": {}}},
            {},
            "config file /x.toml",
            agent_types=("frontend_developer", "backend_developer", "qa"),
        )
    assert info.value.message == (
        "config file /x.toml: llm.agents.nosuch_type: unknown agent type 'nosuch_type'; "
        "known agent types: backend_developer, frontend_developer, qa"
    )
    with pytest.raises(ConfigError) as info:
        load_llm_settings({"limits": {"opneai": {}}}, {}, "config file /x.toml")
    assert info.value.message.startswith(
        "config file /x.toml: llm.limits.opneai: unknown LLM provider 'opneai'; valid providers:"
    )


def test_local_servers_need_no_key() -> None:
    """An OpenAI-compatible server on another host (vLLM, llama.cpp) and Ollama run keyless."""
    env = {"AGENTOPS_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}
    assert load_llm_settings({}, env).default.api_key is None
    ollama = load_llm_settings({}, {"AGENTOPS_LLM_PROVIDER": "ollama", "OLLAMA_HOST": "gpu:11434"})
    assert ollama.default.base_url == "http://gpu:11434"


def test_secrets_never_show_in_repr_or_dump() -> None:
    """The key is masked in repr, model_dump and JSON dumps of the settings."""
    settings = load_llm_settings(
        {}, {"AGENTOPS_LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-secret-123"}
    )
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in str(settings.model_dump())
    assert "sk-secret-123" not in settings.model_dump_json()


def test_validate_sections_checks_llm_config_before_start(tmp_path: Path) -> None:
    """`agentops up` validation loads the [llm] table: a missing key fails before start-up."""
    path = tmp_path / "agentops.toml"
    path.write_text('[llm]\nprovider = "anthropic"\n')
    settings = load_settings(environ={"AGENTOPS_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        validate_sections(settings, environ={})


def test_prices_default_prefix_and_override() -> None:
    """Dated snapshots and vendor prefixes price like their family; overrides win; unknown is 0."""
    assert price_for("claude-sonnet-4-20250514").output_per_mtok == 15.0
    assert price_for("openai/gpt-4o-mini").input_per_mtok == 0.15
    assert price_for("llama3.1") == Price()
    custom = {"my-model": Price(input_per_mtok=1, output_per_mtok=2)}
    assert price_for("my-model", custom).cost(1_000_000, 500_000) == 2.0
    section = {"prices": {"gpt-4o": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}}
    env = {"AGENTOPS_LLM_PROVIDER": "openai", "AGENTOPS_LLM_MODEL": "gpt-4o", "OPENAI_API_KEY": "k"}
    assert load_llm_settings(section, env).default.price.cost(500_000, 500_000) == 1.0


def test_token_estimates_are_pure_and_monotonic() -> None:
    """About four characters a token, at least one for any text, more text never fewer."""
    assert (estimate_tokens(""), estimate_tokens("a"), estimate_tokens("abcd" * 3)) == (0, 1, 4)
    short = LLMRequest(model="m", messages=(Message(role="user", content="hi"),))
    long = LLMRequest(model="m", messages=(Message(role="user", content="hi" * 100),))
    assert 0 < estimate_request_tokens(short) < estimate_request_tokens(long)


def test_retry_after_seconds_and_http_date() -> None:
    """Retry-After is read as seconds or an HTTP date, capped at 120 s; junk is ignored."""
    now = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:10 GMT", now) == 10.0
    assert parse_retry_after("99999", now) == 120.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (429, '{"error": {"message": "slow down"}}', "rate_limited", True),
        (500, "oops", "server_error", True),
        (529, '{"type": "error", "error": {"type": "overloaded_error"}}', "unavailable", True),
        (401, '{"error": {"message": "bad key"}}', "auth", False),
        (
            400,
            '{"error": {"code": "context_length_exceeded", "message": "too long"}}',
            "context_length",
            False,
        ),
        (400, '{"error": {"message": "bad"}}', "bad_request", False),
    ],
)
def test_http_errors_are_classified(status: int, body: str, code: str, retryable: bool) -> None:
    """429/5xx retry, other 4xx do not; the provider's own message is kept."""
    error = from_status("openai", status, body)
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert f"HTTP {status}" in error.message


def test_redact_removes_secrets() -> None:
    """A key echoed by a provider is masked before it becomes a message."""
    assert (
        redact("Incorrect API key provided: sk-abc123", ["sk-abc123"])
        == "Incorrect API key provided: ***"
    )
