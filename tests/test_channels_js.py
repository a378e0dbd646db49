"""phoenix.js, unchanged, against tracker_zmq.channels: two uvicorn processes, one cluster.

Each server is ``tests/channels_app.py`` (a Starlette app mounting an ``Endpoint``, with a
PubSub and a Presence in its lifespan), and the two are clustered over pubsub-zmq on
127.0.0.1. Each client is ``tests/js/channel_client.js``: the phoenix npm package's own
``Socket``, ``Channel`` and ``Presence`` over the ``ws`` WebSocket, driven by JSON lines,
telling every event it sees. The tests cover join replies (what ``join`` returns),
``JoinError``, ``Reject`` (HTTP 403), ``authToken`` and the origin check, presence
through ``Presence.onSync`` on both servers (``Channel.update`` included), ``handle_in``
replies, broadcasts across processes, ``broadcast_from``, a crashing handler, ``follow``
with two followers of different sets, a server killed, then another stopped, and each
restarted under its clients (phoenix.js reconnects and rejoins; the lists converge
again), a client that stops heartbeating (closed after the idle timeout, 4 s in these
servers), a backend's disconnect of a socket id on every node, limits (an oversize
frame, too many channels) that touch the offender only, and ``coalesce_diffs``: bursts of
joins, updates and leaves merged into few frames leave phoenix.js's Presence exactly
where the servers' lists are.

Node.js and the npm packages are required: without them these tests fail, never skip
(``make pytest`` runs ``npm ci`` in tests/js first). Every wait is bounded and every
process (servers and clients) is stopped at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets

from tests.support.js import node_binary
from tests.support.proc import (
    ROOT,
    CommandNode,
    NodeError,
    Process,
    free_port,
    spawner,
    wait_until,
)

pytestmark = pytest.mark.cluster

APP = ROOT / "tests" / "channels_app.py"
JS = ROOT / "tests" / "js"
CLIENT = JS / "channel_client.js"
IDLE_TIMEOUT = 4.0  # the servers' idle timeout (seconds): a silent socket is closed after it
MAX_FRAME_BYTES = 64 * 1024  # the servers' largest client frame: a larger one closes the socket
MAX_CHANNELS = 8  # the servers' channels per socket
HEARTBEAT_MS = 1000  # the clients' heartbeat interval: well within the idle timeout
WAIT = 30.0  # the bound of every wait for an event (generous: the machine is shared)


class Server(CommandNode):
    """One ``tests/channels_app.py`` process: a web server and a cluster node.

    Args:
        name: Its node name.
        port: Its HTTP port (a free one by default); give it again to restart in place.
        bind: Its PubSub endpoint (a free port by default).
        peers: Seed endpoints.
        *options: More command-line options of the app.
    """

    def __init__(
        self,
        name: str,
        port: int | None = None,
        bind: str | None = None,
        peers: tuple[str, ...] = (),
        *options: str,
    ) -> None:
        self.port = free_port() if port is None else port
        self.bind = f"tcp://127.0.0.1:{free_port()}" if bind is None else bind
        self.peers = peers
        self.options = options
        args = ["--port", str(self.port), "--bind", self.bind, "--idle-timeout", str(IDLE_TIMEOUT)]
        args += [arg for peer in peers for arg in ("--peer", peer)]
        args += ["--broadcast-period", "0.05", "--down-period", "1", "--permdown-period", "5"]
        args += ["--max-frame-bytes", str(MAX_FRAME_BYTES), "--max-channels", str(MAX_CHANNELS)]
        args += options
        super().__init__(APP, name, *args)
        self.http: str = self.ready["http"]
        self.url = self.http.replace("http://", "ws://") + "/socket"

    def restart(self) -> Server:
        """A new process of this server on the same HTTP port and PubSub endpoint."""
        return Server(self.name, self.port, self.bind, self.peers, *self.options)

    def presences(self, topic: str) -> dict[str, Any]:
        """The server's ``Presence.list(topic)``."""
        result: dict[str, Any] = self.call("list", topic=topic)
        return result


class Client(Process):
    """One phoenix.js client (``channel_client.js`` under node); its events, as they come.

    A thread reads its stdout into :attr:`events`; :meth:`wait` waits (bounded) for one.
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            name, [node_binary(), str(CLIENT)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.changed = threading.Condition()
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._event), daemon=True),
            threading.Thread(
                target=self._pump, args=(self.proc.stderr, self.errors.append), daemon=True
            ),
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _pump(stream: Any, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:  # not the driver's: keep it for the failure message
            event = {"ev": "unparsed", "line": line}
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def tail(self) -> str:
        return f"\nclient {self.name} events: {self.events[-30:]}\nstderr: {self.errors[-20:]}"

    def mark(self) -> int:
        """Where the events are now: :meth:`wait` from here sees only later ones."""
        with self.changed:
            return len(self.events)

    def wait(
        self,
        match: Callable[[dict[str, Any]], bool],
        what: str,
        since: int = 0,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        """The first event from ``since`` on for which ``match`` is true (waits for it).

        Raises:
            NodeError: After ``timeout`` seconds, with the client's latest events.
        """
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events[since:]:
                    if match(event):
                        return event
                since = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or not self.running():
                    raise NodeError(
                        f"client {self.name}: no {what} within {timeout} s{self.tail()}"
                    )
                self.changed.wait(min(left, 0.5))

    def command(self, cmd: str, **args: Any) -> None:
        """Send one command; wait until the client acknowledged it."""
        since = self.mark()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        event = self.wait(lambda e: e["ev"] in ("ack", "bad"), f"answer to {cmd}", since)
        assert event["ev"] == "ack", event

    def connect(self, url: str, **options: Any) -> None:
        """``new Socket(url, options).connect()``: quick reconnects and rejoins, 1 s heartbeats."""
        defaults = {
            "heartbeatIntervalMs": HEARTBEAT_MS,
            "reconnectAfterMs": 200,
            "rejoinAfterMs": 200,
        }
        self.command("connect", url=url, **{**defaults, **options})

    def join(
        self, topic: str, payload: dict[str, Any] | None = None, presence: bool = True
    ) -> dict[str, Any]:
        """Join ``topic``; the join's first answer (``{"status", "response"}``)."""
        since = self.mark()
        self.command("join", topic=topic, payload=payload or {}, presence=presence)
        return self.wait(
            lambda e: e["ev"] == "join" and e["topic"] == topic, f"join {topic}", since
        )

    def push(self, topic: str, event: str, payload: dict[str, Any], id: int = 0) -> dict[str, Any]:
        """Push ``event``; its reply (``{"status", "response"}``)."""
        since = self.mark()
        self.command("push", topic=topic, event=event, payload=payload, id=id)
        return self.wait(
            lambda e: e["ev"] == "reply" and e["topic"] == topic and e["id"] == id,
            f"reply to {event}",
            since,
        )

    def present(
        self,
        topic: str,
        keys: set[str],
        since: int = 0,
        also: Callable[[dict[str, Any]], bool] = lambda metas: True,
    ) -> dict[str, Any]:
        """Wait until Presence.onSync's latest list of ``topic`` has exactly ``keys``.

        Args:
            topic: The channel's topic.
            keys: The presence keys it must list, no more, no fewer.
            since: Only syncs from this mark on count.
            also: A further condition on the list, ``{key: metas}``.

        Returns:
            That list, ``{key: metas}``.
        """
        deadline = time.monotonic() + WAIT
        with self.changed:
            while True:
                syncs = [
                    e for e in self.events[since:] if e["ev"] == "sync" and e["topic"] == topic
                ]
                listed = {p["key"]: p["metas"] for p in syncs[-1]["presences"]} if syncs else None
                if listed is not None and listed.keys() == keys and also(listed):
                    return listed
                left = deadline - time.monotonic()
                if left <= 0 or not self.running():
                    raise NodeError(
                        f"client {self.name}: {topic} never listed exactly {sorted(keys)} "
                        f"as wanted (latest: {listed}){self.tail()}"
                    )
                self.changed.wait(min(left, 0.5))

    def messages(self, topic: str, event: str) -> list[Any]:
        """The payloads of every ``event`` pushed to ``topic`` so far."""
        with self.changed:
            return [
                e["payload"]
                for e in self.events
                if e["ev"] == "message" and e["topic"] == topic and e["event"] == event
            ]

    def count(self, ev: str) -> int:
        """How many events of kind ``ev`` (``open``, ``close``...) so far."""
        with self.changed:
            return sum(e["ev"] == ev for e in self.events)

    def stop(self, grace: float = 5.0) -> None:
        """Close its stdin (it disconnects and exits), then the usual stop."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
                self.proc.wait(grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop(grace)

    def close(self) -> None:
        """Let the readers reach the end of the output (the process is gone), then close."""
        for thread in self.threads:
            thread.join(5)
        super().close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Server, Server]]:
    """Two servers, clustered: each test uses its own topics and users."""
    node_binary()
    with spawner(Server) as start:
        a = start("a")
        b = start("b", peers=(a.endpoint,))
        yield a, b


@pytest.fixture
def clients() -> Iterator[Callable[[str], Client]]:
    """Start phoenix.js clients: ``clients("alice")``; all stopped at the end."""
    node_binary()
    with spawner(Client) as start:
        yield start


def is_message(event: dict[str, Any], name: str) -> bool:
    """Whether ``event`` is a push or broadcast of ``name`` the client received."""
    return event["ev"] == "message" and event["event"] == name


def online(client: Client, url: str, user: str, **options: Any) -> Client:
    """Connect ``client`` as ``user`` (the ``token`` param) and wait for the socket to open."""
    since = client.mark()
    client.connect(url, params={"token": f"t:{user}"}, **options)
    client.wait(lambda e: e["ev"] == "open", "open", since)
    return client


def test_join_replies_presence_on_both_servers_replies_and_broadcasts(cluster, clients):
    a, b = cluster
    alice = online(clients("alice"), a.url, "alice")
    bob = clients("bob")
    bob.connect(b.url, authToken="t:bob")  # phoenix.js sends it as a websocket subprotocol

    # join replies: the value join returned, as phoenix.js's join().receive("ok") gets it
    joined = alice.join("room:lobby")
    assert joined["status"] == "ok", joined
    assert joined["response"] == {
        "joined": "room:lobby",
        "user": "alice",
        "node": "a",
        "via": "param",
    }
    joined = bob.join("room:lobby")
    assert joined["status"] == "ok", joined
    assert joined["response"] == {
        "joined": "room:lobby",
        "user": "bob",
        "node": "b",
        "via": "auth_token",
    }

    # presence through Presence.onSync, on both servers; each meta names its server
    for client in (alice, bob):
        metas = client.present("room:lobby", {"alice", "bob"})
        assert [m["node"] for m in metas["alice"]] == ["a"]
        assert [m["node"] for m in metas["bob"]] == ["b"]
        assert all("phx_ref" in m for ms in metas.values() for m in ms)
    assert a.presences("room:lobby").keys() == b.presences("room:lobby").keys() == {"alice", "bob"}

    # handle_in's returned dict is the ok reply
    reply = alice.push("room:lobby", "ping", {"n": 1}, id=1)
    assert reply["status"] == "ok"
    assert reply["response"] == {"pong": {"n": 1}, "node": "a"}

    # a broadcast reaches every subscriber on every server, the sender's own socket too;
    # a handler that returns nothing replies ok {}
    reply = alice.push("room:lobby", "new_msg", {"body": "hello bob"}, id=2)
    assert reply["status"] == "ok"
    assert reply["response"] == {}
    hello = {"user": "alice", "body": "hello bob", "node": "a"}
    for client in (alice, bob):
        client.wait(lambda e: is_message(e, "new_msg") and e["payload"] == hello, "new_msg")
    reply = bob.push("room:lobby", "new_msg", {"body": "hi alice"}, id=3)
    assert reply["status"] == "ok"
    hi = {"user": "bob", "body": "hi alice", "node": "b"}
    for client in (alice, bob):
        client.wait(lambda e: is_message(e, "new_msg") and e["payload"] == hi, "new_msg")

    # broadcast_from: everyone but the sending channel; bob's next broadcast comes after it
    # on his socket (one node, one topic: in order), so by then he would have had it
    since = bob.mark()
    assert bob.push("room:lobby", "others", {"body": "not me"}, id=4)["status"] == "ok"
    alice.wait(lambda e: is_message(e, "others") and e["payload"]["user"] == "bob", "others")
    assert bob.push("room:lobby", "new_msg", {"body": "after"}, id=5)["status"] == "ok"
    bob.wait(
        lambda e: is_message(e, "new_msg") and e["payload"]["body"] == "after", "new_msg", since
    )
    assert bob.messages("room:lobby", "others") == []

    # Channel.update: the other server's phoenix.js Presence gets the new meta, which
    # replaces the old one (phx_ref_prev names it)
    old_ref = bob.present("room:lobby", {"alice", "bob"})["alice"][0]["phx_ref"]
    reply = alice.push("room:lobby", "status", {"status": "away"}, id=6)
    assert reply["status"] == "ok", reply
    metas = bob.present(
        "room:lobby", {"alice", "bob"}, also=lambda p: p["alice"][0].get("status") == "away"
    )["alice"]
    assert len(metas) == 1
    assert metas[0]["phx_ref"] == reply["response"]["phx_ref"]
    assert metas[0]["phx_ref_prev"] == old_ref

    # leave: ok, then the channel closes; alice's presence leaves bob's list
    since = alice.mark()
    alice.command("leave", topic="room:lobby")
    alice.wait(lambda e: e["ev"] == "leave" and e["status"] == "ok", "leave ok", since)
    alice.wait(
        lambda e: e["ev"] == "chan_close" and e["topic"] == "room:lobby", "chan_close", since
    )
    bob.present("room:lobby", {"bob"})
    assert alice.count("close") == 0  # the sockets live on
    assert bob.count("close") == 0


def test_join_error_reject_and_auth_token(cluster, clients):
    a, b = cluster
    # JoinError: an error reply with the error's payload; the socket stays open
    carol = online(clients("carol"), b.url, "carol")
    refused = carol.join("room:forbidden", presence=False)
    assert refused["status"] == "error", refused
    assert refused["response"] == {"reason": "forbidden"}
    carol.command("leave", topic="room:forbidden")  # phoenix.js would retry the join
    joined = carol.join("room:allowed")
    assert joined["status"] == "ok", joined
    assert carol.count("close") == 0

    # Reject: HTTP 403, for a bad token param and for a bad authToken; never opens
    for name, options in [
        ("mallory-param", {"params": {"token": "forged"}}),
        ("mallory-auth-token", {"authToken": "t:NOT-VALID"}),
        ("mallory-nothing", {}),
    ]:
        mallory = clients(name)
        mallory.connect(a.url, **options)
        error = mallory.wait(lambda e: e["ev"] == "error", "a refused connection")
        assert "403" in error["message"], error
        mallory.command("disconnect")
        assert mallory.count("open") == 0

    # a browser's Origin must be the server's own host (the default check_origin)
    mallory = clients("mallory-origin")
    mallory.connect(a.url, params={"token": "t:mallory"}, origin="http://evil.example")
    error = mallory.wait(lambda e: e["ev"] == "error", "a refused connection")
    assert "403" in error["message"], error
    mallory.command("disconnect")
    assert mallory.count("open") == 0
    same_host = online(clients("olga"), a.url, "olga", origin=a.http)
    assert same_host.join("room:allowed")["status"] == "ok"

    # authToken: valid, the socket connects (bob's test joins with it and checks `via`)
    dave = clients("dave")
    dave.connect(a.url, authToken="t:dave")
    dave.wait(lambda e: e["ev"] == "open", "open")
    assert dave.join("room:allowed")["response"]["via"] == "auth_token"
    for client in (carol, dave):
        client.present("room:allowed", {"carol", "dave", "olga"})


def test_a_crashing_handler_errors_its_channel_only(cluster, clients):
    a, b = cluster
    erin = online(clients("erin"), a.url, "erin", timeout=3000)
    frank = online(clients("frank"), b.url, "frank")
    assert erin.join("room:crash")["status"] == "ok"
    assert erin.join("room:calm")["status"] == "ok"
    assert frank.join("room:crash")["status"] == "ok"
    before = frank.present("room:crash", {"erin", "frank"})["erin"]

    since_erin, since_frank = erin.mark(), frank.mark()
    reply = erin.push("room:crash", "crash", {}, id=1)
    assert reply["status"] == "timeout", reply  # a crashed channel never replies (as Phoenix)
    erin.wait(
        lambda e: e["ev"] == "chan_error" and e["topic"] == "room:crash", "phx_error", since_erin
    )
    # its presence left with it; phoenix.js rejoined, and erin is back with a new presence
    erin.wait(
        lambda e: e["ev"] == "join" and e["topic"] == "room:crash" and e["status"] == "ok",
        "rejoin",
        since_erin,
    )
    old = before[0]["phx_ref"]
    listed = frank.present(
        "room:crash",
        {"erin", "frank"},
        since_frank,
        also=lambda p: [m["phx_ref"] for m in p["erin"]] not in ([], [old]) and len(p["erin"]) == 1,
    )
    assert a.presences("room:crash")["erin"]["metas"] == listed["erin"]
    # the socket and the other channel lived on
    assert erin.count("close") == 0
    assert erin.push("room:calm", "ping", {}, id=2)["response"] == {"pong": {}, "node": "a"}


def test_follow_two_followers_see_their_own_sets(cluster, clients):
    a, b = cluster
    users = {}
    for user, server in [("gus", a), ("hana", b), ("ivan", a)]:
        users[user] = online(clients(user), server.url, user)
        assert users[user].join(f"user:{user}", presence=False)["status"] == "ok"
    # a user joins only their own topic (the social graph's rule)
    refused = users["gus"].join("user:hana", presence=False)
    assert refused["status"] == "error", refused
    assert refused["response"] == {"reason": "not your topic"}
    users["gus"].command("leave", topic="user:hana")  # phoenix.js would retry the join

    judy = online(clients("judy"), b.url, "judy")
    kate = online(clients("kate"), a.url, "kate")
    joined = judy.join("friends:judy", {"follow": ["user:gus", "user:hana"]})
    assert joined["response"] == {"following": ["user:gus", "user:hana"]}
    joined = kate.join("friends:kate", {"follow": ["user:hana", "user:ivan"]})
    assert joined["response"] == {"following": ["user:hana", "user:ivan"]}
    metas = judy.present("friends:judy", {"gus", "hana"})
    assert [m["node"] for m in metas["gus"]] == ["a"]
    kate.present("friends:kate", {"hana", "ivan"})

    # ivan goes offline: kate's view changes; judy's, which never had him, does not
    since = judy.mark()
    users["ivan"].command("disconnect")
    kate.present("friends:kate", {"hana"})
    hana_left = users["hana"].mark()
    users["hana"].command("leave", topic="user:hana")
    users["hana"].wait(lambda e: e["ev"] == "chan_close", "chan_close", hana_left)
    judy.present("friends:judy", {"gus"}, since)
    kate.present("friends:kate", set())
    # judy's view never held ivan, nor kate's gus: two followers never share a view
    assert presence_keys(judy, "friends:judy") == {"gus", "hana"}
    assert presence_keys(kate, "friends:kate") == {"hana", "ivan"}


def presence_keys(client: Client, topic: str) -> set[str]:
    """Every key that any presence_state, presence_diff or onSync list of ``topic`` named."""
    keys: set[str] = set()
    with client.changed:
        for e in client.events:
            if e.get("topic") != topic:
                continue
            if e["ev"] == "sync":
                keys |= {p["key"] for p in e["presences"]}
            elif e["ev"] == "message" and e["event"] == "presence_state":
                keys |= set(e["payload"])
            elif e["ev"] == "message" and e["event"] == "presence_diff":
                keys |= set(e["payload"]["joins"]) | set(e["payload"]["leaves"])
    return keys


def test_a_server_restarted_under_its_clients(clients):
    node_binary()
    with spawner(Server) as start:
        a = start("a")
        b = start("b", peers=(a.endpoint,))
        lena = online(clients("lena"), a.url, "lena")
        mia = online(clients("mia"), b.url, "mia")
        for client in (lena, mia):
            assert client.join("room:restart")["status"] == "ok"
        for client in (lena, mia):
            client.present("room:restart", {"lena", "mia"})

        since_lena, since_mia = lena.mark(), mia.mark()
        a.kill()  # SIGKILL: no goodbye to anyone
        lena.wait(lambda e: e["ev"] == "close", "close", since_lena)
        mia.present("room:restart", {"mia"}, since_mia)  # the dead node's presence left
        a2 = start("a", a.port, a.bind, (b.endpoint,))  # the same name, port and endpoint
        # phoenix.js reconnects and rejoins by itself; the lists converge again
        lena.wait(lambda e: e["ev"] == "open", "reopen", since_lena)
        rejoined = lena.wait(
            lambda e: e["ev"] == "join" and e["status"] == "ok", "rejoin", since_lena
        )
        assert rejoined["response"]["node"] == "a"
        lena.present("room:restart", {"lena", "mia"}, since_lena)
        mia.present("room:restart", {"lena", "mia"}, since_mia)
        for server in (a2, b):
            assert server.presences("room:restart").keys() == {"lena", "mia"}
        assert mia.count("close") == 0  # the other server's clients never noticed

        # a graceful stop this time (SIGTERM: uvicorn closes the websockets, then the
        # lifespan stops the node, within the bound) and a restart: the same story
        since_lena, since_mia = lena.mark(), mia.mark()
        b.terminate()
        mia.wait(lambda e: e["ev"] == "close", "close", since_mia)
        lena.present("room:restart", {"lena"}, since_lena)
        b2 = start("b", b.port, b.bind, (a2.endpoint,))
        mia.wait(lambda e: e["ev"] == "open", "reopen", since_mia)
        mia.wait(lambda e: e["ev"] == "join" and e["status"] == "ok", "rejoin", since_mia)
        lena.present("room:restart", {"lena", "mia"}, since_lena)
        mia.present("room:restart", {"lena", "mia"}, since_mia)
        for server in (a2, b2):
            assert server.presences("room:restart").keys() == {"lena", "mia"}


def test_a_client_that_stops_heartbeating_is_closed(cluster, clients):
    a, _ = cluster
    # nina stays closed once closed (no quick reconnect), so the lists below are stable
    nina = online(clients("nina"), a.url, "nina", reconnectAfterMs=600_000)
    omar = online(clients("omar"), a.url, "omar")
    for client in (nina, omar):
        assert client.join("room:idle")["status"] == "ok"
    omar.present("room:idle", {"nina", "omar"})

    since_nina, since_omar = nina.mark(), omar.mark()
    nina.command("stop_heartbeat")
    # the server closes the silent socket after its idle timeout; phoenix.js then reconnects
    nina.wait(
        lambda e: e["ev"] == "close", "close by the server", since_nina, timeout=IDLE_TIMEOUT + WAIT
    )
    omar.present("room:idle", {"omar"}, since_omar)  # her presence left with her socket
    assert a.presences("room:idle").keys() == {"omar"}
    assert a.call("stats")["idle_closes"] >= 1
    # omar, who heartbeats, was never closed
    assert omar.count("close") == 0
    assert omar.push("room:idle", "ping", {}, id=1)["status"] == "ok"


def test_a_backend_disconnects_a_user_everywhere(cluster, clients):
    a, b = cluster
    # pia on both servers, quin on one; none reconnects by itself here
    pia_a = online(clients("pia-a"), a.url, "pia", reconnectAfterMs=600_000)
    pia_b = online(clients("pia-b"), b.url, "pia", reconnectAfterMs=600_000)
    quin = online(clients("quin"), b.url, "quin", reconnectAfterMs=600_000)
    for client in (pia_a, pia_b, quin):
        assert client.join("room:backend")["status"] == "ok"
    quin.present("room:backend", {"pia", "quin"})

    since = quin.mark()
    a.call("disconnect", socket_id="user_socket:pia")  # from one node, for every node
    for client in (pia_a, pia_b):
        client.wait(lambda e: e["ev"] == "close", "close by the backend")
    quin.present("room:backend", {"quin"}, since)
    assert quin.count("close") == 0


def test_limits_close_or_refuse_only_the_offender(cluster, clients):
    a, _ = cluster
    rosa = online(clients("rosa"), a.url, "rosa", reconnectAfterMs=600_000)
    sam = online(clients("sam"), a.url, "sam")
    for client in (rosa, sam):
        assert client.join("room:limits")["status"] == "ok"
    sam.present("room:limits", {"rosa", "sam"})

    # a frame over max_frame_bytes closes that socket (its presence leaves with it)
    since = sam.mark()
    rosa.command(
        "push", topic="room:limits", event="new_msg", payload={"body": "x" * MAX_FRAME_BYTES}
    )
    rosa.wait(lambda e: e["ev"] == "close", "close for an oversize frame")
    sam.present("room:limits", {"sam"}, since)
    assert a.call("stats")["oversize"] >= 1

    # channels per socket: the join past the limit gets an error reply, the others work
    for n in range(MAX_CHANNELS - 1):
        assert sam.join(f"room:many-{n}", presence=False)["status"] == "ok"
    refused = sam.join("room:one-too-many", presence=False)
    assert refused["status"] == "error", refused
    assert refused["response"] == {"reason": "too many channels joined"}
    sam.command("leave", topic="room:one-too-many")
    assert sam.push("room:limits", "ping", {}, id=1)["status"] == "ok"
    assert sam.count("close") == 0


def by_ref(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metas in phx_ref order (the order of a key's metas is unspecified)."""
    return sorted(metas, key=lambda m: str(m["phx_ref"]))


def test_coalesced_diffs_leave_phoenix_js_where_the_sequence_would(clients):
    node_binary()
    with spawner(Server) as start:
        # a topic's presence_diffs wait 0.2 s and go out merged, one frame per socket
        c = start("c", None, None, (), "--coalesce-diffs", "0.2")
        d = start("d", None, None, (c.endpoint,), "--coalesce-diffs", "0.2")
        uma = online(clients("uma"), c.url, "uma")
        vic = online(clients("vic"), d.url, "vic")
        for client in (uma, vic):
            assert client.join("room:storm")["status"] == "ok"
        for client in (uma, vic):
            client.present("room:storm", {"uma", "vic"})

        # bursts on both servers: joins, updates (a join and a leave each), leaves, the
        # same keys several times within one window
        c.call("storm", topic="room:storm", prefix="c-", n=30)
        d.call("storm", topic="room:storm", prefix="d-", n=30)
        keys = {"uma", "vic"} | {f"{p}-{i}" for p in "cd" for i in range(30) if i % 3}
        for server in (c, d):
            wait_until(
                lambda server=server: server.presences("room:storm").keys() == keys,
                WAIT,
                f"{server.name}'s list after the storms",
            )
        want = {k: by_ref(p["metas"]) for k, p in c.presences("room:storm").items()}
        assert want == {k: by_ref(p["metas"]) for k, p in d.presences("room:storm").items()}
        assert all(
            m.get("updated") for k in keys - {"uma", "vic"} if int(k[2:]) % 2 == 0 for m in want[k]
        )
        # phoenix.js's Presence, fed the merged diffs, holds exactly the servers' lists
        for client in (uma, vic):
            client.present(
                "room:storm",
                keys,
                also=lambda listed: {k: by_ref(m) for k, m in listed.items()} == want,
            )
        # and the diffs were merged: fewer frames than diffs, on both servers
        for server in (c, d):
            assert server.call("stats")["coalesced_diffs"] > 0


def test_sigterm_drains_the_sockets_in_batches_then_exits():
    """SIGTERM closes the sockets ``drain_batch_size`` at a time (code 1012, which
    phoenix.js reconnects), ``drain_interval`` apart, before uvicorn stops: Phoenix's
    socket drain, through ``tracker_zmq.channels.server.DrainingServer``."""
    with spawner(Server) as start:
        server = start("a", None, None, (), "--drain-batch-size", "2", "--drain-interval", "0.4")
        closes = asyncio.run(_drained(server, users=6))
        assert server.proc.wait(WAIT) == 0  # a clean exit once drained
    assert [code for _, code in closes] == [1012] * 6
    times = [at for at, _ in closes]
    batches = [[times[0]]]
    for previous, at in itertools.pairwise(times):
        if at - previous > 0.2:
            batches.append([])
        batches[-1].append(at)
    assert [len(batch) for batch in batches] == [2, 2, 2]
    assert times[-1] - times[0] >= 0.6


async def _drained(server: Server, users: int) -> list[tuple[float, int]]:
    """Join ``users`` sockets to one room, SIGTERM the server, and say when and how each
    socket was closed (sorted by time)."""
    sockets = []
    for i in range(users):
        url = f"{server.url}/websocket?vsn=2.0.0&token=t:u{i}"
        ws = await websockets.connect(url, open_timeout=WAIT)
        await ws.send(json.dumps(["1", "1", "room:drain", "phx_join", {}]))
        async with asyncio.timeout(WAIT):
            while True:
                _join_ref, ref, _topic, event, payload = json.loads(await ws.recv())
                if event == "phx_reply" and ref == "1":
                    assert payload["status"] == "ok", payload
                    break
        sockets.append(ws)

    async def closed(ws: Any) -> tuple[float, int]:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()  # presence diffs until the drain closes it
        assert ws.close_code is not None
        return time.monotonic(), ws.close_code

    waiting = [asyncio.create_task(closed(ws)) for ws in sockets]
    await asyncio.sleep(0.2)  # the joins' presence diffs settle first
    server.signal(signal.SIGTERM)
    return sorted(await asyncio.gather(*waiting))
