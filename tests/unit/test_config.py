"""Settings from the environment and CLI overrides, and how bad values are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentops import cli
from agentops.config import (
    DEFAULT_NATS_URL,
    Settings,
    load_retention,
    load_settings,
    load_workspaces,
    validate_sections,
)
from agentops.protocol.errors import ConfigError


def test_defaults_without_environment() -> None:
    """With no variables set, settings are the documented defaults and NATS is embedded."""
    settings = load_settings(environ={})
    assert settings.nats_url is None
    assert settings.effective_nats_url == DEFAULT_NATS_URL
    assert settings.data_dir == Path(".agentops").resolve()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    # Unset: the [llm] table or the default (mock) decides; children inherit nothing extra.
    assert (settings.llm_provider, settings.llm_model) == (None, None)
    assert "AGENTOPS_LLM_PROVIDER" not in settings.child_env()
    assert settings.api_token is None
    assert (settings.log_level, settings.log_format) == ("info", "auto")


def test_environment_is_parsed(tmp_path: Path) -> None:
    """Every AGENTOPS_* variable and NATS_URL is read and normalised."""
    env = {
        "NATS_URL": "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        "AGENTOPS_DATA_DIR": str(tmp_path / "data"),
        "AGENTOPS_HOST": "0.0.0.0",
        "AGENTOPS_PORT": " 9001 ",
        "AGENTOPS_LLM_PROVIDER": "MOCK",
        "AGENTOPS_LLM_MODEL": "mock-2",
        "AGENTOPS_API_TOKEN": "s3cret",
        "AGENTOPS_LOG_LEVEL": "DEBUG",
        "AGENTOPS_LOG_FORMAT": "json",
    }
    settings = load_settings(environ=env)
    assert settings.nats_url == "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
    assert settings.data_dir == tmp_path / "data"
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)
    assert settings.base_url == "http://127.0.0.1:9001"
    assert (settings.llm_provider, settings.llm_model) == ("mock", "mock-2")
    assert settings.api_token == "s3cret"
    assert (settings.log_level, settings.log_format) == ("debug", "json")


def test_overrides_win_over_environment_and_none_means_not_given() -> None:
    """CLI overrides replace environment values; an override of None leaves them alone."""
    env = {"AGENTOPS_PORT": "9001", "AGENTOPS_HOST": "10.1.1.1"}
    settings = load_settings(environ=env, port=7000, host=None)
    assert (settings.host, settings.port) == ("10.1.1.1", 7000)


def test_empty_variable_counts_as_unset() -> None:
    """An empty variable (as compose files write them) falls back to the default."""
    settings = load_settings(environ={"AGENTOPS_PORT": "", "NATS_URL": "  "})
    assert settings.port == 8000
    assert settings.nats_url is None


@pytest.mark.parametrize("raw", ["abc", "80.5", "0", "65536", "-1"])
def test_bad_port_is_a_config_error(raw: str) -> None:
    """A port that is not an integer in 1..65535 names the variable and the value."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"AGENTOPS_PORT": raw})
    assert "AGENTOPS_PORT" in info.value.message
    assert raw.lstrip("-") in info.value.message


def test_bad_port_override_names_the_flag() -> None:
    """A bad --port value names the flag rather than the variable."""
    with pytest.raises(ConfigError, match="--port"):
        load_settings(environ={}, port="http")


def test_unknown_provider_lists_valid_ones() -> None:
    """An unknown provider name fails and lists every valid one."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"AGENTOPS_LLM_PROVIDER": "gpt"})
    for name in ("mock", "openai", "anthropic", "ollama", "runpod"):
        assert name in info.value.message


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama", "runpod"])
def test_every_documented_provider_is_accepted(provider: str) -> None:
    """All five providers of DESIGN §4 are valid names (keys are checked by the LLM settings)."""
    assert (
        load_settings(environ={"AGENTOPS_LLM_PROVIDER": provider.upper()}).llm_provider == provider
    )


def test_provider_without_its_key_fails_validation_at_start_up() -> None:
    """A hosted provider without its API key fails `validate_sections`, naming the variable."""
    settings = load_settings(environ={"AGENTOPS_LLM_PROVIDER": "openai"})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        validate_sections(settings, environ={})


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("AGENTOPS_LOG_LEVEL", "loud"),
        ("AGENTOPS_LOG_FORMAT", "xml"),
        ("NATS_URL", "http://localhost:4222"),
    ],
)
def test_other_bad_values_are_config_errors(var: str, raw: str) -> None:
    """Unknown log levels and formats, and non-NATS URLs, are refused with the variable named."""
    with pytest.raises(ConfigError, match=var):
        load_settings(environ={var: raw})


def test_unknown_override_is_a_programming_error() -> None:
    """An override that is not a settings field raises TypeError, not ConfigError."""
    with pytest.raises(TypeError, match="colour"):
        load_settings(environ={}, colour="blue")


def test_api_token_is_masked_in_repr_and_safe_dict() -> None:
    """The API token never appears in repr() or the loggable view of the settings."""
    settings = load_settings(environ={"AGENTOPS_API_TOKEN": "s3cret-token"})
    assert "s3cret-token" not in repr(settings)
    assert "api_token='***'" in repr(settings)
    assert settings.safe_dict()["api_token"] == "***"
    assert "api_token=None" in repr(Settings())


def test_child_env_round_trips(tmp_path: Path) -> None:
    """Settings passed to a child as environment variables load back to equal settings."""
    settings = load_settings(
        environ={"AGENTOPS_API_TOKEN": "t"}, port=8123, data_dir=tmp_path, nats_url="nats://h:1"
    )
    assert load_settings(environ=settings.child_env()) == settings


def test_cli_config_error_prints_message_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`agentops up` with a bad value prints `error: ...` without a traceback and exits 2."""
    assert cli.main(["up", "--port", "not-a-port"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "--port" in err
    assert "Traceback" not in err


def test_config_file_sections(tmp_path: Path) -> None:
    """AGENTOPS_CONFIG names a TOML file; its tables are read by name, missing ones are empty."""
    path = tmp_path / "agentops.toml"
    path.write_text('[llm]\nprovider = "mock"\n[llm.agents.devops_engineer]\nmodel = "big"\n')
    settings = load_settings(environ={"AGENTOPS_CONFIG": str(path)})
    assert settings.config_file == path
    assert settings.section("llm")["agents"]["devops_engineer"]["model"] == "big"
    assert settings.section("tools") == {}
    assert settings.child_env()["AGENTOPS_CONFIG"] == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("[llm\n", "not valid TOML"), ("llm = 3\n", "must be a table")],
)
def test_bad_config_file_is_a_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """A missing, invalid-TOML or non-table config file is a ConfigError saying which."""
    path = tmp_path / "agentops.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        validate_sections(load_settings(environ={"AGENTOPS_CONFIG": str(path)}))


def _config(tmp_path: Path, content: bytes | str) -> Settings:
    path = tmp_path / "agentops.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return load_settings(environ={"AGENTOPS_CONFIG": str(path)})


def test_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is a ConfigError naming the file, not a decode error."""
    with pytest.raises(ConfigError, match=r"agentops\.toml is not UTF-8 text"):
        _config(tmp_path, b"\xff\xfe[llm]\n")


def test_cli_prints_a_non_utf8_config_file_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentops up` with a non-UTF-8 config file prints `error: ...` and exits 2."""
    path = tmp_path / "agentops.toml"
    path.write_bytes(b"\xff\xfe[llm]\n")
    monkeypatch.setenv("AGENTOPS_CONFIG", str(path))
    assert cli.main(["up"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config file {path} is not UTF-8")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "unknown"),
    [
        ('[llmm]\nprovider = "mock"\n', "llmm"),
        ('log_level = "debug"\n', "log_level"),
        ("port = 9000\n[tools]\n", "port"),
    ],
)
def test_unknown_top_level_table_or_key_is_refused(
    tmp_path: Path, content: str, unknown: str
) -> None:
    """A top-level table or key other than the known tables is a typo, refused by name."""
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, content)
    message = info.value.message
    assert f"agentops.toml: unknown top-level table or key {unknown};" in message
    assert message.endswith(
        "the file may contain only the tables [llm], [tools], [agents], [workspaces], "
        "[retention], [auth], [nats], [scale]"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[retention]\ndays = 0\n", "retention.days: Input should be greater than or equal to 1"),
        ("[retention]\nday = 3\n", "retention.day: unknown key"),
        ('[retention]\ndays = "3"\n', "retention.days: Input should be a valid integer"),
        ("[workspaces]\nallow = 3\n", "workspaces.allow: Input should be a valid list"),
        ("[workspaces]\nmax_upload_mb = 0\n", "workspaces.max_upload_mb: Input should be greater"),
        ('[auth]\ntokens = [{name = "a", role = "root", sha256 = "x"}]\n', "auth.tokens.0.role"),
        ('[auth]\nmetrics = "everyone"\n', "auth.metrics: Input should be"),
        ("[nats]\nreplicas = 9\n", "nats.replicas: Input should be less than or equal to 5"),
        ('[scale]\nedge = "two"\n', "scale.edge: must be an integer from 1 to 64"),
        ("[agents.qa]\ncolour = 1\n", "agents.qa.colour: unknown key"),
    ],
)
def test_bad_new_tables_are_refused_naming_table_and_key(
    tmp_path: Path, content: str, message: str
) -> None:
    """A bad key or value in [retention], [workspaces], [auth], [nats], [scale] or [agents.*]
    is one ConfigError naming the file, the table and the key."""
    path = tmp_path / "agentops.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        validate_sections(load_settings(environ={"AGENTOPS_CONFIG": str(path)}))
    assert info.value.message.startswith(f"config file {path}: ")
    assert message in info.value.message


def test_the_new_tables_have_defaults(tmp_path: Path) -> None:
    """Without the tables, retention is 30 days and workspaces allow https only."""
    settings = load_settings(environ={})
    assert load_retention(settings).days == 30
    assert load_workspaces(settings).allow == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[llm]\ntimeout_s = -1\n", "llm.timeout_s: Input should be greater than 0"),
        ('[tools]\nsandbox = "docker"\n', "tools.sandbox: Input should be"),
        ('[tools]\nnetwork = ["nosuch_type"]\n', "tools.network: unknown agent type"),
        ("[llm.agents.nosuch_type]\n", "llm.agents.nosuch_type: unknown agent type"),
        (
            '[llm]\nprovider = "openai"\nbase_url = "http://h:99999/v1"\n',
            "llm.base_url: base URL for openai is not a valid URL",
        ),
    ],
)
def test_section_errors_name_the_file_and_the_key(
    tmp_path: Path, content: str, message: str
) -> None:
    """[llm] and [tools] mistakes both read `config file <path>: <table>.<key>: <problem>`."""
    settings = _config(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        validate_sections(settings, environ={})
    assert info.value.message.startswith(f"config file {settings.config_file}: {message}")
