"""The shard protocol on the simulator: Phoenix's shard_replication_test, and a model check.

The scenarios follow phoenix_pubsub's ``shard_replication_test.exs`` with its test
configuration (heartbeat every 100 ms, an empty one after 2 quiet periods, permdown after
1.5 s); "the primary stops listening" becomes a blocked link, "kill the shard" a crash and
``:sys.suspend`` a pause. The state machine at the end runs random schedules of writes,
crashes, restarts, pauses, partitions and faulty networks over four nodes and checks
that, once healed and quiet, every live node shows exactly what the live nodes track.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tracker_zmq import AlreadyTracked, NoPresence, Options, Shard, Status
from tracker_zmq.testing import Cluster, Network, network_configs

PHOENIX = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)
TOPIC = "topic"


def sent(cluster: Cluster, kind: str, sender: str, to: str | None = None, after: float = 0.0):
    """Messages of a kind a node sent (to one node, if given) since ``after``."""
    return [
        s
        for s in cluster.sent
        if s.message["t"] == kind
        and s.sender[0] == sender
        and s.time >= after
        and (to is None or s.to == to)
    ]


def keys(entries: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    return sorted(key for key, _ in entries)


def run_until_true(cluster: Cluster, check, timeout: float, step: float = 0.01) -> float:
    """Advance virtual time until ``check()`` holds; returns the time it took."""
    start = cluster.now
    while not check():
        assert cluster.now - start < timeout, "condition not reached in time"
        cluster.run_for(step)
    return cluster.now - start


def replica(cluster: Cluster, node: str, other: str):
    return cluster.node(node).shards[0].replicas.get(other)


def test_heartbeats_are_sent_and_seen() -> None:
    cluster = Cluster(PHOENIX, seed=1, nodes=["primary", "spy"])
    cluster.run_for(1.0)
    beats = sent(cluster, "hb", "primary")
    assert len(beats) >= 3
    # The first tick always heartbeats; then an idle shard heartbeats every
    # (max_silent_periods + 1) periods.
    gaps = {round(b.time - a.time, 6) for a, b in itertools.pairwise(beats)}
    assert gaps == {0.3}
    assert replica(cluster, "spy", "primary").status is Status.UP
    assert cluster.node("spy").events_of("up") == [cluster.node("primary").ref]


def test_gossip_from_unseen_node_brings_nodeup_and_transfer() -> None:
    cluster = Cluster(PHOENIX, seed=2, nodes=["primary"])
    cluster.network.block("node1", "primary")
    cluster.add_node("node1")
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    cluster.run_for(0.5)
    assert sent(cluster, "hb", "node1")
    assert cluster.list("primary", TOPIC) == []
    assert replica(cluster, "primary", "node1") is None

    cluster.network.unblock("node1", "primary")
    resumed = cluster.now
    run_until_true(cluster, lambda: keys(cluster.list("primary", TOPIC)) == ["node1"], 1.0)
    requests = sent(cluster, "treq", "primary", to="node1", after=resumed)
    assert len(requests) == 1
    acks = sent(cluster, "tack", "node1", to="primary", after=resumed)
    assert [a.message["id"] for a in acks] == [requests[0].message["id"]]
    assert cluster.node("primary").events_of("up") == [cluster.node("node1").ref]
    assert keys(cluster.node("primary").joins(TOPIC)) == ["node1"]
    cluster.run_for(0.5)
    assert sent(cluster, "hb", "primary", after=resumed)


def test_transfer_requests_collapse_clocks() -> None:
    cluster = Cluster(PHOENIX, seed=3, nodes=["primary", "node1", "node2"])
    cluster.run_for(0.5)
    for name in cluster.nodes:
        others = {cluster.node(n).ref for n in cluster.nodes if n != name}
        assert set(cluster.node(name).events_of("up")) == others

    for other in ("node1", "node2"):
        cluster.network.block(other, "primary")
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    cluster.track("node1", "pid1", TOPIC, "node1.2", {})
    cluster.track("node2", "pid2", TOPIC, "node2", {})
    cluster.run_for(1.0)
    assert keys(cluster.list("node1", TOPIC)) == ["node1", "node1.2", "node2"]
    assert keys(cluster.list("node2", TOPIC)) == ["node1", "node1.2", "node2"]
    assert cluster.list("primary", TOPIC) == []

    resumed = cluster.now
    cluster.network.heal()
    run_until_true(cluster, lambda: len(cluster.list("primary", TOPIC)) == 3, 1.0)
    cluster.run_for(1.0)
    requests = sent(cluster, "treq", "primary", after=resumed)
    assert len(requests) == 1, [(r.time, r.to) for r in requests]
    acks = sent(cluster, "tack", requests[0].to, to="primary", after=resumed)
    assert [a.message["id"] for a in acks] == [requests[0].message["id"]]
    assert keys(cluster.node("primary").joins(TOPIC)) == ["node1", "node1.2", "node2"]


def test_old_pids_are_permdowned_when_a_node_comes_back() -> None:
    cluster = Cluster(PHOENIX, seed=4, nodes=["primary", "node1", "node2"])
    cluster.track("primary", "pid0", TOPIC, "primary", {})
    cluster.track("node1", "pid1-old", TOPIC, "node1", {})
    cluster.track("node2", "pid2", TOPIC, "node2", {})
    assert cluster.settle()
    old = cluster.node("node1").ref
    cluster.crash("node1")
    run_until_true(
        cluster,
        lambda: old in cluster.node("primary").events_of("permdown"),
        2 * PHOENIX.permdown_period,
    )
    cluster.restart("node1")
    cluster.track("node1", "pid1-new", TOPIC, "node1", {})
    assert cluster.settle()
    for name in ("primary", "node1", "node2"):
        state = cluster.node(name).shards[0].state
        assert state.get_by_owner("pid1-old") == []
        assert [e.owner for e in state.get_by_owner("pid1-new")] == ["pid1-new"]


def test_tempdowns_with_new_vsn_nodeups_and_permdowns() -> None:
    cluster = Cluster(PHOENIX, seed=5, nodes=["primary", "node1", "node2"])
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    cluster.track("node2", "pid2", TOPIC, "node2", {})
    assert cluster.settle()
    primary = cluster.node("primary")
    assert keys(primary.joins(TOPIC)) == ["node1", "node2"]
    vsn = cluster.node("node1").vsn
    assert replica(cluster, "primary", "node1").vsn == vsn
    assert replica(cluster, "primary", "node2").status is Status.UP

    # Suspended longer than down_period: down, then back up with the same vsn.
    cluster.pause("node1")
    run_until_true(cluster, lambda: keys(primary.leaves(TOPIC)) == ["node1"], 1.0)
    assert replica(cluster, "primary", "node1").status is Status.DOWN
    assert replica(cluster, "primary", "node1").vsn == vsn
    cluster.resume("node1")
    run_until_true(cluster, lambda: keys(primary.joins(TOPIC)) == ["node1", "node1", "node2"], 1)
    assert replica(cluster, "primary", "node1").status is Status.UP
    assert replica(cluster, "primary", "node1").vsn == vsn

    # Killed: down; restarted: up with a new vsn and only its new presences.
    cluster.crash("node1")
    run_until_true(cluster, lambda: len(primary.leaves(TOPIC)) == 2, 1.0)
    assert replica(cluster, "primary", "node1").status is Status.DOWN
    cluster.restart("node1")
    cluster.track("node1", "pid1b", TOPIC, "node1-back", {})
    run_until_true(cluster, lambda: "node1-back" in keys(primary.joins(TOPIC)), 1.0)
    assert keys(cluster.list("primary", TOPIC)) == ["node1-back", "node2"]
    assert replica(cluster, "primary", "node1").vsn not in (vsn, None)
    assert replica(cluster, "primary", "node1").status is Status.UP

    # Killed again and never back: permanently down, forgotten.
    cluster.crash("node1")
    run_until_true(cluster, lambda: primary.leaves(TOPIC)[-1][0] == "node1-back", 1.0)
    cluster.run_for(PHOENIX.permdown_period + 2 * PHOENIX.broadcast_period)
    assert set(primary.shards[0].replicas) == {"node2"}
    assert keys(cluster.list("primary", TOPIC)) == ["node2"]


def test_local_and_remote_join_and_leave() -> None:
    cluster = Cluster(PHOENIX, seed=6, nodes=["primary"])
    primary = cluster.node("primary")
    ref = cluster.track("primary", "me", TOPIC, "me", {"name": "me"})
    assert primary.diffs[-1].diff == {TOPIC: ([("me", {"name": "me", "phx_ref": ref})], [])}
    assert cluster.list("primary", TOPIC) == [("me", {"name": "me", "phx_ref": ref})]
    cluster.track("primary", "me2", TOPIC, "me2", {"name": "me2"})
    assert keys(primary.joins(TOPIC)) == ["me", "me2"]
    cluster.run_for(0.5)
    assert primary.shards[0].replicas == {}

    cluster.add_node("node1")
    cluster.track("node1", "pid1", TOPIC, "node1", {"name": "node1"})
    run_until_true(cluster, lambda: len(cluster.list("primary", TOPIC)) == 3, 1.0)
    assert replica(cluster, "primary", "node1").status is Status.UP

    cluster.untrack("primary", "me2")
    assert primary.diffs[-1].diff[TOPIC][1][0][0] == "me2"
    cluster.untrack("node1", "pid1")
    run_until_true(cluster, lambda: keys(primary.leaves(TOPIC)) == ["me2", "node1"], 1.0)
    assert keys(cluster.list("primary", TOPIC)) == ["me"]


def test_nodedown_broadcasts_leaves() -> None:
    cluster = Cluster(PHOENIX, seed=7, nodes=["primary", "node1"])
    cluster.track("primary", "local1", TOPIC, "local1", {})
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    assert cluster.settle()
    shard = cluster.node("primary").shards[0]
    assert len(cluster.list("primary", TOPIC)) == 2
    assert len(shard.state) == 2

    cluster.crash("node1")
    run_until_true(cluster, lambda: cluster.node("primary").leaves(TOPIC) != [], 1.0)
    assert keys(cluster.node("primary").leaves(TOPIC)) == ["node1"]
    assert replica(cluster, "primary", "node1").status is Status.DOWN
    assert keys(cluster.list("primary", TOPIC)) == ["local1"]
    assert len(shard.state) == 2  # still held, hidden (Phoenix's dirty_list shows it)
    cluster.run_for(PHOENIX.permdown_period + 2 * PHOENIX.broadcast_period)
    assert len(shard.state) == 1
    assert [e.owner for e in shard.state.online_list()] == ["local1"]


def test_graceful_permdown_is_seen_at_once() -> None:
    cluster = Cluster(PHOENIX, seed=8, nodes=["primary", "node1"])
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    assert cluster.settle()
    gone = cluster.node("node1").ref
    cluster.graceful_permdown("node1")
    cluster.run_for(0.02)  # a network delay, far less than a period
    primary = cluster.node("primary")
    assert keys(primary.leaves(TOPIC)) == ["node1"]
    assert cluster.list("primary", TOPIC) == []
    assert primary.shards[0].replicas == {}
    assert primary.events_of("permdown") == [gone]
    cluster.run_for(1.0)  # the repeats change nothing
    assert primary.events_of("permdown") == [gone]
    assert keys(primary.leaves(TOPIC)) == ["node1"]


def test_rolling_node_update_sends_one_transfer_request() -> None:
    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=2.0)
    cluster = Cluster(options, seed=9, nodes=["primary", "node1"])
    cluster.run_for(0.5)
    cluster.track("primary", "pid0", TOPIC, "primary", {})
    cluster.track("node1", "pid1", TOPIC, "node1", {})
    assert cluster.settle()
    node1 = cluster.node("node1").ref
    cluster.crash("node1")
    run_until_true(cluster, lambda: node1 in cluster.node("primary").events_of("down"), 1.0)

    started = cluster.now
    cluster.add_node("node2")
    run_until_true(cluster, lambda: cluster.node("node2").events_of("up") != [], 1.0)
    cluster.run_for(2 * options.timeout)
    requests = sent(cluster, "treq", "node2", after=started)
    assert [r.to for r in requests] == ["primary"]
    assert keys(cluster.list("node2", TOPIC)) == ["primary"]
    run_until_true(
        cluster,
        lambda: node1 in cluster.node("primary").events_of("permdown"),
        2 * options.permdown_period,
    )


def test_large_state_transfer_in_parts_is_merged_part_by_part() -> None:
    options = Options(
        broadcast_period=0.1,
        max_silent_periods=2,
        permdown_period=5.0,
        transfer_part_values=4_000,
    )
    cluster = Cluster(options, seed=10, nodes=["big"])
    shard = cluster.node("big").shards[0]
    for i in range(50_000):
        shard.track(i, TOPIC, i, {})
    cluster.run_for(0.3)  # the big delta goes out to nobody
    cluster.add_node("new")
    cluster.network.reorder = 0.5  # parts overtake each other
    cluster.network.reorder_delay = 0.05
    assert cluster.settle(timeout=5.0)
    assert len(cluster.list("new", TOPIC)) == 50_000
    parts = sent(cluster, "tack", "big", to="new")
    assert len(parts) >= 50_000 // 4_000
    assert sorted(p.message["part"] for p in parts) == list(range(len(parts)))
    assert [p.message["last"] for p in parts].count(True) == 1
    assert len({str(p.message["id"]) for p in parts}) == 1
    # A full state is merged part by part as the parts arrive (the loop stays free
    # between parts): one diff per part, its joins only, every presence joined once.
    diffs = [r.diff for r in cluster.node("new").diffs if TOPIC in r.diff]
    assert len(diffs) == len(parts)
    assert all(d[TOPIC][1] == [] for d in diffs)
    joined = [key for d in diffs for key, _ in d[TOPIC][0]]
    assert sorted(joined) == list(range(50_000))


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[tuple[float, str, str | None]]:
        network = Network(loss=0.2, duplicate=0.2, reorder=0.3)
        cluster = Cluster(PHOENIX, seed=seed, nodes=["a", "b", "c"], network=network)
        cluster.track("a", 1, TOPIC, 1, {})
        cluster.run_for(1.0)
        cluster.crash("b")
        cluster.run_for(1.0)
        cluster.restart("b")
        cluster.run_for(1.0)
        return [(s.time, s.message["t"], s.to) for s in cluster.sent]

    assert run(11) == run(11)
    assert run(11) != run(12)


# ------------------------------------------------------------ the simulator


def test_a_lossy_network_loses_and_a_duplicating_one_duplicates() -> None:
    lossy = Cluster(PHOENIX, seed=20, nodes=["a", "b"], network=Network(loss=1.0))
    lossy.run_for(1.0)
    assert lossy.node("b").shards[0].counters["messages_in"] == 0
    assert lossy.node("b").shards[0].replicas == {}

    doubled = Cluster(PHOENIX, seed=20, nodes=["a", "b"], network=Network(duplicate=1.0))
    doubled.run_for(1.0)
    beats = len(sent(doubled, "hb", "a"))
    assert doubled.node("b").shards[0].counters["messages_in"] == 2 * beats


def test_fifo_per_link_unless_reordered() -> None:
    network = Network(random.Random(1), delay=(0.0, 1.0))
    times = [network.fates("a", "b", t / 100)[0] for t in range(50)]
    assert times == sorted(times)
    network = Network(random.Random(1), delay=(0.0, 1.0), reorder=1.0)
    times = [network.fates("a", "b", t / 100)[0] for t in range(50)]
    assert times != sorted(times)


def test_a_partition_cuts_both_ways_until_healed() -> None:
    cluster = Cluster(PHOENIX, seed=21, nodes=["a", "b", "c"])
    cluster.track("a", "pid", TOPIC, "a", {})
    assert cluster.settle()
    cluster.network.partition({"a"}, {"b", "c"})
    assert not cluster.settle(timeout=1.0)
    assert cluster.list("b", TOPIC) == []
    assert replica(cluster, "a", "b").status is Status.DOWN
    assert replica(cluster, "b", "c").status is Status.UP
    cluster.network.heal()
    assert cluster.settle()
    assert keys(cluster.list("c", TOPIC)) == ["a"]


def test_a_crashed_node_gets_nothing_and_a_paused_one_catches_up() -> None:
    cluster = Cluster(PHOENIX, seed=22, nodes=["a", "b"])
    assert cluster.settle()
    cluster.crash("b")
    shard = cluster.node("b").shards[0]
    received = shard.counters["messages_in"]
    cluster.run_for(1.0)
    assert shard.counters["messages_in"] == received
    with pytest.raises(RuntimeError):
        cluster.track("b", "pid", TOPIC, "k", {})
    vsn = cluster.node("b").vsn
    assert cluster.restart("b").vsn > vsn
    assert cluster.settle()

    cluster.pause("a")
    cluster.run_for(1.0)  # longer than down_period
    assert replica(cluster, "b", "a").status is Status.DOWN
    assert replica(cluster, "a", "b").status is Status.UP  # a judged nothing while frozen
    resumed = cluster.now
    cluster.resume("a")
    assert cluster.node("a").shards[0].drops == {"down_judgement_skipped_after_stall": 1}
    assert [r for r in cluster.node("a").events if r.time >= resumed] == []
    assert cluster.settle()


def test_pool_size_routes_topics_to_shards() -> None:
    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5, pool_size=4)
    cluster = Cluster(options, seed=23, nodes=["a", "b"])
    for i in range(20):
        cluster.track("a", "pid", f"t{i}", "k", {})
    assert cluster.settle()
    assert all(len(cluster.list("b", f"t{i}")) == 1 for i in range(20))
    assert sum(1 for shard in cluster.node("b").shards if len(shard.state)) > 1
    cluster.untrack("a", "pid")
    assert cluster.settle()
    assert cluster.presences("b") == set()


# ------------------------------------------------------------- model check

NAMES = ("n0", "n1", "n2", "n3")
MODEL_OPTIONS = Options(
    broadcast_period=1.0, max_silent_periods=2, down_period=6.0, permdown_period=20.0
)
names = st.sampled_from(NAMES)
owners = st.sampled_from(["o1", "o2", 3])
topics = st.sampled_from(["t1", "t2", 7])
ids = st.sampled_from(["k1", "k2", 5])
metas = st.fixed_dictionaries({"n": st.integers(0, 3)})


class ClusterMachine(RuleBasedStateMachine):
    """Random schedules over four nodes, checked against what live nodes track."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None
        # node -> (owner, topic, key) -> phx_ref, for the current incarnation
        self.model: dict[str, dict[tuple[Any, Any, Any], str]] = {}
        self.dead: list[tuple[tuple[str, int], float]] = []

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @initialize(seed=st.integers(0, 2**32), config=network_configs(max_loss=0.3))
    def start(self, seed: int, config: dict[str, Any]) -> None:
        self.cluster = Cluster(MODEL_OPTIONS, seed=seed, nodes=NAMES, network=Network(**config))
        self.model = {name: {} for name in NAMES}

    def running(self, name: str) -> bool:
        return self.c.node(name).alive

    @rule(name=names, owner=owners, topic=topics, key=ids, meta=metas)
    def track(self, name: str, owner: Any, topic: Any, key: Any, meta: dict[str, Any]) -> None:
        if not self.running(name):
            return
        mine = self.model[name]
        if (owner, topic, key) in mine:
            with pytest.raises(AlreadyTracked):
                self.c.track(name, owner, topic, key, meta)
            return
        mine[owner, topic, key] = self.c.track(name, owner, topic, key, meta)

    @rule(name=names, owner=owners, topic=topics, key=ids)
    def untrack(self, name: str, owner: Any, topic: Any, key: Any) -> None:
        if self.running(name):
            self.c.untrack(name, owner, topic, key)
            self.model[name].pop((owner, topic, key), None)

    @rule(name=names, owner=owners)
    def untrack_owner(self, name: str, owner: Any) -> None:
        if self.running(name):
            self.c.untrack(name, owner)
            mine = self.model[name]
            for presence in [p for p in mine if p[0] == owner]:
                del mine[presence]

    @rule(name=names, owner=owners, topic=topics, key=ids, meta=metas)
    def update(self, name: str, owner: Any, topic: Any, key: Any, meta: dict[str, Any]) -> None:
        if not self.running(name):
            return
        mine = self.model[name]
        if (owner, topic, key) not in mine:
            with pytest.raises(NoPresence):
                self.c.update(name, owner, topic, key, meta)
            return
        mine[owner, topic, key] = self.c.update(name, owner, topic, key, meta)

    @rule(name=names)
    def crash(self, name: str) -> None:
        if self.running(name):
            self.dead.append((self.c.node(name).ref, self.c.now))
            self.c.crash(name)
            self.model[name] = {}

    @rule(name=names)
    def graceful_permdown(self, name: str) -> None:
        if self.running(name):
            self.dead.append((self.c.node(name).ref, self.c.now))
            self.c.graceful_permdown(name)
            self.model[name] = {}

    @rule(name=names)
    def restart(self, name: str) -> None:
        if not self.running(name):
            self.c.restart(name)

    @rule(name=names, seconds=st.floats(0.5, 12.0))
    def stall(self, name: str, seconds: float) -> None:
        """SIGSTOP for a while, then SIGCONT."""
        self.c.pause(name)
        self.c.run_for(seconds)
        self.c.resume(name)

    @rule(side=st.sets(names, min_size=1, max_size=2))
    def partition(self, side: set[str]) -> None:
        self.c.network.partition(side, set(NAMES) - side)

    @rule()
    def heal(self) -> None:
        self.c.network.heal()

    @rule(config=network_configs(max_loss=0.5))
    def faults(self, config: dict[str, Any]) -> None:
        for attribute, value in config.items():
            setattr(self.c.network, attribute, value)

    @rule(seconds=st.floats(0.1, 10.0))
    def advance(self, seconds: float) -> None:
        self.c.run_for(seconds)

    def expected(self) -> set[tuple[Any, Any, Any, str]]:
        return {
            (topic, owner, key, ref)
            for mine in self.model.values()
            for (owner, topic, key), ref in mine.items()
        }

    @invariant()
    def local_presences_match_the_model(self) -> None:
        if self.cluster is None:
            return
        for name in self.c.live():
            node = self.c.node(name)
            own = {
                (e.topic, e.owner, e.key, e.meta["phx_ref"])
                for e in self.c.online(name)
                if e.tag[0] == node.ref
            }
            assert own == {(t, o, k, r) for (o, t, k), r in self.model[name].items()}
            for shard in node.shards:
                assert name not in shard.replicas, "a node must never see itself as a peer"

    @invariant()
    def no_ghost_outlives_permdown_period(self) -> None:
        if self.cluster is None:
            return
        grace = MODEL_OPTIONS.permdown_period + 2 * MODEL_OPTIONS.broadcast_period
        ghosts = {ref for ref, at in self.dead if self.c.now - at > grace}
        for name in self.c.live():
            if self.c.node(name).paused:
                continue
            seen = {e.tag[0] for e in self.c.online(name)}
            assert not seen & ghosts, f"{name} still shows {seen & ghosts}"

    def teardown(self) -> None:
        if self.cluster is None:
            return
        cluster = self.c
        cluster.network.heal()
        cluster.network.loss = 0.0
        options = MODEL_OPTIONS
        # A partition longer than permdown_period makes each side drop the other for
        # another permdown_period before taking it back as new.
        cluster.run_for(2 * options.permdown_period + 3 * options.down)
        self.no_ghost_outlives_permdown_period()
        expected = self.expected()
        live = cluster.live()
        for name in live:
            assert cluster.presences(name) == expected, name
            for shard in cluster.node(name).shards:
                status = {other: (r.vsn, r.status) for other, r in shard.replicas.items()}
                assert status == {
                    other: (cluster.node(other).vsn, Status.UP) for other in live if other != name
                }, name
        assert cluster.converged()


TestClusterMachine = ClusterMachine.TestCase
TestClusterMachine.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_partition_longer_than_permdown_heals_without_waiting_another_permdown() -> None:
    cluster = Cluster(PHOENIX, seed=22, nodes=["a", "b", "c"])
    cluster.track("a", "pid-a", TOPIC, "alice", {})
    cluster.track("c", "pid-c", TOPIC, "carol", {})
    assert cluster.settle()
    cluster.network.partition({"a"}, {"b", "c"})
    # long enough for each side to forget the other, healed right after
    cluster.run_for(PHOENIX.permdown_period + PHOENIX.broadcast_period * 3)
    assert replica(cluster, "b", "a") is None
    assert replica(cluster, "a", "c") is None
    cluster.untrack("c", "pid-c", TOPIC, "carol")  # changes on both sides of the split
    cluster.track("a", "pid-a2", TOPIC, "anna", {})
    cluster.network.heal()
    took = run_until_true(
        cluster,
        lambda: all(keys(cluster.list(n, TOPIC)) == ["alice", "anna"] for n in ("a", "b", "c")),
        timeout=PHOENIX.permdown_period * 2,
    )
    assert took < PHOENIX.down * 2  # not another permdown_period of ignoring each other
    assert replica(cluster, "b", "a").status is Status.UP


def test_late_messages_of_a_permdowned_replica_are_still_dropped() -> None:
    cluster = Cluster(PHOENIX, seed=23, nodes=["a", "b"])
    cluster.track("a", "pid", TOPIC, "alice", {})
    assert cluster.settle()
    b = cluster.node("b").shards[0]
    cluster.graceful_permdown("a")
    run_until_true(cluster, lambda: replica(cluster, "b", "a") is None, timeout=1.0)
    gone = cluster.node("a").shards[0]
    gone.track("pid-2", TOPIC, "late", {})
    late = gone.tick(cluster.now)  # a heartbeat still in flight after the permdown
    assert late.sends
    before = b.drops.get("from_permdowned", 0)
    for send in late.sends:
        b.receive(send.message, cluster.now)
    assert b.drops.get("from_permdowned", 0) == before + len(late.sends)
    assert replica(cluster, "b", "a") is None
    assert cluster.list("b", TOPIC) == []


def test_a_delta_too_large_for_a_heartbeat_is_fetched_by_transfer() -> None:
    options = Options(
        broadcast_period=0.1,
        max_silent_periods=2,
        permdown_period=1.5,
        transfer_part_values=500,
        transfer_part_bytes=16 * 1024,
    )
    cluster = Cluster(options, seed=24, nodes=["a", "b"])
    assert cluster.settle()
    for i in range(3000):  # one tick's worth: far over 16 KiB
        cluster.track("a", f"pid-{i}", TOPIC, f"user-{i}", {"n": i})
    run_until_true(cluster, lambda: len(cluster.list("b", TOPIC)) == 3000, timeout=3.0)
    a = cluster.node("a").shards[0]
    assert a.counters["deltas_too_large"] >= 1
    assert a.counters["transfers_answered"] >= 1
    sizes = [
        len(s.message.get("data", {}).get("values", []))
        for s in cluster.sent
        if s.message["t"] == "tack"
    ]
    assert max(sizes) <= 500


def test_an_answer_from_a_responder_marked_down_meanwhile_is_still_merged() -> None:
    def wire(message):
        return json.loads(json.dumps(message))

    a = Shard("a", 1, 0, PHOENIX, random.Random(1))
    b = Shard("b", 2, 0, PHOENIX, random.Random(2))
    now = 0.0
    a.start(now)
    b.start(now)
    a.track("pid", TOPIC, "alice", {})
    a.state.reset_delta()  # the heartbeat carrying alice is lost
    a.state.join("pid-2", TOPIC, "anna", {"phx_ref": "x"})
    a.state.reset_delta()
    heartbeat = a.tick(now).sends  # an empty heartbeat, with a's clock ahead of b's
    for send in heartbeat:
        b.receive(wire(send.message), now)
    request = None
    while request is None:  # b samples clocks and asks a
        now += PHOENIX.broadcast_period
        request = next((s for s in b.tick(now).sends if s.message["t"] == "treq"), None)
    answer = [send for parts in a.receive(wire(request.message), now).later for send in parts]
    while b.replicas["a"].status is Status.UP:  # ...but slowly: b marks a down first
        now += PHOENIX.broadcast_period
        b.tick(now)
    merged = b.counters["transfers_merged"]
    out = None
    for send in answer:
        out = b.receive(wire(send.message), now)
    assert b.counters["transfers_merged"] == merged + 1
    assert out is not None
    assert out.diff == {}  # merged silently while a is down
    assert b.list(TOPIC) == []
    sends: list[Any] = []
    while not sends:  # a's next heartbeat brings it up again: its presences join
        now += PHOENIX.broadcast_period
        sends = a.tick(now).sends
    for send in sends:
        out = b.receive(wire(send.message), now)
    assert keys(out.diff[TOPIC][0]) == ["alice", "anna"]
    assert keys(b.list(TOPIC)) == ["alice", "anna"]


def test_traffic_counts_bytes_per_receiver_and_by_kind() -> None:
    cluster = Cluster(PHOENIX, seed=3, nodes=["a", "b", "c"])
    cluster.track("a", "pid-1", TOPIC, "alice", {"status": "online"})
    assert cluster.settle()
    for name in "abc":  # every broadcast reaches the two others: each counts twice
        expected = sum(
            2 * len(json.dumps(s.message, separators=(",", ":")).encode())
            for s in cluster.sent
            if s.sender[0] == name
        )
        assert cluster.node(name).traffic.total_sent() == expected
    nodes = [cluster.node(n) for n in "abc"]
    # a reliable network: what was sent was received, message for message
    assert sum(n.traffic.total_sent() for n in nodes) == sum(
        n.traffic.total_received() for n in nodes
    )
    assert sum(sum(n.traffic.messages_sent.values()) for n in nodes) == 2 * len(cluster.sent)
    assert set(cluster.node("a").traffic.bytes_sent) == {"hb"}

    cluster.crash("c")  # messages to a dead node are sent, never received
    before = cluster.node("c").traffic.total_received()
    cluster.run_for(PHOENIX.broadcast_period * 4)
    assert cluster.node("c").traffic.total_received() == before
    assert sum(n.traffic.total_sent() for n in nodes) > sum(
        n.traffic.total_received() for n in nodes
    )
    cluster.restart("c")  # the new incarnation fetches the state: a transfer
    assert cluster.settle()
    traffic = cluster.node("c").traffic
    assert traffic.bytes_received["tack"] > 0
    assert traffic.messages_sent["treq"] >= 1


def test_diffs_seen_through_on_diff_without_recording() -> None:
    cluster = Cluster(PHOENIX, seed=4, nodes=["a", "b"])
    cluster.record_messages = cluster.record_diffs = False
    seen: list[tuple[str, float, Any]] = []
    cluster.on_diff = lambda node, record: seen.append((node.name, record.time, record.diff))
    cluster.track("a", "pid-1", TOPIC, "alice", {})
    assert cluster.settle()
    assert cluster.sent == []
    assert cluster.node("a").diffs == cluster.node("b").diffs == []
    assert [(name, keys(diff[TOPIC][0])) for name, _, diff in seen] == [
        ("a", ["alice"]),
        ("b", ["alice"]),
    ]
    assert seen[0][1] == 0.0 < seen[1][1] <= PHOENIX.broadcast_period * 1.25 + 0.005
