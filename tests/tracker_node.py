"""A PubSub + Tracker node in its own process, driven over stdin/stdout (cluster tests).

Usage: ``PYTHONPATH=. python tests/tracker_node.py --name a [--bind EP] [--peer EP ...]
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

from pubsub_zmq import PubSub
from tests.support.node import arguments, pubsub, serve_commands, tracker, tracker_commands
from tracker_zmq.shard import Diff


async def serve(args: argparse.Namespace) -> None:
    diffs: list[list[Any]] = []

    def handler(diff: Diff) -> None:
        for topic, (joins, leaves) in diff.items():
            diffs.append([topic, joins, leaves])

    async with pubsub(args, PubSub) as ps, tracker(ps, args, handler=handler) as node:

        async def permdown(cmd: dict[str, Any]) -> dict[str, bool]:
            await node.graceful_permdown()
            return {"ok": True}

        await serve_commands(
            {"ready": args.name, "endpoint": ps.endpoint, "vsn": node.vsn},
            {**tracker_commands(node), "diffs": lambda c: diffs, "permdown": permdown},
        )


def main() -> None:
    asyncio.run(serve(arguments(tracker=True, max_silent_periods=3, permdown_period=5.0)))


if __name__ == "__main__":
    main()
