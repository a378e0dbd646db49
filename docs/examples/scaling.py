"""The Scaling page's measurements in small: bytes per node and join visibility, simulated.

A 10-node cluster in virtual time with churn (each track replaces an untracked
presence); the simulator counts every node's bytes by message kind
(``SimNode.traffic``), and ``Cluster.on_diff`` sees each diff as it is reported.
``bench/bench_scale.py`` runs the same at 100 nodes.
"""

from __future__ import annotations

import random
import statistics

from tracker_zmq import Options
from tracker_zmq.testing import Cluster, DiffRecord, SimNode

# --8<-- [start:setup]
options = Options()  # the defaults: broadcast_period 1.5 s, down_period 30 s
names = [f"node-{i}" for i in range(10)]
cluster = Cluster(options, seed=1, nodes=names)
cluster.record_messages = False  # keep no copy of every message...
cluster.record_diffs = False  # ...nor of every diff: count them as they happen

tracked: dict[str, float] = {}  # key: when it was tracked
seen: dict[str, set[str]] = {}  # key: the nodes that reported its join
visible: list[float] = []  # seconds until every other node had a join


def on_diff(node: SimNode, record: DiffRecord) -> None:
    for joins, _ in record.diff.values():
        for key, _ in joins:
            nodes = seen.setdefault(key, set())
            nodes.add(node.name)
            if len(nodes) == len(names):  # the tracking node and the 9 others
                visible.append(record.time - tracked[key])


cluster.on_diff = on_diff
# --8<-- [end:setup]

# --8<-- [start:churn]
rng = random.Random(2)
held: dict[str, list[tuple[str, str, str]]] = {name: [] for name in names}
churn = 50  # tracks per second, cluster-wide; each one replaces an older presence


def track(name: str, i: int) -> None:
    owner, topic, key = f"{name}:{i}", f"room:{i % 10}", f"user:{i}"
    tracked[key] = cluster.now
    cluster.track(name, owner, topic, key, {"status": "online"})
    held[name].append((owner, topic, key))


for i in range(100):  # 10 presences per node to start with
    track(names[i % 10], i)
cluster.run_for(5.0)

before = {name: cluster.node(name).traffic.total_sent() for name in names}
heartbeats = {name: cluster.node(name).traffic.messages_received["hb"] for name in names}
seconds = 30.0
for step in range(int(seconds * 10)):  # 0.1 s steps, 5 churn operations each
    cluster.run_for(0.1)
    for j in range(churn // 10):
        name = rng.choice(names)
        cluster.untrack(name, *held[name].pop(0))
        track(name, 1000 + step * 10 + j)
# --8<-- [end:churn]

# --8<-- [start:report]
sent = [(cluster.node(n).traffic.total_sent() - before[n]) / seconds for n in names]
received = [
    (cluster.node(n).traffic.messages_received["hb"] - heartbeats[n]) / seconds for n in names
]
period = options.broadcast_period
print(f"bytes/s each node sends: {statistics.fmean(sent):,.0f} (max {max(sent):,.0f})")
print(f"heartbeats each node receives per second: {statistics.fmean(received):.2f}")
print(
    f"join visible on every node: p50 {statistics.median(visible) / period:.2f} periods, "
    f"max {max(visible) / period:.2f}"
)
# with churn, every node sends a delta heartbeat every period, to each of the 9 others
assert 0.9 * 9 / period < statistics.fmean(received) < 1.1 * 9 / period
# a join reaches every node with its owner's next heartbeat: within a period (+ network)
assert max(visible) < period + 0.01
# --8<-- [end:report]
