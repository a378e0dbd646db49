"""``tracker-zmq node --metrics-bind``: a real 2-node cluster scraped over HTTP.

Nodes are real processes (``CliNode``: free ports, short periods: heartbeats every
0.1 s, down after 1 s) started with ``--metrics-bind 127.0.0.1:0 --log-format json``.
The tests track presences through the client endpoint, scrape ``/metrics`` and parse it
with prometheus_client's parser (and ``promtool check metrics`` where the machine has
it), read ``/healthz`` and ``/readyz`` (also while a node shuts down after SIGTERM) and
parse the JSON log line by line. Every wait is on a condition with a deadline; every
process is stopped at teardown, also on failure. Marked ``cluster``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from aio import run, until
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proc import FAST_NODE_OPTIONS, CliNode, spawner, wait_until
from tests.test_metrics_unit import guide_promql_metrics
from tracker_zmq import Client

pytestmark = pytest.mark.cluster

OPTIONS = (*FAST_NODE_OPTIONS, "--metrics-bind", "127.0.0.1:0", "--log-format", "json")


def get(url: str) -> tuple[int, str]:
    """GET ``url``: its status and body (an error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(node: CliNode) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The node's samples, by name then sorted labels, parsed by prometheus_client."""
    status, text = get(node.ready["metrics"] + "/metrics")
    assert status == 200, text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(node: CliNode, name: str, **labels: str) -> float | None:
    return scrape(node).get(name, {}).get(tuple(sorted(labels.items())))


def json_log(node: CliNode) -> list[dict[str, Any]]:
    """The node's log, one JSON object a line (every line must parse)."""
    lines = [line for line in node.log().splitlines() if line]
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "event"} <= record.keys(), record
    return records


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., CliNode]]:
    """Start nodes of this test only (stopped at teardown, also on failure)."""
    with spawner(lambda name, *opts, **kw: CliNode(name, tmp_path, *OPTIONS, *opts, **kw)) as start:
        yield start


def test_a_two_node_cluster_scraped_over_http(spawn: Callable[..., CliNode]) -> None:
    a = spawn("a")
    b = spawn("b", peers=(a.endpoint,))
    for node in (a, b):
        assert node.ready["metrics"].startswith("http://127.0.0.1:"), node.ready
        assert get(node.ready["metrics"] + "/healthz") == (200, "ok\n")
        wait_until(lambda n=node: get(n.ready["metrics"] + "/readyz")[0] == 200, 15, "ready")

    async def main() -> None:
        cb = Client(b.client_endpoint, timeout=3.0)
        await cb.connect()
        try:
            async with Client(a.client_endpoint, timeout=3.0) as ca:
                for i in range(3):
                    await ca.track("room:1", f"a{i}", {})
                for i in range(2):
                    await cb.track("room:2", f"b{i}", {})

                def converged() -> bool:
                    return all(value(n, "tracker_presences") == 5 for n in (a, b))

                await until(lambda: asyncio.to_thread(converged), 15, "presences everywhere")
                samples = scrape(a)
                assert samples["tracker_client_presences"][()] == 3
                assert samples["tracker_client_sessions"][()] == 1
                assert samples["tracker_replicas"] == {
                    (("status", "up"),): 1,
                    (("status", "down"),): 0,
                }
                assert samples["tracker_replica_up"] == {(("peer", "b"),): 1}
                assert samples["pubsub_messages_sent_total"][()] > 0
                assert samples["pubsub_messages_received_total"][()] > 0
                assert samples["pubsub_messages_lost_total"][()] == 0
                assert samples["pubsub_peer_alive"] == {(("peer", "b"),): 1}
                info = next(iter(samples["tracker_info"]))
                assert dict(info)["vsn"] == str(a.vsn)

                b.kill()  # SIGKILL: b goes silent, a judges it down after down_period
                await until(
                    lambda: asyncio.to_thread(value, a, "tracker_replicas", status="down"),
                    15,
                    "b down",
                )
                samples = scrape(a)
                assert samples["tracker_replicas"][(("status", "down"),)] == 1
                assert samples["tracker_replicas"][(("status", "up"),)] == 0
                assert samples["tracker_replica_up"] == {(("peer", "b"),): 0}
                assert samples["tracker_presences"][()] == 3  # b's are not visible
                assert samples["tracker_presences_held"][()] == 5  # kept until permdown
        finally:
            await cb.close(bye=False)

    run(main)
    records = json_log(a)
    events = [(r.get("replica"), r.get("status")) for r in records if "replica" in r]
    assert ("b", "up") in events
    assert ("b", "down") in events
    joined = [r for r in records if r.get("member") == "joined"]
    assert joined[0]["peer"] == "b"
    diffs = [r for r in records if "topic" in r]
    assert {"topic", "joins", "leaves"} <= diffs[0].keys()


def test_promtool_accepts_the_exposition(spawn: Callable[..., CliNode]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    a = spawn("a")
    b = spawn("b", peers=(a.endpoint,))  # with a peer: the peer-labelled metrics too
    wait_until(lambda: value(b, "tracker_replicas", status="up") == 1, 15, "a up on b")
    _, text = get(b.ready["metrics"] + "/metrics")
    assert 'pubsub_peer_alive{peer="a"} 1.0' in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sigterm_makes_the_node_not_ready_before_it_stops(spawn: Callable[..., CliNode]) -> None:
    # a slower heartbeat: the graceful permdown takes 2 periods (1 s), the window to see
    # /readyz answer 503 before the node is gone
    slow = ("--broadcast-period", "0.5", "--down-period", "3", "--permdown-period", "10")
    a = spawn("a", *slow, "--permdown-on-shutdown")
    url = a.ready["metrics"]
    wait_until(lambda: get(url + "/readyz")[0] == 200, 15, "ready")
    a.signal(signal.SIGTERM)
    seen: list[int] = []

    def not_ready_or_gone() -> bool:
        try:
            seen.append(get(url + "/readyz")[0])
        except (urllib.error.URLError, ConnectionError):
            return True  # gone
        return seen[-1] == 503

    wait_until(not_ready_or_gone, 15, "/readyz to answer 503", interval=0.02)
    assert seen[-1] == 503, f"no 503 before the node stopped: {seen}{a.tail()}"
    assert a.proc.wait(15) == 0
    assert a.proc.stdout is not None
    assert a.proc.stdout.read() == ""  # nothing on stdout after the ready line
    assert "Traceback" not in a.log()


def test_metrics_bind_refuses_a_bad_address(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracker_zmq", "node", "--name", "x", "--metrics-bind", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def test_a_metrics_port_in_use_fails_start_up_with_a_json_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tracker_zmq", "node", "--name", "x", "--log-format", "json",
             "--metrics-bind", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""  # no ready line
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["level"] == "ERROR"
    assert "address already in use" in lines[-1]["error"].lower()


def test_a_node_serving_websockets_adds_their_metrics(
    spawn: Callable[..., CliNode], tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-secret-of-at-least-thirty-two-characters\n")
    secret.chmod(0o600)
    node = spawn("ws", "--websocket-bind", "127.0.0.1:0", "--token-secret-file", str(secret))
    assert node.ready["websocket"].startswith("ws://127.0.0.1:")
    assert value(node, "websocket_connections") == 0
    token = jwt.encode(
        {"sub": "wendy", "exp": int(time.time()) + 600, "channels": ["room:*"]},
        "a-secret-of-at-least-thirty-two-characters",
        algorithm="HS256",
    )
    url = f"{node.ready['websocket']}/websocket?vsn=2.0.0&token={token}"

    async def connected() -> None:
        async with websockets.connect(url, open_timeout=10) as ws:
            await ws.send(json.dumps(["1", "1", "room:m", "phx_join", {}]))
            await asyncio.wait_for(ws.recv(), 10)  # the join's reply
            await until(lambda: value(node, "websocket_connections") == 1, timeout=10, interval=0.1)
            assert value(node, "websocket_joins_total") == 1
        await until(lambda: value(node, "websocket_connections") == 0, timeout=10, interval=0.1)

    run(connected)
    forged = f"{node.ready['websocket']}/websocket?vsn=2.0.0&token=forged"

    async def refused() -> None:
        with pytest.raises(websockets.InvalidStatus, match="403"):
            async with websockets.connect(forged, open_timeout=10):
                pass

    run(refused)
    assert value(node, "websocket_rejects_total") == 1
    # every metric the operating guide's dashboard and alerts read is in a real scrape
    status, text = get(node.ready["metrics"] + "/metrics")
    assert status == 200, text
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    assert guide_promql_metrics() - exported == set(), "docs/guides/operating.md PromQL"
