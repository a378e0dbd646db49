"""pubsub.py: the public API on one node, and several nodes in one process on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from pubsub_zmq import (
    ConfigError,
    InvalidTopic,
    MessageTooLarge,
    NotRunning,
    Overflow,
    PubSub,
    PubSubError,
    Subscription,
)

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0, "start_timeout": 5.0}

Run = Callable[..., Any]
Wait = Callable[..., Any]


@contextlib.asynccontextmanager
async def cluster(names: Sequence[str], **options: Any) -> AsyncIterator[list[PubSub]]:
    """Start nodes that each know only the first one (gossip finds the rest)."""
    nodes: list[PubSub] = []
    try:
        first = PubSub(names[0], **{**FAST, **options})
        nodes.append(first)
        await first.start()
        for name in names[1:]:
            node = PubSub(name, peers=[first.endpoint], **{**FAST, **options})
            nodes.append(node)
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def meshed(nodes: Sequence[PubSub], wait: Wait) -> None:
    names = {n.node_name for n in nodes}
    await wait(
        lambda: all(set(n.peers()) == names - {n.node_name} for n in nodes),
        message="the full mesh",
    )


async def subscribed(nodes: Sequence[PubSub], topic: str, wait: Wait, count: int) -> None:
    await wait(
        lambda: all(n.remote_subscribers(topic) >= count for n in nodes),
        message=f"{count} remote subscribers of {topic!r} everywhere",
    )


# -- one node --------------------------------------------------------------------------


def test_local_delivery_of_every_kind(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            a = ps.subscribe("t")
            b = ps.subscribe("t", {"who": "b"})
            other = ps.subscribe("u")
            ps.broadcast("t", {"n": 1})
            ps.broadcast_from(a, "t", {"n": 2})
            ps.local_broadcast("t", {"n": 3})
            ps.local_broadcast_from(b, "t", {"n": 4})
            ps.direct_broadcast("solo", "t", {"n": 5})
            assert a.drain() == [{"n": 1}, {"n": 3}, {"n": 4}, {"n": 5}]
            assert b.drain() == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 5}]
            assert other.drain() == []

    run(body)


def test_local_subscribers_get_the_object_itself(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            sub = ps.subscribe("t")
            message = {"big": list(range(10))}
            ps.broadcast("t", message)
            assert await sub.get() is message

    run(body)


def test_async_iteration_waits_and_ends_on_unsubscribe(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            sub = ps.subscribe("t")
            got: list[Any] = []

            async def consume() -> None:
                async for message in sub:
                    got.append(message)

            task = asyncio.create_task(consume())
            await asyncio.sleep(0)
            ps.broadcast("t", 1)
            ps.broadcast("t", 2)
            await asyncio.sleep(0)
            ps.unsubscribe(sub)
            await asyncio.wait_for(task, 1)
            assert got == [1, 2]
            assert not sub.active
            with pytest.raises(PubSubError):
                await sub.get()

    run(body)


def test_unsubscribe_and_unsubscribe_match(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            a = ps.subscribe("t", "x")
            b = ps.subscribe("t", "x")
            c = ps.subscribe("t", "y")
            ps.unsubscribe(a)
            ps.unsubscribe(a)  # no-op
            assert ps.unsubscribe_match("t", "x") == 1
            ps.broadcast("t", "m")
            assert (a.drain(), b.drain(), c.drain()) == ([], [], ["m"])
            with c:
                pass
            assert not c.active
            assert ps.stats()["subscriptions"] == 0
            async with PubSub("other") as other:
                foreign = other.subscribe("t")
                with pytest.raises(PubSubError, match="another PubSub"):
                    ps.unsubscribe(foreign)
                assert foreign.active

    run(body)


def test_callbacks_sync_and_async(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            seen: list[Any] = []

            async def slow(message: Any) -> None:
                await asyncio.sleep(0.001)
                seen.append(("async", message))

            def boom(message: Any) -> None:
                raise RuntimeError("a callback error is logged, not raised")

            ps.subscribe("t", callback=lambda m: seen.append(("sync", m)))
            ps.subscribe("t", callback=slow)
            ps.subscribe("t", callback=boom)
            for i in range(3):
                ps.broadcast("t", i)
            await wait(lambda: len(seen) == 6)
            assert [m for kind, m in seen if kind == "sync"] == [0, 1, 2]
            assert [m for kind, m in seen if kind == "async"] == [0, 1, 2]

    run(body)


def test_a_busy_callback_subscription_lets_the_loop_run_between_messages(
    run: Run, wait: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CALLBACK_STEP of callbacks, the messages left wait for a later loop step.

    A tracker merges a large transfer's parts in a callback, one part per message: the
    node must still heartbeat between parts. With the step at 0 every message is a step.
    """
    import pubsub_zmq.subscription as subscription

    async def body() -> None:
        async with PubSub("solo") as ps:
            events: list[Any] = []
            ps.subscribe("t", callback=lambda m: events.append(m))

            async def ticker() -> None:
                while True:
                    events.append("tick")
                    await asyncio.sleep(0)

            for i in range(5):
                ps.broadcast("t", i)
            task = asyncio.create_task(ticker())
            await wait(lambda: 4 in events)
            task.cancel()
            delivered = [e for e in events if e != "tick"]
            assert delivered == [0, 1, 2, 3, 4]
            first, last = events.index(0), events.index(4)
            assert events[first:last].count("tick") >= 4, events

            # the default step runs a backlog of cheap callbacks in one go
            monkeypatch.setattr(subscription, "CALLBACK_STEP", 5.0)
            events.clear()
            for i in range(5):
                ps.broadcast("t", i)
            task = asyncio.create_task(ticker())
            await wait(lambda: 4 in events)
            task.cancel()
            first, last = events.index(0), events.index(4)
            assert "tick" not in events[first:last], events

    monkeypatch.setattr(subscription, "CALLBACK_STEP", 0.0)
    run(body)


def test_overflow_marker_for_iterators_and_callbacks(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with PubSub("solo", queue_size=3) as ps:
            sub = ps.subscribe("t")
            seen: list[Any] = []
            ps.subscribe("t", callback=seen.append, queue_size=2)
            for i in range(6):
                ps.broadcast("t", i)
            assert sub.drain() == [Overflow(3), 3, 4, 5]
            await wait(lambda: len(seen) == 3)
            assert seen == [Overflow(4), 4, 5]
            assert sub.dropped == 3
            assert ps.stats()["dropped"]["overflow"] == 7

    run(body)


def test_custom_dispatcher(run: Run) -> None:
    calls: list[tuple[list[Any], Any, Any]] = []

    def dispatcher(subs: Sequence[Subscription], sender: Any, message: Any) -> None:
        calls.append(([s.metadata for s in subs], sender, message))
        for sub in subs:
            if sub.metadata == "fastlane":
                sub.deliver({"wrapped": message})

    async def body() -> None:
        async with PubSub("solo", dispatcher=dispatcher) as ps:
            fast = ps.subscribe("t", "fastlane")
            plain = ps.subscribe("t", "plain")
            ps.broadcast("t", 1)
            ps.broadcast_from(plain, "t", 2)
            assert fast.drain() == [{"wrapped": 1}, {"wrapped": 2}]
            assert plain.drain() == []
            assert calls == [(["fastlane", "plain"], None, 1), (["fastlane", "plain"], plain, 2)]

    run(body)


def test_subscription_dies_with_its_task(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo") as ps:
            kept: list[Subscription] = []

            async def owner() -> None:
                kept.append(ps.subscribe("t"))
                kept.append(ps.subscribe("t", link=False))

            await asyncio.create_task(owner())
            await asyncio.sleep(0)
            assert [s.active for s in kept] == [False, True]
            assert ps.stats()["subscriptions"] == 1

    run(body)


def test_stop_ends_iterators_and_refuses_sends(run: Run) -> None:
    async def body() -> None:
        ps = PubSub("solo")
        early = ps.subscribe("t", link=False)  # before start: applied at start
        with pytest.raises(NotRunning):
            ps.broadcast("t", 1)
        await ps.start()
        assert ps.running
        ps.broadcast("t", 1)
        await ps.stop()
        await ps.stop()  # idempotent
        assert [m async for m in early] == []
        with pytest.raises(NotRunning):
            ps.broadcast("t", 1)
        with pytest.raises(NotRunning):
            ps.subscribe("t")
        with pytest.raises(PubSubError):
            await ps.start()

    run(body)


def test_bad_input_raises_locally(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo", max_frame_bytes=4096) as ps:
            with pytest.raises(InvalidTopic):
                ps.broadcast("", 1)
            with pytest.raises(InvalidTopic):
                ps.subscribe("a\x00b")
            with pytest.raises(TypeError):
                ps.broadcast("t", object())
            with pytest.raises(MessageTooLarge):
                ps.broadcast("t", "x" * 5000)
            ps.broadcast("t", "x" * 3000)  # fits alone: sent in its own frame
            await ps.flush()

    run(body)


@pytest.mark.parametrize(
    "options",
    [
        {"node_name": ""},
        {"node_name": 5},
        {"queue_size": 0},
        {"max_batch": 0},
        {"send_hwm": -1},
        {"gossip_interval": 2.0, "peer_timeout": 1.0},
        {"bind": "http://x"},
        {"peers": ["nowhere"]},
        {"peers": [5]},
        {"curve_allow": ["x" * 40]},
        {"curve_secret_key": "short", "curve_allow": []},
        {"max_frame_bytes": 10},
    ],
)
def test_config_errors(options: dict[str, Any]) -> None:
    kwargs = {"node_name": "n", **options}
    with pytest.raises(ConfigError):
        PubSub(**kwargs)


def test_bind_conflict_is_reported(run: Run) -> None:
    async def body() -> None:
        async with PubSub("a") as a:
            b = PubSub("b", bind=a.endpoint)
            with pytest.raises(PubSubError, match="cannot bind"):
                await b.start()
            assert not b.running

    run(body)


def test_missing_seed_logs_and_start_returns(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with PubSub("a") as a:
            endpoint = a.endpoint
        async with PubSub("b", peers=[endpoint], start_timeout=0.3) as b:
            assert b.peers() == []

    with caplog.at_level(logging.WARNING, logger="pubsub_zmq"):
        run(body)
    assert "did not answer" in caplog.text


# -- several nodes ---------------------------------------------------------------------


def test_gossip_builds_the_full_mesh_from_one_seed(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b", "c", "d"]) as nodes:
            await meshed(nodes, wait)
            stats = nodes[3].stats()
            assert set(stats["peers"]) == {"a", "b", "c"}
            assert all(p["alive"] for p in stats["peers"].values())

    run(body)


def test_seed_listing_itself_is_fine(run: Run, wait: Wait) -> None:
    async def body() -> None:
        a = PubSub("a", **FAST)
        await a.start()
        try:
            b = PubSub("b", peers=[a.endpoint, a.endpoint.replace("127.0.0.1", "localhost")])
            async with b:
                await meshed([a, b], wait)
        finally:
            await a.stop()

    run(body)


def test_broadcast_reaches_every_subscriber_exactly_once_in_order(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            await meshed(nodes, wait)
            subs = [node.subscribe("room") for node in nodes for _ in range(2)]
            quiet = [node.subscribe("elsewhere") for node in nodes]
            await subscribed(nodes, "room", wait, 2)
            per_node = 500
            for i in range(per_node):
                for node in nodes:
                    node.broadcast("room", {"from": node.node_name, "i": i})
            for node in nodes:
                await node.flush()
            total = per_node * len(nodes)
            await wait(lambda: all(len(s) >= total for s in subs), message="all messages")
            await asyncio.sleep(0.05)  # would let duplicates arrive, if there were any
            for sub in subs:
                got = sub.drain()
                assert len(got) == total
                for name in ("a", "b", "c"):
                    mine = [m["i"] for m in got if m["from"] == name]
                    assert mine == list(range(per_node))  # FIFO per sender and topic
            assert all(q.drain() == [] for q in quiet)
            for node in nodes:
                s = node.stats()
                assert s["dropped"]["lost"] == 0
                assert s["sent"]["broadcast_frames"] < per_node  # batched

    run(body)


def test_broadcast_only_travels_to_nodes_with_a_subscriber(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b", "c"]) as (a, b, c):
            await meshed([a, b, c], wait)
            sub = b.subscribe("t")
            await wait(lambda: a.remote_subscribers("t") == 1)
            a.broadcast("t", "hello")
            assert await asyncio.wait_for(sub.get(), 2) == "hello"
            await a.flush()
            assert c.stats()["received"]["messages"] == 0
            sub.unsubscribe()
            await wait(lambda: a.remote_subscribers("t") == 0, message="the unsubscription")

    run(body)


def test_broadcast_from_skips_only_the_sender(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b"]) as (a, b):
            await meshed([a, b], wait)
            me = a.subscribe("t")
            mine_too = a.subscribe("t")
            remote = b.subscribe("t")
            await subscribed([a], "t", wait, 1)
            a.broadcast_from(me, "t", "m")
            assert await asyncio.wait_for(remote.get(), 2) == "m"
            assert mine_too.drain() == ["m"]
            assert me.drain() == []

    run(body)


def test_local_broadcast_stays_local(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b"]) as (a, b):
            await meshed([a, b], wait)
            remote = b.subscribe("t")
            await subscribed([a], "t", wait, 1)
            a.local_broadcast("t", "local")
            a.broadcast("t", "global")
            assert await asyncio.wait_for(remote.get(), 2) == "global"
            assert remote.drain() == []

    run(body)


def test_direct_broadcast_reaches_only_its_node(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            a = nodes[0]
            await meshed(nodes, wait)
            subs = {n.node_name: n.subscribe("t") for n in nodes}
            for i in range(100):
                a.direct_broadcast("b", "t", i)
            a.direct_broadcast("nobody", "t", "lost")
            assert [await asyncio.wait_for(subs["b"].get(), 2) for _ in range(100)] == list(
                range(100)
            )
            await asyncio.sleep(0.05)
            assert subs["a"].drain() == []
            assert subs["c"].drain() == []
            assert subs["b"].drain() == []
            assert a.stats()["dropped"]["unknown_node"] == 1
            assert a.stats()["sent"]["directs"] == 100

    run(body)


def test_restarted_node_rejoins(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b"]) as (a, b):
            await meshed([a, b], wait)
            bind = b.endpoint
            old = b.incarnation
            await b.stop()
            async with PubSub("b", bind=bind, peers=[a.endpoint], **FAST) as b2:
                assert b2.incarnation > old
                await meshed([a, b2], wait)
                await wait(lambda: a.stats()["peers"]["b"]["incarnation"] == b2.incarnation)
                sub = b2.subscribe("t")
                await subscribed([a], "t", wait, 1)
                a.broadcast("t", "welcome back")
                assert await asyncio.wait_for(sub.get(), 2) == "welcome back"

    run(body)


def test_duplicate_name_is_refused(run: Run, wait: Wait, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with cluster(["a", "b"]) as (a, b):
            await meshed([a, b], wait)
            async with PubSub("b", peers=[a.endpoint], **{**FAST, "start_timeout": 0.3}) as dup:
                await wait(lambda: a.stats()["dropped"]["refused"] >= 1)
                assert a.stats()["peers"]["b"]["incarnation"] == b.incarnation
                assert dup.peers() == []

    with caplog.at_level(logging.ERROR, logger="pubsub_zmq"):
        run(body)
    assert "name held by a live node" in caplog.text


def test_silent_peer_is_noticed_and_stop_leaves_no_task(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with cluster(["a", "b"], peer_timeout=0.5) as (a, b):
            await meshed([a, b], wait)
            await b.stop()
            await wait(lambda: a.peers() == [], timeout=3)
            assert a.stats()["peers"]["b"]["alive"] is False

    run(body)
