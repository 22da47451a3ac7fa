"""Where a workspace may be cloned from: the operator's allow-list and the address rules.

Rules:
- `check_source(text, allow)` is pure (no I/O beyond `realpath` of a local path) and returns a
  `Source` or raises `WorkspaceError`. Refused before anything else: empty or over-long text,
  control characters, spaces or backslashes, a leading `-` (git would read an option), remote
  helper syntax (`ext::`, `fd::`, any `<transport>::`), and every scheme but `https://` and
  `file://` (`git://`, `ssh://`, `http://`, scp-style `host:path`). Local sources must be
  absolute paths; relative ones have no meaning for a server.
- The allow-list holds `fnmatch` globs (`*` also matches `/`). An https URL is matched
  without its credentials; a local path or `file://` URL is matched as its real path (links
  resolved, so a listed directory cannot be a link to an unlisted one) and as `file://` plus
  that path. `DEFAULT_ALLOW` is https URLs only: local sources must be listed.
- `pin(source, net_allow, resolve)` applies `api_call`'s address rules (`tools.netguard`) to
  an https source: the host is resolved once, every address is checked, and the address
  that passed is handed to git as `http.curloptResolve=host:port:address`, so curl connects
  to it and never resolves the name again (no DNS rebinding between check and connect).
  Redirects are turned off (`http.followRedirects=false`, in `git.py`) because a redirect to
  another host would be resolved by curl afresh.
- `mask(text)` removes `user:password@` from every URL in a text; every message that may
  hold a URL passes through it, so credentials never reach logs, errors or state.
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from agentops.protocol.errors import PermanentError
from agentops.tools.netguard import (
    AddressRefused,
    Guard,
    IPAddress,
    addresses,
    literal_address,
)

DEFAULT_ALLOW: tuple[str, ...] = ("https://*",)
MAX_SOURCE_CHARS = 4096
_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.?|\[[0-9A-Fa-f:.]+\])$"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")

Resolver = Callable[[str, int], list[IPAddress]]


class WorkspaceError(PermanentError):
    """A workspace operation that cannot be done; `code` says which rule, the message why.

    Messages never hold credentials (URLs pass through `mask`)."""

    code = "workspace_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(mask(message), code=code)


@dataclass(frozen=True, slots=True)
class Source:
    """A checked git source. `url` is what git is given (credentials kept: git needs them);
    `shown` is safe to print or store."""

    kind: Literal["https", "file"]
    url: str
    shown: str
    host: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True)
class Pin:
    """The address an https clone connects to, as git's `http.curloptResolve` value."""

    host: str
    port: int
    address: IPAddress | None  # None: the host is an address literal (nothing to resolve)

    def curlopt(self) -> str | None:
        if self.address is None:
            return None
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.host}:{self.port}:{shown}"


def mask(text: str) -> str:
    """`text` with the user information of every URL in it replaced by `***@`."""
    return _USERINFO.sub(r"\1***@", text)


def check_source(text: str, allow: Iterable[str] = DEFAULT_ALLOW) -> Source:
    """The source `text` names, if the rules and the allow-list `allow` admit it."""
    shown = mask(text)
    if not text or len(text) > MAX_SOURCE_CHARS:
        raise WorkspaceError("invalid_source", f"git source must be 1-{MAX_SOURCE_CHARS} chars")
    if any(ch.isspace() or not ch.isprintable() or ch == "\\" for ch in text):
        raise WorkspaceError(
            "invalid_source",
            f"git source {shown!r} contains whitespace, control characters or backslashes",
        )
    if text.startswith("-"):
        raise WorkspaceError("invalid_source", f"git source {shown!r} starts with '-'")
    if _HELPER.match(text):
        raise WorkspaceError(
            "source_not_allowed",
            f"git source {shown!r} names a remote helper ('<transport>::'); "
            "only https:// URLs, file:// URLs and local paths are allowed",
        )
    globs = tuple(allow)
    lowered = text.lower()
    if lowered.startswith("https://"):
        source = _https(text)
        keys: tuple[str, ...] = (source.shown,)
    elif lowered.startswith("file://") or text.startswith("/"):
        source = _local(text)
        keys = (source.url, "file://" + source.url)
    else:
        raise WorkspaceError(
            "source_not_allowed",
            f"git source {shown!r} is not allowed: use an https:// URL, or a file:// URL or "
            "absolute local path the operator allows in [workspaces] allow",
        )
    if not any(fnmatch.fnmatchcase(key, glob) for key in keys for glob in globs):
        raise WorkspaceError(
            "source_not_allowed",
            f"git source {source.shown!r} is not in [workspaces] allow "
            f"({', '.join(globs) or 'nothing is allowed'})",
        )
    return source


def _https(text: str) -> Source:
    parts = urlsplit(text)
    netloc = parts.netloc
    if netloc.count("@") > 1:
        raise WorkspaceError("invalid_source", f"git source {mask(text)!r}: ambiguous user info")
    hostport = netloc.rpartition("@")[2]
    try:
        host, port = parts.hostname or "", parts.port or 443
    except ValueError as exc:
        raise WorkspaceError("invalid_source", f"git source {mask(text)!r}: {exc}") from None
    shown_host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") else hostport
    if not host or not _HOST.match(shown_host) or "%" in hostport:
        raise WorkspaceError("invalid_source", f"git source {mask(text)!r}: invalid host")
    clean = parts._replace(netloc=hostport).geturl()
    return Source(kind="https", url=text, shown=clean, host=host.lower(), port=port)


def _local(text: str) -> Source:
    if text.lower().startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise WorkspaceError(
                "invalid_source", f"git source {text!r}: a file:// URL names a local path only"
            )
        path = unquote(parts.path)
    else:
        path = text
    if not path.startswith("/") or "\x00" in path:
        raise WorkspaceError("invalid_source", f"git source {text!r}: not an absolute path")
    real = os.path.realpath(path)
    return Source(kind="file", url=real, shown=real)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an address literal is itself), in resolver order."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        return addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:
        raise WorkspaceError("clone_failed", f"cannot resolve {host}: {exc}") from None


def pin(source: Source, net_allow: Iterable[str] = (), resolver: Resolver = resolve) -> Pin:
    """The checked address an https `source` connects to (`address_not_allowed` if refused)."""
    addresses = resolver(source.host, source.port)
    try:
        chosen = Guard(net_allow).check(source.host, source.port, addresses)
    except AddressRefused as exc:
        text = str(exc).replace("api_call reaches", "git clones reach")
        raise WorkspaceError("address_not_allowed", f"{source.shown}: {text}") from None
    literal = literal_address(source.host) is not None
    return Pin(source.host, source.port, None if literal else chosen)
