"""tracker-zmq on a local cluster of node processes (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_tracker.py [--quick]``. Every node
is ``bench/tracker_bench_node.py`` (PubSub + Tracker) on 127.0.0.1, driven with JSON lines
over stdin/stdout. Times are ``time.monotonic()``, which on Linux is CLOCK_MONOTONIC,
system-wide, so stamps taken in different processes compare directly.

* **Join latency**: 5 nodes, broadcast_period 0.05 s. Every node tracks keys at random
  moments (a random pause of up to 20 ms between two); each key's latency is the time from
  just before ``track`` on its node to the moment the join reached the handler on the
  last of the 4 other nodes.
* **SIGKILL detection**: a node with one presence is SIGKILLed; the time from the kill to
  its presence's leave reaching the handler on the last survivor, against down_period
  (1.0 s, the default for broadcast_period 0.05 s). The node is then restarted (a new
  replica) for the next repetition.
* **Full-state transfer**: a node tracks N presences alone (one loop in the node, no round
  trip per presence); then a new node starts with it as peer. The time runs from the new
  tracker's start to the moment its handler has seen all N joins (its first heartbeat
  exchange, the transfer request at the next clock sampling, the answer and the merge).
  Both nodes run with ``transfer_timeout`` equal to the time allowed (30 s, 90 s at 1M):
  the holder builds the whole answer before its first part leaves.
* **Idle CPU**: both nodes of the 100k transfer (the holder and the new node, 100k
  presences each) sit idle for a window; process CPU time (user + system, from
  /proc/PID/stat) over the window, as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
import orjson
from bench_crdt_state import bench_bytes

from crdt_state import State
from pubsub_zmq import PubSub
from tests.support.proc import CommandNode, spawner
from tests.support.proc import wait_until as _wait_until
from tracker_zmq import Tracker
from tracker_zmq.wire import iter_parts

NODE = Path(__file__).with_name("tracker_bench_node.py")
PERIOD = 0.05
DOWN = 1.0  # the default for PERIOD: broadcast_period * max_silent_periods (10) * 2
TICK = os.sysconf("SC_CLK_TCK")
VERBOSE = "--verbose" in sys.argv  # the nodes' stderr (their log lines) on ours
wait_until = functools.partial(_wait_until, interval=0.02)


class Node(CommandNode):
    """A bench node process (``tracker_bench_node.py``) and its command pipe."""

    def __init__(self, name: str, peers: list[str], *options: str) -> None:
        super().__init__(
            NODE,
            name,
            *options,
            *(arg for peer in peers for arg in ("--peer", peer)),
            ready_timeout=30.0,
            stderr=None if VERBOSE else subprocess.DEVNULL,
            strict=False,
        )
        self.started: float = self.ready["started"]

    def call(self, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
        return super().call(cmd, timeout, **args)

    def cpu(self) -> float:
        """This process's CPU seconds so far (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


Start = Callable[..., Node]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_five(start: Start) -> list[Node]:
    first = start("n0", [])
    nodes = [first] + [start(f"n{i}", [first.endpoint]) for i in range(1, 5)]
    for node in nodes:  # every tracker sees every other: one presence each, everywhere
        node.call("track", topic="hello", key=node.name)
    names = {n.name for n in nodes}
    wait_until(
        lambda: all(set(n.call("joins", topic="hello")) == names for n in nodes),
        20.0,
        "the 5 nodes to see each other",
    )
    return nodes


def join_latency(nodes: list[Node], per_node: int) -> list[float]:
    """Latency (in periods) of every key: track to the join on the last other node."""
    for node in nodes:
        keys = [f"{node.name}-{i}" for i in range(per_node)]
        node.send("series", topic="lat", keys=keys, gap=0.02)
    tracked: dict[str, tuple[str, float]] = {}
    for node in nodes:
        for key, t in node.read(60.0).items():
            tracked[key] = (node.name, t)
    total = len(tracked)
    wait_until(
        lambda: all(len(n.call("joins", topic="lat")) == total for n in nodes),
        10.0,
        "every join everywhere",
    )
    arrivals = {n.name: n.call("joins", topic="lat") for n in nodes}
    latencies = []
    for key, (origin, t) in tracked.items():
        last = max(arrivals[name][key] for name in arrivals if name != origin)
        latencies.append((last - t) / PERIOD)
    return latencies


def kill_detection(start: Start, nodes: list[Node], reps: int) -> list[float]:
    """Detection time (in down_periods) of a SIGKILLed node, on the last survivor."""
    results = []
    for rep in range(reps):
        victim = nodes[-1 - rep % 4]
        key = f"victim-{rep}"
        victim.call("track", topic="kill", key=key)
        others = [n for n in nodes if n is not victim]
        wait_until(
            lambda key=key, others=others: all(
                key in n.call("joins", topic="kill") for n in others
            ),
            10.0,
            "the victim's presence everywhere",
        )
        time.sleep(0.3)  # a random-ish phase against the victim's heartbeats
        killed = time.monotonic()
        victim.kill()
        wait_until(
            lambda key=key, others=others: all(
                key in n.call("leaves", topic="kill") for n in others
            ),
            10.0,
            "the victim's leave everywhere",
        )
        last = max(n.call("leaves", topic="kill")[key] for n in others)
        results.append((last - killed) / DOWN)
        # restart it under the same name (a new replica) for the next repetition
        fresh = start(victim.name, [nodes[0].endpoint])
        nodes[nodes.index(victim)] = fresh
        fresh.call("track", topic="kill", key=f"back-{rep}")
        wait_until(
            lambda rep=rep: all(f"back-{rep}" in n.call("joins", topic="kill") for n in nodes),
            20.0,
            "the restarted node everywhere",
        )
    return results


def transfer(start: Start, n: int, cap: float) -> dict[str, Any]:
    """Full-state transfer of n presences to a new node, given at most ``cap`` seconds."""
    # a large answer takes the holder seconds to build: give requests time enough
    timeout = ("--transfer-timeout", str(cap))
    holder = start(f"holder{n}", [], *timeout)
    filled = holder.call("fill", timeout=600.0, topic="big", n=n)["seconds"]
    time.sleep(3 * PERIOD)  # the holder's next heartbeat takes the fill as its delta
    fresh = start(f"new{n}", [holder.endpoint], "--watch", f"big:{n}", *timeout)
    deadline = time.monotonic() + cap
    answer = {"at": None}
    cpu_new = None
    while time.monotonic() < deadline:
        answer = fresh.call("reached", timeout=120.0, topic="big")
        if answer["at"] is not None:
            cpu_new = fresh.cpu()  # its CPU seconds so far: start-up and the catch-up
            break
        time.sleep(0.1)
    stats = fresh.call("stats", timeout=60.0)
    waited = time.monotonic() - fresh.started
    # the step that merged the last part (and the collector's pass at its end) ends
    # before the last join reaches the handler: the node's longest step since it started
    time.sleep(1.0)
    lag_all = fresh.call("lag", timeout=60.0)["max"]
    holder.kill()
    fresh.kill()
    return {
        "n": n,
        "fill": filled,
        "transfer": None if answer["at"] is None else answer["at"] - fresh.started,
        "waited": waited,
        "got": answer["count"],
        "lag": answer.get("lag"),
        "lag_all": lag_all,
        "cpu": cpu_new,
        "stats": stats["totals"],
        "status": stats["replicas"].get(holder.name, {}).get("status"),
    }


def idle_cpu(start: Start, n: int, window: float) -> tuple[list[float], float]:
    """CPU share of two nodes holding n presences each, idle for ``window`` seconds."""
    a = start("idle-a", [])
    b = start("idle-b", [a.endpoint], "--watch", f"big:{n}")
    wait_until(
        lambda: b.call("stats")["replicas"].get("idle-a", {}).get("status") == "up", 10.0, "up"
    )
    # in chunks of 5,000, two periods apart: the delta heartbeats carry them to b
    a.call("fill", timeout=600.0, topic="big", n=n, chunk=5_000, pause=2 * PERIOD)
    wait_until(lambda: b.call("reached", topic="big")["at"] is not None, 60.0, "b to hold all")
    time.sleep(1.0)  # the last heartbeats and merges settle
    before = [node.cpu() for node in (a, b)]
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    after = [node.cpu() for node in (a, b)]
    a.kill()
    b.kill()
    return [(x - y) / elapsed * 100 for x, y in zip(after, before, strict=True)], elapsed


# ------------------------------------------------------- the table of issue 15
#
# Each row beside its floor or anchor, measured in the same run (the ratio is what
# compares across machines and loads). In-process rows are CPU seconds of this
# process (time.process_time), the median of rounds, with the collector on as users run.


def read_floor(n: int) -> float:
    """CPU seconds to merely read n presences' rows in Python: orjson decode of the
    transfer parts (format 1, as a holder sends them), one dict insert each, the
    collector off."""
    source = State(("holder", 1))
    for i in range(n):
        source.join(i, "big", i, {"phx_ref": f"{i:022d}"})
    source.reset_delta()
    snapshot = source.extract(("new", 2), {("holder", 1): 0})
    frames = [data for _, data, _ in iter_parts(snapshot, 20_000, 512 * 1024, orjson.dumps)]
    del source, snapshot
    gc.disable()
    try:
        start = time.process_time()
        rows: dict[Any, Any] = {}
        for frame in frames:
            for value in orjson.loads(frame)["values"]:
                rows[value[4][1]] = value
        return time.process_time() - start
    finally:
        gc.enable()


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def state_figures(n: int) -> dict[str, float]:
    """Building n presences with State.join, and joins into a state of n (per call)."""
    state = State(("a", 1))
    join = state.join

    def build_state() -> None:
        for i in range(n):
            join(i, "big", i, {"phx_ref": "x"})
            if i % 1000 == 999:
                state.reset_delta()

    def more_joins(start: int) -> None:
        for i in range(start, start + 20_000):
            join(i, "more", i, {})
        state.reset_delta()

    built = cpu(build_state)
    rounds = []
    for r in range(3):
        gc.collect()  # each round starts from the same collector state, as the Tracker's
        rounds.append(cpu(functools.partial(more_joins, n + r * 20_000)))
    return {"state_build": built, "join": statistics.median(rounds) / 20_000}


async def in_process(n: int) -> dict[str, float]:
    """Tracker.track and State.join per call at n, building n both ways, list of 10k."""
    out = state_figures(n)
    gc.collect()
    async with (
        PubSub("bench-table", bind="tcp://127.0.0.1:0") as pubsub,
        Tracker(pubsub, broadcast_period=1.5, handler=lambda diff: None) as tracker,
    ):
        track = tracker.track
        elapsed = 0.0
        for base in range(0, n, 1000):  # the handler and heartbeats run between chunks
            start = time.process_time()
            for i in range(base, min(n, base + 1000)):
                track(i, "big", i, {})
            elapsed += time.process_time() - start
            await asyncio.sleep(0)
        out["tracker_build"] = elapsed
        rounds = []
        for r in range(3):
            gc.collect()
            start = time.process_time()
            for i in range(n + r * 20_000, n + (r + 1) * 20_000):
                track(i, "more", i, {})
            rounds.append(time.process_time() - start)
            await asyncio.sleep(0.1)
        out["track"] = statistics.median(rounds) / 20_000
        for i in range(10_000):
            track(f"owner:{i}", "room:10k", f"user:{i}", {"status": "online"})
        await asyncio.sleep(0.1)
        answer = dict(tracker.list("room:10k"))
        assert len(answer) == 10_000
        lists = [cpu(lambda: tracker.list("room:10k")) for _ in range(50)]
        copies = [cpu(lambda: list(answer.items())) for _ in range(50)]
        out["list"] = statistics.median(lists)
        out["copy"] = statistics.median(copies)
    return out


def table(catch_up: dict[str, Any] | None, n: int) -> None:
    """Print the issue's table: each measure, its floor or anchor, the ratio, the target."""

    floor = read_floor(n)
    figures = asyncio.run(in_process(n))
    gc.collect()
    held = bench_bytes(n)
    print()
    print(f"Issue 15 table, {n:,} presences (floor or anchor measured in this run)")
    head = f"{'measure':<52} {'figure':>10} {'floor/anchor':>13} {'ratio':>7}  target"
    print(head)

    def line(measure: str, figure: str, anchor: str, ratio: float | None, target: str) -> None:
        shown = "" if ratio is None else f"{ratio:.2f}x"
        print(f"{measure:<52} {figure:>10} {anchor:>13} {shown:>7}  {target}", flush=True)

    if catch_up is not None and catch_up["transfer"] is not None:
        seconds = catch_up["transfer"]
        line(
            f"catch-up of {n:,}, PubSub start to last join (s)",
            f"{seconds:.2f}",
            f"{floor:.2f}",
            seconds / floor,
            "<= 4x the floor (moonshot 2.5x)",
        )
        if catch_up.get("cpu") is not None:
            line(
                "  CPU of the new node until then (s)",
                f"{catch_up['cpu']:.2f}",
                f"{floor:.2f}",
                catch_up["cpu"] / floor,
                "(start-up included; steadier than wall time under load)",
            )
        lag = catch_up.get("lag")
        if lag is not None:
            line(
                "  longest loop step of the new node until then (s)",
                f"{lag:.3f}",
                f"{PERIOD:.3f}",
                lag / PERIOD,
                "<= 1 broadcast_period",
            )
        lag_all = catch_up.get("lag_all")
        if lag_all is not None:
            line(
                "  the same, with the last merge and the collection it ends",
                f"{lag_all:.3f}",
                f"{PERIOD:.3f}",
                lag_all / PERIOD,
                "(the collector's one pass over the new state)",
            )
    else:
        line(f"catch-up of {n:,} (s)", "not run", f"{floor:.2f}", None, "")
    line(
        f"Tracker.track at {n:,} (us), State.join",
        f"{figures['track'] * 1e6:.2f}",
        f"{figures['join'] * 1e6:.2f}",
        figures["track"] / figures["join"],
        "<= 3 us (1.9x State.join's 1.6)",
    )
    line(
        f"building {n:,} through the Tracker (s), State",
        f"{figures['tracker_build']:.2f}",
        f"{figures['state_build']:.2f}",
        figures["tracker_build"] / figures["state_build"],
        "<= 1.5x",
    )
    line(
        f"bytes per presence held at {n:,}, Elixir ETS",
        f"{held:.0f}",
        "424",
        held / 424,
        "<= 450 bytes",
    )
    line(
        "Tracker.list of a 10k topic (ms), a copy",
        f"{figures['list'] * 1e3:.3f}",
        f"{figures['copy'] * 1e3:.3f}",
        figures["list"] / figures["copy"],
        "<= 1 ms",
    )
    print(
        "    floor: CPU time of an orjson decode of the same rows as format 1 sends them, "
        "one dict insert each, collector off; catch-up: wall time over two processes; "
        "Tracker rows: CPU time in this process, collector on; copy: list() of the "
        "answer's 10k (key, meta) pairs"
    )


def row(measure: str, figure: object, target: str = "") -> None:
    print(f"{measure:<50} {figure!s:>14} {target:>10}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repetitions")
    parser.add_argument("--verbose", action="store_true", help="show the nodes' log lines")
    parser.add_argument(
        "--table", action="store_true", help="only the catch-up and the table of issue 15"
    )
    args = parser.parse_args()
    quick = args.quick
    per_node = 20 if quick else 60
    reps = 2 if quick else 4
    sizes = [20_000] if quick else [100_000, 1_000_000]
    idle_n, window = (20_000, 3.0) if quick else (100_000, 10.0)

    began = time.monotonic()
    print(f"tracker-zmq, local cluster on 127.0.0.1{' (--quick)' if quick else ''}")
    print(f"broadcast_period {PERIOD} s, max_silent_periods 10, down_period {DOWN} s")
    print()
    row("measure", "figure", "target")
    # every node is stopped on the way out, whatever happens
    catch_up: dict[str, Any] | None = None
    if args.table:
        n = sizes[-1]
        with spawner(Node) as start:
            catch_up = transfer(start, n, 30.0 if n < 1_000_000 else 90.0)
        table(catch_up, n)
        print(f"\nbench took {time.monotonic() - began:.0f} s")
        return 0
    with spawner(Node) as start:
        nodes = start_five(start)
        lat = join_latency(nodes, per_node)
        row("join latency p50, 5 nodes (broadcast_periods)", f"{quantile(lat, 0.5):.2f}")
        row("join latency p99, 5 nodes (broadcast_periods)", f"{quantile(lat, 0.99):.2f}", "<= 1.5")
        row("  tracks measured / max (broadcast_periods)", f"{len(lat)} / {max(lat):.2f}")
        kills = kill_detection(start, nodes, reps)
        row("SIGKILL detection mean (down_periods)", f"{statistics.mean(kills):.2f}")
        row("SIGKILL detection max (down_periods)", f"{max(kills):.2f}", "<= 1.1")
        row("  repetitions", len(kills))
        for node in nodes:
            node.kill()
        for n in sizes:
            cap = 30.0 if n < 1_000_000 else 90.0
            t = transfer(start, n, cap)
            target = "< 5 s" if n >= 1_000_000 else ""
            label = f"full-state transfer of {n:,} to a new node (s)"
            if t["transfer"] is not None:
                row(label, f"{t['transfer']:.2f}", target)
            else:
                row(label, f"none in {t['waited']:.0f}", target)
                totals = t["stats"]
                drops = ", ".join(f"{k} {v}" for k, v in sorted(totals["drops"].items()))
                print(
                    f"    new node got {t['got']:,} of {n:,}; holder seen {t['status']}; "
                    f"transfers requested {totals['transfers_requested']}, "
                    f"merged {totals['transfers_merged']}; drops: {drops}"
                )
            row(f"  building {n:,} on the holder (s)", f"{t['fill']:.2f}")
            if n == sizes[-1]:
                catch_up = t
            if t["transfer"] is None and n < sizes[-1]:
                print(f"    larger sizes skipped: {n:,} did not complete")
                break
        cpu, elapsed = idle_cpu(start, idle_n, window)
        row(f"idle CPU, {idle_n:,} presences, node a (% of a core)", f"{cpu[0]:.1f}")
        row(f"idle CPU, {idle_n:,} presences, node b (% of a core)", f"{cpu[1]:.1f}")
        print(
            f"    2-node cluster, both holding them, broadcast_period {PERIOD} s (the bench's), "
            f"CPU over {elapsed:.0f} s idle"
        )
    table(catch_up, sizes[-1])
    print(f"\nbench took {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
