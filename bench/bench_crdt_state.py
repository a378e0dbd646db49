"""Benchmark of crdt-state at 10k, 100k and 1M presences (run by ``make bench``).

For each N: one owner per presence, N/10 topics (10 presences each), a fresh meta dict per
presence. Prints, per N:

* build          µs per local join while building the state from empty (the pending delta
                 is reset every 1,000 joins, as heartbeats do)
* join           µs per local join of 20,000 more presences into the state of N
* get_by_topic   µs per lookup of a 10-presence topic
* extract+merge  µs per presence to extract the full state and merge it into an empty
                 replica
* delta merge    ms to merge a 100-op delta (joins, updates, leaves) into a replica that
                 holds N remote-owned presences; the last column is its ratio to N = 10k
* leave_owner    µs per leave of one owner
* bytes          bytes per presence held, counted by tracemalloc: the owner, topic and key
                 strings and the meta included

The Elixir reference measured at N = 1M on this kind of machine: join 8.4 µs,
get_by_topic 7.9 µs, extract+merge 4.0 µs, 100-op delta merge 449 ms, leave by owner
6.1 µs, 424 bytes per presence. Timings are the median of a few rounds, with Python's
garbage collector on, as users run it. ``--sizes 10000 100000`` picks other sizes.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from crdt_state import State

REFERENCE_1M = {
    "join": 8.4,
    "get_by_topic": 7.9,
    "extract+merge": 4.0,
    "delta merge": 449.0,
    "leave_owner": 6.1,
    "bytes": 424.0,
}


class Workload:
    """The presences of one replica, made before any timing: owner i is in topic i // 10."""

    def __init__(self, replica: str, n: int, start: int = 0) -> None:
        self.replica = replica
        self.owners = [f"owner:{replica}:{i}" for i in range(start, start + n)]
        self.topics = [f"topic:{i // 10}" for i in range(start, start + n)]
        self.keys = [f"user:{i}" for i in range(start, start + n)]
        self.metas = [{"status": "online"} for _ in range(n)]

    def join_into(self, state: State) -> None:
        join, reset = state.join, state.reset_delta
        for i, (owner, topic, key, meta) in enumerate(
            zip(self.owners, self.topics, self.keys, self.metas, strict=True)
        ):
            join(owner, topic, key, meta)
            if i % 1000 == 999:
                reset()
        reset()


def build(replica: str, n: int) -> State:
    state = State(replica)
    Workload(replica, n).join_into(state)
    return state


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process spent in fn: steadier than wall time on a shared machine."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_build(n: int) -> float:
    """µs per join while building a state of n presences from empty."""
    work = Workload("a", n)
    return timed(lambda: work.join_into(State("a"))) / n * 1e6


def bench_join(state: State, n: int) -> float:
    """µs per join of 20,000 new presences into a state that holds n."""
    work = Workload(str(state.replica), 20_000, start=n)
    elapsed = timed(lambda: work.join_into(state))
    for owner in work.owners:
        state.leave_owner(owner)
    state.reset_delta()
    return elapsed / len(work.owners) * 1e6


def bench_get_by_topic(state: State, n: int, rng: random.Random) -> float:
    topics = [f"topic:{rng.randrange(n // 10)}" for _ in range(20_000)]
    get = state.get_by_topic

    def run() -> None:
        for topic in topics:
            get(topic)

    return statistics.median(timed(run) for _ in range(3)) / len(topics) * 1e6


def connected_pair(source: State) -> State:
    sink = State("b")
    sink.replica_up(source.replica)
    source.replica_up(sink.replica)
    return sink


def bench_extract_merge(source: State, n: int) -> tuple[float, State]:
    rounds = []
    sink = source
    for _ in range(2 if n <= 100_000 else 1):
        sink = connected_pair(source)
        rounds.append(timed(partial(transfer, source, sink)))
    return min(rounds) / n * 1e6, sink


def transfer(source: State, sink: State) -> None:
    sink.merge(source.extract(sink.replica, sink.clocks()[1]))


def bench_delta_merge(source: State, sink: State, n: int, rng: random.Random) -> float:
    """100 ops on source (40 joins, 30 updates, 30 leaves), merged into sink."""
    times = []
    fresh = n
    for _ in range(9):
        source.reset_delta()
        for _ in range(40):
            source.join(f"owner:new:{fresh}", f"topic:{fresh // 10}", f"user:{fresh}", {"s": 1})
            fresh += 1
        for i in rng.sample(range(n), 60)[:30]:
            entry = source.get(f"owner:a:{i}", f"topic:{i // 10}", f"user:{i}")
            if entry is not None:
                source.leave_join(entry.owner, entry.topic, entry.key, {"status": "away"})
        for i in rng.sample(range(n), 30):
            source.leave_owner(f"owner:a:{i}")
        delta = source.take_delta()
        times.append(timed(lambda delta=delta: sink.merge(delta)))  # type: ignore[misc]
    return statistics.median(times) * 1e3


def bench_leave_owner(state: State, n: int, rng: random.Random) -> float:
    owners = [f"owner:a:{i}" for i in rng.sample(range(n), min(n, 20_000))]
    leave = state.leave_owner

    def run() -> None:
        for owner in owners:
            leave(owner)

    return timed(run) / len(owners) * 1e6


def bench_bytes(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work = Workload("a", n)
        state = State("a")
        work.join_into(state)
        del work
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(state) == n
    return (after - before) / n


def run(n: int) -> dict[str, float]:
    rng = random.Random(n)
    row: dict[str, float] = {}
    row["build"] = bench_build(n)
    gc.collect()
    source = build("a", n)
    row["join"] = bench_join(source, n)
    row["get_by_topic"] = bench_get_by_topic(source, n, rng)
    row["extract+merge"], sink = bench_extract_merge(source, n)
    row["delta merge"] = bench_delta_merge(source, sink, n, rng)
    row["leave_owner"] = bench_leave_owner(source, n, rng)
    del source, sink
    gc.collect()
    row["bytes"] = bench_bytes(n)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    print(f"crdt-state benchmark, Python {sys.version.split()[0]}, GC on")
    header = [
        "N",
        "build µs/p",
        "join µs",
        "get_by_topic µs",
        "extract+merge µs/p",
        "100-op merge ms",
        "vs 10k",
        "leave_owner µs",
        "bytes/p",
    ]
    print(" | ".join(f"{h:>10}" for h in header))
    print(
        "targets 1M | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10}".format(
            "", "<= 4", "<= 4", "<= 3", "< 1", "<= 3x", "<= 4", "<= 600"
        )
    )
    base: float | None = None
    rows = {}
    for n in args.sizes:
        row = run(n)
        rows[n] = row
        if base is None:
            base = row["delta merge"]
        cells = [
            f"{n:,}",
            f"{row['build']:.2f}",
            f"{row['join']:.2f}",
            f"{row['get_by_topic']:.2f}",
            f"{row['extract+merge']:.2f}",
            f"{row['delta merge']:.3f}",
            f"{row['delta merge'] / base:.2f}x",
            f"{row['leave_owner']:.2f}",
            f"{row['bytes']:.0f}",
        ]
        print(" | ".join(f"{c:>10}" for c in cells), flush=True)
    ref = REFERENCE_1M
    print(
        f"{'Elixir 1M':>10} | {ref['join']:>10} | {'':>10} | {ref['get_by_topic']:>10} | "
        f"{ref['extract+merge']:>10} | {ref['delta merge']:>10} | {'':>10} | "
        f"{ref['leave_owner']:>10} | {ref['bytes']:>10.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
