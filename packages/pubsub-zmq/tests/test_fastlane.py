"""The fastlane hook of the default dispatch and node-local subscriptions.

A subscription whose metadata is a :class:`~pubsub_zmq.Fastlane` gets each message through
``metadata.fastlane(message, cache)``, with one cache per dispatch shared by the topic's
subscribers (Phoenix's once-per-serializer encoding); ``subscribe(local=True)`` asks no
other node for the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pubsub_zmq import Fastlane, Overflow, PubSub
from pubsub_zmq.registry import Registry, default_dispatch

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0, "start_timeout": 5.0}

Run = Callable[..., Any]
Wait = Callable[..., Any]


@dataclass(eq=False)
class Lane:
    """Fastlane metadata that "encodes" once per cache and records what it took."""

    encodes: list[Any]
    took: list[Any] = field(default_factory=list)
    accept: bool = True

    def fastlane(self, message: Any, cache: dict[Any, Any]) -> bool:
        if not self.accept:
            return False
        if "frame" not in cache:
            cache["frame"] = f"encoded {message!r}"
            self.encodes.append(message)
        self.took.append(cache["frame"])
        return True


@dataclass(eq=False)
class Sub:
    topic: str
    metadata: Any = None
    local: bool = False
    got: list[Any] = field(default_factory=list)

    @property
    def fastlane(self) -> Any:
        return self.metadata.fastlane if isinstance(self.metadata, Fastlane) else None

    def deliver(self, message: Any) -> None:
        self.got.append(message)


def test_default_dispatch_shares_one_cache_per_message() -> None:
    encodes: list[Any] = []
    lanes = [Sub("t", Lane(encodes)) for _ in range(5)]
    plain = Sub("t")
    sender = lanes[0]
    default_dispatch([*lanes, plain], sender, {"n": 1})
    default_dispatch([*lanes, plain], None, {"n": 2})
    assert encodes == [{"n": 1}, {"n": 2}]  # once per message, not per subscriber
    assert sender.metadata.took == ["encoded {'n': 2}"]  # the sender skipped once
    assert all(s.metadata.took == ["encoded {'n': 1}", "encoded {'n': 2}"] for s in lanes[1:])
    assert plain.got == [{"n": 1}, {"n": 2}]
    assert all(s.got == [] for s in lanes)


def test_a_declining_or_raising_lane_gets_the_message_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Boom:
        def fastlane(self, message: Any, cache: dict[Any, Any]) -> bool:
            raise RuntimeError("boom")

    declining = Sub("t", Lane([], accept=False))
    raising = Sub("t", Boom())
    after = Sub("t", Lane([]))
    with caplog.at_level(logging.ERROR, logger="pubsub_zmq"):
        default_dispatch([declining, raising, after], None, "m")
    assert declining.got == ["m"]
    assert raising.got == ["m"]
    assert after.metadata.took == ["encoded 'm'"]
    assert "fastlane of a subscription to 't' raised" in caplog.text


def test_registry_reports_only_non_local_subscriptions() -> None:
    reg: Registry[Sub] = Registry()
    local, remote, remote2 = Sub("t", local=True), Sub("t"), Sub("t")
    assert reg.add(local) is False  # a local one asks the transport for nothing
    assert reg.remote_topics() == []
    assert reg.add(remote) is True
    assert reg.add(remote2) is False
    assert reg.remote_topics() == ["t"]
    assert reg.remove(remote) is False
    assert reg.remove(remote2) is True
    assert reg.remote_topics() == []
    assert reg.count("t") == 1
    assert "t" in reg
    assert reg.remove(local) is False
    assert "t" not in reg


def test_fastlane_subscriptions_on_a_node(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            encodes: list[Any] = []
            lanes = [ps.subscribe("room", Lane(encodes)) for _ in range(10)]
            plain = ps.subscribe("room")
            ps.broadcast("room", {"event": "a"})
            ps.local_broadcast("room", {"event": "b"})
            ps.broadcast_from(lanes[3], "room", {"event": "c"})
            assert encodes == [{"event": "a"}, {"event": "b"}, {"event": "c"}]
            for i, sub in enumerate(lanes):
                expected = ["a", "b"] if i == 3 else ["a", "b", "c"]
                assert sub.metadata.took == [f"encoded {{'event': '{e}'}}" for e in expected]
                assert sub.drain() == []  # nothing queued: the lane took it
            assert plain.drain() == [{"event": "a"}, {"event": "b"}, {"event": "c"}]

    run(body)


def test_fastlane_and_local_subscriptions_across_nodes(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(PubSub("a", **FAST))
            b = await stack.enter_async_context(PubSub("b", peers=[a.endpoint], **FAST))
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"], message="mesh")
            local = b.subscribe("presence", local=True)
            encodes: list[Any] = []
            lanes = [b.subscribe("room", Lane(encodes)) for _ in range(3)]
            await wait(lambda: a.remote_subscribers("room") == 1, message="room filter")
            # the local subscription asked a for nothing, and still hears b's own
            assert a.remote_subscribers("presence") == 0
            b.local_broadcast("presence", {"diff": 1})
            assert local.drain() == [{"diff": 1}]
            # a batch from a reaches every lane, encoded once per message
            for n in range(5):
                a.broadcast("room", {"n": n})
            await wait(lambda: len(encodes) == 5, message="five messages on b")
            assert encodes == [{"n": n} for n in range(5)]
            assert all(len(s.metadata.took) == 5 for s in lanes)
            # a non-local subscriber added beside the local one sets the filter
            remote = b.subscribe("presence")
            await wait(lambda: a.remote_subscribers("presence") == 1, message="filter")
            a.broadcast("presence", {"diff": 2})
            await wait(lambda: len(remote) == 1, message="the remote broadcast")
            assert remote.drain() == [{"diff": 2}]
            assert local.drain() == [{"diff": 2}]
            remote.unsubscribe()
            await wait(lambda: a.remote_subscribers("presence") == 0, message="unfilter")

    run(body)


def test_overflow_marker_still_reaches_a_local_subscription(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo", queue_size=2) as ps:
            sub = ps.subscribe("t", local=True)
            for n in range(4):
                ps.local_broadcast("t", n)
            assert sub.drain() == [Overflow(2), 2, 3]
            await asyncio.sleep(0)

    run(body)
