"""The edge process: HTTP API, WebSocket event fan-out and /metrics, on aiohttp.

It only wires: the shared lifecycle (`run_process`) connects, declares streams and buckets
and registers the micro service; `setup` starts the aiohttp site inside that running loop and
registers its cleanup as a shutdown hook (open WebSockets get 1001, then the runner stops).
"""

from __future__ import annotations

import sys

import structlog
from aiohttp import web

from agentops.bus.service import Runtime, run_process
from agentops.config import load_settings
from agentops.edge.app import config_from_settings, create_app
from agentops.edge.auth import require_tokens_off_loopback
from agentops.protocol.errors import ConfigError

log = structlog.get_logger(__name__)
PROCESS = "edge"


async def setup(rt: Runtime) -> None:
    app = create_app(rt.nc, rt.js, rt.buckets, config_from_settings(rt.settings))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, rt.settings.host, rt.settings.port)
    try:
        await site.start()
    except BaseException:  # e.g. the port taken: stop what the app started (its watches,
        await runner.cleanup()  # bounded), or the exit waits on their NATS requests
        raise
    log.info("edge.listening", url=rt.settings.base_url)

    async def stop() -> None:
        await runner.cleanup()

    rt.on_shutdown.append(stop)


def main() -> None:
    # Before connecting: an edge that would listen beyond loopback with no token never starts.
    try:
        settings = load_settings()
        config = config_from_settings(settings)
        require_tokens_off_loopback(settings.host, config.api_token, config.tokens)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    run_process(PROCESS, "AgentOps HTTP/WebSocket edge", setup)


if __name__ == "__main__":
    main()
