"""Plugin directory bookkeeping and plugin call handling, without NATS (a fake clock)."""

from __future__ import annotations

import json
from typing import Any

from agentops.protocol import subjects as s
from agentops.tools.plugin_sdk import Plugin, PluginCall, PluginError
from agentops.tools.plugins import PluginDirectory

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0}},
    "required": ["n"],
    "additionalProperties": False,
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def announce(name: str = "double", **kw: Any) -> bytes:
    return (
        Plugin(name, "Double a number.", SCHEMA, ttl_s=5, **kw)
        .announcement.model_dump_json()
        .encode()
    )


def test_tools_expire_without_refresh_and_come_back_with_one() -> None:
    """A tool is listed until ttl_s passes without a refresh; a refresh brings it back."""
    clock = Clock()
    directory = PluginDirectory(clock)
    directory.apply("double", announce(), "PUT")
    assert [t.name for t in directory.tools_for("backend_developer")] == ["double"]
    clock.now += 5.1
    assert directory.lookup("double") is None and directory.tools_for("x") == ()
    directory.apply("double", announce(), "PUT")
    assert directory.lookup("double") is not None


def test_delete_removes_at_once_and_agent_types_filter() -> None:
    """A delete removes the tool; agent_types limits who sees it."""
    directory = PluginDirectory(Clock())
    directory.apply("double", announce(agent_types=("devops_engineer",)), "PUT")
    assert directory.tools_for("backend_developer") == ()
    assert [t.name for t in directory.tools_for("devops_engineer")] == ["double"]
    directory.apply("double", None, "DEL")
    assert directory.names() == []


def test_arguments_are_checked_against_the_schema() -> None:
    """Schema violations become one readable message naming each field."""
    directory = PluginDirectory(Clock())
    directory.apply("double", announce(), "PUT")
    tool = directory.lookup("double")
    assert tool is not None
    assert tool.subject == s.plugin_calls("double")
    assert tool.check_arguments({"n": 2}) is None
    problem = tool.check_arguments({"n": -1, "x": 1})
    assert problem is not None and problem.startswith("invalid arguments for double: ")
    assert "-1 is less than the minimum of 0" in problem
    assert "Additional properties are not allowed ('x' was unexpected)" in problem


async def test_plugin_handle_maps_results_and_errors() -> None:
    """The SDK answers {ok, result} or {ok: false, error}; a crash is plugin_crashed."""

    async def handler(arguments: dict[str, Any], call: PluginCall) -> Any:
        if arguments["n"] == 0:
            raise PluginError("zero is boring", code="boring")
        if arguments["n"] == 1:
            raise RuntimeError("bug")
        return {"double": arguments["n"] * 2, "task": call.task_id}

    plugin = Plugin("double", "Double.", SCHEMA, handler=handler)

    async def call(n: int) -> dict[str, Any]:
        body = {"arguments": {"n": n}, "task_id": "t1", "step": 1}
        return await plugin.handle(json.dumps(body).encode())

    assert await call(4) == {"ok": True, "result": {"double": 8, "task": "t1"}}
    assert await call(0) == {"ok": False, "error": {"code": "boring", "message": "zero is boring"}}
    assert await call(1) == {
        "ok": False,
        "error": {"code": "plugin_crashed", "message": "RuntimeError: bug"},
    }
    bad = await plugin.handle(b"not json")
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_request"
