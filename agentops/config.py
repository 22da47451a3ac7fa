"""Settings for every AgentOps process: environment first, then explicit overrides (CLI flags).

Invariants:
- `load_settings()` is the only reader of AGENTOPS_* / NATS_URL variables; a `Settings` it
  returns is valid (port in range, known log level and format, an available LLM provider).
  Anything else raises `ConfigError` with a message meant for the person at the terminal.
- An override of `None` means "not given", so argparse values can be passed straight through.
- `Settings.child_env()` is the inverse of `load_settings()`: a child process that reads its
  environment gets the same settings the supervisor has (that is how `agentops up` hands
  settings to the processes it starts).
- Secrets never appear in `repr()` or logs: `api_token` is shown as `'***'`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from agentops.protocol.errors import ConfigError
from agentops.tools.policy import load_tool_settings

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"

PROVIDERS: Final = ("mock", "openai", "anthropic", "ollama", "runpod")
# Only these have an adapter in this build; the others are known names, refused until shipped.
AVAILABLE_PROVIDERS: Final = frozenset({"mock"})
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")

# Field name -> environment variable. The names are part of the configuration contract.
ENV_VARS: Final[Mapping[str, str]] = {
    "nats_url": "NATS_URL",
    "data_dir": "AGENTOPS_DATA_DIR",
    "host": "AGENTOPS_HOST",
    "port": "AGENTOPS_PORT",
    "llm_provider": "AGENTOPS_LLM_PROVIDER",
    "llm_model": "AGENTOPS_LLM_MODEL",
    "api_token": "AGENTOPS_API_TOKEN",
    "log_level": "AGENTOPS_LOG_LEVEL",
    "log_format": "AGENTOPS_LOG_FORMAT",
    "config_file": "AGENTOPS_CONFIG",
}


@dataclass(frozen=True, repr=False)
class Settings:
    nats_url: str | None = None  # None: `agentops up` embeds a nats-server
    data_dir: Path = Path(".agentops")
    host: str = "127.0.0.1"
    port: int = 8000
    llm_provider: str = "mock"
    llm_model: str = "mock-1"
    api_token: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    # Optional TOML file with sections such as [llm] and [tools]; see README "Configuration".
    config_file: Path | None = None

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_token" and value is not None:
                value = "***"
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def effective_nats_url(self) -> str:
        """The server a process connects to: NATS_URL, or the local default port."""
        return self.nats_url or DEFAULT_NATS_URL

    @property
    def base_url(self) -> str:
        """The edge's URL as a local client reaches it (a wildcard bind is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def child_env(self) -> dict[str, str]:
        """Environment variables that reproduce these settings in a child process."""
        env: dict[str, str] = {}
        for name, var in ENV_VARS.items():
            value = getattr(self, name)
            if value is not None:
                env[var] = str(value)
        return env

    def section(self, name: str) -> Mapping[str, Any]:
        """Table `[name]` of the config file, or an empty mapping (no file, no such table)."""
        if self.config_file is None:
            return {}
        value = read_config_file(self.config_file).get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.config_file}: [{name}] must be a table, got {value!r}")
        return value

    def safe_dict(self) -> dict[str, Any]:
        """For logs and banners: every field, secrets masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["data_dir"] = str(self.data_dir)
        out["config_file"] = str(self.config_file) if self.config_file else None
        if out["api_token"] is not None:
            out["api_token"] = "***"
        return out


# ---- parsers: raw (env string or override value) -> typed value, or ConfigError ----


def _parse_port(raw: object, what: str) -> int:
    if isinstance(raw, bool):  # bool is an int subclass; True is not a port
        raise ConfigError(f"{what} must be an integer between 1 and 65535, got {raw!r}")
    try:
        port = int(str(raw).strip()) if not isinstance(raw, int) else raw
    except ValueError:
        raise ConfigError(f"{what} must be an integer between 1 and 65535, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what} must be between 1 and 65535, got {port}")
    return port


def _parse_choice(raw: object, what: str, choices: tuple[str, ...]) -> str:
    value = str(raw).strip().lower()
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {raw!r}")
    return value


def _parse_provider(raw: object, what: str) -> str:
    value = str(raw).strip().lower()
    if value not in PROVIDERS:
        raise ConfigError(
            f"unknown LLM provider {raw!r} ({what}); valid providers: {', '.join(PROVIDERS)}"
        )
    if value not in AVAILABLE_PROVIDERS:
        raise ConfigError(
            f"LLM provider {value!r} is not available yet in this build; "
            f"available: {', '.join(sorted(AVAILABLE_PROVIDERS))} (set {ENV_VARS['llm_provider']})"
        )
    return value


def _parse_nats_url(raw: object, what: str) -> str | None:
    value = str(raw).strip()
    if not value:
        return None
    # A cluster is a comma-separated list of seed URLs; nats-py accepts host:port without scheme.
    for server in value.split(","):
        server = server.strip()
        scheme, sep, rest = server.partition("://")
        if not server or (sep and (scheme.lower() not in NATS_SCHEMES or not rest)):
            raise ConfigError(
                f"{what} must be a NATS URL such as nats://127.0.0.1:4222 "
                f"(schemes: {', '.join(NATS_SCHEMES)}); got {raw!r}"
            )
    return value


def _parse_nonempty(raw: object, what: str) -> str:
    value = str(raw).strip()
    if not value:
        raise ConfigError(f"{what} must not be empty")
    return value


def _parse_optional(raw: object, what: str) -> str | None:
    value = str(raw).strip()
    return value or None


def _parse_dir(raw: object, what: str) -> Path:
    value = str(raw).strip()
    if not value:
        raise ConfigError(f"{what} must not be empty")
    # Absolute, so children started elsewhere and messages both name the same directory.
    return Path(value).expanduser().resolve()


def _parse_config_file(raw: object, what: str) -> Path | None:
    value = str(raw).strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    read_config_file(path)  # a missing or malformed file fails now, not in a child later
    return path


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML config file; `ConfigError` naming the file if it is missing or bad."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (AGENTOPS_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _parse(name: str, raw: object, what: str) -> Any:
    match name:
        case "config_file":
            return _parse_config_file(raw, what)
        case "port":
            return _parse_port(raw, what)
        case "log_level":
            return _parse_choice(raw, what, LOG_LEVELS)
        case "log_format":
            return _parse_choice(raw, what, LOG_FORMATS)
        case "llm_provider":
            return _parse_provider(raw, what)
        case "nats_url":
            return _parse_nats_url(raw, what)
        case "data_dir":
            return _parse_dir(raw, what)
        case "api_token":
            return _parse_optional(raw, what)
        case _:
            return _parse_nonempty(raw, what)


def load_settings(*, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `environ` (default `os.environ`), then non-None `overrides` on top.

    Raises `ConfigError` for a bad value and `TypeError` for an override that is no field.
    """
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(ENV_VARS)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        if overrides.get(name) is not None:
            values[name] = _parse(name, overrides[name], f"--{name.replace('_', '-')}")
        elif env.get(var, "").strip():  # an empty variable counts as unset (compose files)
            values[name] = _parse(name, env[var], var)
    settings = replace(Settings(), **values)
    if "data_dir" not in values:
        settings = replace(settings, data_dir=_parse_dir(settings.data_dir, "data dir"))
    # Validate the default provider too, so a build without `mock` would fail loudly.
    _parse_provider(settings.llm_provider, ENV_VARS["llm_provider"])
    return settings


def validate_sections(settings: Settings) -> None:
    """Parse every config-file section now, so `agentops up` fails before starting anything.

    Each subsystem that owns a section adds its loader here (it raises `ConfigError`).
    """
    settings.section("llm")
    load_tool_settings(settings.section("tools"))
