"""The edge's aiohttp application: routes, middlewares and typed app state, built by one factory.

Rules:
- `create_app(nc, js, buckets, config)` takes everything it needs, so a test builds the app
  against its own nats-server and drives it with aiohttp's test client; the service module
  only adds the runner and the site.
- Middlewares, outermost first: metrics (sees every final status) → errors (every failure
  becomes the JSON error shape) → auth (bearer token and its role, `edge/auth.py`).
- Bodies over `client_max_size` (1 MiB) are refused with 413 when read; connections are
  bounded in time and aiohttp's own refusals are JSON too (`edge/server.py`).
- Open WebSockets are closed with 1001 on shutdown.
- Every handler declares its operation (`@operation`, `edge/apispec.py`): `/openapi.json` is
  built from this table, and fails on a route that does not.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from agentops.agents.loader import load_agent_specs
from agentops.config import Settings, load_auth, load_workspaces
from agentops.edge import agents, dashboard, openapi, tasks, workflows, workspaces, ws
from agentops.edge.auth import TOKENS, Tokens, auth_middleware
from agentops.edge.context import BUS, CONFIG, Bus, EdgeConfig
from agentops.edge.errors import error_middleware
from agentops.edge.health import DLQ_START, health, remember_dlq_start
from agentops.edge.index import INDEXES, Indexes, close_indexes, start_indexes
from agentops.edge.liveness import SEEN
from agentops.edge.metrics import metrics, metrics_middleware
from agentops.edge.metrics import setup as setup_metrics
from agentops.edge.server import Guard
from agentops.edge.server import install as install_guards


def config_from_settings(settings: Settings) -> EdgeConfig:
    auth = load_auth(settings)
    return EdgeConfig(
        api_token=settings.api_token,
        tokens=tuple(auth.tokens),
        metrics_role=auth.metrics,
        workspaces=load_workspaces(settings),
        agent_specs=load_agent_specs(settings),
        jetstream_domain=settings.jetstream_domain,
    )


def create_app(
    nc: Client,
    js: JetStreamContext,
    buckets: Mapping[str, KeyValue],
    config: EdgeConfig | None = None,
) -> web.Application:
    config = config or EdgeConfig()
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=config.client_max_size,
    )
    install_guards(app, Guard(config.idle_timeout_s, config.body_timeout_s))
    app[BUS] = Bus(nc=nc, js=js, buckets=buckets)
    app[CONFIG] = config
    app[INDEXES] = Indexes.of(js, buckets)
    app[TOKENS] = Tokens(
        config.api_token, config.tokens, config.auth_max_failures, config.auth_window_s
    )
    setup_metrics(app)
    ws.setup(app)  # the events feed and the open sockets (closed with 1001 at shutdown)
    app[DLQ_START] = []
    app[SEEN] = {}
    openapi.setup(app)
    app.on_startup.append(remember_dlq_start)
    app.on_startup.append(start_indexes)
    app.on_cleanup.append(close_indexes)
    app.router.add_routes(
        [
            web.get("/health", health),
            web.get("/metrics", metrics),
            web.get("/agent-types", agents.agent_types),
            web.post("/tasks", tasks.create_task),
            web.get("/tasks", tasks.list_tasks),
            web.get("/tasks/{task_id}", tasks.get_task_route),
            web.post("/tasks/{task_id}/cancel", tasks.cancel_task),
            web.delete("/tasks/{task_id}", tasks.delete_task),
            web.post("/tasks/{task_id}/messages", tasks.post_message),
            web.get("/tasks/{task_id}/files", workspaces.list_files),
            web.get("/tasks/{task_id}/files/{path:.+}", workspaces.get_file),
            web.get("/tasks/{task_id}/diff", workspaces.get_diff),
            web.get("/tasks/{task_id}/archive", workspaces.get_archive),
            web.post("/uploads", workspaces.upload),
            web.post("/workflows", workflows.create_workflow),
            web.get("/workflows", workflows.list_workflows),
            web.get("/workflows/{workflow_id}", workflows.get_workflow),
            web.post("/workflows/{workflow_id}/cancel", workflows.cancel_workflow),
            web.post("/workflows/{workflow_id}/human-response", workflows.answer_gate),
            web.get("/agents", agents.list_agents),
            web.get("/agents/{agent_id}/status", agents.get_agent_status),
            web.get("/agents/{agent_id}/state", agents.get_agent_state),
            web.get("/agents/{agent_id}/thread", agents.get_agent_thread),
            web.post("/agents/{agent_id}/pause", agents.pause_agent),
            web.post("/agents/{agent_id}/resume", agents.resume_agent),
            web.post("/agents/{agent_id}/human-response", agents.human_response),
            web.get("/ws", ws.websocket),
        ]
    )
    # ---- the dashboard: its page and static assets (edge/dashboard.py, files in edge/ui/) ----
    app.router.add_routes(dashboard.routes())
    # ---- the API's own description: /openapi.json and the /docs page (edge/openapi.py) ----
    app.router.add_routes(openapi.routes())
    return app
