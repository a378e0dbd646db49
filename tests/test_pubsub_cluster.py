"""pubsub-zmq with every node in its own process on 127.0.0.1 (marked ``cluster``).

Nodes run ``tests/pubsub_node.py`` and are driven over stdin/stdout; every wait is on a
condition with a deadline, and every process is stopped at teardown (the ``spawn`` fixture
of tests/conftest.py), also on failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from tests.support.proc import CommandNode, wait_until

pytestmark = pytest.mark.cluster

NODE = Path(__file__).with_name("pubsub_node.py")


class Node(CommandNode):
    """A pubsub node process (``pubsub_node.py``) and its command pipe."""

    def __init__(self, name: str, bind: str = "tcp://127.0.0.1:0", peers: tuple[str, ...] = ()):
        args = ["--bind", bind, *(a for p in peers for a in ("--peer", p))]
        super().__init__(NODE, name, *args, check_errors=False)
        self.incarnation: int = self.ready["incarnation"]


def meshed(nodes: list[Node]) -> None:
    names = {n.name for n in nodes}
    wait_until(
        lambda: all(set(n.call("info")["peers"]) == names - {n.name} for n in nodes),
        what="the full mesh",
    )


def test_cluster_broadcast_direct_and_gossip(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", peers=(a.endpoint,))
    c = spawn("c", peers=(b.endpoint,))  # knows only b: finds a by gossip
    nodes = [a, b, c]
    meshed(nodes)
    for node in nodes:
        node.call("subscribe", topic="room")
        node.call("subscribe", topic="dm")
    wait_until(
        lambda: all(n.call("remote_subscribers", topic="room") == 2 for n in nodes),
        what="subscriptions everywhere",
    )
    count = 300
    for node in nodes:
        node.call("broadcast", topic="room", messages=[[node.name, i] for i in range(count)])
    wait_until(
        lambda: all(len(n.call("received", topic="room")) >= 3 * count for n in nodes),
        what="every broadcast",
    )
    for node in nodes:
        got = node.call("received", topic="room")
        assert len(got) == 3 * count  # exactly once
        for sender in ("a", "b", "c"):
            assert [i for s, i in got if s == sender] == list(range(count))
    a.call("direct", node="c", topic="dm", messages=["only for c"])
    wait_until(lambda: c.call("received", topic="dm") == ["only for c"], what="the direct")
    time.sleep(0.1)
    assert a.call("received", topic="dm") == []
    assert b.call("received", topic="dm") == []
    assert all(n.call("stats")["dropped"]["lost"] == 0 for n in nodes)


def test_sigkilled_node_restarts_and_rejoins(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", peers=(a.endpoint,))
    c = spawn("c", peers=(a.endpoint,))
    meshed([a, b, c])
    old = b.incarnation
    b.kill()
    wait_until(lambda: a.call("info")["peers"] == ["c"], what="a noticing b is gone")
    b2 = spawn("b", bind=b.endpoint, peers=(a.endpoint,))
    assert b2.incarnation > old
    meshed([a, b2, c])
    assert c.call("stats")["peers"]["b"]["incarnation"] == b2.incarnation
    b2.call("subscribe", topic="t")
    wait_until(lambda: c.call("remote_subscribers", topic="t") == 1, what="b2's subscription")
    c.call("broadcast", topic="t", messages=["hello again"])
    wait_until(lambda: b2.call("received", topic="t") == ["hello again"], what="delivery")


def test_garbage_does_not_hurt_a_node(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", peers=(a.endpoint,))
    meshed([a, b])
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(a.endpoint)
        for junk in (b"", b"\x00\x01\x02", os.urandom(2000), b"x" * 100_000):
            dealer.send(junk)
        dealer.send_multipart([b"a", b"b", b"c"])
        wait_until(
            lambda: a.call("stats")["dropped"]["invalid"] >= 4, what="the junk to be counted"
        )
    finally:
        dealer.close(linger=0)
        ctx.term()
    b.call("subscribe", topic="t")
    wait_until(lambda: a.call("remote_subscribers", topic="t") == 1, what="subscription")
    a.call("broadcast", topic="t", messages=["alive"])
    wait_until(lambda: b.call("received", topic="t") == ["alive"], what="delivery")
    assert a.call("info")["peers"] == ["b"]
