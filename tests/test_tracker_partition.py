"""A tracker partition with every node in its own process on 127.0.0.1 (``cluster``).

Nodes run ``tests/tracker_partition_node.py`` (PubSub + Tracker, broadcast_period 0.1 s,
max_silent_periods 3, down_period 1 s, permdown_period 10 s), whose PubSub can drop all
of the tracker's traffic of that node, both ways. One node is cut off: the others see it
down and its presences leave, and it sees them down. Both sides change presences during
the split; after the heal the node comes back up with the same vsn and every node lists
the same presences. Every wait is on a condition with a deadline, and every process is
stopped at teardown (the ``spawn`` fixture of tests/conftest.py), also on failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.proc import CommandNode, wait_until

pytestmark = pytest.mark.cluster

NODE = Path(__file__).with_name("tracker_partition_node.py")
TOPIC = "room"


class Node(CommandNode):
    """A partitionable tracker node process and its command pipe."""

    def __init__(self, name: str, peers: tuple[str, ...] = ()) -> None:
        super().__init__(NODE, name, *(a for p in peers for a in ("--peer", p)))
        self.vsn: int = self.ready["vsn"]

    def listing(self) -> list[tuple[str, str]]:
        """The topic's presences as sorted (key, meta as JSON) pairs."""
        return sorted(
            (key, json.dumps(meta, sort_keys=True)) for key, meta in self.call("list", topic=TOPIC)
        )

    def keys(self) -> set[str]:
        return {key for key, _ in self.call("list", topic=TOPIC)}

    def replicas(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("stats")["replicas"]
        return result


def statuses(node: Node) -> dict[str, tuple[int, str]]:
    return {name: (info["vsn"], info["status"]) for name, info in node.replicas().items()}


def test_partition_down_then_heal_converges(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", (a.endpoint,))
    c = spawn("c", (a.endpoint,))
    nodes = [a, b, c]
    for node in nodes:
        node.call("track", owner="u", topic=TOPIC, key=node.name, meta={"v": 1})
        node.call("track", owner="u", topic=TOPIC, key=f"{node.name}-change", meta={"v": 1})
    c.call("track", owner="u", topic=TOPIC, key="c-gone", meta={"v": 1})
    everyone = {"a", "a-change", "b", "b-change", "c", "c-change", "c-gone"}
    wait_until(lambda: all(n.keys() == everyone for n in nodes), 10.0, "convergence")

    # cut c off: it neither sends nor receives tracker messages
    c.call("partition", on=True)
    majority = {"a", "a-change", "b", "b-change"}
    wait_until(lambda: a.keys() == majority and b.keys() == majority, 5.0, "c's presences to leave")
    wait_until(lambda: c.keys() == {"c", "c-change", "c-gone"}, 5.0, "c to see a and b leave")
    for node in (a, b):
        assert statuses(node)["c"] == (c.vsn, "down")
    assert statuses(c) == {"a": (a.vsn, "down"), "b": (b.vsn, "down")}

    # both sides change presences during the split
    a.call("update", owner="u", topic=TOPIC, key="a-change", meta={"v": 2})
    b.call("untrack", owner="u", topic=TOPIC, key="b-change")
    b.call("track", owner="u", topic=TOPIC, key="b-new", meta={"v": 1})
    c.call("update", owner="u", topic=TOPIC, key="c-change", meta={"v": 2})
    c.call("untrack", owner="u", topic=TOPIC, key="c-gone")
    c.call("track", owner="u", topic=TOPIC, key="c-new", meta={"v": 1})
    split_majority = {"a", "a-change", "b", "b-new"}
    wait_until(
        lambda: a.keys() == split_majority and b.keys() == split_majority,
        5.0,
        "the majority's changes on a and b",
    )
    time.sleep(0.5)  # several periods: nothing leaks across the partition
    assert c.keys() == {"c", "c-change", "c-new"}
    assert a.keys() == split_majority
    dropped_in, dropped_out = c.call("stats")["partition_dropped"]
    assert dropped_in > 0
    assert dropped_out > 0

    # heal: c comes back up with the same vsn, everyone converges on the same lists
    c.call("partition", on=False)
    final = split_majority | {"c", "c-change", "c-new"}
    wait_until(
        lambda: all(n.keys() == final for n in nodes) and a.listing() == b.listing() == c.listing(),
        10.0,
        "convergence after the heal",
    )
    metas = dict(a.call("list", topic=TOPIC))
    assert metas["a-change"]["v"] == 2
    assert "phx_ref_prev" in metas["a-change"]
    assert metas["c-change"]["v"] == 2
    assert "phx_ref_prev" in metas["c-change"]
    wait_until(
        lambda: statuses(a)["c"] == statuses(b)["c"] == (c.vsn, "up"),
        5.0,
        "c up again with the same vsn",
    )
    wait_until(
        lambda: statuses(c) == {"a": (a.vsn, "up"), "b": (b.vsn, "up")}, 5.0, "a and b up on c"
    )
    # still the same lists a little later (no late leave or ghost)
    time.sleep(0.5)
    assert a.listing() == b.listing() == c.listing()
    assert c.keys() == final
