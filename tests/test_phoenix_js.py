"""The ``phoenix`` npm client consumes our presence payloads unchanged.

A three-node cluster (PubSub + Presence, in this process, on 127.0.0.1) tracks, updates
and untracks presences, several metas per key on different nodes, and loses a node. On
two nodes a phoenix.js client (tests/js/presence_sync.js, run by ``node``) is fed what a
Phoenix channel would push: ``presence_state`` (``Presence.list``) when it joins and
``presence_diff`` (the payload of each broadcast, as its node's subscriber got it). At
each step the client's state must equal our ``Presence.list`` and the state the test
expects. ``make pytest`` installs the client first (``npm ci`` in tests/js).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aio import run, until

from pubsub_zmq import PubSub
from tests.support.js import JS, node_binary
from tracker_zmq import Presence, Presences

SCRIPT = JS / "presence_sync.js"
TOPIC = "room:lobby"
FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


def by_ref(presences: Presences) -> Presences:
    """Each key's metas sorted by phx_ref: the order of metas within a key is unspecified."""
    return {
        key: {**p, "metas": sorted(p["metas"], key=lambda m: m["phx_ref"])}
        for key, p in presences.items()
    }


class UserPresence(Presence):
    """fetch adds a field beside the metas: phoenix.js keeps it from the latest join."""

    def fetch(self, topic: str, presences: Presences) -> Presences:
        return {key: {**p, "user": {"name": key.upper()}} for key, p in presences.items()}


class Client:
    """One phoenix.js client fed by one node: a channel that got presence_state, then diffs."""

    def __init__(self, proc: asyncio.subprocess.Process, messages: list[Any]) -> None:
        self.proc = proc
        self.messages = messages  # the node's subscriber's presence_diff broadcasts
        self.fed = 0
        self.state: Presences = {}
        self.joined: list[str] = []
        self.left: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, node: str, messages: list[Any]) -> AsyncIterator[Client]:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            cwd=JS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            yield cls(proc, messages)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0, err.decode()

    async def send(self, line: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(line).encode() + b"\n")
        await self.proc.stdin.drain()
        out = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 10))
        assert "error" not in out, out["error"]
        self.state = out["state"]
        assert out["list"] == list(self.state.values())
        self.joined += out["joined"]
        self.left += out["left"]

    async def join(self, presence_state: Presences) -> None:
        """presence_state, as a channel pushes it when the client (re)joins."""
        self.fed = len(self.messages)
        await self.send({"state": presence_state})

    async def catch_up(self) -> None:
        """Feed every presence_diff broadcast not fed yet, in order."""
        while self.fed < len(self.messages):
            message = self.messages[self.fed]
            self.fed += 1
            assert message["event"] == "presence_diff"
            assert message["payload"].keys() == {"joins", "leaves"}
            await self.send({"diff": message["payload"]})


def test_phoenix_js_client_follows_presence_state_and_diffs() -> None:
    node = node_binary(("phoenix",))

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            pubsubs: list[PubSub] = []
            presences: list[Presence] = []
            messages: list[list[Any]] = []
            seeds: list[str] = []
            for i in range(3):
                pubsub = await stack.enter_async_context(
                    PubSub(f"n{i}", peers=seeds, gossip_interval=0.1, start_timeout=5.0)
                )
                seeds = [pubsub.endpoint]
                received: list[Any] = []
                pubsub.subscribe(TOPIC, callback=received.append, link=False)
                pubsubs.append(pubsub)
                presences.append(UserPresence(pubsub, **FAST))
                messages.append(received)
            for presence in presences:
                await stack.enter_async_context(presence)
            a, b, c = presences
            await until(lambda: all(len(p.peers()) == 2 for p in pubsubs), message="mesh")
            await until(
                lambda: all(
                    sum(r["status"] == "up" for r in p.tracker.stats()["replicas"].values()) == 2
                    for p in presences
                ),
                message="replicas up",
            )

            tracked: dict[tuple[int, str, str | int], dict[str, Any]] = {}

            def track(node: int, owner: str, key: str | int, meta: dict[str, Any]) -> None:
                ref = presences[node].track(owner, TOPIC, key, meta)
                tracked[node, owner, key] = {**meta, "phx_ref": ref}

            def update(node: int, owner: str, key: str | int, meta: dict[str, Any]) -> None:
                prev = tracked[node, owner, key]["phx_ref"]
                ref = presences[node].update(owner, TOPIC, key, meta)
                tracked[node, owner, key] = {**meta, "phx_ref": ref, "phx_ref_prev": prev}

            def untrack(node: int, owner: str, key: str | int) -> None:
                presences[node].untrack(owner, TOPIC, key)
                del tracked[node, owner, key]

            def expected(up: tuple[int, ...] = (0, 1, 2)) -> Presences:
                grouped: Presences = {}
                for (node, _, key), meta in tracked.items():
                    if node in up:
                        entry = grouped.setdefault(str(key), {"metas": []})
                        entry["metas"].append(meta)
                        entry["user"] = {"name": str(key).upper()}
                return by_ref(grouped)

            async def check(clients: dict[int, Client], up: tuple[int, ...] = (0, 1, 2)) -> None:
                want = expected(up)
                for i, client in clients.items():
                    await until(
                        lambda i=i: by_ref(presences[i].list(TOPIC)) == want,  # type: ignore[misc]
                        message=f"list on n{i}",
                    )
                    # the diff is published from the handler queue, after the list changed
                    deadline = time.monotonic() + 5
                    while by_ref(client.state) != want:
                        assert time.monotonic() < deadline, (i, client.state, want)
                        await client.catch_up()
                        await asyncio.sleep(0.005)
                    assert by_ref(client.state) == by_ref(presences[i].list(TOPIC))

            client_a = await stack.enter_async_context(Client.running(node, messages[0]))
            await client_a.join(a.list(TOPIC))
            assert client_a.state == {}

            # joins; several metas per key, on different nodes; an int key becomes a string
            track(0, "conn-1", "alice", {"device": "web"})
            await check({0: client_a})
            track(1, "conn-2", "alice", {"device": "phone"})
            track(2, "conn-3", "bob", {"device": "web"})
            track(2, "conn-4", 42, {"device": "bot"})
            track(1, "conn-5", "__proto__", {"device": "odd"})
            await check({0: client_a})
            assert set(client_a.joined) == {"alice", "bob", "42", "__proto__"}

            # a client that joins later gets presence_state, then the diffs after it
            client_b = await stack.enter_async_context(Client.running(node, messages[1]))
            await client_b.join(b.list(TOPIC))
            clients = {0: client_a, 1: client_b}
            await check(clients)

            # updates: the key joins with the new meta and leaves with the old one
            update(0, "conn-1", "alice", {"device": "web", "status": "away"})
            await check(clients)
            update(2, "conn-3", "bob", {"device": "web", "typing": True})
            update(1, "conn-2", "alice", {"device": "phone", "status": "busy"})
            await check(clients)
            alice = client_a.state["alice"]["metas"]
            assert {m["status"] for m in alice} == {"away", "busy"}
            assert all("phx_ref_prev" in m for m in alice)

            # leaves: one meta of a key, then a whole key
            untrack(1, "conn-2", "alice")
            await check(clients)
            assert len(client_b.state["alice"]["metas"]) == 1
            untrack(1, "conn-5", "__proto__")
            await check(clients)
            assert "__proto__" not in client_a.state

            # a node goes down (silently): its metas leave every other node's clients
            client_a.left.clear()
            track(2, "conn-6", "alice", {"device": "tablet"})
            await check(clients)
            await c.stop()
            await check(clients, up=(0, 1))
            assert sorted(client_a.left) == ["42", "alice", "bob"]
            assert [m["device"] for m in client_a.state["alice"]["metas"]] == ["web"]

            # a client that rejoins (a reconnect, an Overflow) resyncs from presence_state
            track(0, "conn-7", "carol", {"device": "web"})
            await client_b.join(b.list(TOPIC))
            await check(clients, up=(0, 1))
            untrack(0, "conn-1", "alice")
            await check(clients, up=(0, 1))
            assert sorted(client_b.state) == ["carol"]

    run(body)
