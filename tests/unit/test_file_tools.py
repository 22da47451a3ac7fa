"""edit_file, list_files and search_files against a real temporary workspace: behaviour, caps,
and confinement (links out, .git, paths outside)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from agentops.tools import file_tools
from agentops.tools.errors import ToolError
from agentops.tools.handlers import ToolContext, run_tool
from agentops.tools.policy import Limits, ToolSettings
from agentops.tools.registry import (
    BUILTIN_TOOLS,
    EditFileArgs,
    ListFilesArgs,
    SearchFilesArgs,
    ToolArgsError,
    is_idempotent,
    validate_call,
)

MODELS = {"edit_file": EditFileArgs, "list_files": ListFilesArgs, "search_files": SearchFilesArgs}


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    ws = tmp_path / "ws"
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("import os\n\ndef main():\n    return 'hello'\n")
    (ws / "src" / "pkg" / "util.py").write_text("def helper():\n    return 'hello'\n")
    (ws / "README.md").write_text("# Demo\nSay hello.\n")
    (ws / "logo.png").write_bytes(b"\x89PNG\0\0hello")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("hello = planted\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.py").write_text("hello = 'secret'\n")
    (ws / "escape").symlink_to(tmp_path / "outside")
    (ws / "secret_link.py").symlink_to(tmp_path / "outside" / "secret.py")
    return ToolContext(workspace=ws, timeout_s=10)


async def call(ctx: ToolContext, name: str, **args: Any) -> dict[str, Any]:
    return await run_tool(name, MODELS[name].model_validate(args), ctx)


async def failure(ctx: ToolContext, name: str, **args: Any) -> ToolError:
    with pytest.raises(ToolError) as info:
        await call(ctx, name, **args)
    return info.value


# ---- registry ----
def test_new_tools_are_registered_with_strict_arguments() -> None:
    """Unknown arguments are refused; list/search are idempotent, edit is not."""
    allowed = ("edit_file", "list_files", "search_files")
    with pytest.raises(ToolArgsError, match="Extra inputs are not permitted"):
        validate_call("list_files", {"path": ".", "recursive": True}, allowed)
    with pytest.raises(ToolArgsError, match="count"):
        validate_call("edit_file", {"path": "a", "old": "x", "new": "y", "count": 0}, allowed)
    args = validate_call("search_files", {"pattern": "x"}, allowed)
    assert is_idempotent("search_files", args)
    assert is_idempotent("list_files", validate_call("list_files", {}, allowed))
    edit = validate_call("edit_file", {"path": "a", "old": "x", "new": "y"}, allowed)
    assert not is_idempotent("edit_file", edit)
    assert BUILTIN_TOOLS["edit_file"].schema().parameters["required"] == ["path", "old", "new"]


# ---- edit_file ----
async def test_edit_replaces_the_unique_occurrence(ctx: ToolContext) -> None:
    """A unique `old` is replaced in place; the result says where."""
    result = await call(ctx, "edit_file", path="src/app.py", old="'hello'", new="'hi'")
    assert result == {"path": "src/app.py", "replacements": 1, "line": 4, "bytes": 39}
    assert (ctx.workspace / "src" / "app.py").read_text().endswith("return 'hi'\n")


async def test_edit_with_more_occurrences_than_count_says_how_many(ctx: ToolContext) -> None:
    """Two occurrences with count=1 is an error naming 2; count=2 replaces both."""
    path = ctx.workspace / "twice.txt"
    path.write_text("x = 1\nx = 1\n")
    exc = await failure(ctx, "edit_file", path="twice.txt", old="x = 1", new="x = 2")
    assert exc.code == "too_many_matches" and "occurs 2 times" in exc.message
    assert "count=2" in exc.message and path.read_text() == "x = 1\nx = 1\n"
    done = await call(ctx, "edit_file", path="twice.txt", old="x = 1", new="x = 2", count=3)
    assert done["replacements"] == 2 and path.read_text() == "x = 2\nx = 2\n"


async def test_edit_of_absent_text_explains_what_to_check(ctx: ToolContext) -> None:
    """A missing `old` is an error; whitespace and CRLF mismatches get a hint."""
    exc = await failure(ctx, "edit_file", path="src/app.py", old="nope", new="x")
    assert exc.code == "old_text_not_found" and "does not occur in 'src/app.py'" in exc.message
    spaced = await failure(ctx, "edit_file", path="src/app.py", old="import os  ", new="x")
    assert "without its leading/trailing whitespace" in spaced.message
    (ctx.workspace / "dos.txt").write_bytes(b"a\r\nb\r\n")
    crlf = await failure(ctx, "edit_file", path="dos.txt", old="a\nb", new="c")
    assert "CRLF" in crlf.message


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../outside/secret.py", "path_outside_workspace"),
        ("escape/secret.py", "path_outside_workspace"),
        ("secret_link.py", "path_outside_workspace"),
        ("missing.py", "file_not_found"),
        ("src", "not_a_file"),
        ("logo.png", "not_text"),
    ],
)
async def test_edit_is_confined_to_workspace_text_files(
    ctx: ToolContext, path: str, code: str
) -> None:
    """Paths out (also through links), directories and binary files are refused."""
    assert (await failure(ctx, "edit_file", path=path, old="hello", new="x")).code == code
    assert "secret" in (ctx.workspace.parent / "outside" / "secret.py").read_text()


async def test_edit_same_text_and_size_limit(ctx: ToolContext) -> None:
    """old == new changes nothing; a result over the file-size limit is refused unwritten."""
    same = await failure(ctx, "edit_file", path="README.md", old="Demo", new="Demo")
    assert same.code == "no_change"
    small = ToolContext(
        workspace=ctx.workspace, timeout_s=10, settings=ToolSettings(limits=Limits(file_size_mb=1))
    )
    exc = await failure(small, "edit_file", path="README.md", old="Demo", new="y" * 1_100_000)
    assert exc.code == "file_too_large"
    assert (ctx.workspace / "README.md").read_text() == "# Demo\nSay hello.\n"


# ---- list_files ----
async def test_list_shows_files_but_not_git_or_links_out(ctx: ToolContext) -> None:
    """Regular files with sizes, relative to the root; no .git, no symlinks, nothing outside."""
    result = await call(ctx, "list_files")
    assert [f["path"] for f in result["files"]] == [
        "README.md", "logo.png", "src/app.py", "src/pkg/util.py"
    ]  # fmt: skip
    assert result["files"][0] == {"path": "README.md", "size": 18}
    assert result["count"] == 4 and "truncated" not in result


async def test_list_by_directory_and_pattern(ctx: ToolContext) -> None:
    """A pattern without '/' matches names, with '/' paths relative to `path`."""
    by_name = await call(ctx, "list_files", pattern="*.py")
    assert [f["path"] for f in by_name["files"]] == ["src/app.py", "src/pkg/util.py"]
    below = await call(ctx, "list_files", path="src", pattern="pkg/*.py")
    assert [f["path"] for f in below["files"]] == ["src/pkg/util.py"]
    assert (await failure(ctx, "list_files", path="README.md")).code == "not_a_directory"
    assert (await failure(ctx, "list_files", path="escape")).code == "path_outside_workspace"
    assert (await failure(ctx, "list_files", path="..")).code == "path_outside_workspace"


async def test_list_is_capped_with_a_marker(ctx: ToolContext, monkeypatch: Any) -> None:
    """Past LIST_LIMIT files the listing stops and says how many there were."""
    monkeypatch.setattr(file_tools, "LIST_LIMIT", 2)
    result = await call(ctx, "list_files")
    assert len(result["files"]) == 2 and result["count"] == 4 and result["truncated"]
    assert result["note"].startswith("…[truncated: showing 2 of 4 files")


# ---- search_files ----
async def test_search_finds_lines_skipping_binary_git_and_links(ctx: ToolContext) -> None:
    """Matches carry path, line and text; binary, .git and linked-out files are not searched."""
    result = await call(ctx, "search_files", pattern=r"hel+o")
    assert result["matches"] == [
        {"path": "README.md", "line": 2, "text": "Say hello."},
        {"path": "src/app.py", "line": 4, "text": "    return 'hello'"},
        {"path": "src/pkg/util.py", "line": 2, "text": "    return 'hello'"},
    ]
    assert result["skipped"] == {"binary": 1, "too_large": 0}
    assert result["files_searched"] == 3 and not result["truncated"]


async def test_search_by_path_glob_and_single_file(ctx: ToolContext) -> None:
    """path narrows to a directory or one file; glob filters file names."""
    in_pkg = await call(ctx, "search_files", pattern="return", path="src/pkg")
    assert [m["path"] for m in in_pkg["matches"]] == ["src/pkg/util.py"]
    globbed = await call(ctx, "search_files", pattern="hello", glob="*.md")
    assert [m["path"] for m in globbed["matches"]] == ["README.md"]
    one = await call(ctx, "search_files", pattern="def", path="src/app.py")
    assert one["matches"] == [{"path": "src/app.py", "line": 3, "text": "def main():"}]
    assert (await failure(ctx, "search_files", pattern="x", path="nope")).code == ("file_not_found")


async def test_bad_regex_is_an_error_the_model_reads(ctx: ToolContext) -> None:
    """An invalid pattern names the problem."""
    exc = await failure(ctx, "search_files", pattern="(unclosed")
    assert exc.code == "invalid_pattern" and "missing )" in exc.message


async def test_search_caps_matches_and_file_size(ctx: ToolContext, monkeypatch: Any) -> None:
    """Past MATCH_LIMIT it stops with a marker; files over the size limit are skipped."""
    monkeypatch.setattr(file_tools, "MATCH_LIMIT", 2)
    capped = await call(ctx, "search_files", pattern="hello")
    assert len(capped["matches"]) == 2 and capped["truncated"]
    assert capped["note"].startswith("…[truncated at 2 matches")
    monkeypatch.setattr(file_tools, "MAX_SEARCH_FILE_BYTES", 40)
    sized = await call(ctx, "search_files", pattern="hello")
    assert sized["skipped"]["too_large"] == 1  # src/app.py is 47 bytes, the others smaller


async def test_catastrophic_regex_is_stopped_at_the_timeout(ctx: ToolContext) -> None:
    """A backtracking bomb costs a killed child process, not a stuck executor thread."""
    (ctx.workspace / "aaa.txt").write_text("a" * 40 + "!\n")
    slow = ToolContext(workspace=ctx.workspace, timeout_s=2)
    started = time.monotonic()
    exc = await failure(slow, "search_files", pattern=r"^(a+)+$")
    assert exc.code == "search_timeout" and time.monotonic() - started < 5
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _is_worker(p)]
    assert leftovers == []


def _is_worker(pid: str) -> bool:
    try:
        return b"search_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
