"""A PubSub + Tracker node whose tracker traffic can be cut off (partition tests).

Usage: ``PYTHONPATH=. python tests/tracker_partition_node.py --name a [--bind EP] [--peer EP ...]
[--broadcast-period S] [--max-silent-periods N] [--down-period S] [--permdown-period S]``.
Prints ``{"ready": name, "endpoint": ..., "vsn": ...}`` once started, then answers each
JSON command line on stdin with one JSON line. Commands: ``track`` / ``untrack`` /
``update`` (owner, topic, key, meta), ``list`` (topic), ``stats``, ``partition`` (on:
bool), ``stop``.

The partition lives in a small PubSub subclass, not in the library: while it is on, the
node drops every tracker message it would send (``broadcast_from``, ``direct_broadcast``)
and every one it receives (the subscription callback is wrapped). The PubSub mesh itself
stays connected, as in a partition of only the tracker's traffic.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pubsub_zmq import PubSub, Subscription
from tests.support.node import arguments, pubsub, serve_commands, tracker, tracker_commands

TRACKER_TOPICS = "phx_presence:"


class PartitionablePubSub(PubSub):
    """A PubSub that drops the tracker's messages, both ways, while ``partitioned``."""

    partitioned = False
    dropped_in = 0
    dropped_out = 0

    def subscribe(self, topic: str, *args: Any, callback: Any = None, **kwargs: Any) -> Any:
        if callback is None or not topic.startswith(TRACKER_TOPICS):
            return super().subscribe(topic, *args, callback=callback, **kwargs)
        inner = callback

        def filtered(message: Any) -> Any:
            if self.partitioned:
                self.dropped_in += 1
                return None
            return inner(message)

        return super().subscribe(topic, *args, callback=filtered, **kwargs)

    def broadcast_from(self, sender: Subscription, topic: str, message: Any) -> None:
        if self.partitioned and topic.startswith(TRACKER_TOPICS):
            self.dropped_out += 1
            return
        super().broadcast_from(sender, topic, message)

    def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        if self.partitioned and topic.startswith(TRACKER_TOPICS):
            self.dropped_out += 1
            return
        super().direct_broadcast(node_name, topic, message)


async def serve(args: argparse.Namespace) -> None:
    async with pubsub(args, PartitionablePubSub) as ps, tracker(ps, args) as node:

        def stats(cmd: dict[str, Any]) -> dict[str, Any]:
            result = node.stats()
            result["partition_dropped"] = [ps.dropped_in, ps.dropped_out]
            return result

        def partition(cmd: dict[str, Any]) -> dict[str, bool]:
            ps.partitioned = bool(cmd["on"])
            return {"ok": True}

        await serve_commands(
            {"ready": args.name, "endpoint": ps.endpoint, "vsn": node.vsn},
            {**tracker_commands(node), "stats": stats, "partition": partition},
        )


def main() -> None:
    asyncio.run(serve(arguments(tracker=True, max_silent_periods=3, permdown_period=10.0)))


if __name__ == "__main__":
    main()
