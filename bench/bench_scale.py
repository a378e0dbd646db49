"""A 100-node tracker cluster, simulated and modelled (not a test).

Run with ``make bench`` (its ``--quick`` form), ``make bench-scale`` (the full run) or
``.venv/bin/python bench/bench_scale.py [--quick] [--charts]``.
Three parts, printed in turn:

* **Calibration, in this process** (a real process, the real codec: orjson, as the
  Tracker encodes): the bytes of a heartbeat as a function of the node count N, the joins
  j and leaves l it carries; the bytes of a full-state transfer per presence; the CPU a
  node spends per heartbeat it sends (``Shard.tick``: take the delta, compact, encode)
  and per heartbeat it receives (the PubSub frame's decode, ``Shard.receive``: check,
  admit, merge), and per presence of a transfer (holder: encode the parts; new node:
  decode and merge them); the PubSub's gossip frame as a function of N.
* **Simulation** (:mod:`tracker_zmq.testing`, virtual time, the real Shards): N nodes
  (100), P presences spread evenly over them (every simulated node holds all P), churn of
  C tracks per second cluster-wide (1,000; each track replaces an untracked presence, so
  P stays level), and once per simulated minute one node SIGKILLed (20 s into the churn,
  then every 60 s; 12 s with ``--quick``) and restarted 12 s later (4 s with
  ``--quick``), as a supervisor would, its clients re-tracking their presences. The
  nodes run the default options but ``max_delta_sizes=(100, 1000)``, the setting the
  Scaling page gives for this churn (at the default, a node's delta generations cost
  each heartbeat it receives more than the rest of its work: the full run measures the
  three settings on 40 nodes first). It reports the time until a join is visible on
  every node that was up when it was tracked (p50, p99, in broadcast periods; one join in
  5 sampled), the bytes each node sends and receives per second at steady churn (a
  window of whole periods before the first kill), the cost of a restart (bytes moved to
  the new node by kind, virtual time until it lists as many presences as a node that
  stayed up), and CPU per node: the simulated message counts times the per-message
  costs, timed on 3 nodes' real Shards in their steady state.
* **Formulas**, fitted from the calibration (and the per-tag receive cost timed in the
  simulation), printed beside the simulated figures where the sizes overlap, and
  extended to 1M presences and 1,000 nodes.

Bytes are the tracker messages' encoded length (what the simulator counts, per
receiver: a PUB socket writes a broadcast on each subscriber's connection); "on the
wire" adds the PubSub frame header (topic, version, kind, incarnation, sequence,
sender) and ZMTP's 9-byte frame header, not TCP/IP. The simulator's own cost is not a
node's (it decodes with the stdlib json and runs 100 nodes in one process): the CPU
figures are the timed Shard methods and the calibration only. ``--json FILE`` writes
every figure; ``--charts`` (or BENCH_CHARTS=1, which ``make bench`` sets) renders the
charts into docs/assets with bench/charts.py (matplotlib; without it the bench says why
and goes on).

Run time, on an idle machine: the simulation costs about 14 s of CPU per simulated
second at 100 nodes, 10k presences and 1,000 tracks/s, 23 s at 100k (100 nodes' work in
one process): ``--quick`` (10k presences, 20 s) takes about 5 minutes of CPU, the full
run (10k and 100k, 40 s each, and the generations table) about 25, and 9 GB of memory at
100k.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pubsub_zmq.wire import (
    Control,
    Kind,
    NodeRecord,
    encode_batch,
    encode_control,
    join_messages,
    sender_field,
    topic_prefix,
)
from pubsub_zmq.wire import decode as decode_frame
from tracker_zmq import Options, Shard
from tracker_zmq.testing import Cluster, DiffRecord, Network, SimNode

TRACKER_TOPIC = "phx_presence:presence_shard0"  # a default Tracker's shard topic
ZMTP_HEADER = 9  # a long ZMTP frame's flags and 8-byte size
META = {"status": "online", "device": "web"}


def node_names(n: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(n)]


def topic_of(k: int, presences: int) -> str:
    return f"room:{k % max(1, presences // 100)}"  # 100 presences per topic


def cpu() -> float:
    return time.process_time()


def fmt(n: float) -> str:
    """A byte count, short: 1.2 KB, 3.4 MB, 5.6 GB (decimal units)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


# ------------------------------------------------------------------ calibration


@dataclass
class Calibration:
    """Fitted byte sizes and measured CPU costs (µs) of this process."""

    hb_base: float = 0.0  # an empty heartbeat, less its clock
    hb_clock: float = 0.0  # per clock entry (per replica known)
    delta_base: float = 0.0  # a delta's fixed part (replica, range, clouds' list)
    per_join: float = 0.0  # per join: the value and its tag
    per_leave: float = 0.0  # per leave: its tag in the clouds
    per_cloud: float = 0.0  # per replica whose tags a delta's clouds list
    vsn_base: int = 0  # the vsns of the refs measured
    frame_header: float = 0.0  # the PubSub's frame header + ZMTP's, per message
    snapshot_per_presence: float = 0.0  # full-state transfer bytes per presence
    gossip_base: float = 0.0
    gossip_per_member: float = 0.0
    gossip_interval: float = 1.0
    cost_send: dict[str, float] = field(default_factory=dict)  # µs per heartbeat sent
    cost_recv: dict[str, float] = field(default_factory=dict)  # µs per heartbeat received
    recv_fit: tuple[float, float, float] = (0.0, 0.0, 0.0)  # µs: base, per clock entry, per op
    send_fit: tuple[float, float, float] = (0.0, 0.0, 0.0)  # µs: base, per clock entry, per op
    transfer_holder_us: float = 0.0  # µs per presence to extract and encode
    transfer_new_us: float = 0.0  # µs per presence to decode and merge

    def heartbeat(
        self, n: int, joins: float, leaves: float, relayed: float, replicas: float, counter: float
    ) -> float:
        """Bytes of one heartbeat of a node that knows n replicas (itself included).

        joins, leaves: its own, in the delta; relayed: leave tags of other replicas it
        observed since its last heartbeat (in the delta's clouds), of ``replicas`` others;
        counter: a typical clock counter (each clock entry and relayed tag is its digits).
        """
        delta = 0.0
        if joins or leaves or relayed:
            delta = (
                self.delta_base
                + self.per_join * joins
                + self.per_leave * leaves
                + (digits(counter) + 1) * relayed
                + self.per_cloud * replicas
            )
        return self.hb_base + (self.hb_clock + digits(counter) - 1) * n + delta

    def gossip(self, n: int) -> float:
        return self.gossip_base + self.gossip_per_member * n


def mesh(n: int, options: Options, vsn_base: int = 1000) -> list[Shard]:
    """n Shards that have heard each other (each knows n replicas), at time 1.0."""
    shards = [
        Shard(name, vsn_base + i, 0, options, random.Random(i), orjson.dumps)
        for i, name in enumerate(node_names(n))
    ]
    for shard in shards:
        shard.start(0.0)
    now = 1.0
    for i, shard in enumerate(shards):
        shard.track(f"{shard.node}:seed", topic_of(i, 100), f"seed-{i}", dict(META))
    sends = [(s, out) for s in shards for out in s.tick(now).sends]
    for sender, send in sends:
        for shard in shards:
            if shard is not sender:
                shard.receive(orjson.loads(send.data), now)
    return shards


class Writer:
    """Tracks and untracks on one Shard, oldest presences leaving first."""

    def __init__(self, shard: Shard, tag: str = "") -> None:
        self.shard = shard
        self.tag = tag  # keys of another Writer on the same Shard differ by it
        self.next = 0
        self.oldest = 0

    def ops(self, joins: int, leaves: int) -> None:
        shard, tag = self.shard, self.tag
        for k in range(self.next, self.next + joins):
            shard.track(f"{shard.node}:{k}", topic_of(k, 100_000), f"user:{tag}{k}", dict(META))
        self.next += joins
        for k in range(self.oldest, self.oldest + leaves):
            shard.untrack(f"{shard.node}:{k}", topic_of(k, 100_000), f"user:{tag}{k}")
        self.oldest += leaves

    def heartbeat(self, now: float, joins: int, leaves: int) -> bytes:
        """The heartbeat the shard sends after these writes (b"" if it sends none)."""
        self.ops(joins, leaves)
        sends = [s for s in self.shard.tick(now).sends if b'"hb"' in s.data[:40]]
        return sends[0].data if sends else b""


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares: intercept, slope."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


REAL_VSN = 1_796_536_111_207_621_221  # a vsn as pubsub_zmq.new_incarnation makes them
SIM_VSN = 30_000  # a vsn as the simulator makes them


def digits(counter: float) -> int:
    return len(str(max(1, int(counter))))


def calibrate(quick: bool) -> Calibration:
    """Sizes with real vsns, and every CPU cost."""
    cal = calibrate_sizes(REAL_VSN)
    options = Options()
    # Snapshot bytes per presence: encode a 10k-presence answer as the holder would.
    cal.snapshot_per_presence, cal.transfer_holder_us, cal.transfer_new_us = transfer_costs(
        10_000 if quick else 30_000, options
    )[1:]
    # CPU per heartbeat sent and received, for 100 nodes, at several delta sizes.
    cal.cost_send, cal.cost_recv = heartbeat_costs(options, quick)
    return cal


def calibrate_sizes(vsn_base: int) -> Calibration:
    """Byte sizes of heartbeats whose refs have vsns like ``vsn_base``."""
    cal = Calibration()
    cal.vsn_base = vsn_base
    options = Options()
    # Heartbeat sizes: empty ones at several N give the clock's cost per replica.
    sizes = {}
    for n in (10, 50, 100):
        shards = mesh(n, options, vsn_base)
        sender = shards[1]
        now = 1.0 + 2 * options.broadcast_period
        for _ in range(options.max_silent_periods + 1):  # tick until the empty heartbeat
            now += options.broadcast_period
            sends = sender.tick(now).sends
            if sends:
                sizes[n] = len(sends[0].data)
                break
    base, clock = fit_line([float(n) for n in sizes], [float(v) for v in sizes.values()])
    cal.hb_base, cal.hb_clock = base, clock
    # Delta sizes at N = 100: j joins, then j leaves of those.
    writer = Writer(mesh(100, options, vsn_base)[1])
    now = 5.0
    join_sizes = {}
    for j in (1, 10, 100, 1000):
        now += options.broadcast_period
        join_sizes[j] = len(writer.heartbeat(now, j, 0)) - sizes[100]
    d0, per_join = fit_line([float(j) for j in join_sizes], [float(v) for v in join_sizes.values()])
    cal.delta_base, cal.per_join = d0, per_join
    leave_sizes = {}
    for n_leave in (1, 10, 100):
        now += options.broadcast_period
        leave_sizes[n_leave] = len(writer.heartbeat(now, 0, n_leave)) - sizes[100]
    _, per_leave = fit_line(
        [float(x) for x in leave_sizes], [float(v) for v in leave_sizes.values()]
    )
    cal.per_leave = per_leave
    # a cloud of another replica: its ref and a list, beside the sender's own
    cal.per_cloud = len(orjson.dumps([["node-042", vsn_base], []])) + 1
    frame = encode_batch(
        topic_prefix(TRACKER_TOPIC), Kind.BROADCAST, 1, 1, sender_field("node-042"), b"[{}]"
    )
    cal.frame_header = len(frame) - 2 + ZMTP_HEADER

    # PubSub gossip: one frame per member per gossip_interval, with every live record.
    def record(i: int) -> NodeRecord:
        return NodeRecord(
            f"node-{i:03d}",
            REAL_VSN + i,
            f"tcp://10.0.{i // 250}.{i % 250}:4369",
            f"tcp://10.0.{i // 250}.{i % 250}:4370",
        )

    gossip = {}
    for n in (10, 50, 100):
        members = tuple(record(i) for i in range(n))
        body = Control(members[0], members[1:], None)
        gossip[n] = len(encode_control(Kind.GOSSIP, 1, 1, sender_field("node-000"), body))
    cal.gossip_base, cal.gossip_per_member = fit_line(
        [float(n) for n in gossip], [float(v) for v in gossip.values()]
    )
    return cal


def heartbeat_costs(options: Options, quick: bool) -> tuple[dict[str, float], dict[str, float]]:
    """µs per heartbeat: the sender's tick, and the receiver's frame decode + receive.

    The least of 3 repeats (the machine is shared: the least is the least disturbed).
    """
    send: dict[str, float] = {}
    recv: dict[str, float] = {}
    rounds = 40 if quick else 150
    for n in (10, 100):
        shards = mesh(n, options)  # one mesh per n: each run writes on another node
        run = 0
        for ops in (0, 2, 15, 150):
            runs = []
            for _ in range(3):
                run += 1
                writer = Writer(shards[1 + run % (n - 1)], f"{run}-")
                runs.append(heartbeat_cost(writer, shards[0], options, ops, rounds, run))
            send[f"{n}:{ops}"] = min(r[0] for r in runs)
            recv[f"{n}:{ops}"] = min(r[1] for r in runs)
    return send, recv


DECODE_US_PER_KB: list[float] = []  # the PubSub frame decode (orjson), µs per KB


def heartbeat_cost(
    writer: Writer, receiver: Shard, options: Options, ops: int, rounds: int, run: int
) -> tuple[float, float]:
    now = 5.0 + 3.0 * run  # a run ticks for at most 1.65 s (11 x 150 idle ticks)
    if ops:  # prime: presences for the first round's leaves, delivered
        receiver.receive(orjson.loads(writer.heartbeat(now, ops, 0)), now)
    frames: list[bytes] = []
    tick_cpu = 0.0
    gc.collect()
    while len(frames) < rounds:
        now += 0.001
        writer.ops(ops, ops)
        t0 = cpu()
        out = writer.shard.tick(now)
        tick_cpu += cpu() - t0
        if not out.sends:  # idle: an empty heartbeat every max_silent_periods + 1 ticks
            continue
        body = join_messages([out.sends[0].data])
        frames.append(
            encode_batch(
                topic_prefix(TRACKER_TOPIC),
                Kind.BROADCAST,
                1,
                len(frames),
                sender_field(writer.shard.node),
                body,
            )
        )
    t0 = cpu()
    for frame in frames:
        receiver.receive(decode_frame(frame).messages[0], now)
    recv_cpu = cpu() - t0
    if ops == 150:  # the frame decode alone, per KB: the steady-state CPU figure adds it
        t0 = cpu()
        for frame in frames:
            decode_frame(frame)
        DECODE_US_PER_KB.append((cpu() - t0) * 1e6 / (sum(map(len, frames)) / 1e3))
    assert receiver.drops == {}, receiver.drops
    return tick_cpu / rounds * 1e6, recv_cpu / rounds * 1e6


def transfer_costs(presences: int, options: Options) -> tuple[float, float, float, float]:
    """A full-state transfer of ``presences``, Shard to Shard in this process.

    Returns:
        (bytes, bytes per presence, holder µs per presence, new node µs per presence).
    """
    holder = Shard("holder", 1, 0, options, random.Random(1), orjson.dumps)
    new = Shard("new", 2, 0, options, random.Random(2), orjson.dumps)
    holder.start(0.0)
    new.start(0.0)
    for k in range(presences):
        holder.track(f"holder:{k}", topic_of(k, presences), f"user:{k}", dict(META))
    now = 0.5
    request = None
    while request is None:  # too large a delta: an empty heartbeat, clock ahead: a request
        now += options.broadcast_period
        for send in holder.tick(now).sends:
            new.receive(orjson.loads(send.data), now)
        for send in new.tick(now).sends:
            if b'"treq"' in send.data[:40]:
                request = send
            else:
                holder.receive(orjson.loads(send.data), now)
        if now > 100:
            raise RuntimeError("no transfer request")
    gc.collect()
    t0 = cpu()
    out = holder.receive(orjson.loads(request.data), now)
    parts = [send.data for later in out.later for send in later]
    holder_cpu = cpu() - t0
    t0 = cpu()
    for data in parts:
        new.receive(orjson.loads(data), now)
    new_cpu = cpu() - t0
    assert new.counters["transfers_merged"] == 1, new.counters
    size = sum(len(p) for p in parts)
    return size, size / presences, holder_cpu / presences * 1e6, new_cpu / presences * 1e6


def fit_costs(cal: Calibration) -> None:
    """µs per heartbeat as base + per clock entry + per op (joins and leaves)."""

    def fit(costs: dict[str, float]) -> tuple[float, float, float]:
        empty_10, empty_100 = costs["10:0"], costs["100:0"]
        per_entry = (empty_100 - empty_10) / 90
        base = empty_10 - 10 * per_entry
        ops = [(2 * o, costs[f"100:{o}"] - empty_100) for o in (2, 15, 150)]
        _, per_op = fit_line([float(x) for x, _ in ops], [y for _, y in ops])
        return base, per_entry, per_op

    cal.send_fit = fit(cal.cost_send)
    cal.recv_fit = fit(cal.cost_recv)


def heartbeat_us(fitted: tuple[float, float, float], n: int, ops: float) -> float:
    base, per_entry, per_op = fitted
    return base + per_entry * n + per_op * ops


# ------------------------------------------------------------------- formulas


def per_node_rates(
    cal: Calibration,
    n: int,
    churn: float,
    options: Options,
    counter: float,
    relay_us: float | None = None,
) -> dict[str, float]:
    """Steady churn: bytes per second one node sends (= receives), and its CPU share.

    churn: tracks per second cluster-wide, each with an untrack (so presences stay
    level); counter: a typical clock counter. A node's delta carries its own joins and
    leaves, and relays every leave it observed from the others since its last heartbeat
    (Phoenix's delta CRDT does the same: observed removes go into the local delta), so
    each heartbeat's clouds hold about every leave of the cluster in one period.
    relay_us: µs a receiver spends per relayed leave tag (measured in the simulation's
    steady state); None: the calibration's cost per own join or leave.
    """
    period = options.broadcast_period
    own = churn / n * period  # own joins (and as many own leaves) per period
    relayed = churn * period - own  # the others' leaves, observed in a period
    others = (n - 1) * (1 - math.exp(-relayed / max(n - 1, 1)))  # replicas they are of
    p_delta = 1 - math.exp(-churn * period) if churn else 0.0  # anything to send
    idle = (1 - p_delta) / (options.max_silent_periods + 1)
    hb_rate = (p_delta + idle) / period  # heartbeats one node sends per second
    scale = 1 / max(p_delta, 1e-9)
    busy = cal.heartbeat(n, own * scale, own * scale, relayed * scale, others, counter)
    per_s = (p_delta * busy + idle * cal.heartbeat(n, 0, 0, 0, 0, counter)) / period
    tracker = (n - 1) * per_s
    wire = tracker + (n - 1) * hb_rate * cal.frame_header
    gossip = (n - 1) * cal.gossip(n) / cal.gossip_interval
    ops = (2 * own + relayed) * scale  # what a receiver merges per heartbeat
    per_tag = cal.recv_fit[2] if relay_us is None else relay_us
    one = heartbeat_us(cal.recv_fit, n, 2 * own * scale) + per_tag * relayed * scale
    recv_us = one * (n - 1) * hb_rate
    send_us = heartbeat_us(cal.send_fit, n, ops) * hb_rate
    return {
        "tracker_bytes_per_s": tracker,
        "wire_bytes_per_s": wire,
        "gossip_bytes_per_s": gossip,
        "cpu_share": (recv_us + send_us) / 1e6,
        "heartbeats_in_per_s": (n - 1) * hb_rate,
        "heartbeat_bytes": per_s / hb_rate,
        "receive_us": one,
        "relayed_per_heartbeat": relayed * scale,
        "own_ops_per_heartbeat": 2 * own * scale,
        "ops_per_heartbeat": ops,
    }


def day_counter(n: int, churn: float, presences: int = 1_000_000) -> float:
    """A node's clock counter after a day of churn (two dots per track + untrack)."""
    return presences / n + 2 * churn / n * 86_400


def transfer_bytes(cal: Calibration, presences: float) -> float:
    return cal.snapshot_per_presence * presences


# ----------------------------------------------------------------- simulation


class Meter:
    """Times the real Shard methods of a few simulated nodes (in this process's CPU time).

    The simulator calls ``shard.receive`` and ``shard.tick`` on each node's Shard objects;
    wrapping them on a sample of nodes during the steady window measures what a node
    pays per heartbeat with its real, steady-state State and delta generations.
    """

    def __init__(self) -> None:
        self.receive_s = 0.0
        self.receives = 0
        self.tick_s = 0.0
        self.ticks = 0
        self._wrapped: list[Shard] = []
        # the cyclic collector's passes are left out: in this process they walk a
        # hundred nodes' heaps, and whichever call happens to trigger one pays for all
        self.gc_s = 0.0
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = cpu()
        else:
            self.gc_s += cpu() - self._gc_start

    def wrap(self, shard: Shard) -> None:
        receive, tick = shard.receive, shard.tick

        def timed_receive(data: object, now: float) -> Any:
            t0, gc0 = cpu(), self.gc_s
            try:
                return receive(data, now)
            finally:
                self.receive_s += cpu() - t0 - (self.gc_s - gc0)
                self.receives += 1

        def timed_tick(now: float) -> Any:
            t0, gc0 = cpu(), self.gc_s
            try:
                return tick(now)
            finally:
                self.tick_s += cpu() - t0 - (self.gc_s - gc0)
                self.ticks += 1

        shard.receive = timed_receive  # type: ignore[method-assign]
        shard.tick = timed_tick  # type: ignore[method-assign]
        self._wrapped.append(shard)

    def unwrap(self) -> None:
        for shard in self._wrapped:
            del shard.receive, shard.tick  # the class's methods again
        self._wrapped = []
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


@dataclass
class Pending:
    tracked_at: float
    waiting: set[str]


@dataclass
class SimResult:
    nodes: int
    presences: int
    churn: float
    seconds: float
    fill_virtual: float = 0.0
    fill_cpu: float = 0.0
    visible_periods: list[float] = field(default_factory=list)
    incomplete: int = 0
    sent_per_s: list[float] = field(default_factory=list)  # per node, steady window
    recv_per_s: list[float] = field(default_factory=list)
    hb_in_per_s: list[float] = field(default_factory=list)
    ops_per_hb: float = 0.0
    receive_us: float = 0.0  # per heartbeat received, steady state (Meter)
    relay_us: float = 0.0  # µs per relayed leave tag received, steady state
    tick_us: float = 0.0  # per tick, steady state (Meter)
    ticks_per_s: float = 0.0
    restarts: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float = 0.0


class Sim:
    """The simulated cluster and its churn, kills and restarts."""

    def __init__(
        self, nodes: int, presences: int, churn: float, seed: int, options: Options
    ) -> None:
        self.options = options
        self.names = node_names(nodes)
        self.presences = presences
        self.churn = churn
        self.rng = random.Random(seed)
        self.cluster = Cluster(
            self.options, seed=seed, nodes=self.names, network=Network(delay=(0.0002, 0.002))
        )
        self.cluster.record_messages = False
        self.cluster.record_diffs = False
        self.cluster.on_diff = self.on_diff
        self.online = dict.fromkeys(self.names, 0)  # presences each node lists, from its diffs
        self.held: dict[str, list[tuple[str, str, str]]] = {n: [] for n in self.names}
        self.pending: dict[tuple[str, str], Pending] = {}
        self.latencies: list[float] = []
        self.incomplete = 0
        self.seq = 0
        self.sample_every = 5

    def on_diff(self, node: SimNode, record: DiffRecord) -> None:
        name = node.name
        now = self.cluster.now
        for topic, (joins, leaves) in record.diff.items():
            self.online[name] += len(joins) - len(leaves)
            if not self.pending:
                continue
            for key, _ in joins:
                pending = self.pending.get((topic, key))
                if pending is not None and name in pending.waiting:
                    pending.waiting.discard(name)
                    if not pending.waiting:
                        self.latencies.append(now - pending.tracked_at)
                        del self.pending[(topic, key)]

    def track(self, name: str, sample: bool = False) -> None:
        k = self.seq
        self.seq += 1
        owner, topic, key = f"{name}:{k}", topic_of(k, self.presences), f"user:{k}"
        self.cluster.track(name, owner, topic, key, dict(META))
        self.held[name].append((owner, topic, key))
        if sample:
            waiting = {n for n in self.cluster.live() if n != name}
            self.pending[(topic, key)] = Pending(self.cluster.now, waiting)

    def churn_op(self, sample: bool) -> None:
        live = self.cluster.live()
        name = self.rng.choice(live)
        held = self.held[name]
        if held:
            i = self.rng.randrange(len(held))
            held[i], held[-1] = held[-1], held[i]
            self.cluster.untrack(name, *held.pop())
        self.track(name, sample)

    def crash(self, name: str) -> None:
        self.cluster.crash(name)
        self.held[name] = []
        for key, pending in list(self.pending.items()):
            pending.waiting.discard(name)
            if not pending.waiting:  # the others all had it: count the ones that did
                self.incomplete += 1
                del self.pending[key]

    def restart(self, name: str) -> None:
        self.cluster.restart(name)
        self.online[name] = 0
        for _ in range(self.presences // len(self.names)):  # its clients come back
            self.track(name)

    def run(self, seconds: float, log: Callable[[str], None]) -> SimResult:
        cluster, options, period = self.cluster, self.options, self.options.broadcast_period
        result = SimResult(len(self.names), self.presences, self.churn, seconds)
        t0 = cpu()
        for name in self.names:
            for _ in range(self.presences // len(self.names)):
                self.track(name)
        # fill: every node's first heartbeat carries its share (or, if too large, its
        # clock, and the others fetch it by transfer)
        while min(self.online.values()) < self.presences:
            cluster.run_for(period / 2)
            if cluster.now > 20 * options.down:
                raise RuntimeError(f"fill did not converge: {min(self.online.values())}")
        result.fill_virtual = cluster.now
        result.fill_cpu = cpu() - t0
        log(
            f"  filled {self.presences:,} presences on {len(self.names)} nodes: "
            f"{result.fill_virtual:.1f} s virtual, {result.fill_cpu:.0f} s CPU"
        )
        start = cluster.now = float(int(cluster.now) + 1)
        step = 0.05
        ops_per_step = self.churn * step
        carry = 0.0
        # steady: before the first kill, a whole number of periods (the nodes' first
        # ticks are jittered within a quarter period: their phases are close)
        first_kill = 20.0 if seconds >= 60 else 12.0
        down_for = 12.0 if seconds >= 30 else 4.0  # from a kill to the restart
        window = (start + 3.0, start + 3.0 + (6 if first_kill < 20 else 11) * period)
        snap: dict[str, tuple[int, int, int]] = {}
        victims = list(self.names[1:])
        self.rng.shuffle(victims)
        # a kill 20 s into the churn and every 60 s after; each victim restarts 12 s
        # later, as a supervisor restarts a crashed process (its new incarnation
        # replaces the old one at once: no wait for down_period)
        kills = [start + first_kill + 60.0 * m for m in range(int(seconds // 60) + 1)]
        killed: list[str] = []
        restart_watch: dict[str, Any] | None = None
        t = start
        end = start + seconds
        next_log = start + 30
        while t < end - 1e-9 or restart_watch is not None:
            t = round(t + step, 6)
            cluster.run_until(t)
            carry += ops_per_step
            while carry >= 1:
                carry -= 1
                self.churn_op(sample=self.seq % self.sample_every == 0)
            if abs(t - window[0]) < step / 2:
                meter = Meter()
                for name in self.names[1:4]:
                    for shard in cluster.node(name).shards:
                        meter.wrap(shard)
                snap = {
                    n: (
                        cluster.node(n).traffic.total_sent(),
                        cluster.node(n).traffic.total_received(),
                        cluster.node(n).traffic.messages_received["hb"],
                    )
                    for n in self.names
                }
            if abs(t - window[1]) < step / 2 and snap:
                span = window[1] - window[0]
                meter.unwrap()
                result.receive_us = meter.receive_s / max(meter.receives, 1) * 1e6
                result.tick_us = meter.tick_s / max(meter.ticks, 1) * 1e6
                result.ticks_per_s = meter.ticks / 3 / span
                for n in self.names:
                    traffic = cluster.node(n).traffic
                    sent0, recv0, hb0 = snap[n]
                    result.sent_per_s.append((traffic.total_sent() - sent0) / span)
                    result.recv_per_s.append((traffic.total_received() - recv0) / span)
                    result.hb_in_per_s.append((traffic.messages_received["hb"] - hb0) / span)
            if kills and t >= kills[0] - 1e-9 and t < end:
                kills.pop(0)
                victim = victims[len(killed) % len(victims)]
                killed.append(victim)
                self.crash(victim)
                log(f"  {t - start:.0f} s: {victim} killed")
            if (
                killed
                and abs(t - (start + first_kill + 60.0 * (len(killed) - 1) + down_for)) < step / 2
            ):
                victim = killed[-1]
                node = cluster.node(victim)
                before = dict(node.traffic.bytes_received)
                senders_before = sum(cluster.node(n).traffic.bytes_sent["tack"] for n in self.names)
                reference = next(n for n in self.names if n != victim and cluster.node(n).alive)
                self.restart(victim)
                restart_watch = {
                    "node": victim,
                    "at": t,
                    "before": before,
                    "senders_before": senders_before,
                    "reference": reference,
                    "caught_up": None,
                }
            if restart_watch is not None:
                w = restart_watch
                name = w["node"]
                if w["caught_up"] is None and self.online[name] >= self.online[w["reference"]]:
                    w["caught_up"] = t - w["at"]
                if t - w["at"] >= 20 * period or (
                    w["caught_up"] is not None and (t - w["at"] >= w["caught_up"] + 2 * period)
                ):
                    node = cluster.node(name)
                    got = {
                        kind: node.traffic.bytes_received[kind] - w["before"].get(kind, 0)
                        for kind in node.traffic.bytes_received
                    }
                    w["bytes_by_kind"] = got
                    w["window"] = t - w["at"]
                    w["tack_sent_cluster"] = (
                        sum(cluster.node(n).traffic.bytes_sent["tack"] for n in self.names)
                        - w["senders_before"]
                    )
                    w["online_ref"] = self.online[w["reference"]]
                    del w["before"]
                    result.restarts.append(w)
                    log(
                        f"  restart of {name} at {w['at'] - start:.0f} s: caught up after "
                        f"{w['caught_up']:.2f} s, received {fmt(sum(got.values()))} "
                        f"({', '.join(f'{k} {fmt(v)}' for k, v in sorted(got.items()))})"
                    )
                    restart_watch = None
            if t >= next_log:
                next_log += 30
                log(f"  {t - start:.0f} s simulated, {cpu() - t0:.0f} s CPU")
        result.visible_periods = [x / period for x in self.latencies]
        result.incomplete = self.incomplete
        result.ops_per_hb = self.churn / len(self.names) * period
        result.cpu_seconds = cpu() - t0
        return result


SIM_OPTIONS = Options(max_delta_sizes=(100, 1000))


def generations_cost(sizes: tuple[int, ...], log: Callable[[str], None]) -> dict[str, float]:
    """µs per heartbeat received and per tick at steady churn, with these delta caps.

    40 nodes, 4,000 presences, 400 tracks/s (the 100-node run's churn per node), 20 s
    to reach a steady state, then 6 s timed on 3 nodes.
    """
    sim = Sim(40, 4000, 400.0, 15, Options(max_delta_sizes=sizes))
    cluster = sim.cluster
    for name in sim.names:
        for _ in range(100):
            sim.track(name)
    cluster.run_for(3.0)
    meter = Meter()
    for phase, seconds in (("warm", 20.0), ("timed", 6.0)):
        if phase == "timed":
            for name in sim.names[1:4]:
                for shard in cluster.node(name).shards:
                    meter.wrap(shard)
        end = cluster.now + seconds
        while cluster.now < end:
            cluster.run_for(0.05)
            for _ in range(20):
                sim.churn_op(False)
    meter.unwrap()
    row = {
        "receive_us": meter.receive_s / max(meter.receives, 1) * 1e6,
        "tick_us": meter.tick_s / max(meter.ticks, 1) * 1e6,
    }
    log(f"  max_delta_sizes={sizes}: {row['receive_us']:.0f} µs per heartbeat received, "
        f"{row['tick_us']:.0f} µs per tick")  # fmt: skip
    return row


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k presences, 20 s simulated")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--sizes", default=None, help="presences, comma-separated")
    parser.add_argument("--churn", type=float, default=1000.0, help="tracks/s cluster-wide")
    parser.add_argument("--seconds", type=float, default=None, help="simulated churn seconds")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--charts", action="store_true", help="render docs/assets charts")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "10000,100000")).split(",")]
    seconds = args.seconds or (20.0 if args.quick else 40.0)

    def log(line: str) -> None:
        print(line, flush=True)

    load = os.getloadavg()[0]
    print(
        f"bench_scale: CPython {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at start (shared machine: CPU figures vary with the load)"
    )
    options = Options()
    t0 = time.monotonic()
    cal = calibrate(args.quick)
    fit_costs(cal)
    print("\n## Calibration (this process, orjson, N = nodes a heartbeat's clock lists)\n")
    print(
        f"heartbeat bytes H = {cal.hb_base:.0f} + {cal.hb_clock:.1f} N (+ the clock counter's "
        f"digits - 1, per entry) [+ {cal.delta_base:+.0f} + {cal.per_join:.1f} j + "
        f"{cal.per_leave:.1f} l + (digits + 1) x r + {cal.per_cloud:.0f} R when it carries a "
        "delta: j own joins, l own leaves, r relayed leave tags, R replicas they are of]"
    )
    print(f"PubSub + ZMTP frame header per message: {cal.frame_header:.0f} B")
    print(
        f"full-state transfer: {cal.snapshot_per_presence:.1f} B per presence; "
        f"CPU {cal.transfer_holder_us:.2f} µs/presence to extract and encode (holder), "
        f"{cal.transfer_new_us:.2f} µs to decode and merge (new node)"
    )
    print(
        f"PubSub gossip frame = {cal.gossip_base:.0f} + {cal.gossip_per_member:.1f} N B,"
        f" one to each member every gossip_interval ({cal.gossip_interval:g} s)"
    )
    print(
        "\n| N | ops per heartbeat (joins + leaves) | send µs (tick) |"
        " receive µs (frame decode + Shard.receive) |"
    )
    print("|---|---|---|---|")
    for key in cal.cost_send:
        n, ops = key.split(":")
        print(f"| {n} | {2 * int(ops)} | {cal.cost_send[key]:.0f} | {cal.cost_recv[key]:.0f} |")
    print(
        f"\nfitted: receive µs = {cal.recv_fit[0]:.0f} + {cal.recv_fit[1]:.2f} N + "
        f"{cal.recv_fit[2]:.2f} ops; send µs = {cal.send_fit[0]:.0f} + {cal.send_fit[1]:.2f} N"
        f" + {cal.send_fit[2]:.2f} ops"
    )
    print(f"(calibration {time.monotonic() - t0:.0f} s)")

    generations: dict[str, dict[str, float]] = {}
    if not args.quick:
        print("\n## Delta generations: the cost of max_delta_sizes at steady churn (40 nodes)\n")
        for caps in ((100, 1000, 10000), (100, 1000), (100,)):
            generations[str(caps)] = generations_cost(caps, log)
    results = []
    for presences in sizes:
        print(
            f"\n## Simulation: {args.nodes} nodes, {presences:,} presences, churn "
            f"{args.churn:,.0f} tracks/s, a kill and a restart per minute, {seconds:.0f} s "
            f"(broadcast_period {options.broadcast_period} s, down_period {options.down} s, "
            f"max_delta_sizes {SIM_OPTIONS.max_delta_sizes})\n"
        )
        started = time.monotonic()
        sim = Sim(args.nodes, presences, args.churn, args.seed, SIM_OPTIONS)
        result = sim.run(seconds, log)
        del sim
        gc.collect()
        print(f"  ({time.monotonic() - started:.0f} s wall)")
        results.append(result)

    print("\n## Simulated against the formulas\n")
    print("| presences | measure | simulated | formula |")
    print("|---|---|---|---|")
    # the simulator's refs have short vsns: its formula is sized with them
    cal_sim = calibrate_sizes(SIM_VSN)
    cal_sim.recv_fit, cal_sim.send_fit = cal.recv_fit, cal.send_fit
    for r in results:
        counter = r.presences / r.nodes + 2 * r.churn / r.nodes * 12.0  # mid-window
        rates = per_node_rates(cal_sim, r.nodes, r.churn, options, counter)
        vis = r.visible_periods
        p = f"{r.presences:,}"
        print(
            f"| {p} | join visible on every node, p50 / p99 (periods; {len(vis):,} joins) | "
            f"{percentile(vis, 0.5):.2f} / {percentile(vis, 0.99):.2f} | "
            f"0.5-0.625 / 1.0-1.25 (uniform in a period, + jitter of the first tick) |"
        )
        print(
            f"| {p} | bytes/s each node sends, mean (max) | {fmt(statistics.fmean(r.sent_per_s))}"
            f" ({fmt(max(r.sent_per_s))}) | {fmt(rates['tracker_bytes_per_s'])} |"
        )
        print(
            f"| {p} | bytes/s each node receives, mean (max) | "
            f"{fmt(statistics.fmean(r.recv_per_s))} ({fmt(max(r.recv_per_s))}) | "
            f"{fmt(rates['tracker_bytes_per_s'])} |"
        )
        print(
            f"| {p} | heartbeats each node receives per s | "
            f"{statistics.fmean(r.hb_in_per_s):.1f} | {rates['heartbeats_in_per_s']:.1f} |"
        )
        hb_sim = statistics.fmean(r.hb_in_per_s)
        print(
            f"| {p} | bytes of a heartbeat, mean | {fmt(statistics.fmean(r.recv_per_s) / hb_sim)} |"
            f" {fmt(rates['heartbeat_bytes'])} |"
        )
        hb_bytes = statistics.fmean(r.recv_per_s) / hb_sim
        decode_us = min(DECODE_US_PER_KB) * hb_bytes / 1e3
        steady_us = r.receive_us + decode_us
        cpu_sim = (hb_sim * steady_us + r.ticks_per_s * r.tick_us) / 1e6
        own_us = heartbeat_us(cal.recv_fit, r.nodes, rates["own_ops_per_heartbeat"])
        r.relay_us = max(0.0, steady_us - own_us) / max(rates["relayed_per_heartbeat"], 1.0)
        print(
            f"| {p} | µs per heartbeat received, steady state (Shard.receive timed on 3 "
            f"nodes + frame decode) | {steady_us:.0f} ({r.receive_us:.0f} + {decode_us:.0f}):"
            f" {own_us:.0f} for its own joins and leaves (calibration fit) + "
            f"{r.relay_us:.2f} per relayed tag x {rates['relayed_per_heartbeat']:.0f} | |"
        )
        modelled = per_node_rates(cal_sim, r.nodes, r.churn, options, counter, r.relay_us)
        print(
            f"| {p} | CPU per node for heartbeats (share of a core) | {cpu_sim * 100:.1f} % "
            "(simulated counts x steady-state costs) | "
            f"{modelled['cpu_share'] * 100:.1f} % (its per-tag cost taken from this run) |"
        )
        for w in r.restarts:
            moved = sum(w["bytes_by_kind"].values())
            tack = w["bytes_by_kind"].get("tack", 0)
            print(
                f"| {p} | restart: transfer bytes to the new node (all received in "
                f"{w['window']:.0f} s) | {fmt(tack)} ({fmt(moved)}) | "
                f"{fmt(transfer_bytes(cal, w['online_ref']))} (one snapshot of "
                f"{w['online_ref']:,}) |"
            )
            caught = w["caught_up"]
            print(
                f"| {p} | restart: virtual time to catch up (periods), + CPU to merge | "
                f"{caught / options.broadcast_period if caught else float('nan'):.1f} + "
                f"{w['online_ref'] * cal.transfer_new_us / 1e6:.2f} s | "
                f"<= {1.25 + options.clock_sample_periods + 1:.2f} + "
                f"{w['online_ref'] * cal.transfer_new_us / 1e6:.2f} s |"
            )
        print(
            f"| {p} | simulator cost | {r.cpu_seconds:.0f} s CPU for {r.seconds:.0f} s "
            f"simulated (fill {r.fill_cpu:.0f} s) | |"
        )

    print(
        f"\n## Through the formulas (churn {args.churn:,.0f} tracks/s, default periods, "
        "real 19-digit vsns, clock counters after a day)\n"
    )
    print(
        "| nodes | tracker bytes/s per node (each way) | + frame headers | + PubSub gossip "
        "| heartbeats in/s | CPU share (heartbeats, steady state) | restart transfer at 1M "
        "presences |"
    )
    print("|---|---|---|---|---|---|---|")
    table = []
    for n in (3, 10, 25, 50, 100, 200, 300, 500, 1000):
        relay = max((r.relay_us for r in results), default=None)
        rates = per_node_rates(cal, n, args.churn, options, day_counter(n, args.churn), relay)
        table.append({"nodes": n, **rates})
        print(
            f"| {n} | {fmt(rates['tracker_bytes_per_s'])} | {fmt(rates['wire_bytes_per_s'])} | "
            f"{fmt(rates['wire_bytes_per_s'] + rates['gossip_bytes_per_s'])} | "
            f"{rates['heartbeats_in_per_s']:.0f} | {rates['cpu_share'] * 100:.1f} % | "
            f"{fmt(transfer_bytes(cal, 1_000_000))} |"
        )
    relay = max((r.relay_us for r in results), default=None)
    knee = next(
        (
            n
            for n in range(10, 3001, 10)
            if per_node_rates(cal, n, args.churn, options, day_counter(n, args.churn), relay)[
                "cpu_share"
            ]
            >= 0.25
        ),
        None,
    )
    print(
        f"\nAt {args.churn:,.0f} tracks/s a node's heartbeats take a quarter of a core from "
        f"N = {knee} nodes (the formula, with the per-tag receive cost of the simulation)"
    )
    table_sim = []
    if results:  # the same formula with the simulator's shapes: its points lie on it
        r0 = results[0]
        for n in (3, 10, 25, 50, 100, 200, 300, 500, 1000):
            counter = r0.presences / n + 2 * args.churn / n * 12.0
            table_sim.append(
                {"nodes": n, **per_node_rates(cal_sim, n, args.churn, options, counter, relay)}
            )
    figures = {
        "knee_nodes": knee,
        "formula_table_sim": table_sim,
        "date": time.strftime("%Y-%m-%d"),
        "load": load,
        "churn": args.churn,
        "calibration": cal.__dict__,
        "formula_table": table,
        "simulated": [
            {
                "nodes": r.nodes,
                "presences": r.presences,
                "visible_p50": percentile(r.visible_periods, 0.5),
                "visible_p99": percentile(r.visible_periods, 0.99),
                "sent_per_s": statistics.fmean(r.sent_per_s),
                "recv_per_s": statistics.fmean(r.recv_per_s),
                "receive_us": r.receive_us,
                "relay_us": r.relay_us,
                "restarts": r.restarts,
            }
            for r in results
        ],
        "catchup": catchup_series(args.quick, options, cal),
        "generations": generations,
    }
    print("\n## Catch-up CPU against presences (in-process transfer, holder + new node)\n")
    print("| presences | bytes | holder s | new node s |")
    print("|---|---|---|---|")
    for row in figures["catchup"]:
        print(
            f"| {row['presences']:,} | {fmt(row['bytes'])} | {row['holder_s']:.2f} | "
            f"{row['new_s']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    if args.charts or os.environ.get("BENCH_CHARTS"):
        sys.path.insert(0, str(Path(__file__).parent))
        import charts

        charts.render_scale(figures)


def catchup_series(quick: bool, options: Options, cal: Calibration) -> list[dict[str, Any]]:
    rows = []
    for presences in (10_000, 30_000, 100_000) if quick else (10_000, 30_000, 100_000, 300_000):
        size, _, holder_us, new_us = transfer_costs(presences, options)
        rows.append(
            {
                "presences": presences,
                "bytes": size,
                "holder_s": holder_us * presences / 1e6,
                "new_s": new_us * presences / 1e6,
            }
        )
        gc.collect()
    return rows


if __name__ == "__main__":
    main()
