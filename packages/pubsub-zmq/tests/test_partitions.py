"""partitions.py and PubSub(pool_size=, broadcast_pool_size=): partitions of the mesh."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from pubsub_zmq import ConfigError, PubSub, generate_keypair
from pubsub_zmq.partitions import MAX_PARTITIONS, Partitions, partition_for, unread_by
from pubsub_zmq.wire import Control, Kind, NodeRecord, decode, encode_control, sender_field

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0, "start_timeout": 5.0}
TOPICS = [f"room:{i}" for i in range(16)]

Run = Callable[..., Any]
Wait = Callable[..., Any]


def test_partition_rules() -> None:
    assert partition_for("room:1", 4) == __import__("zlib").crc32(b"room:1") % 4
    assert Partitions().partition("anything") == 0
    assert Partitions(4, 1).partition("room:1") == 0
    assert {Partitions(4).partition(t) for t in TOPICS} == {0, 1, 2, 3}
    assert Partitions(4, 2).publish_size == 2
    for bad in ((0,), (MAX_PARTITIONS + 1,), (True,), (2, 3), (2, 0), ("2",)):
        with pytest.raises(ConfigError):
            Partitions(*bad)  # type: ignore[arg-type]
    assert unread_by(0, [("a", 1), ("b", 4)]) == []
    assert unread_by(2, [("a", 1), ("b", 4), ("c", 2)]) == ["a", "c"]


def test_records_carry_the_partitions_additively() -> None:
    one = NodeRecord("a", 1, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert "pool" not in one.to_json()
    assert "pubs" not in one.to_json()  # byte for byte what the release before sent
    four = NodeRecord(
        "b", 2, "tcp://127.0.0.1:3", "tcp://127.0.0.1:4", None, one.versions,
        ("tcp://127.0.0.1:5", "tcp://127.0.0.1:6", "tcp://127.0.0.1:7"), 4,
    )  # fmt: skip
    frame = decode(encode_control(Kind.HELLO, 2, 1, sender_field("b"), Control(four, (one,))))
    assert frame.control is not None
    node, members = frame.control.node, frame.control.members
    assert node.pool_size == 4
    assert node.pubs == four.pubs
    assert members[0].pool_size == 1
    assert members[0].pubs == ()


@contextlib.asynccontextmanager
async def nodes(specs: Sequence[tuple[str, dict[str, Any]]]) -> AsyncIterator[list[PubSub]]:
    started: list[PubSub] = []
    try:
        for name, options in specs:
            peers = [started[0].endpoint] if started else []
            node = PubSub(name, peers=peers, **{**FAST, **options})
            started.append(node)
            await node.start()
        yield started
    finally:
        for node in started:
            await node.stop()


async def exchange(
    sender: PubSub, receiver: PubSub, wait: Wait, read: Sequence[str] = TOPICS
) -> dict[str, list[Any]]:
    """Subscribe ``receiver`` to every topic, broadcast from ``sender``; what arrived.

    Waits first until the sender sees the subscriptions of the topics in ``read`` (on
    the partitions they go out on).
    """
    got: dict[str, list[Any]] = {t: [] for t in TOPICS}
    for topic in TOPICS:
        receiver.subscribe(topic, callback=got[topic].append)
    await wait(
        lambda: all(sender.remote_subscribers(t) >= 1 for t in read),
        message="the subscriptions at the sender",
    )
    for i in range(20):
        for topic in TOPICS:
            sender.broadcast(topic, i)
    return got


def test_four_partitions_deliver_every_topic_in_order(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with nodes([("a", {"pool_size": 4}), ("b", {"pool_size": 4})]) as (a, b):
            stats = a.stats()["partitions"]
            assert stats["pool_size"] == 4
            assert len(set(stats["pub_endpoints"])) == 4
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            got = await exchange(a, b, wait)
            await wait(lambda: all(len(v) == 20 for v in got.values()), message="delivery")
            assert all(v == list(range(20)) for v in got.values())
            assert a.stats()["dropped"]["unread_partition"] == 0
            assert b.stats()["dropped"]["lost"] == 0

    run(body)


def test_a_partition_a_peer_does_not_read_is_counted_and_logged(
    run: Run, wait: Wait, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with nodes([("a", {"pool_size": 4}), ("b", {})]) as (a, b):
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            on_zero = [t for t in TOPICS if Partitions(4).partition(t) == 0]
            got = await exchange(a, b, wait, on_zero)
            assert all(a.remote_subscribers(t) == 0 for t in TOPICS if t not in on_zero)
            await wait(lambda: all(len(got[t]) == 20 for t in on_zero), message="partition 0")
            await a.flush()
            missed = [t for t in TOPICS if t not in on_zero]
            assert all(got[t] == [] for t in missed)  # b reads partition 0 only
            assert a.stats()["dropped"]["unread_partition"] == 20 * len(missed)
            assert a.stats()["partitions"]["unread_by"] == ["b"]

    with caplog.at_level(logging.WARNING, logger="pubsub_zmq"):
        run(body)
    assert "member b (incarnation" in caplog.text
    assert "reads 1 partition(s) and this node broadcasts on 4" in caplog.text


def test_broadcast_pool_size_keeps_a_one_partition_peer_whole(run: Run, wait: Wait) -> None:
    async def body() -> None:
        specs = [("a", {"pool_size": 4, "broadcast_pool_size": 1}), ("b", {})]
        async with nodes(specs) as (a, b):
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            for sender, receiver in ((a, b), (b, a)):
                got = await exchange(sender, receiver, wait)
                await wait(lambda got=got: all(len(v) == 20 for v in got.values()), message="all")
                for topic in TOPICS:
                    receiver.unsubscribe_match(topic, None)
            assert a.stats()["dropped"]["unread_partition"] == 0

    run(body)


def test_partitions_with_curve(run: Run, wait: Wait) -> None:
    ka, kb = generate_keypair(), generate_keypair()

    async def body() -> None:
        a = PubSub("a", curve_secret_key=ka.secret, curve_allow=[kb.public], pool_size=3, **FAST)
        await a.start()
        b = PubSub(
            "b",
            peers=[(a.endpoint, ka.public)],
            curve_secret_key=kb.secret,
            curve_allow=[ka.public],
            pool_size=3,
            **FAST,
        )
        try:
            await b.start()
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            got = await exchange(a, b, wait)
            await wait(lambda: all(len(v) == 20 for v in got.values()), message="delivery")
            assert all(v == list(range(20)) for v in got.values())
        finally:
            await b.stop()
            await a.stop()

    run(body)
