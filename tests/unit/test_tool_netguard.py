"""api_call's SSRF guard: internal addresses in every spelling are refused, redirects to them
too; allow-listed local servers (a real aiohttp server on 127.0.0.1) still work."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentops.tools.errors import ToolError
from agentops.tools.handlers import ToolContext, run_tool
from agentops.tools.netguard import AddressRefused, Guard, forbidden
from agentops.tools.policy import ApiCallSettings, ToolSettings
from agentops.tools.registry import ApiCallArgs


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "100.100.100.200", "0.0.0.0", "224.0.0.1", "240.0.0.1",
        "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::",
        "64:ff9b::a9fe:a9fe", "2001:db8::1",
    ],
)  # fmt: skip
def test_internal_addresses_are_forbidden(address: str) -> None:
    """Loopback, private, link-local, CGNAT, metadata, multicast, reserved and embedded-v4 forms."""
    assert forbidden(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    """Public unicast addresses pass."""
    assert forbidden(ipaddress.ip_address(address)) is None


def test_allow_list_entries_match_ip_cidr_host_and_port() -> None:
    """Entries allow an IP, a CIDR, a host name, each optionally on one port only."""
    guard = Guard(["127.0.0.1:8080", "10.0.0.0/8", "svc.internal", "[::1]:9000"])
    loop, ten = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.9.9")
    assert guard.check("127.0.0.1", 8080, [loop]) == loop
    assert guard.check("ten", 1, [ten]) == ten
    assert guard.check("SVC.internal.", 443, [loop]) == loop
    assert guard.check("::1", 9000, [ipaddress.ip_address("::1")])
    with pytest.raises(AddressRefused, match="port 8081"):
        guard.check("127.0.0.1", 8081, [loop])
    with pytest.raises(AddressRefused, match="loopback"):
        guard.check("::1", 9001, [ipaddress.ip_address("::1")])


def test_every_resolved_address_is_checked() -> None:
    """A name resolving to one public and one private address is refused (rebinding bait)."""
    public, private = ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("10.0.0.1")
    with pytest.raises(AddressRefused, match=r"evil\.example \(resolves to 10\.0\.0\.1\)"):
        Guard().check("evil.example", 80, [public, private])


# ---- through api_call, against a real local server ----
@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    """A local server with redirects to places the guard must refuse."""
    target: dict[str, str] = {}

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(target[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/hop/{name}", hop)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    other = port + 1 if port < 65535 else port - 1
    target.update(
        metadata="http://169.254.169.254/latest/meta-data/",
        other_port=f"http://127.0.0.1:{other}/",
        decimal=f"http://2130706433:{other}/ok",
        hex_v6=f"http://[::ffff:7f00:1]:{other}/ok",
        loop=f"http://127.0.0.1:{port}/hop/loop",
    )
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


def ctx_allowing(tmp_path: Path, *allow: str) -> ToolContext:
    settings = ToolSettings(api_call=ApiCallSettings(allow=allow))
    return ToolContext(workspace=tmp_path / "ws", timeout_s=5, settings=settings)


async def refused(ctx: ToolContext, url: str, **kw: Any) -> ToolError:
    with pytest.raises(ToolError) as info:
        await run_tool("api_call", ApiCallArgs(url=url, **kw), ctx)
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/ok",
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://[::ffff:127.0.0.1]:{port}/ok",
        "http://2130706433:{port}/ok",
        "http://0x7f000001:{port}/ok",
        "http://127.1:{port}/ok",
        "http://0177.0.0.1:{port}/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0:{port}/ok",
    ],
)
async def test_internal_destinations_are_refused(
    tmp_path: Path, server: tuple[str, int], url: str
) -> None:
    """Without an allow-list entry, every spelling of an internal address is refused."""
    err = await refused(ctx_allowing(tmp_path), url.format(port=server[1]))
    assert err.code in ("address_not_allowed", "invalid_url"), err.message
    if err.code == "address_not_allowed":
        assert "allow-lists" in err.message


async def test_allow_listed_server_is_reached(tmp_path: Path, server: tuple[str, int]) -> None:
    """An allow-listed host:port is reached; the same host on another port is not."""
    host, port = server
    ctx = ctx_allowing(tmp_path, f"{host}:{port}")
    result = await run_tool("api_call", ApiCallArgs(url=f"http://{host}:{port}/ok"), ctx)
    assert (result["status"], result["body"]) == (200, "fine")


@pytest.mark.parametrize("name", ["metadata", "other_port", "decimal", "hex_v6"])
async def test_redirects_to_refused_places_are_refused(
    tmp_path: Path, server: tuple[str, int], name: str
) -> None:
    """A redirect to metadata, another loopback port or numeric loopback is checked and refused."""
    # The redirect comes from an allowed server; its target is checked like the first request.
    host, port = server
    err = await refused(
        ctx_allowing(tmp_path, f"{host}:{port}"), f"http://{host}:{port}/hop/{name}"
    )
    assert err.code == "address_not_allowed", err.message


async def test_redirect_loops_stop_at_the_limit(tmp_path: Path, server: tuple[str, int]) -> None:
    """A redirect loop ends after max_redirects with an error the model can read."""
    host, port = server
    err = await refused(ctx_allowing(tmp_path, f"{host}:{port}"), f"http://{host}:{port}/hop/loop")
    assert err.code == "http_error"
    assert "redirected more than 5 times" in err.message


async def test_proxy_variables_are_ignored(
    tmp_path: Path, server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY in the executor's environment cannot route around the guard."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.255.255.1:3128")
    host, port = server
    ctx = ctx_allowing(tmp_path, f"{host}:{port}")
    result = await run_tool("api_call", ApiCallArgs(url=f"http://{host}:{port}/ok"), ctx)
    assert result["status"] == 200
