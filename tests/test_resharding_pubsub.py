"""Changing a running cluster's PubSub partitions (``pool_size``) in two deployments.

Three ``tests/pubsub_node.py`` processes start with one partition each; each is
restarted with ``--pool-size 4 --broadcast-pool-size 1`` (it reads four partitions and
still publishes on the one the others read), then each with ``--pool-size 4`` alone.
In every configuration on the way (seven in all) every node broadcasts a stream on 16
topics, which spread over the four partitions, and every node must receive each
message exactly once (the others' over the mesh, its own locally): 0 lost, 0
duplicated, counted end to end. A one-step change (a node broadcasting on four
partitions beside one that reads one) shows in the stats and the log. Docs: pubsub.md,
"Partitions"; guides/operating.md, "Re-sharding".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pubsub_zmq.partitions import Partitions
from tests.support.proc import CommandNode, free_port, spawner, wait_until

pytestmark = pytest.mark.cluster

NODE = Path(__file__).with_name("pubsub_node.py")
NAMES = ("a", "b", "c")
TOPICS = [f"stream:{i}" for i in range(16)]
PER_TOPIC = 10


@pytest.fixture
def spawn() -> Iterator[Callable[..., CommandNode]]:
    with spawner(lambda name, *args: CommandNode(NODE, name, *args)) as start:
        yield start


def test_two_step_partition_change_loses_and_doubles_nothing(
    spawn: Callable[..., CommandNode],
) -> None:
    binds = {name: f"tcp://127.0.0.1:{free_port()}" for name in NAMES}
    nodes: dict[str, CommandNode] = {}

    def start(name: str, *options: str) -> None:
        peers = [a for n in NAMES if n != name and n in nodes for a in ("--peer", binds[n])]
        node = nodes[name] = spawn(name, "--bind", binds[name], *peers, *options)
        for topic in TOPICS:
            node.call("subscribe", topic=topic)

    def stream(round_: int) -> int:
        """Every node broadcasts on every topic; every other node gets each message once."""
        names = {n.name for n in nodes.values()}
        wait_until(
            lambda: all(set(n.call("info")["peers"]) == names - {n.name} for n in nodes.values()),
            timeout=20,
            what="the full mesh",
        )
        for node in nodes.values():  # subscriptions seen on the PUB each topic goes out on
            wait_until(
                lambda node=node: all(
                    node.call("remote_subscribers", topic=t) == len(NAMES) - 1 for t in TOPICS
                ),
                timeout=20,
                what=f"{node.name} sees every subscription",
            )
        for node in nodes.values():
            for topic in TOPICS:
                messages = [[round_, node.name, i] for i in range(PER_TOPIC)]
                node.call("broadcast", topic=topic, messages=messages)
        expected = len(NAMES) * PER_TOPIC  # its own come back too, delivered locally

        def this_round(node: CommandNode, topic: str) -> list[tuple[str, int]]:
            got = node.call("received", topic=topic)
            return [(m[1], m[2]) for m in got if m[0] == round_]

        for node in nodes.values():
            wait_until(
                lambda node=node: all(len(this_round(node, t)) >= expected for t in TOPICS),
                timeout=20,
                what=f"round {round_} on {node.name}",
            )
        counted = 0
        for node in nodes.values():
            for topic in TOPICS:
                got = Counter(this_round(node, topic))
                want = Counter((sender, i) for sender in NAMES for i in range(PER_TOPIC))
                assert got == want, f"{node.name} {topic}: {got - want} extra, {want - got} lost"
                counted += sum(got.values())
        return counted

    for name in NAMES:
        start(name, "--pool-size", "1")
    total = stream(0)
    steps = [("--pool-size", "4", "--broadcast-pool-size", "1"), ("--pool-size", "4")]
    round_ = 0
    for options in steps:
        for name in NAMES:
            nodes[name].stop()
            del nodes[name]
            start(name, *options)
            round_ += 1
            total += stream(round_)
    assert total == 7 * len(NAMES) * len(NAMES) * len(TOPICS) * PER_TOPIC
    for node in nodes.values():
        stats = node.call("stats")
        assert stats["partitions"]["pool_size"] == 4
        assert len(stats["partitions"]["pub_endpoints"]) == 4
        assert stats["dropped"]["unread_partition"] == 0
        assert stats["dropped"]["lost"] == 0


def test_a_one_step_partition_change_shows_in_stats_and_logs(tmp_path: Path) -> None:
    log = (tmp_path / "b.log").open("w")
    with spawner(lambda name, *args, **kw: CommandNode(NODE, name, *args, **kw)) as start:
        a = start("a", "--pool-size", "1")
        # the skipped step: four partitions broadcast on, beside a node that reads one
        b = start("b", "--peer", a.ready["endpoint"], "--pool-size", "4", stderr=log)
        for topic in TOPICS:
            a.call("subscribe", topic=topic)
        wait_until(lambda: b.call("info")["peers"] == ["a"], timeout=20, what="the mesh")
        for topic in TOPICS:
            b.call("broadcast", topic=topic, messages=list(range(PER_TOPIC)))
        stats = b.call("stats")
        assert stats["partitions"]["unread_by"] == ["a"]
        unread = [t for t in TOPICS if Partitions(4).partition(t) > 0]
        assert stats["dropped"]["unread_partition"] == len(unread) * PER_TOPIC
    log.close()
    text = (tmp_path / "b.log").read_text()
    assert "member a (incarnation" in text
    assert "reads 1 partition(s) and this node broadcasts on 4" in text
