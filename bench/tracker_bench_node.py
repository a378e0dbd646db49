"""A PubSub + Tracker node process for ``bench/bench_tracker.py`` (not a test).

Usage: ``PYTHONPATH=. python bench/tracker_bench_node.py --name a [--bind EP] [--peer EP ...]
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
* ``reached`` (topic): when the handler's join count for ``--watch TOPIC`` reached N,
  and ``lag``: the longest step of the node's event loop until then (how late a 5 ms
  sleep woke up, at most);
* ``lag``: ``{"max": S}``, the longest step of the loop since the node started;
* ``count`` (topic): presences listed; ``stats``; ``stop``.

Its command line, PubSub, Tracker and command loop are the test nodes' ones
(:mod:`tests.support.node`); ``bench/bench_tracker.py`` drives it with
:class:`tests.support.proc.CommandNode`, which puts the repository root on its path.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from typing import Any

from pubsub_zmq import PubSub
from tests.support.node import arguments, pubsub, serve_commands, tracker
from tracker_zmq import Tracker
from tracker_zmq.shard import Diff

_LAG_TICK = 0.005
"""Seconds between two wake-ups of the loop-lag monitor."""


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

    lag = {"max": 0.0}

    async def monitor() -> None:
        # the longest step of the loop: how late a short sleep wakes up, at most
        while True:
            before = time.monotonic()
            await asyncio.sleep(_LAG_TICK)
            late = time.monotonic() - before - _LAG_TICK
            if late > lag["max"]:
                lag["max"] = late
                if watch["at"] is None:
                    watch["lag"] = late

    watch["lag"] = 0.0
    lag_task = asyncio.create_task(monitor())
    async with pubsub(args, PubSub, start_timeout=10.0) as ps:
        node = tracker(ps, args, handler=handler, transfer_timeout=args.transfer_timeout)
        started = time.monotonic()
        async with node:
            await serve_commands(
                {"ready": args.name, "endpoint": ps.endpoint, "vsn": node.vsn, "started": started},
                commands(args.name, node, joins, leaves, watch, lag),
            )
    lag_task.cancel()


def commands(
    name: str,
    node: Tracker,
    joins: dict[str, dict[Any, float]],
    leaves: dict[str, dict[Any, float]],
    watch: dict[str, Any],
    lag: dict[str, float],
) -> dict[str, Any]:
    """The bench node's commands (see the module docstring)."""

    def track(cmd: dict[str, Any]) -> dict[str, float]:
        t = time.monotonic()
        node.track(name, cmd["topic"], cmd["key"], {})
        return {"t": t}

    async def series(cmd: dict[str, Any]) -> dict[str, float]:
        times: dict[str, float] = {}
        for key in cmd["keys"]:
            await asyncio.sleep(random.uniform(0, cmd["gap"]))
            times[key] = time.monotonic()
            node.track(name, cmd["topic"], key, {})
        return times

    async def fill(cmd: dict[str, Any]) -> dict[str, float]:
        t = time.monotonic()
        topic, track = cmd["topic"], node.track
        chunk = cmd.get("chunk") or cmd["n"]
        for i in range(cmd["n"]):
            track(i, topic, i, {})
            if (i + 1) % chunk == 0:  # let heartbeats carry it in pieces
                await asyncio.sleep(cmd.get("pause", 0))
        return {"seconds": time.monotonic() - t}

    def stats(cmd: dict[str, Any]) -> dict[str, Any]:
        result = node.stats()
        del result["shards"]
        return result

    return {
        "track": track,
        "series": series,
        "fill": fill,
        "joins": lambda c: joins.get(str(c["topic"]), {}),
        "leaves": lambda c: leaves.get(str(c["topic"]), {}),
        "reached": lambda c: {"at": watch["at"], "count": watch["count"], "lag": watch["lag"]},
        "lag": lambda c: lag,
        "count": lambda c: {"count": len(node.list(c["topic"]))},
        "stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfer-timeout", type=float, default=None)
    parser.add_argument("--watch", default=None, help="TOPIC:N: stamp when N joins arrived")
    parser.add_argument("--log", action="store_true", help="log replica events to stderr")
    args = arguments(
        tracker=True, parser=parser, broadcast_period=0.05, down_period=None, permdown_period=60.0
    )
    if args.log:
        logging.basicConfig(level=logging.DEBUG, format="%(created).3f %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
