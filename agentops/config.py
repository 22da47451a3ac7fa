"""Settings for every AgentOps process: environment first, then explicit overrides (CLI flags).

Invariants:
- A process's settings come from `load_settings()` alone; a `Settings` it returns is valid
  (port in range, known log level and format, a known LLM provider). The only other readers
  of the environment are outside the processes' settings: the CLI's client commands
  (AGENTOPS_URL, AGENTOPS_API_TOKEN), the embedded server's binary (AGENTOPS_NATS_SERVER_BIN,
  `natsserver.py`) and plugin processes (`tools/plugin_sdk.py`: AGENTOPS_PLUGIN_TTL_S).
  Anything else raises `ConfigError` with a message meant for the person at the terminal.
- An override of `None` means "not given", so argparse values can be passed straight through.
- `Settings.child_env()` is the inverse of `load_settings()`: a child process that reads its
  environment gets the same settings the supervisor has (that is how `agentops up` hands
  settings to the processes it starts).
- Secrets never appear in `repr()` or logs: `api_token` and `nats_nkey_seed` are shown as
  `'***'`, and the password (or token) in a NATS URL's userinfo as `***` (`mask_url`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from agentops.agents.loader import agent_types, load_agent_specs
from agentops.config_tables import (
    AuthSettings,
    NatsSettings,
    RetentionSettings,
    WorkspaceSettings,
    load_scale,
    load_table,
)
from agentops.llm.settings import PROVIDERS, LLMSettings, TypeRoute, load_llm_settings
from agentops.protocol.errors import ConfigError
from agentops.tools.policy import ToolSettings, load_tool_settings

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
# The tables a config file may have (README "Configuration"); anything else is a typo.
CONFIG_TABLES: Final = (
    "llm",
    "tools",
    "agents",
    "workspaces",
    "retention",
    "auth",
    "nats",
    "scale",
)

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
    "agents_dir": "AGENTOPS_AGENTS_DIR",
    # A process that runs elsewhere with a least-privilege NATS user (deploy/hybrid).
    "jetstream_domain": "AGENTOPS_JETSTREAM_DOMAIN",
    "jetstream_declare": "AGENTOPS_JETSTREAM_DECLARE",
    # Credentials and TLS for a NATS the operator runs (`bus/auth.py`).
    "nats_creds": "NATS_CREDS",
    "nats_nkey_seed": "NATS_NKEY_SEED",
    "nats_ca": "NATS_CA",
    "nats_cert": "NATS_CERT",
    "nats_key": "NATS_KEY",
}
# Variables of the operator's NATS: not passed to the processes of the embedded server.
EXTERNAL_NATS_VARS: Final = ("NATS_CREDS", "NATS_NKEY_SEED", "NATS_CA", "NATS_CERT", "NATS_KEY")


@dataclass(frozen=True, repr=False)
class Settings:
    nats_url: str | None = None  # None: `agentops up` embeds a nats-server
    data_dir: Path = Path(".agentops")
    host: str = "127.0.0.1"
    port: int = 8000
    # None: not set in the environment; the config file's [llm] table or the default (mock)
    # decides (agentops.llm.settings resolves the whole LLM configuration).
    llm_provider: str | None = None
    llm_model: str | None = None
    api_token: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    # Optional TOML file with sections such as [llm] and [tools]; see README "Configuration".
    config_file: Path | None = None
    # Optional directory of agent type files, `<type>.toml` each (agents/loader.py).
    agents_dir: Path | None = None
    # JetStream domain of the server that holds the streams, when it is reached through a leaf
    # node (`$JS.<domain>.API`); None: the connected server's own JetStream.
    jetstream_domain: str | None = None
    # False: do not create streams and buckets, wait for them (a restricted remote process);
    # None: only the orchestrator declares when processes have their own credentials
    # (`bus/service.py`), every process otherwise.
    jetstream_declare: bool | None = None
    nats_creds: Path | None = None  # a creds file (user JWT + nkey seed)
    nats_nkey_seed: str | None = None  # an nkey seed (secret), or the path of a file with one
    nats_ca: Path | None = None
    nats_cert: Path | None = None
    nats_key: Path | None = None

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value is not None:
                value = "***"
            elif f.name == "nats_url" and value is not None:
                value = mask_url(value)
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

    @property
    def config_source(self) -> str:
        """The config file as error messages name it: `config file /path/agentops.toml`."""
        return f"config file {self.config_file}" if self.config_file else "config file"

    def section(self, name: str) -> Mapping[str, Any]:
        """Table `[name]` of the config file, or an empty mapping (no file, no such table)."""
        if self.config_file is None:
            return {}
        value = read_config_file(self.config_file).get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.config_source}: {name}: must be a table, got {value!r}")
        return value

    def safe_dict(self) -> dict[str, Any]:
        """For logs and banners: every field, secrets masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["data_dir"] = str(self.data_dir)
        out["config_file"] = str(self.config_file) if self.config_file else None
        out["agents_dir"] = str(self.agents_dir) if self.agents_dir else None
        for name in SECRET_FIELDS:
            if out[name] is not None:
                out[name] = "***"
        for name in ("nats_creds", "nats_ca", "nats_cert", "nats_key"):
            if out[name] is not None:
                out[name] = str(out[name])
        if out["nats_url"] is not None:
            out["nats_url"] = mask_url(out["nats_url"])
        return out


SECRET_FIELDS: Final = ("api_token", "nats_nkey_seed")


def mask_url(url: str) -> str:
    """`url` (or a comma-separated list of URLs) with the password, or a lone token, in the
    userinfo replaced by `***`: `nats://gateway:***@host:4222`. For logs, banners, errors."""
    return ",".join(_mask_one(part.strip()) for part in url.split(","))


def nats_servers(url: str) -> list[str]:
    """The seed URLs of `url` (one, or a cluster's comma-separated list) as nats-py's
    `servers=[...]` takes them: a comma list as one string is read as a single bad URL."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _mask_one(url: str) -> str:
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:  # `user:pass@host:port` without a scheme, as nats-py accepts it
        scheme, rest = "", url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _secret = userinfo.partition(":")
    masked = f"{user}:***" if colon else "***"  # a lone userinfo is a token
    return f"{scheme}{sep}{masked}@{host}"


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
                f"(schemes: {', '.join(NATS_SCHEMES)}); got {mask_url(value)!r}"
            )
        try:
            urlsplit(server if sep else f"nats://{server}").port  # noqa: B018 - validates
        except ValueError:
            raise ConfigError(
                f"{what} has an invalid port: {mask_url(value)!r} (a password in the URL must "
                "not contain / ? #; nats-py does not decode %-escapes)"
            ) from None
    return value


_DOMAIN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _parse_domain(raw: object, what: str) -> str | None:
    value = str(raw).strip()
    if value and not _DOMAIN.match(value):
        raise ConfigError(f"{what} must be a JetStream domain name of [A-Za-z0-9_-]; got {raw!r}")
    return value or None


_BOOLS: Final[Mapping[str, bool]] = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def _parse_bool(raw: object, what: str) -> bool:
    if isinstance(raw, bool):
        return raw
    value = _BOOLS.get(str(raw).strip().lower())
    if value is None:
        raise ConfigError(f"{what} must be true or false; got {raw!r}")
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


def _parse_file(raw: object, what: str) -> Path | None:
    value = str(raw).strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{what}: {path} is not a readable file")
    return path


def _parse_seed(raw: object, what: str) -> str | None:
    """An nkey seed (SU...) as given, or the absolute path of a file holding one."""
    value = str(raw).strip()
    if not value or value.startswith("S"):
        return value or None
    path = _parse_file(value, what)
    return str(path) if path is not None else None


def _parse_config_file(raw: object, what: str) -> Path | None:
    value = str(raw).strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    read_config_file(path)  # a missing or malformed file fails now, not in a child later
    return path


def _parse_agents_dir(raw: object, what: str) -> Path | None:
    value = str(raw).strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{what}: {path} is not a directory (of agent type files <type>.toml)")
    return path


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML config file; `ConfigError` naming the file if it is missing or bad,
    or has a top-level table or key other than `CONFIG_TABLES`."""
    try:
        with path.open("rb") as fh:
            content = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (AGENTOPS_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib decodes before it parses
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    unknown = sorted(set(content) - set(CONFIG_TABLES))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown top-level table or key {', '.join(unknown)}; "
            f"the file may contain only the tables {', '.join(f'[{t}]' for t in CONFIG_TABLES)}"
        )
    return content


def _parse(name: str, raw: object, what: str) -> Any:
    match name:
        case "config_file":
            return _parse_config_file(raw, what)
        case "agents_dir":
            return _parse_agents_dir(raw, what)
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
        case "jetstream_domain":
            return _parse_domain(raw, what)
        case "jetstream_declare":
            return _parse_bool(raw, what)
        case "nats_creds" | "nats_ca" | "nats_cert" | "nats_key":
            return _parse_file(raw, what)
        case "nats_nkey_seed":
            return _parse_seed(raw, what)
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
    return settings


def validate_sections(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Parse every config-file section now, so `agentops up` fails before starting anything.

    Each subsystem that owns a section adds its loader here (it raises `ConfigError`).
    `environ` (default `os.environ`) supplies the provider keys and URLs.
    """
    load_agent_specs(settings)  # first: the others check agent type names against it
    load_llm(settings, environ)
    load_tools(settings)
    load_retention(settings)
    load_workspaces(settings)
    load_auth(settings)
    load_nats(settings)
    load_scale(settings.section("scale"), settings.config_source)


def load_tools(settings: Settings) -> ToolSettings:
    """`[tools]`, its agent type names checked against the configured types."""
    return load_tool_settings(
        settings.section("tools"), settings.config_source, agent_types(settings)
    )


def load_retention(settings: Settings) -> RetentionSettings:
    return load_table(
        settings.section("retention"), RetentionSettings, "retention", settings.config_source
    )


def load_workspaces(settings: Settings) -> WorkspaceSettings:
    return load_table(
        settings.section("workspaces"), WorkspaceSettings, "workspaces", settings.config_source
    )


def load_auth(settings: Settings) -> AuthSettings:
    return load_table(settings.section("auth"), AuthSettings, "auth", settings.config_source)


def load_nats(settings: Settings) -> NatsSettings:
    return load_table(settings.section("nats"), NatsSettings, "nats", settings.config_source)


def load_llm(settings: Settings, environ: Mapping[str, str] | None = None) -> LLMSettings:
    """The LLM settings these settings select: `[llm]` of the config file plus the provider
    variables of `environ` (default `os.environ`), and the routes agent types ask for."""
    env = os.environ if environ is None else environ
    specs = load_agent_specs(settings)
    routes = {
        name: TypeRoute(spec.route_provider, spec.route_model, spec.source)
        for name, spec in specs.items()
        if spec.route_provider or spec.route_model
    }
    return load_llm_settings(
        settings.section("llm"),
        llm_environ(settings, env),
        settings.config_source,
        agent_types=tuple(specs),
        type_routes=routes,
    )


def llm_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the LLM settings read: provider keys and URLs from `environ`, with
    AGENTOPS_LLM_PROVIDER/MODEL as these settings have them (overrides included)."""
    env = dict(environ)
    for name in ("llm_provider", "llm_model"):
        value = getattr(settings, name)
        if value is not None:
            env[ENV_VARS[name]] = value
    return env
