"""PubSub throughput with 1, 2 and 4 partitions (``pool_size``) (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_partitions.py``. Each case runs
a publishing node and a subscribing node in two processes on loopback, both with the
same ``pool_size``; the publisher broadcasts, round-robin over 16 topics (which spread
over the partitions by crc32), a string whose JSON encoding is the payload size, for
``--seconds``; the subscriber counts what its callbacks get. High-water marks are
unlimited, so the runs are lossless. Throughput is messages delivered divided by the time
from the first to the last; the table gives each against one partition, measured in
the same run (cases interleaved, median of ``--repeat`` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from pubsub_zmq import PubSub
from tests.support.proc import free_port

TOPICS = [f"bench:{i}" for i in range(16)]


def subscriber(port: int, pub_port: int, pool: int, out: Any) -> None:
    async def main() -> None:
        async with PubSub(
            "sub",
            f"tcp://127.0.0.1:{port}",
            [f"tcp://127.0.0.1:{pub_port}"],
            recv_hwm=0,
            send_hwm=0,
            pool_size=pool,
        ) as ps:
            count = 0
            first = last = 0.0
            ended: set[str] = set()
            finished = asyncio.Event()

            def on(topic: str) -> Any:
                def count_one(message: Any) -> None:
                    nonlocal count, first, last
                    if message == "END":
                        ended.add(topic)
                        if len(ended) == len(TOPICS):
                            finished.set()
                        return
                    if topic in ended:
                        return
                    if count == 0:
                        first = time.perf_counter()
                    count += 1
                    last = time.perf_counter()

                return count_one

            for topic in TOPICS:
                ps.subscribe(topic, callback=on(topic))
            await finished.wait()
            out.put((count, last - first, ps.stats()["dropped"]["lost"]))

    asyncio.run(main())


def publisher(port: int, size: int, pool: int, seconds: float, done: Any) -> None:
    async def main() -> None:
        async with PubSub(
            "pub", f"tcp://127.0.0.1:{port}", send_hwm=0, recv_hwm=0, pool_size=pool
        ) as ps:
            while any(ps.remote_subscribers(t) < 1 for t in TOPICS):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            message = "x" * (size - 2)  # JSON: the string and its two quotes
            broadcast = ps.broadcast
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for _ in range(256):
                    for topic in TOPICS:
                        broadcast(topic, message)
                await ps.flush()
            while not done.is_set():
                for topic in TOPICS:
                    broadcast(topic, "END")
                await ps.flush()
                await asyncio.sleep(0.005)

    asyncio.run(main())


def run_case(size: int, pool: int, seconds: float) -> tuple[float, int, int]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    done = ctx.Event()
    port, sub_port = free_port(), free_port()
    pub = ctx.Process(target=publisher, args=(port, size, pool, seconds, done))
    sub = ctx.Process(target=subscriber, args=(sub_port, port, pool, out))
    pub.start()
    sub.start()
    try:
        count, elapsed, lost = out.get(timeout=seconds * 10 + 30)
        done.set()
        pub.join(10)
        sub.join(10)
    finally:
        for proc in (pub, sub):
            if proc.is_alive():
                proc.kill()
                proc.join()
    return count / elapsed, lost, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="sending time per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 16384])
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"pubsub-zmq partitions, loopback, 2 processes, 16 topics, {args.repeat} runs, median")
    print(
        f"{'size':>6} {'pool':>5} {'msg/s':>12} {'MB/s':>8} {'vs 1':>6} {'delivered':>10} "
        f"{'lost':>6}"
    )
    for size in args.sizes:
        rates: dict[int, list[float]] = {pool: [] for pool in args.pools}
        losts: dict[int, int] = dict.fromkeys(args.pools, 0)
        counts: dict[int, list[int]] = {pool: [] for pool in args.pools}
        for _ in range(args.repeat):  # interleaved, so machine noise hits every case alike
            for pool in args.pools:
                rate, lost, count = run_case(size, pool, args.seconds)
                rates[pool].append(rate)
                counts[pool].append(count)
                losts[pool] = max(losts[pool], lost)
        base = statistics.median(rates[args.pools[0]])
        for pool in args.pools:
            rate = statistics.median(rates[pool])
            print(
                f"{size:>6} {pool:>5} {rate:>12,.0f} {rate * size / 1e6:>8.1f} "
                f"{rate / base:>6.2f} {int(statistics.median(counts[pool])):>10,} "
                f"{losts[pool]:>6}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
