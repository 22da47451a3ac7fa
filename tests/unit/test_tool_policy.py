"""`[tools]` settings and approval rules (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from agentops.protocol.errors import ConfigError
from agentops.tools.policy import (
    DEFAULT_APPROVALS,
    ApprovalAnswer,
    approval_question,
    approval_reason,
    load_tool_settings,
    parse_allow_entry,
    read_approval,
    rejection_message,
)


def test_defaults_without_a_section() -> None:
    """No [tools] table: auto sandbox, no network for code, default limits and approvals."""
    settings = load_tool_settings({})
    assert settings.sandbox == "auto"
    assert settings.network_allowed("backend_developer") is False
    assert settings.limits.output_bytes == 64 * 1024
    assert settings.approvals == DEFAULT_APPROVALS


def test_a_full_section_is_read() -> None:
    """Every key of the documented [tools] table is read into typed settings."""
    settings = load_tool_settings(
        {
            "sandbox": "none",
            "network": ["devops_engineer"],
            "limits": {"wall_time_s": 5, "memory_mb": 128, "processes": 8},
            "api_call": {"allow": ["127.0.0.1:8080", "10.0.0.0/8", "api.internal"]},
            "approvals": {"*": [{"tool": "write_file", "args": {"path": "*.sh"}}]},
        }
    )
    assert settings.sandbox == "none"
    assert settings.network_allowed("devops_engineer")
    assert not settings.network_allowed("backend_developer")
    assert (settings.limits.wall_time_s, settings.limits.processes) == (5, 8)
    assert settings.api_call.allow == ("127.0.0.1:8080", "10.0.0.0/8", "api.internal")
    assert set(settings.approvals.rules) == {"*"}


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"sandbox": "docker"}, "tools.sandbox"),
        ({"limits": {"memory_mb": 0}}, "tools.limits.memory_mb"),
        ({"limits": {"cpu": 1}}, "tools.limits.cpu"),
        ({"api_call": {"allow": ["http://x/"]}}, "allow-list entry"),
        ({"api_call": {"allow": ["127.0.0.1:99999"]}}, "invalid port"),
        ({"approvals": [1]}, "tools.approvals: must be a table"),
        ({"approvals": {"*": [{"args": {}}]}}, "tools.approvals.*.0.tool"),
        ({"bogus": 1}, "tools.bogus"),
    ],
)
def test_bad_config_is_a_config_error(section: dict[str, Any], needle: str) -> None:
    """Each mistake is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        load_tool_settings(section)
    assert needle in info.value.message


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"network": ["nosuch_type"]}, "tools.network"),
        ({"approvals": {"nosuch_type": []}}, "tools.approvals"),
    ],
)
def test_unknown_agent_types_are_refused(section: dict[str, Any], where: str) -> None:
    """An agent type in network or approvals must be a configured one (or "*"), named with the
    file."""
    types = ("frontend_developer", "backend_developer", "devops_engineer", "qa")
    with pytest.raises(ConfigError) as info:
        load_tool_settings(section, "config file /x.toml", types)
    assert info.value.message == (
        f"config file /x.toml: {where}: unknown agent type 'nosuch_type'; known agent types: "
        'backend_developer, devops_engineer, frontend_developer, qa (or "*" for all)'
    )
    ok = {"network": ["*", "qa"], "approvals": {"*": [], "backend_developer": []}}
    assert load_tool_settings(ok, "config file /x.toml", types).network_allowed(
        "frontend_developer"
    )


def test_errors_name_the_file() -> None:
    """A bad value reads `<source>: tools.<key>: <problem>`, like [llm]'s errors."""
    with pytest.raises(ConfigError) as info:
        load_tool_settings({"limits": {"memory_mb": 0}}, "config file /x.toml")
    assert info.value.message.startswith("config file /x.toml: tools.limits.memory_mb: ")


def test_allow_entries_are_parsed() -> None:
    """IPs, CIDRs, bracketed IPv6 and host names, each with an optional port."""
    assert parse_allow_entry("127.0.0.1") == ("net", "127.0.0.1/32", None)
    assert parse_allow_entry("[::1]:8080") == ("net", "::1/128", 8080)
    assert parse_allow_entry("fd00::/8") == ("net", "fd00::/8", None)
    assert parse_allow_entry("API.internal:443") == ("host", "api.internal", 443)


@pytest.mark.parametrize(
    ("agent", "tool", "args", "needed"),
    [
        ("backend_developer", "api_call", {"url": "https://x", "method": "POST"}, True),
        ("backend_developer", "api_call", {"url": "https://x", "method": "DELETE"}, True),
        ("backend_developer", "api_call", {"url": "https://x", "method": "GET"}, False),
        ("backend_developer", "api_call", {"url": "https://x", "method": "HEAD"}, False),
        ("backend_developer", "api_call", {"url": "https://x"}, False),  # default GET
        ("devops_engineer", "execute_code", {"language": "bash", "code": "ls"}, False),
        ("devops_engineer", "execute_code", {"language": "python", "code": "1"}, False),
        ("backend_developer", "execute_code", {"language": "bash", "code": "ls"}, False),
        ("devops_engineer", "write_file", {"path": "x", "content": ""}, False),
    ],
)
def test_default_approvals(agent: str, tool: str, args: dict[str, Any], needed: bool) -> None:
    """By default only non-GET/HEAD api_call needs approval (the default plans run bash)."""
    reason = approval_reason(DEFAULT_APPROVALS, agent, tool, args)
    assert (reason is not None) == needed
    if reason is not None:
        assert reason.startswith(f"{tool} needs approval for {agent}: ")


def test_rule_patterns_glob_alternatives_and_negation() -> None:
    """Globs on tool and values, `|` alternatives, `!` negation; approvals = {} turns off."""
    policy = load_tool_settings(
        {
            "approvals": {
                "frontend_developer": [
                    {"tool": "write_*", "args": {"path": "*.sh|*.py"}, "reason": "scripts"},
                    {"tool": "api_call", "args": {"url": "!https://*"}},
                ]
            }
        }
    ).approvals
    fe = "frontend_developer"
    reason = approval_reason(policy, fe, "write_file", {"path": "a/run.sh", "content": ""})
    assert reason == (
        "write_file needs approval for frontend_developer: scripts "
        "(rule 1 of [tools.approvals.frontend_developer])"
    )
    assert approval_reason(policy, fe, "write_file", {"path": "a.js", "content": ""}) is None
    assert approval_reason(policy, fe, "api_call", {"url": "http://x"}) is not None
    assert approval_reason(policy, fe, "api_call", {"url": "https://x", "method": "POST"}) is None
    assert approval_reason(policy, "backend_developer", "write_file", {"path": "a.sh"}) is None
    off = load_tool_settings({"approvals": {}}).approvals
    assert approval_reason(off, "devops_engineer", "execute_code", {"language": "bash"}) is None


def test_policy_module_is_pure() -> None:
    """The core may import tools.policy: nothing it reaches does I/O or reads the clock."""
    from tests.unit.test_core_purity import FORBIDDEN, closure

    reached = closure(["agentops.tools.policy"])
    assert "agentops.tools.registry" in reached
    offenders = {
        mod: sorted(i for i in imports if i.split(".")[0] in FORBIDDEN | {"os", "subprocess"})
        for mod, imports in reached.items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_readme_tools_example_is_valid() -> None:
    """The [tools] example in the README loads as documented."""
    import re
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[tools]" in b)
    settings = load_tool_settings(tomllib.loads(block)["tools"])
    assert settings.network_allowed("devops_engineer")
    assert settings.api_call.allow[-1] == "wiki.internal"
    reason = approval_reason(
        settings.approvals, "devops_engineer", "write_file", {"path": "main.tf", "content": ""}
    )
    assert reason is not None


def test_approval_question_shows_the_exact_call() -> None:
    """The human sees the tool, every argument and how to answer."""
    text = approval_question("api_call", {"url": "https://x", "method": "POST"}, "a POST")
    assert text.startswith("Approval needed: a POST.\n")
    assert '"method": "POST"' in text and '"url": "https://x"' in text
    assert '{"approved": true}' in text


@pytest.mark.parametrize(
    ("response", "approved", "comment"),
    [
        ({"approved": True}, True, None),
        ({"approved": False, "comment": "not on prod"}, False, "not on prod"),
        ({"approved": "yes"}, None, None),
        ("sure", None, None),
        ({"comment": "hm"}, None, None),
    ],
)
def test_read_approval(response: Any, approved: bool | None, comment: str | None) -> None:
    """Only a well-formed answer counts; anything else is None (ask again, never run)."""
    answer = read_approval(response)
    if approved is None:
        assert answer is None
    else:
        assert answer is not None and (answer.approved, answer.comment) == (approved, comment)


def test_rejection_message_carries_the_comment() -> None:
    """A refusal reaches the model with the human's reason."""
    answer = ApprovalAnswer(approved=False, comment="not on prod")
    assert rejection_message("execute_code", answer) == (
        "a human refused to approve this execute_code call: not on prod. Do not retry it unchanged."
    )
