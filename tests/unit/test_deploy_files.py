"""The deployment files (Dockerfile, deploy/compose, deploy/systemd, deploy/kubernetes) checked
without a container runtime: they parse, run only processes of the process table with
commands `agentops run` accepts, hand each process its own credential, and the NATS configs
they use come from `agentops init` (valid for the real nats-server)."""

from __future__ import annotations

import argparse
import functools
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentops import credentials, natsconf
from agentops.cli import build_parser, main, shipped_types
from agentops.config import ENV_VARS
from agentops.edge.auth import OPEN
from agentops.llm import settings as llm_settings
from agentops.natsserver import find_binary
from agentops.processes import service_entry
from agentops.protocol import subjects

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
PROCESSES = set(subjects.all_processes(shipped_types()))
IMAGE_DATA_DIR = "/var/lib/agentops"


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def run_command(command: list[str]) -> str:
    """The process an `agentops run P` command line starts, checked by the CLI's own parser
    and process table (`agent --type T` included)."""
    assert command[:2] == ["agentops", "run"], command
    args = parser().parse_args(command[1:])
    process = args.process if args.agent_type is None else f"agent-{args.agent_type}"
    service_entry(process, shipped_types())  # ConfigError for a process that does not exist
    return str(process)


def process_of(credential: str) -> str:
    return credential.split(natsconf.REPLICA, 1)[0]


# ---- Dockerfile ----


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_and_runs_as_a_user_of_its_own() -> None:
    """Two stages (the runtime copies the build's venv), and the runtime's USER is not root."""
    steps = dockerfile()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2
    runtime = steps[stages[-1] :]
    assert any(w == "COPY" and a.startswith("--from=build ") for w, a in runtime)
    users = [a for w, a in runtime if w == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and not user.startswith("0")
    creates_user = " ".join(a for w, a in runtime if w == "RUN")
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", creates_user)


def test_dockerfile_has_the_sandbox_and_git_and_checks_the_edges_health() -> None:
    """bubblewrap, util-linux and git are installed in the runtime stage; HEALTHCHECK asks the
    edge's /health on its port; the default command is a process `agentops run` knows."""
    steps = dockerfile()
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][-1] :]
    installs = " ".join(a for w, a in runtime if w == "RUN" and "apt-get install" in a).split()
    for package in ("bubblewrap", "util-linux", "git"):
        assert package in installs
    (check,) = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert re.search(r"CMD curl -f\w* .*http://127\.0\.0\.1:\$\{AGENTOPS_PORT\}/health", check)
    assert ("GET", "/health") in OPEN  # the check needs no token
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "AGENTOPS_PORT=8000" in env and f"AGENTOPS_DATA_DIR={IMAGE_DATA_DIR}" in env
    (cmd,) = [a for w, a in runtime if w == "CMD"]
    assert run_command(yaml.safe_load(cmd)) == "edge"
    assert [a for w, a in runtime if w == "EXPOSE"] == ["8000"]


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """The context is everything excluded but the files the build stage COPYs (no data dir,
    credentials, venv or generated/ can reach an image)."""
    lines = [
        x.strip()
        for x in (ROOT / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for word, args in dockerfile():
        if word == "COPY" and not args.startswith("--from"):
            copied.update(p.rstrip("/").removeprefix("./") for p in args.split()[:-1])
    assert copied == allowed
    assert all((ROOT / p).exists() for p in copied)


# ---- compose ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def process_services(compose: dict[str, Any]) -> dict[str, str]:
    """service name -> the AgentOps process it runs."""
    return {
        name: run_command(svc["command"])
        for name, svc in compose["services"].items()
        if svc.get("command", [None])[0] == "agentops" and svc["command"][1] == "run"
    }


def init_args(compose: dict[str, Any]) -> Any:
    command = compose["services"]["init"]["command"]
    assert command[:2] == ["agentops", "init"]
    return parser().parse_args(command[1:])


def test_compose_runs_every_process_of_the_table_with_replicas(compose: dict[str, Any]) -> None:
    """The services' processes are exactly the process table; agents, the executor, the
    gateway and the orchestrator run 2 replicas, the edge one (its port is published)."""
    runs = process_services(compose)
    assert set(runs.values()) == PROCESSES
    count = {p: list(runs.values()).count(p) for p in PROCESSES}
    assert count["edge"] == 1
    assert all(n == 2 for p, n in count.items() if p != "edge"), count
    others = set(compose["services"]) - set(runs)
    assert others == {"init", "nats-1", "nats-2", "nats-3"}


def test_compose_gives_each_container_its_own_generated_credential(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Each process container mounts one seed, the one `init` writes for it (`P`, `P@2`), as
    the file NATS_NKEY_SEED names; no two containers share one; only the orchestrators
    declare streams."""
    args = init_args(compose)
    assert main(["init", "--data-dir", str(tmp_path), "--replicas", str(args.replicas)]) == 0
    written = set(credentials.existing(tmp_path))
    files = {
        name: secret["file"] for name, secret in compose["secrets"].items()
    }  # compose secret -> host file
    used = []
    for service, process in process_services(compose).items():
        svc = compose["services"][service]
        (secret,) = svc["secrets"]
        assert svc["environment"]["NATS_NKEY_SEED"] == f"/run/secrets/{secret['target']}"
        path = files[secret["source"]]
        assert path.startswith("./generated/credentials/") and path.endswith(credentials.SUFFIX)
        credential = Path(path).name.removesuffix(credentials.SUFFIX)
        assert credential in written and process_of(credential) == process
        used.append(credential)
        declares = svc["environment"]["AGENTOPS_JETSTREAM_DECLARE"]
        assert declares == ("true" if process == "orchestrator" else "false")
    assert len(used) == len(set(used))


def test_compose_nats_cluster_comes_from_the_generator(compose: dict[str, Any]) -> None:
    """Three nodes, each a generated node-<i>.conf and a volume of its own; `init` makes as
    many nodes as there are, into the directory they mount; clients list every node."""
    args = init_args(compose)
    nodes = sorted(n for n in compose["services"] if n.startswith("nats-"))
    assert len(nodes) == args.cluster_nodes == 3
    assert args.cluster_hosts is None  # the default names nats-1..nats-N are the services
    out = Path(args.cluster_out).relative_to("/out")
    volumes = set()
    for i, name in enumerate(nodes, 1):
        svc = compose["services"][name]
        assert svc["hostname"] == name == f"nats-{i}"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        config_dir = {h: c for h, c in mounts.items() if c == "/etc/agentops-nats"}
        assert list(config_dir) == [f"./generated/{out}"]
        assert svc["command"] == ["-c", f"/etc/agentops-nats/{natsconf.deploy_node_file(i)}"]
        data = [h for h, c in mounts.items() if c == "/data"]
        assert len(data) == 1 and data[0] in compose["volumes"]
        volumes.add(data[0])
    assert len(volumes) == 3
    assert "./generated:/out" in compose["services"]["init"]["volumes"]
    urls = {
        svc["environment"]["NATS_URL"]
        for svc in compose["services"].values()
        if "environment" in svc
    }
    assert urls == {",".join(f"nats://{n}:{natsconf.DEPLOY_CLIENT_PORT}" for n in nodes)}


def test_compose_executors_share_workspaces_and_may_run_bubblewrap(compose: dict[str, Any]) -> None:
    """Every executor replica mounts the same volume as its data dir and gets the security
    options bubblewrap needs; no other service gets them; only the edge keeps the health check."""
    for name, process in process_services(compose).items():
        svc = compose["services"][name]
        opts = set(svc["security_opt"])
        assert "no-new-privileges:true" in opts and svc["cap_drop"] == ["ALL"]
        assert svc["read_only"] is True
        loosened = {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}
        if process == "tool-executor":
            assert loosened <= opts
            assert svc["volumes"] == [f"agentops-data:{IMAGE_DATA_DIR}"]
        else:
            assert not loosened & opts and "volumes" not in svc
        assert ("healthcheck" not in svc) == (process == "edge")
        if process != "edge":
            assert svc["healthcheck"] == {"disable": True}
    edge = [compose["services"][n] for n, p in process_services(compose).items() if p == "edge"]
    assert edge[0]["ports"] == ["127.0.0.1:8000:8000"]
    assert "AGENTOPS_API_TOKEN" in edge[0]["environment"]


# ---- the generator the cluster's configs come from ----


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`agentops init --replicas 2 --cluster-nodes 3` as compose's init runs it."""
    base = tmp_path_factory.mktemp("cluster")
    argv = ["init", "--data-dir", str(base / "data"), "--replicas", "2"]
    argv += ["--cluster-nodes", "3", "--cluster-out", str(base / "cluster")]
    assert main(argv) == 0
    yield base


def test_generated_node_configs_are_valid_for_nats_server(cluster: Path) -> None:
    """nats-server -t accepts each node's config with its includes (it checks every nkey)."""
    for i in (1, 2, 3):
        node = cluster / "cluster" / natsconf.deploy_node_file(i)
        done = subprocess.run(
            [find_binary(), "-c", str(node), "-t"], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert f'server_name: "nats-{i}"' in node.read_text()


def test_generated_users_are_every_credential_and_no_secret(cluster: Path) -> None:
    """The users file names every credential's public key (replicas included) and no seed;
    the routes file is 0600, routes to every node, and keeps its password across runs."""
    found = credentials.existing(cluster / "data")
    assert {"edge@2", "tool-executor@2", "agent-tech_lead@2"} <= set(found)
    auth = (cluster / "cluster" / natsconf.AUTH_FILE).read_text()
    for c in found.values():
        assert c.public_key in auth and c.seed.decode() not in auth
    routes = cluster / "cluster" / natsconf.ROUTES_FILE
    assert stat.S_IMODE(routes.stat().st_mode) == 0o600
    text = routes.read_text()
    assert all(f"@nats-{i}:{natsconf.DEPLOY_ROUTE_PORT}" in text for i in (1, 2, 3))
    argv = ["init", "--data-dir", str(cluster / "data"), "--cluster-nodes", "3"]
    assert main([*argv, "--cluster-out", str(cluster / "cluster")]) == 0
    assert routes.read_text() == text
    assert main([*argv, "--cluster-out", str(cluster / "other")]) == 0
    assert (cluster / "other" / natsconf.ROUTES_FILE).read_text() != text  # a new password


def test_init_refuses_mismatched_cluster_hosts(tmp_path: Path, capsys: Any) -> None:
    """--cluster-hosts must name as many different hosts as --cluster-nodes (exit 2)."""
    argv = ["init", "--data-dir", str(tmp_path), "--cluster-nodes", "3", "--cluster-out"]
    assert main([*argv, str(tmp_path / "c"), "--cluster-hosts", "a,b"]) == 2
    assert "--cluster-hosts" in capsys.readouterr().err


# ---- systemd ----


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> every value (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and key.strip() == key, f"{path.name}: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "CapabilityBoundingSet": "", "DynamicUser": "yes",
    "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
}  # fmt: skip


def test_systemd_units_parse_and_are_hardened() -> None:
    """Both units have [Unit], [Service] and [Install], start an absolute path, and set the
    hardening options; the process template leaves namespaces and /proc to bubblewrap, the
    NATS node's takes those too."""
    for name in ("agentops@.service", "agentops-nats@.service"):
        sections = unit(SYSTEMD / name)
        assert {"Unit", "Service", "Install"} <= set(sections)
        service = sections["Service"]
        assert service["ExecStart"][0].startswith("/")
        for key, value in HARDENING.items():
            assert service.get(key) == [value], (name, key)
    process = unit(SYSTEMD / "agentops@.service")["Service"]
    # bwrap: namespaces, mounts, and a procfs of its own (nothing mounted over /proc)
    loosened = {"RestrictNamespaces", "PrivateUsers", "SystemCallFilter", "ProtectProc"}
    assert not (loosened | {"ProtectKernelTunables", "ProtectKernelLogs"}) & set(process)
    nats_only = unit(SYSTEMD / "agentops-nats@.service")["Service"]
    assert {*loosened, "ProtectKernelTunables", "MemoryDenyWriteExecute"} <= set(nats_only)
    assert "AF_NETLINK" in process["RestrictAddressFamilies"][0].split()
    assert process["LoadCredential"] == ["nats-nkey:/etc/agentops/credentials/%i.nk"]
    assert process["ExecStart"] == ["/usr/local/libexec/agentops-run %i"]
    nats = unit(SYSTEMD / "agentops-nats@.service")["Service"]
    cmd = shlex.split(nats["ExecStart"][0])
    assert Path(cmd[0]).name == "nats-server"
    assert cmd[1:] == ["-c", "%d/node.conf"]
    # the node's config and the two files it includes, under the names the includes use
    loaded = dict(c.split(":", 1) for c in nats["LoadCredential"])
    folder = "/etc/agentops/cluster"
    assert loaded == {
        "node.conf": f"{folder}/node-%i.conf",
        natsconf.AUTH_FILE: f"{folder}/{natsconf.AUTH_FILE}",
        natsconf.ROUTES_FILE: f"{folder}/{natsconf.ROUTES_FILE}",
    }
    included = re.findall(r"include \./(\S+)", natsconf.cluster_node_config("n"))
    assert sorted(included) == sorted([natsconf.AUTH_FILE, natsconf.ROUTES_FILE])
    assert natsconf.deploy_node_file(2) == "node-2.conf"


@pytest.mark.parametrize(
    ("instance", "process", "declare"),
    [
        ("edge", "edge", "false"),
        ("agent-backend_developer@2", "agent-backend_developer", "false"),
        ("orchestrator@2", "orchestrator", None),
        ("tool-executor", "tool-executor", "false"),
    ],
)
def test_systemd_instance_runs_its_process_with_its_credential(
    tmp_path: Path, instance: str, process: str, declare: str | None
) -> None:
    """agentops-run (ExecStart) runs `agentops run <process>` for `<process>[@n]`, with the
    credential systemd handed over and stream declaration left to the orchestrator."""
    stub = tmp_path / "agentops"
    stub.write_text('#!/bin/sh\necho "$@"\necho "seed=$NATS_NKEY_SEED"\n'
                    'echo "declare=${AGENTOPS_JETSTREAM_DECLARE-unset}"\n')  # fmt: skip
    stub.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "AGENTOPS_BIN": str(stub), "CREDENTIALS_DIRECTORY": "/c"}
    done = subprocess.run(
        ["sh", str(SYSTEMD / "agentops-run"), instance], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    args, seed, declared = done.stdout.splitlines()
    assert run_command(["agentops", *args.split()]) == process
    assert seed == "seed=/c/nats-nkey"
    assert declared == f"declare={declare or 'unset'}"
    assert (SYSTEMD / "agentops-run").stat().st_mode & stat.S_IXUSR


def test_systemd_env_example_sets_only_known_variables() -> None:
    """Every variable in the env file example (commented ones too) is one AgentOps reads."""
    known = set(ENV_VARS.values())
    providers = Path(llm_settings.__file__).read_text()
    text = (SYSTEMD / "agentops.env.example").read_text()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE)
    assert "NATS_URL" in names and "AGENTOPS_API_TOKEN" in names
    for name in names:
        assert name in known or f'"{name}"' in providers, name


# ---- kubernetes ----


def deployments() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / "agentops.yaml").read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def test_kubernetes_deployments_run_every_process_with_its_own_secret() -> None:
    """A Deployment per process of the table (2 replicas each), running `agentops run P`,
    mounting only `agentops-nats-P` where NATS_NKEY_SEED points; the README creates each."""
    docs = [d for d in yaml.safe_load_all((K8S / "agentops.yaml").read_text()) if d]
    env = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    seed = Path(env["NATS_NKEY_SEED"])
    readme = (K8S / "README.md").read_text()
    seen = set()
    for deployment in deployments().values():
        assert deployment["spec"]["replicas"] == 2
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        process = run_command(container["command"])
        seen.add(process)
        secrets = [v for v in pod["volumes"] if "secret" in v]
        assert [s["secret"]["secretName"] for s in secrets] == [f"agentops-nats-{process}"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == secrets[0]["name"])
        assert Path(mount["mountPath"]) == seed.parent
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert seen == PROCESSES
    (edge,) = deployments()["agentops-edge"]["spec"]["template"]["spec"]["containers"]
    assert ("GET", edge["readinessProbe"]["httpGet"]["path"]) in OPEN  # no token needed
    assert "kubectl apply -k deploy/kubernetes" in readme


def test_kubernetes_secrets_are_made_from_the_seeds_init_writes(tmp_path: Path) -> None:
    """kustomization.yaml generates `agentops-nats-P` for every process from the seed file
    `agentops init` writes for P, under the key the pods read (NATS_NKEY_SEED)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["agentops.yaml"]
    docs = [d for d in yaml.safe_load_all((K8S / "agentops.yaml").read_text()) if d]
    seed = Path(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["NATS_NKEY_SEED"])
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    written = set(credentials.existing(tmp_path))
    made = {}
    for generator in kustomization["secretGenerator"]:
        (entry,) = generator["files"]
        key, _, path = entry.partition("=")
        assert key == seed.name and path.startswith("generated/credentials/")
        made[generator["name"]] = Path(path).name.removesuffix(credentials.SUFFIX)
    assert made == {f"agentops-nats-{p}": p for p in PROCESSES}
    assert set(made.values()) <= written


def test_kubernetes_nats_values_make_a_3_node_jetstream_cluster_with_our_users() -> None:
    """The official chart's values: cluster of 3 with route auth (password not in the file),
    JetStream on file storage, and the generated users file included."""
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    cluster = values["config"]["cluster"]
    assert cluster["enabled"] is True and cluster["replicas"] == 3
    assert cluster["routeURLs"]["user"] and "password" not in cluster["routeURLs"]
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert values["config"]["merge"]["$include"] == f"./{natsconf.AUTH_FILE}"
    text = (K8S / "nats-values.yaml").read_text()
    assert f"configMap.merge.data.{natsconf.AUTH_FILE.replace('.', chr(92) + '.')}=" in text


# ---- ports ----


def documented_ports() -> set[int]:
    """The ports table of AGENT_OPS_DEPLOY.md ("| 8000 | ...")."""
    text = (ROOT / "AGENT_OPS_DEPLOY.md").read_text()
    section = text.split("### Ports", 1)[1].split("\n#", 1)[0]
    return {int(p) for p in re.findall(r"^\| `?(\d{2,5})`? \|", section, re.MULTILINE)}


def test_deploy_files_use_only_documented_ports() -> None:
    """Every port number in the deployment files and the generator's defaults is in the
    deployment guide's table."""
    ports = documented_ports()
    assert {8000, 4222, 6222, 8222} <= ports
    files = [ROOT / "Dockerfile", COMPOSE, *SYSTEMD.iterdir(), *K8S.iterdir()]
    files = [f for f in files if f.is_file()]  # not an operator's generated/
    files += [p for p in (DEPLOY / "hybrid").iterdir() if p.suffix == ".conf"]
    pattern = re.compile(r"(?::|port:\s*|EXPOSE\s+|PORT=|containerPort:\s*)(\d{2,5})\b")
    found = {int(m) for f in files for m in pattern.findall(f.read_text())}
    assert found and found <= ports, found - ports
    defaults = {
        natsconf.DEPLOY_CLIENT_PORT,
        natsconf.DEPLOY_ROUTE_PORT,
        natsconf.DEPLOY_MONITOR_PORT,
    }
    assert defaults <= ports
