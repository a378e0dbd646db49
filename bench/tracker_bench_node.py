"""A PubSub + Tracker node process for ``bench/bench_tracker.py`` (not a test).

Usage: ``python bench/tracker_bench_node.py --name a [--bind EP] [--peer EP ...]
[--broadcast-period S] [--down-period S] [--watch TOPIC:N]``. Prints one JSON line
``{"ready": name, "endpoint": ..., "vsn": ..., "started": T}`` once started (``started``:
``time.monotonic()`` just before the tracker started; on Linux that clock is system-wide,
so the bench compares it across processes), then answers each JSON command line on stdin
with one JSON line on stdout. The handler stamps every join and leave with
``time.monotonic()`` as it reaches it. Commands:

* ``track`` (topic, key): one presence; answers the time just before ``track``;
* ``series`` (topic, keys, gap): tracks the keys one by one, a random pause of up to
  ``gap`` seconds between them; answers ``{key: time just before its track}``;
* ``fill`` (topic, n[, chunk, pause]): tracks ``n`` presences in one loop, no round trip
  per presence (with ``chunk``: a pause of ``pause`` seconds after every chunk);
* ``joins`` / ``leaves`` (topic): ``{key: time the handler got it}``;
* ``reached`` (topic): when the handler's join count for ``--watch TOPIC`` reached N;
* ``count`` (topic): presences listed; ``stats``; ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from typing import Any

from pubsub_zmq import PubSub
from tracker_zmq import Tracker
from tracker_zmq.shard import Diff


async def serve(args: argparse.Namespace) -> None:
    joins: dict[str, dict[Any, float]] = {}
    leaves: dict[str, dict[Any, float]] = {}
    watch_topic, _, watch_n = (args.watch or ":0").partition(":")
    watch = {"topic": watch_topic, "target": int(watch_n), "count": 0, "at": None}
    big = watch["target"] > 1000

    def handler(diff: Diff) -> None:
        now = time.monotonic()
        for topic, (joined, left) in diff.items():
            if topic == watch["topic"]:
                watch["count"] += len(joined) - len(left)
                if watch["at"] is None and watch["count"] >= watch["target"]:
                    watch["at"] = now
                if big:
                    continue
            seen = joins.setdefault(str(topic), {})
            for key, _ in joined:
                seen.setdefault(key, now)
            gone = leaves.setdefault(str(topic), {})
            for key, _ in left:
                gone.setdefault(key, now)

    async with PubSub(
        args.name,
        bind=args.bind,
        peers=args.peer,
        gossip_interval=0.1,
        peer_timeout=1.0,
        start_timeout=10.0,
    ) as ps:
        tracker = Tracker(
            ps,
            handler=handler,
            broadcast_period=args.broadcast_period,
            down_period=args.down_period,
            permdown_period=args.permdown_period,
            transfer_timeout=args.transfer_timeout,
        )
        started = time.monotonic()
        async with tracker:
            await session(args, ps, tracker, joins, leaves, watch, started)


async def session(
    args: argparse.Namespace,
    ps: PubSub,
    tracker: Tracker,
    joins: dict[str, dict[Any, float]],
    leaves: dict[str, dict[Any, float]],
    watch: dict[str, Any],
    started: float,
) -> None:
    reader = asyncio.StreamReader(limit=1 << 24)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(value: Any) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    reply({"ready": args.name, "endpoint": ps.endpoint, "vsn": tracker.vsn, "started": started})
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["cmd"]
        try:
            if op == "track":
                t = time.monotonic()
                tracker.track(args.name, cmd["topic"], cmd["key"], {})
                reply({"t": t})
            elif op == "series":
                times: dict[str, float] = {}
                for key in cmd["keys"]:
                    await asyncio.sleep(random.uniform(0, cmd["gap"]))
                    times[key] = time.monotonic()
                    tracker.track(args.name, cmd["topic"], key, {})
                reply(times)
            elif op == "fill":
                t = time.monotonic()
                topic, track = cmd["topic"], tracker.track
                chunk = cmd.get("chunk") or cmd["n"]
                for i in range(cmd["n"]):
                    track(i, topic, i, {})
                    if (i + 1) % chunk == 0:  # let heartbeats carry it in pieces
                        await asyncio.sleep(cmd.get("pause", 0))
                reply({"seconds": time.monotonic() - t})
            elif op == "joins":
                reply(joins.get(str(cmd["topic"]), {}))
            elif op == "leaves":
                reply(leaves.get(str(cmd["topic"]), {}))
            elif op == "reached":
                reply({"at": watch["at"], "count": watch["count"]})
            elif op == "count":
                reply({"count": len(tracker.list(cmd["topic"]))})
            elif op == "stats":
                stats = tracker.stats()
                del stats["shards"]
                reply(stats)
            elif op == "stop":
                reply({"ok": True})
                return
            else:
                reply({"error": f"unknown command {op!r}"})
        except Exception as exc:  # report to the bench, keep serving
            reply({"error": repr(exc)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--broadcast-period", type=float, default=0.05)
    parser.add_argument("--down-period", type=float, default=None)
    parser.add_argument("--permdown-period", type=float, default=60.0)
    parser.add_argument("--transfer-timeout", type=float, default=None)
    parser.add_argument("--watch", default=None, help="TOPIC:N: stamp when N joins arrived")
    parser.add_argument("--log", action="store_true", help="log replica events to stderr")
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(level=logging.DEBUG, format="%(created).3f %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
