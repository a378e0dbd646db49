"""A mesh of PubSub nodes in one process, and the wait until its trackers see each other.

test_tracker.py and test_presence.py build their clusters on it: pytest's ``pythonpath``
puts this folder on the path, and they import it as ``mesh``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from aio import until

from pubsub_zmq import PubSub
from tracker_zmq import Tracker


async def pubsubs(stack: contextlib.AsyncExitStack, n: int) -> list[PubSub]:
    """``n`` started PubSub nodes ``n0``, ``n1``... on 127.0.0.1, each seeded with the
    one before, with short gossip periods; ``stack`` stops them."""
    nodes: list[PubSub] = []
    seeds: list[str] = []
    for i in range(n):
        pubsub = PubSub(
            f"n{i}", peers=seeds, gossip_interval=0.1, peer_timeout=1.0, start_timeout=5.0
        )
        await stack.enter_async_context(pubsub)
        seeds = [pubsub.endpoint]
        nodes.append(pubsub)
    return nodes


def sees_up(tracker: Tracker, trackers: Sequence[Tracker]) -> bool:
    """Whether every shard of ``tracker`` sees every other tracker's replica up."""
    others = {t.pubsub.node_name: t.vsn for t in trackers if t is not tracker}
    return all(
        {name: r["vsn"] for name, r in s["replicas"].items() if r["status"] == "up"} == others
        for s in tracker.stats()["shards"]
    )


async def meshed(trackers: Sequence[Tracker]) -> None:
    """Wait until every node has every other as a peer and sees its replica up."""
    n = len(trackers)
    await until(lambda: all(len(t.pubsub.peers()) == n - 1 for t in trackers), message="mesh")
    await until(lambda: all(sees_up(t, trackers) for t in trackers), message="replicas up")
