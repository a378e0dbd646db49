"""Presence on a social graph: who of my friends is online, and nobody else's presence.

Each user is tracked once, on their own topic ``user:<id>``, whatever they watch; each
watcher subscribes to the topics of their friends only. A change of alice's presence is
one diff on ``user:alice``, published by every node to its own subscribers of that
topic: her friends. The fan-out is O(friends), and someone who is not her friend never
subscribes to her topic, so never hears of her.

Two nodes on 127.0.0.1 in one process: alice is connected to node a, bob and carol to
node b. alice and bob are friends, bob and carol are friends; alice and carol are not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pubsub_zmq import PubSub
from tracker_zmq import Presence

FRIENDS = {"alice": {"bob"}, "bob": {"alice", "carol"}, "carol": {"bob"}}
FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
}  # quick heartbeats for a demo


def user_topic(user: str) -> str:
    return f"user:{user}"


# --8<-- [start:connection]
class Watcher:
    """What one user's connection (a websocket handler) knows of their friends."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.online: dict[str, dict[str, Any]] = {}  # friend -> latest meta
        self.heard: list[str] = []  # every event, in order

    def presence_state(self, state: dict[str, Any]) -> None:
        """The friend's presence when we connect: their topic's ``Presence.list``."""
        self.presence_diff({"payload": {"joins": state, "leaves": {}}})

    def presence_diff(self, message: dict[str, Any]) -> None:
        """A ``presence_diff`` broadcast on a friend's topic (an update is both)."""
        joins, leaves = message["payload"]["joins"], message["payload"]["leaves"]
        for key, presence in joins.items():
            meta = presence["metas"][-1]
            if self.online.get(key, {}).get("phx_ref") != meta["phx_ref"]:  # not seen yet
                self.online[key] = meta
                self.heard.append(f"{key} is {meta['status']}")
        for key, presence in leaves.items():
            gone = {meta["phx_ref"] for meta in presence["metas"]}
            if self.online.get(key, {}).get("phx_ref") in gone:
                del self.online[key]
                self.heard.append(f"{key} went offline")


async def connection(
    pubsub: PubSub, presence: Presence, watcher: Watcher, closed: asyncio.Event
) -> None:
    """One user connected to this node, until ``closed`` is set."""
    me = asyncio.current_task()
    assert me is not None
    # tracked once, on the user's own topic; untracked when this task ends
    presence.track(me, user_topic(watcher.user), watcher.user, {"status": "online"})
    for friend in sorted(FRIENDS[watcher.user]):
        # subscribe first, then read the state: a change in between comes as a diff
        # (phoenix.js and Watcher both apply a diff already seen without harm)
        pubsub.subscribe(user_topic(friend), callback=watcher.presence_diff)
        watcher.presence_state(presence.list(user_topic(friend)))
    await closed.wait()  # the subscriptions end with this task too


# --8<-- [end:connection]


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        await asyncio.sleep(0.01)


async def main() -> None:
    async with (
        PubSub("a") as pubsub_a,  # binds an ephemeral port on 127.0.0.1
        PubSub("b", peers=[pubsub_a.endpoint]) as pubsub_b,
        Presence(pubsub_a, **FAST) as presence_a,
        Presence(pubsub_b, **FAST) as presence_b,
    ):
        watchers = {user: Watcher(user) for user in FRIENDS}
        alice, bob, carol = watchers["alice"], watchers["bob"], watchers["carol"]
        alice_closed, others_closed = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(connection(pubsub_a, presence_a, alice, alice_closed)),
            asyncio.create_task(connection(pubsub_b, presence_b, bob, others_closed)),
            asyncio.create_task(connection(pubsub_b, presence_b, carol, others_closed)),
        ]
        await wait_for(lambda: "bob" in alice.online and "alice" in bob.online, "alice <-> bob")
        await wait_for(lambda: "bob" in carol.online and "carol" in bob.online, "bob <-> carol")

        # alice goes away (an update), then disconnects (her task ends: she leaves)
        presence_a.update(tasks[0], user_topic("alice"), "alice", {"status": "away"})
        await wait_for(lambda: bob.online.get("alice", {}).get("status") == "away", "away")
        alice_closed.set()
        await tasks[0]
        await wait_for(lambda: "alice" not in bob.online, "alice offline")

        # everyone's presence is replicated to every node (node b can list alice's
        # topic), but only her friends subscribed to it, so only they heard of her
        assert presence_b.list(user_topic("alice")) == {}
        assert not any("alice" in line for line in carol.heard), carol.heard
        others_closed.set()
        await asyncio.gather(*tasks[1:])

    for watcher in watchers.values():
        print(f"{watcher.user} heard: " + "; ".join(watcher.heard))
    print("carol heard nothing of alice: they are not friends")


if __name__ == "__main__":
    asyncio.run(main())
