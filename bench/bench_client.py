"""Tracks per second through a node's client endpoint (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_client.py [--quick]``. A
``tracker-zmq node`` runs as its own process on 127.0.0.1; a :class:`~tracker_zmq.Client`
in this process tracks presences through it three ways, each on a topic of its own,
each presence a new key with a small meta:

* **sequential**: one ``track`` awaited after the other (a round trip each);
* **pipelined**: every ``track`` started at once (``asyncio.gather``), up to the client's
  ``max_in_flight`` (500) requests outstanding on the one socket;
* **bulk**: one ``track_many`` call: batches of the node's ``max_batch`` (1,000), all in
  flight at once.

Each rate runs from the first request to the last reply. In the same run, the in-process
``Tracker.track`` (a PubSub and a Tracker in this process, one loop, no socket) gives the
floor the ratios are taken against: the target is bulk within 3x of it per presence.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from pubsub_zmq import PubSub
from tests.support.proc import CliNode, spawner
from tracker_zmq import Client, Tracker

META = {"status": "online", "device": "web"}


def row(measure: str, figure: str, note: str = "") -> None:
    print(f"| {measure} | {figure} | {note} |", flush=True)


async def in_process(n: int) -> float:
    """Presences per second of ``Tracker.track`` in this process."""
    async with PubSub("floor") as pubsub, Tracker(pubsub, broadcast_period=1.0) as tracker:
        start = time.perf_counter()
        for i in range(n):
            tracker.track("owner", "room:floor", i, META)
        return n / (time.perf_counter() - start)


async def through_node(endpoint: str, n_seq: int, n: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with Client(endpoint, client_id="bench", timeout=60.0) as client:
        start = time.perf_counter()
        for i in range(n_seq):
            await client.track("room:seq", i, META)
        rates["sequential"] = n_seq / (time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client.track("room:pipe", i, META) for i in range(n)))
        rates["pipelined"] = n / (time.perf_counter() - start)

        start = time.perf_counter()
        results = await client.track_many([("room:bulk", i, META) for i in range(n)])
        rates["bulk"] = n / (time.perf_counter() - start)
        assert all(isinstance(r, str) for r in results), "a bulk track failed"
        status = await client.status()
        assert status["clients"]["reply_dropped"] == 0, status["clients"]
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer presences")
    args = parser.parse_args()
    n_seq, n = (1000, 5000) if args.quick else (3000, 30_000)
    print(f"\n## Client endpoint throughput ({n_seq} sequential, {n} pipelined and bulk)\n")
    print("| measure | presences/s | vs in-process Tracker.track |")
    print("|---|---|---|")
    floor = asyncio.run(in_process(n))
    with tempfile.TemporaryDirectory() as logs, spawner(CliNode) as start:
        node = start(
            "bench", Path(logs), "--client-max-presences", str(n_seq + 2 * n), strict=False
        )
        rates = asyncio.run(through_node(node.client_endpoint, n_seq, n))
    row("in-process `Tracker.track`", f"{floor:,.0f}", "1x (the floor)")
    for name in ("sequential", "pipelined", "bulk"):
        row(f"client endpoint, {name}", f"{rates[name]:,.0f}", f"{floor / rates[name]:.1f}x slower")
    target = "met" if floor / rates["bulk"] <= 3 else "NOT met"
    print(f"\nTarget (bulk within 3x of in-process per presence): {target}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
