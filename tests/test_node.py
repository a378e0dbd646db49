"""Standalone nodes (``python -m tracker_zmq node``) and their clients, on 127.0.0.1.

Nodes are real processes started through the command line (``CliNode``: free ports
picked at run time, short periods: heartbeats every 0.1 s, down after 1 s); the tests
drive them through the client endpoint with :class:`tracker_zmq.Client` (in this
process) or with raw ZeroMQ frames, and through the ``tracker-zmq list/status``
commands. Every wait is on a condition with a deadline; every process is stopped at
teardown, also on failure. Marked ``cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from aio import run
from aio import until as _until

from tests.support.proc import FAST_NODE_OPTIONS, CliNode, free_port, spawner
from tracker_zmq import (
    AlreadyTracked,
    Client,
    ClientDiff,
    LimitExceeded,
    Node,
    NoPresence,
    UnsupportedOp,
)
from tracker_zmq.protocol import OPS

pytestmark = pytest.mark.cluster

MAX_PRESENCES = 5
OPTIONS = (*FAST_NODE_OPTIONS, "--client-max-presences", str(MAX_PRESENCES))
ROOT = Path(__file__).resolve().parent.parent
# the nodes answer over the network: poll every 20 ms, for up to 10 s unless told
until = functools.partial(_until, timeout=10.0, interval=0.02)


def client(node: CliNode, **options: Any) -> Client:
    options.setdefault("heartbeat_interval", 0.5)
    options.setdefault("timeout", 3.0)
    return Client(node.client_endpoint, **options)


async def keys(cl: Client, topic: str) -> set[Any]:
    return {key for key, _ in await cl.list(topic)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[CliNode]]:
    """Three nodes a, b, c; b and c know only a as a seed."""
    logs = tmp_path_factory.mktemp("node-logs")
    with spawner(lambda name, **kw: CliNode(name, logs, *OPTIONS, **kw)) as start:
        a = start("a")
        b = start("b", peers=(a.endpoint,))
        c = start("c", peers=(a.endpoint,))
        yield [a, b, c]
        for node in (a, b, c):
            assert node.running(), node.log()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., CliNode]]:
    """Start nodes of this test only (stopped at teardown, also on failure)."""
    with spawner(lambda name, *opts, **kw: CliNode(name, tmp_path, *OPTIONS, *opts, **kw)) as start:
        yield start


def test_tracks_on_different_nodes_converge(cluster: list[CliNode]) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(client(node, client_id=f"app-{node.name}"))
                for node in cluster
            ]
            for cl, node in zip(clients, cluster, strict=True):
                await cl.track("room:converge", f"user-{node.name}", {"on": node.name})
            want = {"user-a", "user-b", "user-c"}

            async def converged() -> bool:
                return all([await keys(cl, "room:converge") == want for cl in clients])

            await until(converged, message="every node to list every user")
            b_session = clients[1].session
            assert b_session is not None
            assert b_session.startswith(f"app-b@b:{cluster[1].vsn}:")
            for cl in clients:
                owners = await cl.get_by_key("room:converge", "user-b")
                assert [owner for owner, _ in owners] == [b_session]
                assert owners[0][1]["on"] == "b"
                assert "phx_ref" in owners[0][1]
        # closing a client says bye: its presences leave at once, on every node
        async with client(cluster[2]) as watcher:
            await until(_empty(watcher, "room:converge"), message="the closed clients' leaves")

    run(main)


def _empty(cl: Client, topic: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await keys(cl, topic) == set()

    return check


def test_client_subscribes_to_diffs(cluster: list[CliNode]) -> None:
    a, _, c = cluster

    async def main() -> None:
        async with client(a, client_id="tracker") as tracker, client(c) as watcher:
            diffs = await watcher.subscribe("room:diffs")
            called: list[ClientDiff] = []
            await watcher.subscribe("room:diffs", callback=called.append)
            await tracker.track("room:diffs", "alice", {"status": "online"})
            diff = await asyncio.wait_for(anext(diffs), 5)
            assert diff.topic == "room:diffs"
            assert [key for key, _ in diff.joins] == ["alice"]
            assert diff.joins[0][1]["status"] == "online"
            assert diff.leaves == []

            await tracker.update("room:diffs", "alice", {"status": "away"})
            seen: list[ClientDiff] = []
            while not any(m["status"] == "away" for d in seen for _, m in d.joins):
                seen.append(await asyncio.wait_for(anext(diffs), 5))
            while not any(m["status"] == "online" for d in seen for _, m in d.leaves):
                seen.append(await asyncio.wait_for(anext(diffs), 5))

            await tracker.untrack("room:diffs", "alice")
            last = await asyncio.wait_for(anext(diffs), 5)
            assert [(key, meta["status"]) for key, meta in last.leaves] == [("alice", "away")]
            iterated = [diff, *seen, last]
            await until(
                lambda: len(called) >= len(iterated), timeout=5.0, message="the callback's diffs"
            )
            assert called == iterated
            await diffs.close()
            assert not diffs.active

    run(main)


def test_lease_expiry_untracks_a_silent_client_everywhere(cluster: list[CliNode]) -> None:
    a, b, c = cluster

    async def main() -> None:
        silent = client(b, client_id="crashy", heartbeat_interval=0.2, lease=0.6)
        await silent.connect()
        async with client(a) as on_a, client(c) as on_c:
            await silent.track("room:lease", "ghost", {})
            await on_c.track("room:lease", "alive", {})  # heartbeats: never expires
            for cl in (on_a, on_c):
                await until(lambda cl=cl: _has(cl, "room:lease", {"ghost", "alive"}))
            await silent.close(bye=False)  # no bye, no more heartbeats: like a crash
            for cl in (on_a, on_c):
                await until(
                    lambda cl=cl: _has(cl, "room:lease", {"alive"}), message="the lease to run out"
                )
            async with client(b) as on_b:
                status = await on_b.status()
            assert status["clients"]["sessions_expired"] >= 1
            assert await keys(on_a, "room:lease") == {"alive"}

    run(main)


async def _has(cl: Client, topic: str, want: set[str]) -> bool:
    return await keys(cl, topic) == want


def test_a_client_cannot_untrack_anothers_presence(cluster: list[CliNode]) -> None:
    a = cluster[0]

    async def main() -> None:
        # the same client id, even: sessions are told apart by the node
        async with client(a, client_id="same") as x, client(a, client_id="same") as y:
            assert x.session != y.session
            await x.track("room:own", "x-user", {"by": "x"})
            assert await y.untrack("room:own", "x-user") == 0
            assert await y.untrack() == 0
            with pytest.raises(NoPresence):
                await y.update("room:own", "x-user", {"by": "y"})
            with pytest.raises(AlreadyTracked):
                await x.track("room:own", "x-user", {})
            # another session may track the same key: a second presence
            await y.track("room:own", "x-user", {"by": "y"})
            presences = await x.list("room:own")
            assert sorted(meta["by"] for _, meta in presences) == ["x", "y"]
            # a forged token is an unknown session, whatever it asks
            answer = raw_exchange(
                a,
                [b'{"v":1,"id":1,"op":"untrack","token":"forged"}'],
                want_ids={1},
            )
            assert answer[1]["error"]["code"] == "unknown_session"
            assert await y.untrack() == 1
            assert [meta["by"] for _, meta in await x.list("room:own")] == ["x"]

    run(main)


def test_per_session_presence_limit(cluster: list[CliNode]) -> None:
    async def main() -> None:
        async with client(cluster[1]) as cl:
            assert cl.max_presences == MAX_PRESENCES
            for i in range(MAX_PRESENCES):
                await cl.track("room:limit", f"k{i}", {})
            with pytest.raises(LimitExceeded) as info:
                await cl.track("room:limit", "one-too-many", {})
            assert info.value.code == "limit_exceeded"
            assert info.value.error["limit"] == MAX_PRESENCES
            assert "at most 5 presences" in str(info.value)
            await cl.untrack("room:limit", "k0")
            await cl.track("room:limit", "one-too-many", {})

    run(main)


def test_max_presences_limits_the_whole_node(spawn: Callable[..., CliNode]) -> None:
    for bad in ("0", "-3", "two"):
        done = cli("node", "--name", "x", "--max-presences", bad)
        assert done.returncode == 2, done.stderr
        assert "--max-presences" in done.stderr
        assert ("positive integer" if bad != "two" else "not an integer") in done.stderr
    m = spawn("m", "--max-presences", "2")

    async def main() -> None:
        # two sessions, each far under --client-max-presences: the node's limit applies
        async with client(m, client_id="one") as one, client(m, client_id="two") as two:
            await one.track("room:node-limit", "alice", {})
            await two.track("room:node-limit", "bob", {})
            with pytest.raises(LimitExceeded) as info:
                await two.track("room:node-limit", "carol", {})
            assert info.value.code == "limit_exceeded"
            assert info.value.error["limit"] == 2
            assert "max_presences" in str(info.value)
            assert await keys(one, "room:node-limit") == {"alice", "bob"}
            await one.untrack("room:node-limit", "alice")
            await two.track("room:node-limit", "carol", {})
            assert await keys(one, "room:node-limit") == {"bob", "carol"}

    run(main)


def raw_exchange(
    node: CliNode, messages: list[bytes | list[bytes]], want_ids: set[int], timeout: float = 5.0
) -> dict[int, Any]:
    """Send raw frames from a DEALER; return the replies with the wanted ids."""
    replies: dict[int, Any] = {}
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.connect(node.client_endpoint)
        for message in messages:
            if isinstance(message, list):
                sock.send_multipart(message)
            else:
                sock.send(message)
        deadline = time.monotonic() + timeout
        while not want_ids <= replies.keys():
            left = deadline - time.monotonic()
            assert left > 0, f"no replies {sorted(want_ids - replies.keys())} from {node.name}"
            if sock.poll(left * 1000):
                reply = orjson.loads(sock.recv())
                replies[reply["id"]] = reply
    return replies


def test_garbage_to_the_client_endpoint_does_not_hurt_the_node(cluster: list[CliNode]) -> None:
    c = cluster[2]
    rng = random.Random(7)
    junk: list[bytes | list[bytes]] = [rng.randbytes(rng.randrange(0, 300)) for _ in range(200)]
    junk += [
        b"",
        b"\x00\xff not json",
        b"[1, 2, 3]",
        b'{"v": 1}',
        b'"just a string"',
        b'{"v": 1, "id": -5, "op": "status"}',
        [b"several", b"frames", b"in one message"],
        b'{"v": 1, "id": 1, "op": "status", "pad": "' + b"x" * (1536 * 1024) + b'"}',
        b'{"v": 2, "id": 7, "op": "status"}',
        b'{"v": 1, "id": 8, "op": "explode"}',
        b'{"v": 1, "id": 9, "op": "track", "token": "t", "topic": true, "key": "k", "meta": {}}',
        b'{"v": 1, "id": 10, "op": "hello", "client": "x", "lease": 100000}',
        b'{"v": 1, "id": 11, "op": "status"}',
    ]
    replies = raw_exchange(c, junk, want_ids={7, 8, 9, 10, 11})
    assert replies[7]["error"]["code"] == "unsupported_version"
    assert replies[7]["error"]["versions"] == [1]
    assert replies[7]["v"] == 1
    assert replies[8]["error"]["code"] == "unknown_op"
    assert replies[9]["error"]["code"] == "bad_request"
    assert replies[10]["error"]["code"] == "bad_lease"
    assert replies[10]["error"]["max_lease"] > 0
    assert 1 not in replies  # the oversized frame was dropped unread
    status = replies[11]["result"]
    assert status["node"] == "c"
    assert status["clients"]["garbage"] >= 200
    assert c.running()

    async def still_works() -> None:
        async with client(c) as cl:
            await cl.track("room:after-garbage", "fine", {})
            assert await keys(cl, "room:after-garbage") == {"fine"}

    run(still_works)


def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker_zmq", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_list_and_status_commands(cluster: list[CliNode]) -> None:
    a, b, c = cluster

    async def main() -> None:
        async with client(a, client_id="cli-test") as cl, client(b) as on_b:
            await cl.track("room:cli", "alice", {"device": "web"})
            await until(lambda: _has(on_b, "room:cli", {"alice"}))

            done = await asyncio.to_thread(cli, "list", "room:cli", "--node", b.client_endpoint)
            assert done.returncode == 0, done.stderr
            assert "room:cli: 1 presence" in done.stdout
            assert re.search(r'^\s+alice\s+\{"device":"web"\}', done.stdout, re.M), done.stdout

            args = ("list", "room:cli", "--node", c.client_endpoint, "--json")
            done = await asyncio.to_thread(cli, *args)
            assert done.returncode == 0, done.stderr
            [[key, meta]] = json.loads(done.stdout)
            assert key == "alice"
            assert meta["device"] == "web"

            done = await asyncio.to_thread(cli, "status", "--node", a.client_endpoint)
            assert done.returncode == 0, done.stderr
            assert f"node a (vsn {a.vsn})" in done.stdout
            for other in (b, c):
                line = rf"^\s+{other.name}\s+up\s+vsn {other.vsn}$"
                assert re.search(line, done.stdout, re.M), done.stdout
            assert "peers: b, c" in done.stdout

            args = ("status", "--node", a.client_endpoint, "--json")
            done = await asyncio.to_thread(cli, *args)
            assert done.returncode == 0, done.stderr
            status = json.loads(done.stdout)
            assert status["node"] == "a"
            assert status["vsn"] == a.vsn
            assert status["replicas"] == {
                "b": {"vsn": b.vsn, "status": "up"},
                "c": {"vsn": c.vsn, "status": "up"},
            }
            assert status["clients"]["sessions"] >= 1

    run(main)


def test_commands_reject_bad_arguments_and_report_unreachable_nodes() -> None:
    done = cli("list", "room")
    assert done.returncode == 2
    assert "--node" in done.stderr
    done = cli("status", "--node", "localhost:1")
    assert done.returncode == 2
    assert "tcp://HOST:PORT" in done.stderr
    done = cli("list", "x", "--int", "--node", "tcp://127.0.0.1:1")
    assert done.returncode == 2
    assert "not an integer" in done.stderr
    done = cli("frobnicate")
    assert done.returncode == 2
    done = cli("node", "--name", "x", "--broadcast-period", "-1")
    assert done.returncode == 2
    assert "positive" in done.stderr
    # an inconsistent set of periods: the tracker's own check, as a usage error
    done = cli("node", "--name", "x", "--down-period", "0.5")
    assert done.returncode == 2
    assert "down_period" in done.stderr
    done = cli("status", "--node", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert done.returncode == 1
    assert "no reply" in done.stderr


def test_node_restart_makes_the_client_track_again(spawn: Callable[..., CliNode]) -> None:
    p = spawn("p")
    q = spawn("q", peers=(p.endpoint,))

    async def main() -> None:
        async with (
            client(q, client_id="sticky", heartbeat_interval=0.3, timeout=1.0) as cl,
            client(p) as watcher,
        ):
            await cl.track("room:restart", "sticky-user", {"n": 1})
            diffs = await cl.subscribe("room:restart")
            await until(lambda: _has(watcher, "room:restart", {"sticky-user"}))
            first = cl.session

            await asyncio.to_thread(q.kill)
            await until(_empty(watcher, "room:restart"), message="q down on p")
            restart = {"peers": (p.endpoint,), "port": q.port, "client_port": q.client_port}
            q2 = await asyncio.to_thread(spawn, "q", **restart)
            assert q2.vsn > q.vsn

            await until(lambda: cl.resyncs >= 1, message="the client's new session")
            assert cl.node_vsn == q2.vsn
            assert cl.session != first
            await until(lambda: _has(watcher, "room:restart", {"sticky-user"}), message="re-track")
            owners = await watcher.get_by_key("room:restart", "sticky-user")
            assert [owner for owner, _ in owners] == [cl.session]
            # the subscription was renewed too
            await watcher.track("room:restart", "w", {})
            while True:
                diff = await asyncio.wait_for(anext(diffs), 5)
                if any(key == "w" for key, _ in diff.joins):
                    break

        assert q2.terminate() == 0, q2.log()

    run(main)


def test_sigterm_with_permdown_on_shutdown(spawn: Callable[..., CliNode]) -> None:
    slow = ("--down-period", "5", "--permdown-period", "20")
    r = spawn("r", *slow, "--permdown-on-shutdown")
    s = spawn("s", *slow, peers=(r.endpoint,))

    async def main() -> None:
        leaver = client(r, client_id="leaver")
        await leaver.connect()
        try:
            async with client(s) as watcher:
                await leaver.track("room:bye", "leaving", {})
                await until(lambda: _has(watcher, "room:bye", {"leaving"}))
                assert await asyncio.to_thread(r.terminate) == 0, r.log()
                # peers drop r at once, long before its down_period (5 s)
                await until(
                    _empty(watcher, "room:bye"), timeout=3.0, message="r's presences to leave"
                )
                assert "r" not in (await watcher.status())["replicas"]
        finally:
            await leaver.close(bye=False)

    run(main)
    assert s.terminate() == 0, s.log()
    for node in (r, s):
        log = node.log()
        assert "stopping" in log
        assert "Traceback" not in log
        assert "Exception ignored" not in log


def test_a_stalled_node_does_not_expire_clients_that_kept_heartbeating(
    spawn: Callable[..., CliNode],
) -> None:
    solo = spawn("solo")

    async def main() -> None:
        # A lease of 10 heartbeats. Outside the freeze the node runs and judges leases
        # as usual, so a pause of this test process (descheduled on a loaded machine, a
        # garbage collection of the suite's heap) just before the SIGSTOP or just after
        # the SIGCONT silences the client for real: with a lease of 1 s, a pause of
        # about a second there expired the session. The request timeout outlasts the
        # freeze, so the heartbeat waiting in the node's socket is still awaited when
        # the node answers it. (A second stall of the node while it reads what piled
        # up: packages/tracker-zmq/tests/test_node_stall.py.)
        async with client(solo, heartbeat_interval=0.2, lease=2.0, timeout=10.0) as cl:
            await cl.track("room:stall", "patient", {})
            session = cl.session
            solo.proc.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(4.5)  # the node is frozen for over twice the lease
            finally:
                solo.proc.send_signal(signal.SIGCONT)
            # the client's heartbeats waited in the socket: the node reads them before
            # it judges any lease, so the session lives on
            await until(lambda: _has(cl, "room:stall", {"patient"}), message="an answer")
            # the node may answer the requests that waited in its socket before its
            # lease timer runs again and notices the stall: ask until it did
            seen: list[dict[str, Any]] = []

            async def stall_noticed() -> bool:
                seen.append((await cl.status())["clients"])
                return bool(seen[-1]["lease_checks_skipped"] >= 1)

            await until(stall_noticed, message="the node to notice its stall")
            status = {"clients": seen[-1]}
            assert status["clients"]["lease_checks_skipped"] >= 1
            assert status["clients"]["sessions_expired"] == 0
            assert cl.resyncs == 0
            assert cl.session == session

    run(main)


def test_hello_lists_the_ops_and_the_client_reads_them(cluster: list[CliNode]) -> None:
    async def main() -> None:
        async with client(cluster[0]) as cl:
            assert cl.ops == OPS
            assert (await cl.status())["ops"] == sorted(OPS)
        done = await asyncio.to_thread(cli, "status", "--node", cluster[0].client_endpoint)
        assert done.returncode == 0, done.stderr
        assert f"client protocol: v1, ops: {', '.join(sorted(OPS))}\n" in done.stdout
        # a session-less client reads no ops: it checks nothing before sending
        bare = client(cluster[0])
        try:
            await bare.open()
            assert bare.ops is None
            assert await bare.list("room:none") == []
        finally:
            await bare.close()

    run(main)


def test_a_client_refuses_an_op_the_node_does_not_serve() -> None:
    """A node serving fewer ops (as a node of an older release does) lists fewer in hello;
    the Client raises UnsupportedOp before sending, and its other methods keep working."""

    async def main() -> None:
        node = Node(
            "few",
            tracker_options={"broadcast_period": 0.1},
            pubsub_options={"gossip_interval": 0.1, "peer_timeout": 1.0},
        )
        node.sessions.ops = OPS - {"get_by_key", "status"}
        async with (
            node,
            # no heartbeat during the test: the node's request count shows what was sent
            Client(node.client_endpoint, client_id="app", heartbeat_interval=30) as cl,
        ):
            assert cl.ops == OPS - {"get_by_key", "status"}
            await cl.track("room:few", "alice", {})
            requests = node.stats()["requests"]
            with pytest.raises(UnsupportedOp, match="get_by_key: node 'few' at tcp://") as err:
                await cl.get_by_key("room:few", "alice")
            assert (err.value.op, err.value.node) == ("get_by_key", "few")
            with pytest.raises(UnsupportedOp, match="status"):
                await cl.status()
            assert node.stats()["requests"] == requests  # nothing was sent
            assert keys_of(await cl.list("room:few")) == {"alice"}
            # a client that never said hello learns it from the node's unknown_op
            bare = Client(node.client_endpoint, timeout=3.0)
            try:
                await bare.open()
                with pytest.raises(UnsupportedOp, match="status: the node at tcp://"):
                    await bare.status()
            finally:
                await bare.close()

    run(main)


def keys_of(presences: list[tuple[Any, Any]]) -> set[Any]:
    return {key for key, _ in presences}
