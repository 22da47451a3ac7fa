"""Tool settings from the `[tools]` config table, and which calls need a human's approval.

Pure: data and string matching only (the core imports this to decide approvals), so no clock,
no I/O, no process or network modules. `ipaddress` is used only to validate allow-list entries.

Rules:
- `load_tool_settings(section)` is the one parser of `[tools]`; every mistake is a
  `ConfigError` naming the key, so `agentops up` fails before starting anything.
- Sandbox modes: `auto` (bubblewrap when it works, otherwise execute_code is refused), `bwrap`
  (bubblewrap or the executor does not start), `none` (an explicit, loudly logged choice of a
  plain subprocess with resource limits only).
- Approval rules: `[tools.approvals.<agent_type or "*">]` is a list of `{tool, args?, reason?}`.
  `tool` is a glob on the tool name; each `args` value is a pattern on the argument shown as a
  string: `|` separates alternatives, each a case-sensitive glob, and a leading `!` negates the
  whole pattern. `{tool = "api_call", args = {method = "!GET|HEAD"}}` = any method but GET or
  HEAD. A call needs approval when any rule of its agent type or of `"*"` matches. Giving
  `[tools.approvals]` replaces the default rules entirely (`approvals = {}` turns them off).
  An agent type's own `approvals` list (its type table, `agents/loader.py`) has the same
  syntax; its rules are checked first and apply whatever `[tools.approvals]` says
  (`ApprovalPolicy.with_type_rules`).
- Agent type names (`[tools.approvals.<type>]`, `tools.network`) are checked against the
  configured types the caller passes (`config.load_tools` does); without them they are not.
- The human answers `{"approved": true|false, "comment"?: ...}`; only a strict `true` runs the
  call (`read_approval`), and a refusal reaches the model as the tool's result
  (`rejection_message`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentops.protocol.errors import ConfigError
from agentops.tools.registry import BUILTIN_TOOLS

SandboxMode = Literal["auto", "bwrap", "none"]
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Config):
    """Per-call limits of execute_code (and the output cap of every tool's text)."""

    wall_time_s: float = Field(default=60.0, gt=0, le=3600)
    cpu_s: int = Field(default=60, ge=1, le=3600)
    memory_mb: int = Field(default=1024, ge=16, le=1024 * 1024)
    processes: int = Field(default=64, ge=1, le=100_000)
    file_size_mb: int = Field(default=64, ge=1, le=1024 * 1024)
    output_bytes: int = Field(default=64 * 1024, ge=256, le=64 * 1024 * 1024)
    open_files: int = Field(default=256, ge=16, le=65536)


class ApiCallSettings(_Config):
    """`[tools.api_call]`: where api_call may go besides the public internet."""

    allow: tuple[str, ...] = ()
    max_response_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_redirects: int = Field(default=5, ge=0, le=20)

    @field_validator("allow")
    @classmethod
    def _check_entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            parse_allow_entry(entry)
        return entries


class ApprovalRule(_Config):
    tool: str = Field(min_length=1)
    args: dict[str, str] = Field(default_factory=dict)
    reason: str | None = None


class ApprovalPolicy(_Config):
    """Rules by agent type; `"*"` applies to every agent type. `type_rules` are the types' own
    (from their type tables), checked first."""

    rules: dict[str, tuple[ApprovalRule, ...]] = Field(default_factory=dict)
    type_rules: dict[str, tuple[ApprovalRule, ...]] = Field(default_factory=dict)

    def with_type_rules(self, agent_type: str, rules: tuple[ApprovalRule, ...]) -> ApprovalPolicy:
        """This policy plus an agent type's own rules."""
        if not rules:
            return self
        return self.model_copy(update={"type_rules": {**self.type_rules, agent_type: rules}})


# Out of the box only HTTP requests that may change something wait for a human. Rules that
# stop a default run (devops bash, say) are the operator's choice: the mock's default plans,
# which outside checks run to completion, run bash for devops (README: "Tools and sandbox").
DEFAULT_APPROVALS = ApprovalPolicy(
    rules={
        "*": (
            ApprovalRule(
                tool="api_call",
                args={"method": "!GET|HEAD"},
                reason="an HTTP request that may change something (method other than GET/HEAD)",
            ),
        ),
    }
)


class ToolSettings(_Config):
    sandbox: SandboxMode = "auto"
    # Agent types whose execute_code may use the network ("*" = all). Off for everyone by default.
    network: tuple[str, ...] = ()
    limits: Limits = Limits()
    api_call: ApiCallSettings = ApiCallSettings()
    approvals: ApprovalPolicy = DEFAULT_APPROVALS

    def network_allowed(self, agent_type: str) -> bool:
        return "*" in self.network or agent_type in self.network


def load_tool_settings(
    section: Mapping[str, Any],
    source: str = "config file",
    agent_types: Collection[str] | None = None,
) -> ToolSettings:
    """The `[tools]` table as `ToolSettings`; otherwise `ConfigError` reading
    `<source>: tools.<key>: <problem>` (`source` names the file: `config file /etc/a.toml`).
    Agent type names in it are checked against `agent_types` when given."""
    raw = dict(section)
    if "approvals" in raw:
        approvals = raw.pop("approvals")
        if not isinstance(approvals, Mapping):
            raise ConfigError(
                f"{source}: tools.approvals: must be a table of rule lists, got {approvals!r}"
            )
        raw["approvals"] = {"rules": dict(approvals)}
        _check_agent_types(approvals, f"{source}: tools.approvals", agent_types)
    try:
        settings = ToolSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"tools.{'.'.join(str(p) for p in err['loc'] if p != 'rules')}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"{source}: {problems}") from None
    _check_agent_types(settings.network, f"{source}: tools.network", agent_types)
    return settings


def _check_agent_types(names: Any, what: str, agent_types: Collection[str] | None) -> None:
    """`ConfigError` for a name among `names` that is neither an agent type nor `"*"`."""
    if agent_types is None:
        return
    unknown = [name for name in names if name != "*" and name not in agent_types]
    if unknown:
        raise ConfigError(
            f"{what}: unknown agent type {unknown[0]!r}; known agent types: "
            f'{", ".join(sorted(agent_types))} (or "*" for all)'
        )


# ---- allow-list entries ----


def parse_allow_entry(entry: str) -> tuple[str, str, int | None]:
    """`10.0.0.0/8`, `127.0.0.1`, `[::1]:8080`, `127.0.0.1:8080`, `api.internal`, `api.internal:443`
    → ("net", network, port) or ("host", lower-case name, port)."""
    text = entry.strip()
    port: int | None = None
    host = text
    if text.startswith("["):  # [v6] or [v6]:port
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest:
            port = _port(rest.removeprefix(":"), entry)
    elif text.count(":") == 1:  # v4:port or name:port (a bare v6 has several colons)
        host, _, port_text = text.partition(":")
        port = _port(port_text, entry)
    try:
        return "net", str(ipaddress.ip_network(host, strict=False)), port
    except ValueError:
        pass
    if not _HOST.match(host) or ".." in host:
        raise ValueError(
            f"allow-list entry {entry!r} is not an IP, a CIDR, a host name or one of those "
            "with :port"
        )
    return "host", host.lower().rstrip("."), port


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"allow-list entry {entry!r} has an invalid port {text!r}")
    return int(text)


# ---- approvals ----
def approval_reason(
    policy: ApprovalPolicy, agent_type: str, tool: str, arguments: Mapping[str, Any]
) -> str | None:
    """Why this call needs a human's approval, or None when it may run at once."""
    values = _with_defaults(tool, arguments)
    scopes = (
        (policy.type_rules.get(agent_type, ()), f"agents.{agent_type}.approvals"),
        (policy.rules.get(agent_type, ()), f"[tools.approvals.{agent_type}]"),
        (policy.rules.get("*", ()), "[tools.approvals.*]"),
    )
    for rules, scope in scopes:
        for index, rule in enumerate(rules):
            if fnmatch.fnmatchcase(tool, rule.tool) and all(
                _matches(pattern, values.get(name)) for name, pattern in rule.args.items()
            ):
                shown = ", ".join(f"{k}={values.get(k)!r}" for k in rule.args)
                why = rule.reason or f"{tool} {shown}".strip()
                return (
                    f"{tool} needs approval for {agent_type}: {why} (rule {index + 1} of {scope})"
                )
    return None


def _with_defaults(tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A builtin tool's arguments with its defaults filled in (a missing `method` is GET)."""
    definition = BUILTIN_TOOLS.get(tool)
    if definition is not None:
        try:
            return definition.args_model.model_validate(dict(arguments)).model_dump()
        except ValidationError:
            pass  # invalid calls are refused elsewhere; match what was given
    return dict(arguments)


def _matches(pattern: str, value: Any) -> bool:
    negate = pattern.startswith("!")
    body = pattern[1:] if negate else pattern
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, sort_keys=True)
    hit = any(fnmatch.fnmatchcase(text, alt) for alt in body.split("|"))
    return hit != negate


# ---- the human's side of an approval (for the agent that asks) ----
class ApprovalAnswer(_Config):
    """What a human answers to an approval request: `{"approved": bool, "comment"?: str}`."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    approved: bool = Field(strict=True)  # "yes" or 1 is not an approval
    comment: str | None = Field(default=None, max_length=10_000)


def approval_question(tool: str, arguments: Mapping[str, Any], reason: str) -> str:
    """The request shown to the human: the exact call, and how to answer."""
    call = json.dumps({"tool": tool, "arguments": dict(arguments)}, indent=2, sort_keys=True)
    return (
        f"Approval needed: {reason}.\nThe agent wants to run exactly this call:\n{call}\n"
        'Answer {"approved": true} to run it, or {"approved": false, "comment": "why"} to '
        "refuse; the comment goes back to the agent."
    )


def read_approval(response: Any) -> ApprovalAnswer | None:
    """The human's response as an approval answer, or None when it is not one (the caller
    should ask again rather than guess: only an explicit `approved: true` runs the call)."""
    try:
        return ApprovalAnswer.model_validate(response)
    except ValidationError:
        return None


def rejection_message(tool: str, answer: ApprovalAnswer) -> str:
    """The tool result the model reads when a human refused the call."""
    why = f": {answer.comment}" if answer.comment else " (no reason given)"
    return f"a human refused to approve this {tool} call{why}. Do not retry it unchanged."
