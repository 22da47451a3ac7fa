"""Which git sources a workspace may be cloned from, how credentials are masked, and the address
an https clone is pinned to."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from agentops.workspaces.sources import (
    DEFAULT_ALLOW,
    WorkspaceError,
    check_source,
    mask,
    pin,
)


def refused(text: str, allow: tuple[str, ...] = DEFAULT_ALLOW) -> WorkspaceError:
    with pytest.raises(WorkspaceError) as info:
        check_source(text, allow)
    return info.value


def test_https_is_allowed_by_default_and_shown_without_credentials() -> None:
    """An https URL passes the default allow-list; `shown` drops user:password, `url` keeps it."""
    source = check_source("https://bot:tok3n@Example.com:8443/org/repo.git")
    assert (source.kind, source.host, source.port) == ("https", "example.com", 8443)
    assert source.shown == "https://Example.com:8443/org/repo.git"
    assert source.url == "https://bot:tok3n@Example.com:8443/org/repo.git"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("-uhack", "invalid_source"),
        ("--upload-pack=touch x", "invalid_source"),
        ("https://example.com/a\nb", "invalid_source"),
        ("https://example.com/a b", "invalid_source"),
        ("https://example.com\\@evil.com/", "invalid_source"),
        ("https://a@b@example.com/", "invalid_source"),
        ("https://exa%6dple.com/", "invalid_source"),
        ("ext::sh -c touch% /tmp/x", "invalid_source"),
        ("ext::sh", "source_not_allowed"),
        ("fd::3", "source_not_allowed"),
        ("ssh::host/repo", "source_not_allowed"),
        ("git://example.com/repo", "source_not_allowed"),
        ("ssh://example.com/repo", "source_not_allowed"),
        ("http://example.com/repo", "source_not_allowed"),
        ("git@example.com:org/repo.git", "source_not_allowed"),
        ("relative/path", "source_not_allowed"),
        ("file:///srv/repo", "source_not_allowed"),
        ("/srv/repo", "source_not_allowed"),
        ("", "invalid_source"),
    ],
)
def test_bad_or_unlisted_sources_are_refused(text: str, code: str) -> None:
    """Options, helpers, other transports, odd characters and unlisted local paths are refused."""
    assert refused(text).code == code


def test_local_paths_match_the_operator_globs_by_real_path(tmp_path: Path) -> None:
    """A listed local path passes as a path or a file:// URL; a link out of the list does not."""
    repos = tmp_path / "repos"
    (repos / "app").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (repos / "link").symlink_to(tmp_path / "secret")
    allow = (f"{repos}/*",)
    assert check_source(f"{repos}/app", allow).url == str(repos / "app")
    assert check_source(f"file://{repos}/app", allow).kind == "file"
    assert check_source(f"file://localhost{repos}/a%70p", allow).url == str(repos / "app")
    assert check_source(f"{repos}/sub/../app", allow).url == str(repos / "app")
    assert refused(f"{repos}/link", allow).code == "source_not_allowed"
    assert refused(f"{repos}/../secret", allow).code == "source_not_allowed"
    assert refused("file://otherhost/srv/x", ("*",)).code == "invalid_source"


def test_https_globs_match_the_url_without_credentials() -> None:
    """An operator glob on https URLs applies to the URL as shown."""
    allow = ("https://github.com/acme/*",)
    assert check_source("https://x:y@github.com/acme/app.git", allow).host == "github.com"
    assert refused("https://github.com/other/app.git", allow).code == "source_not_allowed"


def test_mask_removes_every_user_info() -> None:
    """mask replaces user:password in every URL of a text, and leaves the rest."""
    text = "fatal: https://u:p@h/x and ftp://tok@h2/y failed at path/a@b"
    assert mask(text) == "fatal: https://***@h/x and ftp://***@h2/y failed at path/a@b"


def test_pin_uses_the_checked_address() -> None:
    """A public address is pinned for curl as host:port:address (brackets for IPv6)."""
    source = check_source("https://example.com/r.git")
    v4 = pin(source, resolver=lambda h, p: [ipaddress.ip_address("93.184.216.34")])
    assert v4.curlopt() == "example.com:443:93.184.216.34"
    v6 = pin(source, resolver=lambda h, p: [ipaddress.ip_address("2606:2800:220:1::1")])
    assert v6.curlopt() == "example.com:443:[2606:2800:220:1::1]"
    literal = pin(check_source("https://93.184.216.34/r.git"))
    assert literal.curlopt() is None


@pytest.mark.parametrize("bad", ["10.0.0.5", "169.254.169.254", "::ffff:127.0.0.1", "fd00::1"])
def test_pin_refuses_when_any_address_is_internal(bad: str) -> None:
    """Every resolved address is checked: one internal address refuses the clone."""
    source = check_source("https://example.com/r.git")
    addresses = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address(bad)]
    with pytest.raises(WorkspaceError) as info:
        pin(source, resolver=lambda h, p: addresses)
    assert info.value.code == "address_not_allowed"
    assert "git clones reach public addresses only" in info.value.message


def test_pin_allows_an_allow_listed_internal_address() -> None:
    """The operator's allow-list (as for api_call) admits an internal git server."""
    source = check_source("https://git.internal:8443/r.git")
    chosen = pin(source, ["10.0.0.0/8"], resolver=lambda h, p: [ipaddress.ip_address("10.1.2.3")])
    assert chosen.curlopt() == "git.internal:8443:10.1.2.3"
