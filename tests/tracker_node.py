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
import json
import sys
from typing import Any

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
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        def reply(value: Any) -> None:
            sys.stdout.write(json.dumps(value) + "\n")
            sys.stdout.flush()

        reply({"ready": args.name, "endpoint": ps.endpoint, "vsn": tracker.vsn})
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = json.loads(line)
            op = cmd["cmd"]
            try:
                if op == "track":
                    ref = tracker.track(cmd["owner"], cmd["topic"], cmd["key"], cmd["meta"])
                    reply({"ref": ref})
                elif op == "untrack":
                    tracker.untrack(cmd["owner"], cmd["topic"], cmd["key"])
                    reply({"ok": True})
                elif op == "update":
                    ref = tracker.update(cmd["owner"], cmd["topic"], cmd["key"], cmd["meta"])
                    reply({"ref": ref})
                elif op == "list":
                    reply(tracker.list(cmd["topic"]))
                elif op == "diffs":
                    reply(diffs)
                elif op == "stats":
                    reply(tracker.stats())
                elif op == "permdown":
                    await tracker.graceful_permdown()
                    reply({"ok": True})
                elif op == "stop":
                    reply({"ok": True})
                    return
                else:
                    reply({"error": f"unknown command {op!r}"})
            except Exception as exc:  # report to the test, keep serving
                reply({"error": repr(exc)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--broadcast-period", type=float, default=0.1)
    parser.add_argument("--max-silent-periods", type=int, default=3)
    parser.add_argument("--down-period", type=float, default=1.0)
    parser.add_argument("--permdown-period", type=float, default=5.0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
