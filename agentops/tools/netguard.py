"""api_call's guard against server-side request forgery: where a request may connect.

Rules:
- Every TCP connection api_call makes goes through `GuardedBackend.connect_tcp`: the host is
  resolved once, *every* address it resolves to is checked, and the socket connects to a
  checked address. The request keeps its URL's host, so the Host header, TLS SNI and
  certificate checks are for the name while the connection goes to the address that passed.
  A second resolution (DNS rebinding) never happens, and a redirect is checked like any
  other connection because it needs one.
- Refused unless allow-listed: loopback, private, link-local, CGNAT, multicast, reserved,
  unspecified and any other non-global address, cloud metadata addresses, and IPv6 forms that
  carry an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64). Numeric host spellings
  (`2130706433`, `0x7f000001`, `127.1`) resolve to the same address and are caught the same.
- The allow-list (`[tools.api_call] allow`) holds IPs, CIDRs and host names, each optionally
  with `:port` (then only that port is allowed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore

from agentops.tools.policy import parse_allow_entry

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A connection the guard will not make; the message is written for the model."""


def forbidden(ip: IPAddress) -> str | None:
    """Why a connection to `ip` is refused by default, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = forbidden(inner)
            return f"{why}, inside the IPv6 address {ip}" if why else None
    for test, what in (
        (ip in METADATA, "a cloud metadata address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a carrier-grade NAT address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    ):
        if test:
            return what
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # NAT64, or ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class Guard:
    """The allow-list, and the check of one resolved connection against it."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        self._hosts: list[tuple[str, int | None]] = []
        for entry in allow:
            kind, value, port = parse_allow_entry(entry)
            if kind == "net":
                self._nets.append((ipaddress.ip_network(value), port))
            else:
                self._hosts.append((value, port))

    def allowed(self, host: str, ip: IPAddress, port: int) -> bool:
        name = host.lower().rstrip(".")
        for net, p in self._nets:
            if ip.version == net.version and ip in net and p in (None, port):
                return True
        return any(h == name and p in (None, port) for h, p in self._hosts)

    def check(self, host: str, port: int, addresses: list[IPAddress]) -> IPAddress:
        """The address to connect to; `AddressRefused` if any resolved address is refused."""
        if not addresses:
            raise AddressRefused(f"{host} did not resolve to any address")
        for ip in addresses:
            why = forbidden(ip)
            if (why is not None or ip.is_multicast) and not self.allowed(host, ip, port):
                shown = host if host == str(ip) else f"{host} (resolves to {ip})"
                raise AddressRefused(
                    f"refused to connect to {shown} port {port}: {why or 'a multicast address'}. "
                    "api_call reaches public addresses only, unless the operator allow-lists "
                    "the destination in [tools.api_call] allow"
                )
        return addresses[0]


def literal_address(host: str) -> IPAddress | None:
    """The address `host` spells (`[v6]` and zone ids accepted), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    """The distinct addresses of `getaddrinfo` results, in resolver order."""
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if ip not in found:
            found.append(ip)
    return found


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (numeric spellings included), in resolver order."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
    return addresses(infos)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard between resolving and connecting."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = self._guard.check(host, port, await resolve(host, port))
        return await self._inner.connect_tcp(
            str(address), port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("api_call does not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
