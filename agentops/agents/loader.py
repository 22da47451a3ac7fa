"""Agent types as data (DESIGN §4c): the shipped type files, an agents directory and the config
file's `[agents.<type>]` tables, merged into one `AgentSpec` per type.

Rules:
- Three layers, each over the one before: the shipped types (`agents/types/<type>.toml`, in
  the package), the agents directory (`--agents-dir`, AGENTOPS_AGENTS_DIR: one `<type>.toml`
  per type, the file name is the type name; other files are ignored, prompt files live there
  too), then the config file's `[agents.<type>]`. A table for a type that exists overrides the
  keys it sets; a new name defines a type, which needs a `role` and a prompt.
- A type name is a subject token (`subjects.check_agent_type`: 1-54 of [A-Za-z0-9_-]).
- `system_prompt` and `prompt_file` are one setting: a layer that sets either replaces the
  other; one table with both is an error. `prompt_file` is relative to the file that declares
  it and must be non-empty UTF-8 text.
- `allowed_tools` are built-in tools only (`tools/registry.BUILTIN_TOOLS`) and must include
  `complete_task` (the only way a run ends); a misspelt built-in (`read_flie`) is an error at
  start. Plugin tools come and go while the system runs, so they cannot be checked at start:
  a type names them under `plugin_tools`, checked only as tool names (`"*"`, the default,
  allows every plugin tool announced for the type). Keeping them apart is what lets a typo in
  `allowed_tools` be caught instead of taken for a plugin that is not running yet.
- `task_prompt_template` names `{description}` and `{context}` (the task's context as JSON)
  and no other field; literal braces are doubled.
- `provider`/`model` are the type's LLM route; `[llm.agents.<type>]` wins (llm/settings.py).
- Every mistake is one `ConfigError` naming the file and the key, raised before anything
  starts: `config file <path>: agents.<type>.<key>: <problem>` for a table of the config file,
  `config file <path>: <key>: <problem>` for a type file (the file is the type's table).
- The result is cached per (config file, agents dir) for the life of the process: `agentops
  up` validates it first, and every child gets the same two settings (`Settings.child_env`).
"""

from __future__ import annotations

import difflib
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from agentops.agents.definitions import AgentSpec
from agentops.config_tables import AgentTypeTable, describe
from agentops.llm.settings import PROVIDERS
from agentops.protocol.errors import ConfigError
from agentops.protocol.subjects import InvalidName, check_agent_type
from agentops.tools.registry import BUILTIN_TOOLS, TOOL_NAME

if TYPE_CHECKING:
    from agentops.config import Settings

SHIPPED_DIR: Final = Path(__file__).with_name("types")
# What a type without `allowed_tools` may call: every built-in tool but delegation.
STANDARD_TOOLS: Final = (
    "list_files",
    "search_files",
    "read_file",
    "edit_file",
    "write_file",
    "execute_code",
    "api_call",
    "request_human_input",
    "complete_task",
)
DEFAULT_MAX_STEPS: Final = 20
DEFAULT_TEMPERATURE: Final = 0.2
_TEMPLATE_FIELDS: Final = frozenset({"description", "context"})
_PROMPT_KEYS: Final = ("system_prompt", "prompt_file")


@dataclass(frozen=True)
class _Origin:
    """Where a table was written: a type file (`table` None) or a config file's table."""

    file: Path
    table: str | None = None

    def at(self, key: str | None = None) -> str:
        where = ".".join(p for p in (self.table, key) if p)
        return f"config file {self.file}: {where}" if where else f"config file {self.file}"


@dataclass(frozen=True)
class _Value:
    value: Any
    origin: _Origin


# ---- the public API ----
_CACHE: dict[tuple[Path | None, Path | None], dict[str, AgentSpec]] = {}


def load_agent_specs(settings: Settings) -> dict[str, AgentSpec]:
    """Every configured agent type by name (shipped, agents dir, config file), or
    `ConfigError`. Read once per process and configuration; a fresh dict each call."""
    key = (settings.config_file, settings.agents_dir)
    specs = _CACHE.get(key)
    if specs is None:
        section = settings.section("agents")
        specs = read_agent_specs(section, settings.config_file, settings.agents_dir)
        _CACHE[key] = specs
    return dict(specs)


def shipped_specs() -> dict[str, AgentSpec]:
    """The shipped types alone (what a system without an agents dir or [agents] runs)."""
    specs = _CACHE.get((None, None))
    if specs is None:
        specs = _CACHE[(None, None)] = read_agent_specs({})
    return dict(specs)


def shipped_types() -> tuple[str, ...]:
    """The shipped type names, sorted (without reading the files)."""
    return tuple(sorted(p.stem for p in SHIPPED_DIR.glob("*.toml")))


def agent_types(settings: Settings) -> tuple[str, ...]:
    """The configured agent type names, sorted (one agent process each)."""
    return tuple(sorted(load_agent_specs(settings)))


def read_agent_specs(
    section: Mapping[str, Any],
    config_file: Path | None = None,
    agents_dir: Path | None = None,
    shipped_dir: Path = SHIPPED_DIR,
) -> dict[str, AgentSpec]:
    """The types of the three layers merged and checked (no cache): `section` is the config
    file's `[agents]` table."""
    layers: dict[str, dict[str, _Value]] = {}
    first: dict[str, _Origin] = {}  # the table that introduced each type
    for path in _type_files(shipped_dir):
        _overlay(layers, first, path.stem, _read_type_file(path), _Origin(path))
    if agents_dir is not None:
        for path in _type_files(agents_dir):
            _overlay(layers, first, path.stem, _read_type_file(path), _Origin(path))
    if section:
        config = config_file or Path("(unnamed)")
        for name, table in section.items():
            origin = _Origin(config, f"agents.{name}")
            if not isinstance(table, Mapping):
                raise ConfigError(f"{origin.at()}: must be a table")
            _overlay(layers, first, str(name), table, origin)
    return {name: _build(name, layers[name], first[name]) for name in sorted(layers)}


# ---- reading and merging ----
def _type_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".toml" and p.is_file())
    except OSError as exc:
        raise ConfigError(f"agents directory {directory} cannot be read: {exc.strerror}") from None


def _read_type_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason})") from None


def _overlay(
    layers: dict[str, dict[str, _Value]],
    first: dict[str, _Origin],
    name: str,
    raw: Mapping[str, Any],
    origin: _Origin,
) -> None:
    try:
        check_agent_type(name)
    except InvalidName as exc:
        what = " (the file name)" if origin.table is None else ""
        raise ConfigError(f"{origin.at()}: {exc}{what}") from None
    try:
        table = AgentTypeTable.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(
            f"config file {origin.file}: {describe(exc, origin.table or '')}"
        ) from None
    given = table.model_fields_set
    if set(_PROMPT_KEYS) <= given:
        raise ConfigError(
            f"{origin.at('prompt_file')}: set either system_prompt or prompt_file, not both"
        )
    merged = layers.setdefault(name, {})
    first.setdefault(name, origin)
    if given & set(_PROMPT_KEYS):
        for key in _PROMPT_KEYS:
            merged.pop(key, None)
    for key in given:
        merged[key] = _Value(getattr(table, key), origin)


# ---- checking one merged type ----
def _build(name: str, merged: Mapping[str, _Value], origin: _Origin) -> AgentSpec:
    def value(key: str, default: Any = None) -> Any:
        found = merged.get(key)
        return default if found is None else found.value

    def at(key: str) -> str:
        found = merged.get(key)
        return (found.origin if found is not None else origin).at(key)

    if "role" not in merged:
        raise ConfigError(f"{at('role')}: missing: a new agent type needs a role")
    if "prompt_file" in merged:
        prompt = _read_prompt(merged["prompt_file"])
    elif "system_prompt" in merged:
        prompt = str(value("system_prompt")).strip()
    else:
        raise ConfigError(
            f"{at('system_prompt')}: missing: a new agent type needs system_prompt or prompt_file"
        )
    provider = value("provider")
    if provider is not None:
        provider = provider.strip().lower()
        if provider not in PROVIDERS:
            raise ConfigError(
                f"{at('provider')}: unknown LLM provider {value('provider')!r}; "
                f"valid providers: {', '.join(PROVIDERS)}"
            )
    template = value("task_prompt_template")
    if template is not None:
        _check_template(template, at("task_prompt_template"))
    approvals = value("approvals")
    return AgentSpec(
        agent_type=name,
        name=value("name") or name.replace("_", " ").replace("-", " ").title(),
        role=value("role"),
        system_prompt=prompt,
        capabilities=tuple(dict.fromkeys(value("capabilities", ()))),
        allowed_tools=_allowed_tools(value("allowed_tools", STANDARD_TOOLS), at("allowed_tools")),
        allowed_plugin_tools=_plugin_tools(value("plugin_tools", ["*"]), at("plugin_tools")),
        max_steps=value("max_steps", DEFAULT_MAX_STEPS),
        temperature=value("temperature", DEFAULT_TEMPERATURE),
        task_prompt_template=template,
        approvals=tuple(approvals) if approvals else (),
        route_provider=provider,
        route_model=value("model"),
        source=origin.at(),
    )


def _read_prompt(found: _Value) -> str:
    where = found.origin.at("prompt_file")
    path = found.origin.file.parent / Path(found.value).expanduser()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: {path} cannot be read: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    return text


def _allowed_tools(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    for name in names:
        if name not in BUILTIN_TOOLS:
            close = difflib.get_close_matches(name, list(BUILTIN_TOOLS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: unknown tool {name!r}; {hint}built-in tools: "
                f"{', '.join(sorted(BUILTIN_TOOLS))} (a plugin tool goes under plugin_tools)"
            )
    if "complete_task" not in names:
        raise ConfigError(f"{where}: must include complete_task (the only way a run ends)")
    return tuple(dict.fromkeys(names))


def _plugin_tools(names: list[str], where: str) -> tuple[str, ...]:
    for name in names:
        if name in BUILTIN_TOOLS:
            raise ConfigError(f"{where}: {name!r} is a built-in tool; list it under allowed_tools")
        if name != "*" and not TOOL_NAME.match(name):
            raise ConfigError(
                f"{where}: {name!r} is not a tool name (a lower-case letter, then up to 63 of "
                'a-z, 0-9 and _), nor "*" for every plugin tool'
            )
    return tuple(dict.fromkeys(names))


def _check_template(template: str, where: str) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (write a literal brace as {{{{ or }}}})") from None
    fields = {field for _, field, _, _ in parts if field is not None}
    spec = next((f"{{{f}:{s}}}" for _, f, s, _ in parts if f is not None and s), None)
    conv = next((f"{{{f}!{c}}}" for _, f, _, c in parts if f is not None and c), None)
    unknown = sorted(fields - _TEMPLATE_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {{{unknown[0]}}}; the fields are {{description}} and "
            "{context} (write a literal brace as {{ or }})"
        )
    if spec or conv:
        raise ConfigError(f"{where}: {spec or conv}: fields take no format spec or conversion")
    missing = sorted(_TEMPLATE_FIELDS - fields)
    if missing:
        raise ConfigError(f"{where}: must contain {{{missing[0]}}}")
