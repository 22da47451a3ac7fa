"""Who is calling the edge, and may they: bearer tokens with roles.

Roles, each including the one before: `viewer` (reads and the WebSocket), `operator` (plus
every command: tasks, answers, pause/resume/cancel, deletes, uploads), `admin` (everything).
AGENTOPS_API_TOKEN is an admin token named `admin`; `[auth] tokens = [{name, role, sha256}]`
adds more, stored only as their SHA-256.

Rules:
- No token configured: everything is open to `anonymous` (the loopback default; listening
  elsewhere without a token is refused at start-up, `require_tokens_off_loopback`).
- A token is sent as `Authorization: Bearer <token>`. The WebSocket also takes it as a
  subprotocol `bearer.<token>` (offer `agentops` too and that one is chosen; alone, it is
  echoed), and, for browsers only, as `?token=`.
- `GET /` and `GET /ui/...` (the dashboard's page and static files), `GET /openapi.json`,
  `GET /docs` and `GET /docs/...` (the API's description; none holds data) and `GET /health`
  need nothing; `GET /metrics` needs
  the role `[auth] metrics` names ("none": open). A method that only reads needs `viewer`,
  anything else `operator`, a route in `ADMIN_ONLY` `admin`.
- Unknown or missing token: 401 with `WWW-Authenticate: Bearer`; a known token without the
  role: 403 naming the role needed. Digests are compared in constant time.
- Failed attempts are counted per client address: past `max_failures` in `window_s`, 429
  with Retry-After until the window passes. Each failure is logged with the address, path and
  reason, never the token.
- The request's `Principal` (its name is the `actor` of commands) is at `request[PRINCIPAL]`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, get_args

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from agentops.config_tables import Role, TokenEntry
from agentops.edge.context import CONFIG
from agentops.edge.errors import ApiError
from agentops.protocol.errors import ConfigError

log = structlog.get_logger(__name__)

ROLES: Final[tuple[Role, ...]] = get_args(Role)
ANONYMOUS: Final = "anonymous"
OPEN: Final = frozenset(
    (method, path)
    for method in ("GET", "HEAD")
    for path in ("/", "/health", "/openapi.json", "/docs")
)
PUBLIC_PREFIXES: Final = ("/ui/", "/docs/")  # the dashboard's and the API docs' static files
READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes only an admin may use, as (method, path pattern); every other command is an
# operator's. (None yet: credentials, configuration and the like go here.)
ADMIN_ONLY: Final[frozenset[tuple[str, str]]] = frozenset()
WS_PATH: Final = "/ws"
WS_PROTOCOL: Final = "agentops"
WS_BEARER: Final = "bearer."


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


PRINCIPAL = web.RequestKey("principal", Principal)


def digest(token: str) -> str:
    # Bytes that are not UTF-8 arrive as lone surrogates; they can match no token.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Tokens:
    """The known tokens, by digest, and the failures seen per client address."""

    admin_token: str | None = None
    entries: tuple[TokenEntry, ...] = ()
    max_failures: int = 10
    window_s: float = 60.0
    _known: list[tuple[str, Principal]] = field(init=False, default_factory=list)
    _failures: dict[str, deque[float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.admin_token:
            self._known.append((digest(self.admin_token), Principal("admin", "admin")))
        self._known += [(e.sha256, Principal(e.name, e.role)) for e in self.entries]

    @property
    def enabled(self) -> bool:
        return bool(self._known)

    def lookup(self, presented: str) -> Principal | None:
        """The token's principal; every digest is compared (constant time overall)."""
        wanted = digest(presented)
        found = None
        for known, principal in self._known:
            if hmac.compare_digest(known, wanted):
                found = principal
        return found

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        seen = self._failures.get(address)
        if not seen:
            return 0.0
        while seen and now - seen[0] > self.window_s:
            seen.popleft()
        if len(seen) < self.max_failures:
            return 0.0
        return max(0.0, self.window_s - (now - seen[0]))

    def failed(self, address: str, now: float) -> None:
        if address not in self._failures and len(self._failures) > 10_000:
            self._failures.clear()  # bounded memory: a flood of addresses resets the counts
        self._failures.setdefault(address, deque(maxlen=self.max_failures)).append(now)


TOKENS = web.AppKey("tokens", Tokens)


def required_role(method: str, path: str, metrics: str) -> Role | None:
    """The role a request needs, or None when it needs none."""
    if (method, path) in OPEN or (method in ("GET", "HEAD") and path.startswith(PUBLIC_PREFIXES)):
        return None
    if path == "/metrics" and method in READS:
        return next((r for r in ROLES if r == metrics), None)
    if (method, path) in ADMIN_ONLY:
        return "admin"
    return "viewer" if method in READS else "operator"


def presented_token(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path == WS_PATH:
        for offered in ws_protocols(request):
            if offered.startswith(WS_BEARER) and len(offered) > len(WS_BEARER):
                return offered[len(WS_BEARER) :]
        return request.query.get("token") or None  # browsers cannot set headers on a WS
    return None


def ws_protocols(request: web.Request) -> list[str]:
    raw = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def ws_answer(request: web.Request) -> tuple[str, ...]:
    """The subprotocols the WebSocket handshake may answer with: `agentops` when offered (or
    nothing was); else the `bearer.<token>` one the client offered, echoed (a browser fails a
    handshake that answers none), so aiohttp never logs the client's list, token included,
    as a mismatch."""
    offered = ws_protocols(request)
    if not offered or WS_PROTOCOL in offered:
        return (WS_PROTOCOL,)
    return tuple(p for p in offered if p.startswith(WS_BEARER))[:1] or (WS_PROTOCOL,)


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tokens = request.app[TOKENS]
    if not tokens.enabled:
        request[PRINCIPAL] = Principal(ANONYMOUS, "admin")
        return await handler(request)
    needed = required_role(request.method, request.path, request.app[CONFIG].metrics_role)
    presented = presented_token(request)
    if needed is None:  # an open route: a token, good or stale, changes nothing
        known = tokens.lookup(presented) if presented is not None else None
        request[PRINCIPAL] = known or Principal(ANONYMOUS, "viewer")
        return await handler(request)
    now = time.monotonic()
    address = _address(request)
    wait = tokens.blocked_for(address, now)
    if wait > 0:
        raise ApiError(
            429, "too_many_requests", "too many failed authentication attempts; try later",
            headers={"Retry-After": str(max(1, round(wait)))},
        )  # fmt: skip
    principal = tokens.lookup(presented) if presented is not None else None
    if principal is None:
        tokens.failed(address, now)
        reason = "missing" if presented is None else "unknown"
        log.warning("auth.failed", reason=reason, address=address, path=request.path)
        raise ApiError(
            401, "unauthorized",
            "missing or invalid API token (send Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    if needed is not None and not principal.may(needed):
        log.warning(
            "auth.forbidden", actor=principal.name, role=principal.role, needed=needed,
            address=address, method=request.method, path=request.path,
        )  # fmt: skip
        raise ApiError(
            403, "forbidden", f"this needs the {needed} role; token {principal.name!r} is a "
            f"{principal.role}", {"needed": needed, "role": principal.role},
        )  # fmt: skip
    request[PRINCIPAL] = principal
    return await handler(request)


def actor(request: web.Request) -> str:
    """The name commands from this request carry (`anonymous` without auth)."""
    principal = request.get(PRINCIPAL)
    return principal.name if isinstance(principal, Principal) else ANONYMOUS


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable


def require_tokens_off_loopback(
    host: str, admin_token: str | None, entries: Iterable[object]
) -> None:
    """Listening beyond loopback with no token at all would open every route to the network."""
    if not is_loopback(host) and not admin_token and not list(entries):
        raise ConfigError(
            f"the edge would listen on {host} with no API token: set AGENTOPS_API_TOKEN (or "
            "[auth] tokens in the config file), or listen on 127.0.0.1"
        )
