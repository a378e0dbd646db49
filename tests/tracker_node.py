"""A PubSub + Tracker node in its own process, driven over stdin/stdout (cluster tests).

Usage: ``python tests/tracker_node.py --name a [--bind EP] [--peer EP ...]
[--broadcast-period S] [--max-silent-periods N] [--down-period S] [--permdown-period S]``.
Prints one JSON line ``{"ready": name, "endpoint": ..., "vsn": ...}`` once started, then
answers each JSON command line on stdin with one JSON line on stdout. Commands:
``track`` / ``untrack`` / ``update`` (owner, topic, key, meta), ``list`` (topic),
``diffs`` (every diff the handler got so far, as ``[topic, joins, leaves]``), ``stats``,
``permdown`` (graceful permdown, then the node keeps answering), ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from nodeproc import serve_commands, tracker_arguments, tracker_commands

from pubsub_zmq import PubSub
from tracker_zmq import Tracker
from tracker_zmq.shard import Diff


async def serve(args: argparse.Namespace) -> None:
    diffs: list[list[Any]] = []

    def handler(diff: Diff) -> None:
        for topic, (joins, leaves) in diff.items():
            diffs.append([topic, joins, leaves])

    async with (
        PubSub(
            args.name,
            bind=args.bind,
            peers=args.peer,
            gossip_interval=0.1,
            peer_timeout=1.0,
            start_timeout=5.0,
        ) as ps,
        Tracker(
            ps,
            handler=handler,
            broadcast_period=args.broadcast_period,
            max_silent_periods=args.max_silent_periods,
            down_period=args.down_period,
            permdown_period=args.permdown_period,
        ) as tracker,
    ):

        async def permdown(cmd: dict[str, Any]) -> dict[str, bool]:
            await tracker.graceful_permdown()
            return {"ok": True}

        await serve_commands(
            {"ready": args.name, "endpoint": ps.endpoint, "vsn": tracker.vsn},
            {**tracker_commands(tracker), "diffs": lambda c: diffs, "permdown": permdown},
        )


def main() -> None:
    asyncio.run(serve(tracker_arguments(permdown_period=5.0)))


if __name__ == "__main__":
    main()
