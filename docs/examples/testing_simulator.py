"""Testing the tracker's protocol in virtual time with tracker_zmq.testing (testing guide).

Run it with pytest (``pytest docs/examples/testing_simulator.py``) or as a script.
"""

from __future__ import annotations

from tracker_zmq import Options
from tracker_zmq.testing import Cluster, Network

# --8<-- [start:options]
# Short periods: a tick every 0.1 s, down after 0.6 s of silence. Virtual time costs
# nothing, but short periods keep the runs (and failing examples) small.
OPTIONS = Options(broadcast_period=0.1, max_silent_periods=2, down_period=0.6, permdown_period=3)
# --8<-- [end:options]


# --8<-- [start:netsplit]
def test_a_netsplit_hides_then_restores_presences():
    cluster = Cluster(OPTIONS, seed=1, nodes=["a", "b", "c"])
    cluster.track("a", "conn-1", "room:1", "alice", {"status": "online"})
    assert cluster.settle()  # run until every live node shows the same
    assert [key for key, _ in cluster.list("c", "room:1")] == ["alice"]

    cluster.network.partition({"a"}, {"b", "c"})
    split_at = cluster.now
    cluster.run_for(OPTIONS.down + 2 * OPTIONS.broadcast_period)
    assert cluster.list("c", "room:1") == []  # a is down, seen from c
    c = cluster.node("c")
    assert [ref[0] for ref in c.events_of("down")] == ["a"]
    left_at = next(r.time for r in c.diffs if r.diff.get("room:1", ([], []))[1])
    assert left_at - split_at <= OPTIONS.down + OPTIONS.broadcast_period

    cluster.network.heal()
    assert cluster.settle()
    assert [key for key, _ in cluster.list("c", "room:1")] == ["alice"]


# --8<-- [end:netsplit]


# --8<-- [start:restart]
def test_a_restarted_node_comes_back_as_a_new_replica():
    cluster = Cluster(OPTIONS, seed=2, nodes=["a", "b"])
    cluster.track("a", "conn-1", "room:1", "alice", {})
    assert cluster.settle()
    old = cluster.node("a").ref
    cluster.crash("a")
    cluster.restart("a")  # same name, larger vsn, empty state
    cluster.track("a", "conn-9", "room:1", "alice", {"again": True})
    assert cluster.settle()
    b = cluster.node("b")
    assert old in b.events_of("permdown")  # the old incarnation is forgotten at once
    assert [meta.get("again") for _, meta in cluster.list("b", "room:1")] == [True]


# --8<-- [end:restart]


# --8<-- [start:lossy]
def test_converges_over_a_bad_network():
    network = Network(loss=0.2, duplicate=0.1, reorder=0.2)
    cluster = Cluster(OPTIONS, seed=3, nodes=["a", "b", "c"], network=network)
    for i in range(30):
        node = "abc"[i % 3]
        cluster.track(node, f"conn-{i}", f"room:{i % 4}", f"user-{i}", {})
        cluster.run_for(0.05)
    cluster.untrack("b", "conn-1")
    network.loss = 0.0  # let the transfers repair what was lost, then compare
    assert cluster.settle()
    assert cluster.presences("a") == cluster.presences("b") == cluster.presences("c")
    assert len(cluster.presences("a")) == 29
    kinds = {record.message["t"] for record in cluster.sent}
    assert "treq" in kinds  # losses were repaired by transfers


# --8<-- [end:lossy]


# --8<-- [start:resharding]
def test_a_two_step_resharding_shows_every_presence_once():
    from tracker_zmq.sharding import Sharding

    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)
    cluster = Cluster(options, seed=11, nodes=["a", "b"])  # pool_size 1
    for name in ("a", "b"):
        cluster.track(name, f"u-{name}", "room", name, {})
    assert cluster.settle()
    for sharding in (Sharding(4, 1), Sharding(4)):  # step 1, then step 2
        for name in ("a", "b"):
            cluster.restart(name, sharding)  # a rolling deploy: its clients track again
            cluster.track(name, f"u-{name}", "room", name, {})
            assert cluster.settle()
            for node in ("a", "b"):  # each presence listed once on every node
                assert sorted(k for k, _ in cluster.list(node, "room")) == ["a", "b"]
    assert cluster.node("a").sharding.sizes == (4,)


# --8<-- [end:resharding]


if __name__ == "__main__":
    test_a_netsplit_hides_then_restores_presences()
    test_a_restarted_node_comes_back_as_a_new_replica()
    test_converges_over_a_bad_network()
    test_a_two_step_resharding_shows_every_presence_once()
    print("the simulated clusters behaved")
