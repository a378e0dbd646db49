"""A Node made with ``presence=True``: one tracker for client sessions and a Presence.

An in-process :class:`~tracker_zmq.Node` (its PubSub and client endpoint on free ports of
127.0.0.1) with a Presence subclass: a :class:`~tracker_zmq.Client` tracks through the
client endpoint and the Presence publishes the ``presence_diff``, runs its hooks and
lists it; a presence tracked through the Presence reaches the client's list and its
subscription. Also :class:`~tracker_zmq.Presence` over a given tracker, and the errors.
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aio import run, until
from mesh import pubsubs

from tracker_zmq import Client, ClientDiff, Node, Presence, Tracker
from tracker_zmq.errors import ConfigError
from tracker_zmq.presence import PresenceDiff, Presences, TopicPresences

FAST = {"broadcast_period": 0.05, "max_silent_periods": 2, "down_period": 0.3}


class Hooked(Presence):
    """Every hook: ``fetch`` adds a field, ``handle_metas`` keeps the keys per topic."""

    def fetch(self, topic: str, presences: Presences) -> Presences:
        return {key: {**p, "seen_by": "hooked"} for key, p in presences.items()}

    def init(self, state: dict[str, Any]) -> Any:
        return {"inits": 1}

    def handle_metas(
        self, topic: str, diff: PresenceDiff, presences: TopicPresences, state: Any
    ) -> Any:
        return {**state, topic: sorted(presences)}


def test_a_node_with_a_presence_shares_its_tracker_with_the_client_sessions() -> None:
    async def body() -> None:
        node = Node(
            "np", presence=Hooked, tracker_options=FAST, pubsub_options={"gossip_interval": 0.1}
        )
        presence = node.presence
        assert isinstance(presence, Hooked)
        assert presence.tracker is node.tracker
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(node)
            assert presence.running
            assert presence.client_state == {"inits": 1}  # init ran at the node's start
            sub = node.pubsub.subscribe("room:np")
            stack.callback(node.pubsub.unsubscribe, sub)
            cl = await stack.enter_async_context(Client(node.client_endpoint, client_id="app"))
            diffs: list[ClientDiff] = []
            await cl.subscribe("room:np", diffs.append)

            # a client session's presence: published as presence_diff, hooks run, listed
            await cl.track("room:np", "alice", {"via": "client"})
            message = await asyncio.wait_for(sub.get(), 10)
            assert message["event"] == "presence_diff"
            joined = message["payload"]["joins"]["alice"]
            assert joined["seen_by"] == "hooked"
            assert joined["metas"][0]["via"] == "client"
            assert presence.list("room:np")["alice"]["seen_by"] == "hooked"
            await until(lambda: presence.client_state.get("room:np") == ["alice"])

            # a presence tracked through the Presence (a channel's, owned by a Task):
            # the client lists it and is pushed its diff; it leaves with its Task
            done = asyncio.Event()

            async def channel() -> None:
                presence.track(asyncio.current_task(), "room:np", "bob", {"via": "channel"})  # type: ignore[arg-type]
                await done.wait()

            task = asyncio.create_task(channel())
            await until(lambda: any("bob" in {k for k, _ in d.joins} for d in diffs), message="bob")
            assert {key for key, _ in await cl.list("room:np")} == {"alice", "bob"}
            done.set()
            await task
            await until(lambda: set(presence.list("room:np")) == {"alice"}, message="bob left")
            await until(lambda: presence.client_state.get("room:np") == ["alice"])
            assert {key for key, _ in await cl.list("room:np")} == {"alice"}
            assert presence.counters["diffs_published"] >= 3
            assert node.tracker.counters["handler_errors"] == 0
        assert not presence.running  # the node stopped its tracker

    run(body)


def test_a_presence_over_a_given_tracker_and_the_errors() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            first, second = await pubsubs(stack, 2)
            presences: list[Presence] = []
            tracker = Tracker(first, "given", handler=lambda d: presences[0].handle_diff(d))
            presence = Presence(first, tracker=tracker)
            presences.append(presence)
            assert presence.name == "given"
            await presence.start()  # init only: the tracker is its owner's to start
            assert not tracker.running
            await stack.enter_async_context(tracker)
            sub = first.subscribe("room:given")
            stack.callback(first.unsubscribe, sub)
            tracker.track("owner", "room:given", "carol", {})
            message = await asyncio.wait_for(sub.get(), 10)
            assert set(message["payload"]["joins"]) == {"carol"}
            assert set(presence.list("room:given")) == {"carol"}
            await presence.stop()  # leaves the tracker to its owner
            assert tracker.running

            with pytest.raises(ConfigError, match="neither a name nor tracker options"):
                Presence(first, tracker=tracker, pool_size=2)
            with pytest.raises(ConfigError, match="neither a name nor tracker options"):
                Presence(first, "other", tracker=tracker)
            with pytest.raises(ConfigError, match="another PubSub"):
                Presence(second, tracker=tracker)
            with pytest.raises(ConfigError, match="must be a Tracker"):
                Presence(first, tracker="given")  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match="a bool or a Presence subclass"):
                Node("bad", presence="yes")  # type: ignore[arg-type]
            assert Node("plain").presence is None

    run(body)
