"""The deployment files of docs/deploy/: what can be checked without a container runtime.

This machine has the docker client but no daemon (and no compose plugin, no cluster), so
no image is built here. What is checked instead: the Dockerfile's base, user, health
check and entry point; the Kubernetes manifests and the systemd unit parse, and their
node arguments are valid ``tracker-zmq node`` arguments that agree with the ports, probes
and service names around them; and the compose service's node command, with the image's
entry point in front, runs as three plain processes on 127.0.0.1 (the wildcard binds
replaced by loopback with free ports, the service name ``tracker`` by ``localhost`` and
the first node's port, and ``--broadcast-period 0.2`` added so the test is quick): they
find each other through ``--peer-dns``, turn ready, answer the image's HEALTHCHECK
command, and a node stopped with SIGTERM (a scale-down) leaves no replica behind.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.proc import ROOT, NodeError, Process, free_port, spawner, wait_until
from tracker_zmq.cli import _parser
from tracker_zmq.client import Client

DEPLOY = ROOT / "docs" / "deploy"
READY_TIMEOUT = 30.0


# ------------------------------------------------------------------ parsing


def dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions: keyword -> the argument text of each occurrence."""
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out: dict[str, list[str]] = {}
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def exec_form(text: str) -> list[str]:
    """A JSON (exec form) argument list, which ENTRYPOINT and CMD must use."""
    value = json.loads(text)
    assert isinstance(value, list), text
    assert all(isinstance(v, str) for v in value), text
    return value


def node_args(argv: list[str]) -> Any:
    """``argv`` (after ``tracker-zmq``) parsed by the real command line parser."""
    assert argv[0] == "node", argv
    return _parser().parse_args(argv)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix("tcp://").rpartition(":")
    return host, int(port)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def manifests() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())
    return [doc for doc in docs if doc]


# ------------------------------------------------------------------ the image


def test_the_image_is_slim_runs_as_a_user_and_checks_healthz() -> None:
    d = dockerfile()
    (base,) = d["FROM"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    (user,) = d["USER"]
    assert user.split(":")[0] not in ("root", "0"), user
    (entry,) = d["ENTRYPOINT"]
    assert exec_form(entry) == ["tracker-zmq", "node"]
    (cmd,) = d["CMD"]
    args = node_args(["node", *exec_form(cmd)])
    assert args.name is None  # named <hostname>-<pid>-<random>: permdown on shutdown
    assert host_port(args.bind) == ("0.0.0.0", 4000)
    assert host_port(args.client_bind) == ("0.0.0.0", 4001)
    metrics_host, metrics_port = args.metrics_bind
    assert (metrics_host, metrics_port) == ("0.0.0.0", 9100)
    assert set(" ".join(d["EXPOSE"]).split()) == {"4000", "4001", "9100"}
    (check,) = d["HEALTHCHECK"]
    command = exec_form(check.partition("CMD ")[2])
    assert f"http://127.0.0.1:{metrics_port}/healthz" in command[-1]
    assert d["STOPSIGNAL"] == ["SIGTERM"]
    # the build context is the packages' sources, which the image installs
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1] == "!packages/"
    install = " ".join(d["RUN"])
    for package in ("crdt-state", "pubsub-zmq", "tracker-zmq[web]"):
        assert f"/tmp/packages/{package}" in install


def test_the_compose_service_is_three_nodes_seeded_by_its_own_name() -> None:
    service = compose()["services"]["tracker"]
    assert service["deploy"]["replicas"] == 3
    assert service["build"] == {"context": "../..", "dockerfile": "docs/deploy/Dockerfile"}
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    (entry,) = dockerfile()["ENTRYPOINT"]
    args = node_args([*exec_form(entry)[1:], *service["command"]])
    assert args.name is None
    assert args.peer_dns == ["tracker:4000"]  # the service's own name and cluster port
    assert host_port(args.bind) == ("0.0.0.0", 4000)
    assert service["stop_signal"] == "SIGTERM"


def test_the_kubernetes_manifests_agree_with_each_other() -> None:
    docs = manifests()
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert kinds == {
        ("Service", "tracker-peers"),
        ("Service", "tracker"),
        ("Deployment", "tracker"),
        ("PodDisruptionBudget", "tracker"),
    }
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    peers = by_name[("Service", "tracker-peers")]["spec"]
    assert peers["clusterIP"] == "None"
    assert peers["publishNotReadyAddresses"] is True
    deployment = by_name[("Deployment", "tracker")]
    pod = deployment["spec"]["template"]
    assert peers["selector"] == pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 20
    (container,) = spec["containers"]
    assert container["image"] == compose()["services"]["tracker"]["image"]
    env = {e["name"] for e in container["env"]}
    used = {m for arg in container["args"] for m in re.findall(r"\$\((\w+)\)", arg)}
    assert used <= env, used - env
    args = node_args(["node", *(re.sub(r"\$\(\w+\)", "x", a) for a in container["args"])])
    assert args.permdown_on_shutdown
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert host_port(args.bind)[1] == ports["cluster"]
    assert host_port(args.client_bind)[1] == ports["clients"]
    assert args.metrics_bind[1] == ports["metrics"]
    (peer_dns,) = args.peer_dns
    assert peer_dns == f"tracker-peers:{peers['ports'][0]['port']}"
    assert peers["ports"][0]["targetPort"] == "cluster"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    clients = by_name[("Service", "tracker")]["spec"]
    assert clients["ports"][0]["targetPort"] == "clients"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_the_systemd_unit_runs_a_valid_node_command() -> None:
    text = (DEPLOY / "tracker-zmq.service").read_text()
    joined = re.sub(r"\\\n", " ", text)
    settings = dict(
        line.split("=", 1) for line in joined.splitlines() if "=" in line and line[0] != "#"
    )
    argv = shlex.split(settings["ExecStart"].replace("%H", "host-1"))
    assert argv[0].endswith("/tracker-zmq")
    args = node_args(argv[1:])
    assert args.name == "host-1"
    assert args.peer_dns == ["tracker.internal:4000"]
    assert args.permdown_on_shutdown
    assert settings["KillSignal"] == "SIGTERM"


# ------------------------------------------------------------------ the compose nodes


def loopback(argv: list[str], seed_port: int | None) -> tuple[list[str], dict[str, int]]:
    """One node's command on 127.0.0.1 with free ports; ``tracker`` is ``localhost``.

    Every node's DNS seed is the first node's cluster port (the first node's own).
    """
    ports = {"cluster": free_port(), "clients": free_port(), "metrics": free_port()}
    seed = ports["cluster"] if seed_port is None else seed_port
    out: list[str] = []
    for arg in argv:
        arg = arg.replace("tcp://0.0.0.0:4000", f"tcp://127.0.0.1:{ports['cluster']}")
        arg = arg.replace("tcp://0.0.0.0:4001", f"tcp://127.0.0.1:{ports['clients']}")
        arg = arg.replace("0.0.0.0:9100", f"127.0.0.1:{ports['metrics']}")
        arg = arg.replace("tracker:4000", f"localhost:{seed}")
        assert "0.0.0.0" not in arg, arg
        out.append(arg)
    return out, ports


class ComposeNode(Process):
    """One node of the compose service as a plain process; its ready line parsed."""

    def __init__(self, index: int, argv: list[str], log_dir: Path) -> None:
        self.log_path = log_dir / f"tracker-{index}.log"
        self._log = self.log_path.open("w")
        super().__init__(f"tracker-{index}", argv, stderr=self._log)
        try:
            words = self.readline(READY_TIMEOUT).split()
        except BaseException:
            self.stop()
            raise
        assert words[0] == "ready", words
        self.ready = dict(word.split("=", 1) for word in words[1:])
        self.node = self.ready["name"]

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()[-3000:]}"

    def close(self) -> None:
        super().close()
        self._log.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def replicas(node: ComposeNode) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        client = Client(node.ready["clients"], client_id="test-deploy", timeout=5.0)
        try:
            await client.open()
            status = await client.status()
        finally:
            await client.close()
        found: dict[str, Any] = status["replicas"]
        return found

    return asyncio.run(ask())


@pytest.mark.cluster
def test_the_compose_nodes_run_against_each_other(tmp_path: Path) -> None:
    (entry,) = dockerfile()["ENTRYPOINT"]
    entrypoint = exec_form(entry)
    assert entrypoint[0] == "tracker-zmq"
    service = compose()["services"]["tracker"]
    argv = [sys.executable, "-m", "tracker_zmq", *entrypoint[1:], *service["command"]]
    argv.append("--broadcast-period=0.2")
    with spawner(lambda i, a: ComposeNode(i, a, tmp_path)) as start:
        nodes: list[ComposeNode] = []
        seed: int | None = None
        for index in range(service["deploy"]["replicas"]):
            command, ports = loopback(argv, seed)
            seed = seed or ports["cluster"]
            nodes.append(start(index + 1, command))
        names = {n.node for n in nodes}
        assert len(names) == 3  # automatic names: <hostname>-<pid>-<random>
        for node in nodes:
            others = names - {node.node}
            wait_until(
                lambda node=node, others=others: (
                    {name for name, r in replicas(node).items() if r["status"] == "up"} == others
                ),
                READY_TIMEOUT,
                f"{node.node} to see the two others up",
                interval=0.2,
            )
            wait_until(
                lambda node=node: http_status(node.ready["metrics"] + "/readyz") == 200,
                READY_TIMEOUT,
                f"{node.node} ready",
                interval=0.2,
            )
        # the image's HEALTHCHECK command, pointed at each node's metrics port
        (check,) = dockerfile()["HEALTHCHECK"]
        health = exec_form(check.partition("CMD ")[2])
        for node in nodes:
            port = node.ready["metrics"].rsplit(":", 1)[1]
            command = [sys.executable, *health[1:-1], health[-1].replace(":9100/", f":{port}/")]
            assert subprocess.run(command, timeout=30).returncode == 0, node.tail()
        # a scale-down: SIGTERM, a clean exit, and no replica left behind on the others
        leaving = nodes.pop()
        assert leaving.terminate(20) == 0, leaving.tail()
        for node in nodes:
            wait_until(
                lambda node=node: leaving.node not in replicas(node),
                READY_TIMEOUT,
                f"{node.node} to drop {leaving.node}",
                interval=0.2,
            )
        for node in nodes:
            if not node.running():
                raise NodeError(f"{node.node} exited{node.tail()}")
