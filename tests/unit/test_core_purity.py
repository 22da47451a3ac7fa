"""The core is pure: nothing it imports, directly or through other AgentOps modules, does I/O."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import agentops

FORBIDDEN = {
    "asyncio",
    "nats",
    "aiohttp",
    "httpx",
    "time",
    "uuid",
    "random",
    "socket",
    "subprocess",
    "structlog",
    "uvloop",
    "threading",
}
ROOT = Path(agentops.__file__).parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_path(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # `from pkg.module import Name` yields "pkg.module.Name"
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def closure(start: list[str]) -> dict[str, set[str]]:
    """Every agentops module reachable from `start`, with what each imports."""
    seen: dict[str, set[str]] = {}
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        if path is None:
            continue
        seen[name] = imports_of(path)
        todo.extend(i for i in seen[name] if i.startswith("agentops.") and module_path(i))
    return seen


def test_core_imports_no_io_modules() -> None:
    """No module reachable from agentops.core imports asyncio, nats, aiohttp, httpx, time, uuid, random."""
    core = [f"agentops.core.{p.stem}" for p in (ROOT / "core").glob("*.py") if p.stem != "__init__"]
    reached = closure(core)
    assert "agentops.core.agent" in reached and "agentops.tools.registry" in reached
    offenders = {
        mod: sorted(i for i in imports if i.split(".")[0] in FORBIDDEN)
        for mod, imports in reached.items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_core_never_builds_subjects_or_reads_the_clock() -> None:
    """The reducers take time from their caller: no datetime.now() or utcnow() in core."""
    for path in (ROOT / "core").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "datetime.now" not in text and "utcnow" not in text, path.name


SUBJECT_ROOTS = re.compile(
    r"""["']\$?(agentops\.(task|agent|events|llm\.request|tool\.call|dlq|control)\.|\$SRV\.)"""
)


def test_only_subjects_module_builds_subject_strings() -> None:
    """Subject strings are written in protocol/subjects.py alone."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if p.name != "subjects.py" and SUBJECT_ROOTS.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
