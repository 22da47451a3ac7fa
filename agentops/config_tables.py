"""The config file's tables besides `[llm]` and `[tools]`: one model each, every key known.

Tables (README "Configuration"): `[retention]` (how long finished tasks are kept),
`[workspaces]` (where code may come from and how large), `[auth]` (API tokens and their
roles), `[nats]` (stream replicas, the monitoring port), `[scale]` (replicas per process) and
`[agents.<type>]` (agent types as data: the table's model is here, `agents/loader.py` merges
the types).

Rules:
- Each table is a frozen pydantic model that forbids unknown keys: a typo is an error, never
  ignored. `load_table` turns a validation error into one `ConfigError` worded
  `config file <path>: <table>.<key>: <problem>`.
- A missing table is its model's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentops.protocol.errors import ConfigError
from agentops.tools.policy import ApprovalRule

T = TypeVar("T", bound=BaseModel)
Role = Literal["viewer", "operator", "admin"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetentionSettings(_Table):
    """Finished root tasks (with everything below them) are deleted after `days`."""

    days: int = Field(default=30, ge=1, le=36_500)
    sweep_interval_s: float = Field(default=3600.0, ge=1.0, le=7 * 86_400.0)


class WorkspaceSettings(_Table):
    """Sources a task's workspace may start from, and size limits."""

    # Globs over https URLs, file:// URLs and local paths; https URLs are allowed when empty.
    allow: list[str] = Field(default_factory=list)
    max_upload_mb: int = Field(default=100, ge=1, le=100_000)
    max_clone_mb: int = Field(default=1024, ge=1, le=1_000_000)
    clone_timeout_s: float = Field(default=300.0, gt=0, le=86_400.0)


class TokenEntry(_Table):
    name: str
    role: Role
    sha256: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 of [A-Za-z0-9_.@-]")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("must be the token's SHA-256 as 64 lower-case hex digits")
        return value


class AuthSettings(_Table):
    tokens: list[TokenEntry] = Field(default_factory=list)
    # The role `/metrics` needs; "none" leaves it open.
    metrics: Literal["none", "viewer", "operator", "admin"] = "none"


class NatsSettings(_Table):
    # Replicas of every stream and bucket; None: 3 on a cluster of 3 or more JetStream
    # nodes, else 1.
    replicas: int | None = Field(default=None, ge=1, le=5)
    # The embedded server's monitoring port (on loopback); None: off.
    monitor_port: int | None = Field(default=None, ge=1, le=65_535)


class AgentTypeTable(_Table):
    """An agent type as data (DESIGN §4c): `[agents.<type>]` of the config file, or the whole of
    an agents directory's `<type>.toml`. Every key is optional here: a table for a type that
    exists overrides only the keys it sets; what a new type must have, tool names, the
    template and the prompt file are checked when the layers are merged (`agents/loader.py`)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)  # the display name
    role: str | None = Field(default=None, min_length=1, max_length=2000)
    system_prompt: str | None = Field(default=None, min_length=1, max_length=200_000)
    prompt_file: str | None = Field(default=None, min_length=1, max_length=4096)
    task_prompt_template: str | None = Field(default=None, min_length=1, max_length=100_000)
    capabilities: list[str] | None = None
    allowed_tools: list[str] | None = None  # built-in tools (tools/registry.py)
    plugin_tools: list[str] | None = None  # plugin tool names, or "*" for every one
    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    provider: str | None = None  # the type's LLM route; [llm.agents.<type>] wins
    model: str | None = Field(default=None, min_length=1, max_length=512)
    approvals: list[ApprovalRule] | None = None  # the rule syntax of [tools.approvals]


def load_table(section: Mapping[str, Any], model: type[T], table: str, source: str) -> T:
    """`[table]` as `model`, or `ConfigError` saying which key is wrong and why."""
    try:
        return model.model_validate(dict(section))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, table)}") from None


def describe(exc: ValidationError, table: str) -> str:
    return "; ".join(
        f"{'.'.join([*([table] if table else []), *(str(p) for p in err['loc'])])}: {_message(err)}"
        for err in exc.errors(include_url=False)
    )


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return str(err["msg"])


def load_scale(section: Mapping[str, Any], source: str) -> dict[str, int]:
    """`[scale]`: process name -> replicas (1-64); the names are checked by the caller."""
    out: dict[str, int] = {}
    for name, value in section.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise ConfigError(f"{source}: scale.{name}: must be an integer from 1 to 64")
        out[str(name)] = value
    return out
