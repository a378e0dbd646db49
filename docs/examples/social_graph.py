"""Presence on a social graph: who of my friends is online, and nobody else's presence.

Each user is tracked once, on their own topic ``user:<id>``, by the channel their client
joins there (``Me``); each user's ``friends:<id>`` channel follows the topics of their
friends only (``Channel.follow``), and gets their presence as one view: a
``presence_state`` of the union, then each friend's ``presence_diff``, on its own topic. A
change of alice's presence is one diff on ``user:alice``, handed by every node to its own
followers of that topic: her friends. The fan-out is O(friends), and someone who is not
her friend never follows her topic, so never hears of her.

Two nodes on 127.0.0.1 in one process, each serving an ``Endpoint``: alice is connected
to node a, bob and carol to node b (in-process clients, ``ChannelTest``, speaking the
protocol phoenix.js speaks over a websocket). alice and bob are friends, bob and carol are
friends; alice and carol are not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from pubsub_zmq import PubSub
from tracker_zmq import Presence

# --8<-- [start:channels]
from tracker_zmq.channels import Channel, Endpoint, JoinError, Socket

FRIENDS = {"alice": ["bob"], "bob": ["alice", "carol"], "carol": ["bob"]}  # your database


class UserSocket(Socket):
    async def connect(self, params, info):
        self.assigns["user_id"] = params["user"]  # in a real app: verify a signed token


class Me(Channel):
    """``user:<me>``: joining it makes the user present, once, for all their friends."""

    async def join(self, topic, payload):
        me = self.socket.assigns["user_id"]
        if topic != f"user:{me}":
            raise JoinError({"reason": "unauthorized"})
        self.track(me, {"status": "online"})  # leaves when the socket closes

    async def handle_in(self, event, payload):
        if event == "status":  # "away", "busy" ...: one update, seen by the friends
            self.update(self.socket.assigns["user_id"], {"status": payload["status"]})
            return None
        return ("error", {"reason": f"unknown event {event}"})


class Friends(Channel):
    """``friends:<me>``: my friends' presence, one view; the server picks the topics."""

    async def join(self, topic, payload):
        me = self.socket.assigns["user_id"]
        if topic != f"friends:{me}":
            raise JoinError({"reason": "unauthorized"})
        self.follow([f"user:{friend}" for friend in FRIENDS[me]])


def make_endpoint(presence: Presence) -> Endpoint:
    # app.mount("/socket", endpoint); in the browser, phoenix.js joins "user:<me>" and
    # "friends:<me>", and a Presence on the friends channel lists who is online
    return Endpoint(presence, socket=UserSocket, channels={"user:*": Me, "friends:*": Friends})


# --8<-- [end:channels]

from tracker_zmq.channels.testing import ChannelTest, ClientUnderTest  # noqa: E402

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
}  # quick heartbeats for a demo


class Watcher:
    """What one user's client shows of their friends (as phoenix.js's Presence would)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.online: dict[str, dict[str, Any]] = {}  # friend -> latest meta
        self.heard: list[str] = []  # every event, in order
        self.client: ClientUnderTest | None = None

    async def connect(self, case: ChannelTest) -> ClientUnderTest:
        """Connect; join ``friends:<me>`` (its presence_state), then ``user:<me>``."""
        self.client = client = await case.connect({"user": self.user})
        friends = f"friends:{self.user}"
        assert (await client.join(friends)).status == "ok"
        self.presence_state((await client.assert_push(friends, "presence_state")).payload)
        assert (await client.join(f"user:{self.user}")).status == "ok"
        return client

    async def receive(self) -> None:
        """Apply every ``presence_diff`` the friends channel pushed so far."""
        while self.client is not None:
            try:
                message = await self.client.assert_push(
                    f"friends:{self.user}", "presence_diff", within=0
                )
            except AssertionError:  # none left
                return
            self.presence_diff(message.payload)

    def presence_state(self, state: dict[str, Any]) -> None:
        """The friends channel's ``presence_state``: the friends online now."""
        self.presence_diff({"joins": state, "leaves": {}})

    def presence_diff(self, diff: dict[str, Any]) -> None:
        """A friend's ``presence_diff``: joins first, then leaves (an update is both)."""
        for key, presence in diff["joins"].items():
            meta = presence["metas"][-1]
            if self.online.get(key, {}).get("phx_ref") != meta["phx_ref"]:  # not seen yet
                self.online[key] = meta
                self.heard.append(f"{key} is {meta['status']}")
        for key, presence in diff["leaves"].items():
            gone = {meta["phx_ref"] for meta in presence["metas"]}
            if self.online.get(key, {}).get("phx_ref") in gone:
                del self.online[key]
                self.heard.append(f"{key} went offline")


async def wait_for(watchers: Iterable[Watcher], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        for watcher in watchers:
            await watcher.receive()
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        await asyncio.sleep(0.01)


async def main() -> None:
    async with (
        PubSub("a") as pubsub_a,  # binds an ephemeral port on 127.0.0.1
        PubSub("b", peers=[pubsub_a.endpoint]) as pubsub_b,
        Presence(pubsub_a, **FAST) as presence_a,
        Presence(pubsub_b, **FAST) as presence_b,
        ChannelTest(make_endpoint(presence_a)) as node_a,
        ChannelTest(make_endpoint(presence_b)) as node_b,
    ):
        watchers = {user: Watcher(user) for user in FRIENDS}
        alice, bob, carol = watchers["alice"], watchers["bob"], watchers["carol"]
        alice_client = await alice.connect(node_a)
        await bob.connect(node_b)
        await carol.connect(node_b)
        everyone = list(watchers.values())
        await wait_for(everyone, lambda: "bob" in alice.online and "alice" in bob.online, "a-b")
        await wait_for(everyone, lambda: "bob" in carol.online and "carol" in bob.online, "b-c")

        # alice goes away (an update), then disconnects (her channels end: she leaves)
        assert (await alice_client.push("user:alice", "status", {"status": "away"})).status == "ok"
        away = lambda: bob.online.get("alice", {}).get("status") == "away"  # noqa: E731
        await wait_for(everyone, away, "away")
        await alice.receive()
        await alice_client.close()
        alice.client = None
        await wait_for(everyone, lambda: "alice" not in bob.online, "alice offline")

        # everyone's presence is replicated to every node (node b can list alice's
        # topic), but only her friends follow it, so only they heard of her
        assert presence_b.list("user:alice") == {}
        assert not any("alice" in line for line in carol.heard), carol.heard

    for watcher in watchers.values():
        print(f"{watcher.user} heard: " + "; ".join(watcher.heard))
    print("carol heard nothing of alice: they are not friends")


if __name__ == "__main__":
    asyncio.run(main())
