"""Git refs, shas and authors from clients are matched whole: a trailing newline is refused."""

from __future__ import annotations

import pytest

from agentops.workspaces.checks import check_ref, check_sha
from agentops.workspaces.sources import WorkspaceError


@pytest.mark.parametrize("ref", ["main\n", "v1.0\n", "a..b", "x.lock"])
def test_a_ref_with_a_trailing_newline_or_dots_is_refused(ref: str) -> None:
    """`main\\n` is not `main`: refused, never handed to git."""
    with pytest.raises(WorkspaceError):
        check_ref(ref)


def test_a_sha_is_matched_whole() -> None:
    """A sha with a trailing newline is refused; the bare one passes."""
    assert check_sha("abcd1234") == "abcd1234"
    with pytest.raises(WorkspaceError):
        check_sha("abcd1234\n")
