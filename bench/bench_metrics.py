"""The cost of a Prometheus scrape of a node, against its presences (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_metrics.py [--quick]``. Two
:class:`tracker_zmq.Node` in this process, each with the ``--metrics-bind`` server
(:class:`tracker_zmq.health.HealthServer`) on 127.0.0.1: one empty, one holding N
presences tracked in this process (N = 100,000, 20,000 with ``--quick``; N/10 topics of
10). They run side by side and are measured in alternation, round by round, so the load
and the heap are the same for both. Medians over rounds of:

* one ``Tracker.stats()`` call, and the three ``stats()`` a scrape reads (PubSub,
  Tracker, the client endpoint);
* a scrape through the collector (``generate_latest`` of the node's registry);
* ``GET /metrics`` over HTTP (connect, request, read the answer to the end);
* ``Tracker.stats()`` while the N presences still wait in the pending delta (right after
  they were tracked, before a heartbeat took them);
* ``PubSub.stats()`` with N subscriptions of one topic each (what a websocket server
  holds: one per socket and per channel joined), against none;
* for scale, walking the presences once (``Tracker.list`` of every topic), which a
  scrape never does.

The ratio a scrape at N to a scrape at 0 is the figure: a scrape that walked the
presences would grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from tracker_zmq import Node, metrics
from tracker_zmq.health import HealthServer

FAST = {"broadcast_period": 0.2, "max_silent_periods": 10}


def median_us(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    return data


async def measure(n: int, rounds: int) -> dict[int, dict[str, float]]:
    """Two nodes in this process, one empty and one with n presences, measured in
    alternation, round by round (the machine's load and the heap are the same for both)."""
    results: dict[int, dict[str, float]] = {0: {}, n: {}}
    async with contextlib.AsyncExitStack() as stack:
        setups = []
        for size in (0, n):
            node = Node(f"bench-{size}", tracker_options=FAST)
            registry = CollectorRegistry()
            metrics.register(registry, node=node)
            health = await stack.enter_async_context(HealthServer(node, "127.0.0.1", 0))
            await stack.enter_async_context(node)
            setups.append((size, node, registry, health))
        tracker = setups[1][1].tracker
        topics = [f"topic:{i}" for i in range(max(n // 10, 1))]
        for i in range(n):
            tracker.track(f"owner{i}", topics[i % len(topics)], f"user{i}", {"i": i})
        # no await since the first track: they all wait in the pending delta
        results[n]["pending"] = median_us(tracker.stats, rounds)
        assert tracker.stats()["totals"]["pending_delta"] >= n
        await asyncio.sleep(3 * FAST["broadcast_period"])  # the delta went out
        times: dict[int, dict[str, list[float]]] = {0: {}, n: {}}
        for _ in range(rounds):
            for size, node, registry, health in setups:
                for key, fn in (
                    ("stats", node.tracker.stats),
                    (
                        "three",
                        lambda node=node: (node.pubsub.stats(), node.tracker.stats(), node.stats()),
                    ),
                    ("scrape", lambda registry=registry: generate_latest(registry)),
                ):
                    start = time.perf_counter()
                    fn()
                    times[size].setdefault(key, []).append(time.perf_counter() - start)
                start = time.perf_counter()
                await http_get(health.port)
                times[size].setdefault("http", []).append(time.perf_counter() - start)
        for size, by_key in times.items():
            for key, spent in by_key.items():
                results[size][key] = statistics.median(spent) * 1e6
        text = generate_latest(setups[1][2]).decode()
        assert f"tracker_presences {float(n)}" in text, "the scrape counts them all"
        results[n]["bytes"] = float(len(text))

        def walk() -> int:
            return sum(len(tracker.list(topic)) for topic in topics)

        results[n]["walk"] = median_us(walk, max(3, rounds // 20))
    return results


async def subscriptions(n: int, rounds: int) -> float:
    """``PubSub.stats()`` with n subscriptions of one topic each (a websocket server)."""
    node = Node(f"subs-{n}")
    async with node:
        pubsub = node.pubsub
        subs = [pubsub.subscribe(f"t:{i}", link=False, callback=print) for i in range(n)]
        spent = median_us(pubsub.stats, rounds)
        for sub in subs:
            pubsub.unsubscribe(sub)
    return spent


def row(measure: str, figure: object, target: str = "") -> None:
    print(f"{measure:<56} {figure!s:>12} {target:>10}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 presences, fewer rounds")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    rounds = 50 if args.quick else 200
    print(f"metrics: scrape cost of a node, in process{' (--quick)' if args.quick else ''}")
    print()
    row("measure", "figure", "target")
    results = asyncio.run(measure(n, rounds))
    empty, full = results[0], results[n]
    for label, key in (
        ("Tracker.stats()", "stats"),
        ("the 3 stats() of a scrape", "three"),
        ("collector scrape (generate_latest)", "scrape"),
        ("GET /metrics over HTTP", "http"),
    ):
        row(f"{label}, {n:,} presences (µs)", f"{full[key]:.0f}")
        row("  against 0 presences (x)", f"{full[key] / empty[key]:.2f}", "<= 1.5")
    row(f"Tracker.stats(), {n:,} presences in the pending delta (µs)", f"{full['pending']:.0f}")
    row("GET /metrics against one Tracker.stats() (x)", f"{full['http'] / full['stats']:.1f}")
    subs = [asyncio.run(subscriptions(count, rounds)) for count in (0, n)]
    row(f"PubSub.stats(), {n:,} subscriptions (µs)", f"{subs[1]:.0f}")
    row("  against 0 subscriptions (x)", f"{subs[1] / subs[0]:.2f}", "<= 1.5")
    row(f"walking the {n:,} presences once, for scale (µs)", f"{full['walk']:.0f}")
    row("  against a scrape (x)", f"{full['walk'] / full['scrape']:.0f}")
    row("exposition size (bytes)", f"{full['bytes']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
