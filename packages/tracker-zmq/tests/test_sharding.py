"""Re-sharding (tracker_zmq.sharding) on the simulator: the two-step change of pool_size.

The property: over random rollout schedules (each node restarted between shardings,
then each restarted with the new pool size alone; writes, updates and untracks in
between; graceful or abrupt restarts), every 50 ms of virtual time, every live node
lists each presence at most once, never lists again a presence it stopped listing, and
keeps listing a presence it listed while its node still tracks it; its diffs replay to
what it lists; and at the end every node lists exactly what the live nodes track.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import aio
import pytest
from aio import until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh import pubsubs

from tracker_zmq import ConfigError, Options, Tracker
from tracker_zmq.sharding import MergedView, Sharding, ShardSets, message_pool
from tracker_zmq.testing import Cluster, Network

OPTIONS = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=3.0)
NODES = ["a", "b", "c"]
TOPICS = [f"room:{i}" for i in range(6)]
OWNERS = ["u0", "u1", "u2"]
KEYS = ["k0", "k1"]
CHECK = 0.05
LAG = 1.0  # seconds within which a presence reaches every node (heartbeats, transfers)

Ident = tuple[str, int, str, str, str]  # (node, vsn, owner, topic, key)


@dataclass
class Model:
    """What the live incarnations track, and what each node has listed."""

    tracked: dict[Ident, str] = field(default_factory=dict)  # ident -> current phx_ref
    ident_of: dict[str, Ident] = field(default_factory=dict)  # every phx_ref ever made
    seen: dict[str, set[Ident]] = field(default_factory=dict)  # per node: listed, live
    gone: dict[str, set[str]] = field(default_factory=dict)  # per node: refs no longer listed
    shown: dict[str, set[str]] = field(default_factory=dict)  # per node: refs listed last check
    since: dict[Any, float] = field(default_factory=dict)  # ident or node: tracked / started
    checks: int = 0


def track(cluster: Cluster, model: Model, name: str, owner: str, topic: str, key: str) -> None:
    node = cluster.node(name)
    ident = (name, node.vsn, owner, topic, key)
    if ident in model.tracked:
        return
    ref = cluster.track(name, owner, topic, key, {"n": len(model.ident_of)})
    model.since[ident] = cluster.now
    model.tracked[ident] = ref
    model.ident_of[ref] = ident


def check(cluster: Cluster, model: Model) -> None:
    model.checks += 1
    for name in cluster.live():
        shown: dict[tuple[str, str, str, str], Ident] = {}
        refs: set[str] = set()
        for topic in TOPICS:
            for key, meta in cluster.list(name, topic):
                ref = meta["phx_ref"]
                ident = model.ident_of[ref]
                assert (ident[3], ident[4]) == (topic, key)
                presence = (ident[0], ident[2], topic, key)
                assert presence not in shown, f"{name} lists {presence} twice"
                shown[presence] = ident
                refs.add(ref)
        gone = model.gone.setdefault(name, set())
        assert not refs & gone, f"{name} lists again {refs & gone}"
        before = model.shown.get(name, set())
        gone |= before - refs
        model.shown[name] = refs
        visible = set(shown.values())
        seen = model.seen.setdefault(name, set())
        seen &= model.tracked.keys()
        missing = seen - visible
        assert not missing, f"{name} no longer lists {missing}"
        seen |= visible & model.tracked.keys()
        # every presence tracked for a while on a node up for a while is listed
        started = model.since.get(name, 0.0)
        for ident in model.tracked.keys() - visible:
            since = max(model.since[ident], started, model.since.get(ident[0], 0.0))
            assert cluster.now - since <= LAG, f"{name} does not list {ident}"
        # no ghost: one incarnation per node at a time
        vsns: dict[str, int] = {}
        for ident in visible:
            assert vsns.setdefault(ident[0], ident[1]) == ident[1], f"{name}: ghosts of {ident}"


def run(cluster: Cluster, model: Model, seconds: float) -> None:
    end = cluster.now + seconds
    while cluster.now < end:
        cluster.run_for(CHECK)
        check(cluster, model)


def restart(
    cluster: Cluster, model: Model, name: str, sharding: Sharding, graceful: bool, back: int
) -> None:
    node = cluster.node(name)
    mine = sorted(i for i in model.tracked if i[:2] == (name, node.vsn))
    for ident in mine:
        del model.tracked[ident]
    if graceful:
        cluster.graceful_permdown(name)
    else:
        cluster.crash(name)
    model.seen.pop(name, None)
    model.gone.pop(name, None)
    model.shown.pop(name, None)
    cluster.restart(name, sharding)
    model.since[name] = cluster.now
    for _, _, owner, topic, key in mine[:back]:  # its clients come back (some of them)
        track(cluster, model, name, owner, topic, key)


def replay(cluster: Cluster, name: str) -> set[tuple[str, str, str]]:
    """The node's diffs since its current incarnation started, replayed; none doubled."""
    node = cluster.node(name)
    shown: set[tuple[str, str, str]] = set()
    for record in node.diffs:
        if record.vsn != node.vsn:
            continue
        for topic, (joins, leaves) in record.diff.items():
            for key, meta in leaves:
                item = (topic, key, meta["phx_ref"])
                assert item in shown, f"{name} reports a leave of {item} it never joined"
                shown.discard(item)
            for key, meta in joins:
                item = (topic, key, meta["phx_ref"])
                assert item not in shown, f"{name} reports {item} joining twice"
                shown.add(item)
    return shown


ACTION = st.one_of(
    st.tuples(st.just("track"), st.sampled_from(NODES), st.sampled_from(OWNERS),
              st.sampled_from(TOPICS), st.sampled_from(KEYS)),
    st.tuples(st.just("untrack"), st.integers(0, 1000)),
    st.tuples(st.just("update"), st.integers(0, 1000)),
    st.tuples(st.just("run"), st.floats(0.05, 1.0)),
    st.tuples(st.just("step"), st.booleans(), st.sampled_from([0, 2, 100])),
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=2, unique=True),
    order=st.permutations(NODES),
    actions=st.lists(ACTION, max_size=40),
    seed=st.integers(0, 2**32),
    duplicate=st.sampled_from([0.0, 0.1]),
)
def test_two_step_resharding_shows_every_presence_once(
    sizes: list[int], order: list[str], actions: list[Any], seed: int, duplicate: float
) -> None:
    old, new = sizes
    # A full transfer refused as "already answered in this window" is never answered:
    # the requester waits transfer_timeout before asking again. Short here, so that a
    # node restarted twice in a row catches up within LAG (see shard.py).
    options = Options(
        broadcast_period=0.1,
        max_silent_periods=2,
        permdown_period=3.0,
        pool_size=old,
        transfer_timeout=0.3,
    )
    cluster = Cluster(options, seed=seed, network=Network(duplicate=duplicate), nodes=NODES)
    model = Model()
    for i, name in enumerate(NODES):
        for topic in TOPICS[i::2]:
            track(cluster, model, name, OWNERS[i], topic, KEYS[0])
    assert cluster.settle()
    check(cluster, model)
    steps = [(name, Sharding(new, old)) for name in order] + [
        (name, Sharding(new)) for name in order
    ]
    for action in [*actions, *[("step", True, 100)] * len(steps)]:
        kind = action[0]
        if kind == "track":
            track(cluster, model, *action[1:])
        elif kind in ("untrack", "update") and model.tracked:
            live = sorted(model.tracked)
            ident = live[action[1] % len(live)]
            name, _, owner, topic, key = ident
            if kind == "untrack":
                cluster.untrack(name, owner, topic, key)
                del model.tracked[ident]
            else:
                ref = cluster.update(name, owner, topic, key, lambda m: {**m, "u": 1})
                model.tracked[ident] = ref
                model.ident_of[ref] = ident
        elif kind == "run":
            run(cluster, model, action[1])
        elif kind == "step" and steps:
            name, sharding = steps.pop(0)
            restart(cluster, model, name, sharding, graceful=action[1], back=action[2])
            run(cluster, model, 0.3)
    assert not steps
    for _ in range(200):
        run(cluster, model, 0.1)
        if cluster.converged():
            break
    assert cluster.converged()
    expected = {(i[3], i[2], i[4], ref) for i, ref in model.tracked.items()}
    for name in cluster.live():
        assert cluster.presences(name) == expected
        assert cluster.node(name).sharding == Sharding(new)
        listed = {(t, k, m["phx_ref"]) for t in TOPICS for k, m in cluster.list(name, t)}
        assert replay(cluster, name) == listed


def test_a_node_between_shardings_lists_each_presence_once() -> None:
    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=3.0, pool_size=2)
    cluster = Cluster(options, seed=3, nodes=["a"])
    cluster.add_node("b", Sharding(3, 2))
    cluster.add_node("c", Sharding(3))
    cluster.track("a", "u", "room", "alice", {})
    ref_b = cluster.track("b", "u", "room", "bob", {})
    cluster.track("c", "u", "room", "carol", {})
    cluster.run_for(2)
    # b writes bob into both sets, with one phx_ref, and lists him once
    assert [k for k, _ in cluster.list("b", "room")].count("bob") == 1
    assert cluster.shard("b", "room").state.get_by_key("room", "bob")[0][1]["phx_ref"] == ref_b
    assert sorted(k for k, _ in cluster.list("b", "room")) == ["alice", "bob", "carol"]
    # a (2 shards) and c (3 shards) share no sharding: each sees b, not the other
    assert sorted(k for k, _ in cluster.list("a", "room")) == ["alice", "bob"]
    assert sorted(k for k, _ in cluster.list("c", "room")) == ["bob", "carol"]
    ref = cluster.update("b", "u", "room", "bob", {"away": True})
    cluster.run_for(1)
    for name in "abc":
        bobs = [m for k, m in cluster.list(name, "room") if k == "bob"]
        assert [m["phx_ref"] for m in bobs] == [ref]
        assert bobs[0]["phx_ref_prev"] == ref_b
    assert [o for o, _ in cluster.node("b").sets.get_by_key("room", "bob")] == ["u"]
    # the skipped step shows: a and c count each other's messages, then list each other
    for name, pool in (("a", 3), ("c", 2)):
        sets = cluster.node(name).sets
        assert sets.drops["other_sharding"] > 0
        found = sets.judge(cluster.now)
        assert [(ref[0], p) for ref, p in found] == [("c" if name == "a" else "a", pool)]
        assert "b" not in sets.mismatched
    # b, between shardings, is heard in a set of everyone's: never mismatched
    assert cluster.node("b").sets.judge(cluster.now) == []
    cluster.untrack("b", "u")
    cluster.run_for(1)
    for name in "abc":
        assert "bob" not in [k for k, _ in cluster.list(name, "room")]


def test_a_restart_into_the_next_sharding_leaves_no_ghost() -> None:
    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=3.0, pool_size=3)
    cluster = Cluster(options, seed=5)
    for name in "ab":
        cluster.add_node(name, Sharding(3, 2))
    cluster.track("a", "u", "room", "alice", {})
    cluster.run_for(1)
    assert [k for k, _ in cluster.list("b", "room")] == ["alice"]
    # a crashes and comes back with 3 shards only: b's 2-shard set still holds alice's
    # copy of the old vsn, which the new vsn, seen in the 3-shard set, permdowns
    cluster.crash("a")
    cluster.restart("a", Sharding(3))
    new = ("a", cluster.node("a").vsn)
    b_new = [s for s in cluster.node("b").shards if s.options.pool_size == 3]
    while not all(s.replicas.get("a") and s.replicas["a"].ref == new for s in b_new):
        cluster.run_for(0.01)
    assert cluster.list("b", "room") == []
    assert ("a", cluster.node("a").vsn) in [
        r.ref for r in (s.replicas.get("a") for s in cluster.node("b").shards) if r is not None
    ]
    old = [s for s in cluster.node("b").shards if s.options.pool_size == 2]
    assert all(s.replicas.get("a") is None for s in old)


def test_sharding_options() -> None:
    assert Sharding(4).sizes == (4,)
    assert Sharding(4, 4).sizes == (4,)
    assert not Sharding(4, 4).migrating
    assert Sharding(4, 2).sizes == (4, 2)
    assert Sharding(4, 2).slots == 4
    assert Sharding(2, 4).slots == 4
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ConfigError):
            Sharding(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            Sharding(2, bad)  # type: ignore[arg-type]


def test_message_pool() -> None:
    assert message_pool({"pool": [3, "crc32"]}) == 3
    for bad in ({"pool": [3, "md5"]}, {"pool": [0, "crc32"]}, {"pool": 3}, {}, [], None):
        assert message_pool(bad) is None


def test_a_message_of_no_sharding_of_ours_is_counted() -> None:
    sets = ShardSets("a", 1, OPTIONS, Sharding(2, 3), random.Random(0))
    message = {"v": 1, "t": "hb", "from": ["z", 9], "pool": [4, "crc32"], "clock": []}
    assert sets.reader(0, message, 0.0) is None
    assert sets.drops == {"other_sharding": 1}
    assert sets.reader(1, {**message, "pool": [2, "crc32"]}, 0.0) is sets.sets[0][1]
    assert sets.reader(2, {**message, "pool": [3, "crc32"]}, 0.0) is sets.sets[1][2]
    assert sets.reader(2, {**message, "pool": [2, "crc32"]}, 0.0) is None
    assert sets.judge(0.0) == []  # within the grace period (0.6 s)
    assert sets.reader(0, message, 0.3) is None
    assert sets.judge(0.4) == []  # still within it
    assert sets.reader(0, message, 0.7) is None  # still sending after it
    assert sets.judge(0.7) == [(("z", 9), 4)]
    assert sets.judge(0.75) == []  # reported once
    assert sets.mismatched == {"z": 4}
    assert sets.drops == {"other_sharding": 3}
    # an incarnation that goes quiet within the grace period is forgotten, not reported
    goodbye = {**message, "from": ["y", 1]}
    assert sets.reader(0, goodbye, 2.0) is None
    assert sets.reader(0, goodbye, 2.3) is None
    assert sets.judge(3.0) == []
    assert sets.reader(0, goodbye, 3.1) is None  # a new first sighting
    assert sets.judge(3.2) == []


def test_merged_view_prefers_the_newest_vsn_then_the_primary_set() -> None:
    from crdt_state import Entry

    view = MergedView()

    def entry(vsn: int, ref: str) -> Entry:
        return Entry("t", "o", "k", {"phx_ref": ref}, (("n", vsn), 1))

    assert view.apply(False, [([entry(1, "r1")], [])]) == {"t": ([("k", {"phx_ref": "r1"})], [])}
    assert view.apply(True, [([entry(1, "r1")], [])]) == {}  # the same presence
    assert len(view) == 1
    # an update seen first in the other set: the primary's copy stays shown
    assert view.apply(False, [([entry(1, "r2")], [entry(1, "r1")])]) == {}
    assert view.list("t") == [("k", {"phx_ref": "r1"})]
    assert view.apply(True, [([entry(1, "r2")], [entry(1, "r1")])]) == {
        "t": ([("k", {"phx_ref": "r2"})], [("k", {"phx_ref": "r1"})])
    }
    # a newer vsn wins over either set
    assert view.apply(False, [([entry(2, "r3")], [])]) == {
        "t": ([("k", {"phx_ref": "r3"})], [("k", {"phx_ref": "r2"})])
    }
    assert view.apply(True, [([], [entry(1, "r2")])]) == {}
    assert view.apply(False, [([], [entry(1, "r2")]), ([], [entry(2, "r3")])]) == {
        "t": ([], [("k", {"phx_ref": "r3"})])
    }
    assert len(view) == 0
    assert view.list("t") == []
    assert view.presences() == []


def test_the_tracker_between_shardings() -> None:
    fast: dict[str, Any] = {"broadcast_period": 0.05, "max_silent_periods": 2}

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            pa, pb, pc = await pubsubs(stack, 3)
            with pytest.raises(ConfigError):
                Tracker(pa, broadcast_pool_size=0)
            diffs: list[Any] = []
            a = Tracker(pa, pool_size=2, **fast)
            b = Tracker(pb, pool_size=3, broadcast_pool_size=2, handler=diffs.append, **fast)
            c = Tracker(pc, pool_size=3, **fast)
            for tracker in (a, b, c):
                await stack.enter_async_context(tracker)
            a.track("u", "room", "alice", {})
            ref = b.track("u", "room", "bob", {})
            c.track("u", "room", "carol", {})

            def keys(tracker: Tracker) -> list[Any]:
                return sorted(k for k, _ in tracker.list("room"))

            await until(lambda: keys(b) == ["alice", "bob", "carol"], message="b's view")
            await until(lambda: keys(a) == ["alice", "bob"] and keys(c) == ["bob", "carol"])
            assert [o for o, _ in b.get_by_key("room", "bob")] == ["u"]
            assert b.local_presences() == 1
            stats = b.stats()
            assert stats["sharding"]["sets"] == [3, 2]
            assert stats["sharding"]["broadcast_pool_size"] == 2
            assert stats["totals"]["presences"] == 3  # each once, not once per set
            assert len(stats["shards"]) == 5
            new = b.update("u", "room", "bob", lambda m: {**m, "away": True})
            bobs = [m for k, m in b.list("room") if k == "bob"]
            assert bobs == [{"away": True, "phx_ref": new, "phx_ref_prev": ref}]
            # the handler got each presence once
            await until(lambda: sum(len(j) for d in diffs for j, _ in d.values()) == 4)
            joins = [k for d in diffs for j, _ in d.values() for k, _ in j]
            assert sorted(joins) == ["alice", "bob", "bob", "carol"]  # bob twice: the update
            b.untrack("u")
            await until(lambda: "bob" not in keys(a) and "bob" not in keys(c), message="leave")
            assert keys(b) == ["alice", "carol"]

    aio.run(body)
