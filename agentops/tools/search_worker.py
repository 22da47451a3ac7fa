"""The search_files child process: one JSON job on stdin, one JSON result on stdout.

Rules:
- Run as `python -s -m agentops.tools.search_worker` by `tools.file_tools`, which kills it at
  the tool's timeout; so a regular expression with catastrophic backtracking costs one
  bounded child, never an executor thread. Standard library and `workspaces.tree` only, so
  it starts fast.
- The job names the workspace's real path and a directory (or one file) relative to it; the
  walk is `tree.walk` (nothing followed, no `.git`). Lines are matched one by one
  (`regex.search(line)`), each shown up to `line_chars` characters.
- Stops at `max_matches` matches or `max_bytes` of matched text (`truncated: true`), and
  after `max_scan` entries. Skips files over `max_file_bytes` and binary ones (a NUL byte in
  the first 8 KiB), counting both.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from typing import Any

from agentops.workspaces.tree import Entry, open_dir, walk

_BINARY_PROBE = 8192


def glob_matches(rel: str, pattern: str) -> bool:
    """`pattern` without '/' matches the file name, with '/' the whole relative path."""
    target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def _entries(root: str, rel: str) -> tuple[Iterator[Entry], str]:
    """The entries to search, and the prefix globs are matched below."""
    try:
        os.close(open_dir(root, rel))
    except NotADirectoryError:  # one file
        return _one(root, rel), ""
    return walk(root, rel), "" if rel == "." else rel + "/"


def _one(root: str, rel: str) -> Iterator[Entry]:
    for entry in walk(root, posixpath.dirname(rel) or "."):
        if entry.path == rel:
            yield entry
            return


def search(job: dict[str, Any]) -> dict[str, Any]:
    regex = re.compile(job["pattern"])
    glob: str | None = job.get("glob")
    matches: list[dict[str, Any]] = []
    out_bytes = searched = binary = large = scanned = 0
    truncated = False
    entries, prefix = _entries(job["root"], job["path"])
    for entry in entries:
        scanned += 1
        if scanned > job["max_scan"] or truncated:
            truncated = truncated or scanned > job["max_scan"]
            break
        if entry.kind != "file":
            continue
        if glob and not glob_matches(entry.path.removeprefix(prefix), glob):
            continue
        if entry.size > job["max_file_bytes"]:
            large += 1
            continue
        try:
            data = entry.read(job["max_file_bytes"])
        except OSError:
            continue
        if b"\0" in data[:_BINARY_PROBE]:
            binary += 1
            continue
        searched += 1
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if regex.search(line) is None:
                continue
            text = line[: job["line_chars"]]
            matches.append({"path": entry.path, "line": number, "text": text})
            out_bytes += len(text)
            if len(matches) >= job["max_matches"] or out_bytes >= job["max_bytes"]:
                truncated = True
                break
    return {
        "path": job["path"],
        "matches": matches,
        "files_searched": searched,
        "skipped": {"binary": binary, "too_large": large},
        "truncated": truncated,
    }


def main() -> None:
    job = json.load(sys.stdin)
    try:
        result = search(job)
    except OSError as exc:
        result = {"error": exc.strerror or str(exc)}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
