"""Transfer format 2 (columns) and the part-by-part merge of a full state.

Format 2 is negotiated as version 2 of the ``"transfer"`` range: a peer that speaks it
gets columnar parts (``"f": 2``), any other the rows of format 1 (tests/test_rolling.py
runs a node of the previous release against this one). A full state is merged part by
part as its parts arrive, and ends in the same state as a merge in one step.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aio import run, until
from mesh import meshed, pubsubs

from crdt_state import Delta, Snapshot, State
from tracker_zmq import Options, Shard, Tracker
from tracker_zmq.errors import MessageError
from tracker_zmq.shard import Diff, Output, Versions
from tracker_zmq.testing import Cluster, Network
from tracker_zmq.wire import Assembly, iter_parts

OPTS = Options(broadcast_period=1.0, max_silent_periods=2, down_period=5.0, permdown_period=10.0)
T = "topic"


def wire(message: Any) -> Any:
    return json.loads(json.dumps(message))


def make(name: str, options: Options = OPTS) -> Shard:
    shard = Shard(name, 1, 0, options, random.Random(0))
    shard.start(0.0)
    return shard


def tick(shard: Shard, now: float) -> Output:
    shard._next_tick = now
    return shard.tick(now)


def beat(shard: Shard, now: float) -> dict[str, Any]:
    for _ in range(shard.options.max_silent_periods + 1):
        for send in tick(shard, now).sends:
            if send.message["t"] == "hb":
                return wire(send.message)
    raise AssertionError("no heartbeat")


def mixed_state() -> tuple[State, State]:
    """A state with values of three replicas (tuple refs, int and str ids), removes and a
    key held twice, and an empty requester that knows them all."""
    a, b, c = State(("a", 1)), State(("b", 2)), State("c")
    for s in (a, b, c):
        for other in (a, b, c):
            if other is not s:
                s.replica_up(other.replica)
    for i in range(300):
        a.join(f"owner{i}", f"room:{i % 7}", i, {"n": i, "tags": ["x", {"y": None}]})
        b.join(i, i % 5, f"user{i}", {"b": True})
    a.leave("owner3", "room:3", 3)
    a.leave_join("owner4", "room:4", 4, {"n": "new"})
    b.join(7, 2, "user2", {"again": 1.5})  # user2 in topic 2 twice (owners 2 and 7)
    c.merge(a.take_delta())
    c.merge(b.take_delta())
    fresh = State(("new", 9))
    for r in (a.replica, b.replica, c.replica):
        fresh.replica_up(r)
    c.replica_up(fresh.replica)
    return c, fresh


def read(kind: str, parts: list[dict[str, Any]]) -> Snapshot | Delta:
    assembly = Assembly(kind, 10**6)
    for index, part in enumerate(parts):
        assembly.add(index, wire(part))
    return assembly.finish()


# ---------------------------------------------------------------- the format


@pytest.mark.parametrize("part_values", [5, 97, 10**6])
def test_format_2_round_trips_a_snapshot_and_a_delta_in_any_number_of_parts(
    part_values: int,
) -> None:
    source, fresh = mixed_state()
    snapshot = source.extract(fresh.replica, fresh.clocks()[1])
    parts = [p for p, _, _ in iter_parts(snapshot, part_values, 1 << 20, orjson.dumps, 2)]
    assert all(part["f"] == 2 for part in parts)
    assert read("snapshot", parts) == snapshot
    source.join("late", "room:1", "late", {})
    source.leave("late", "room:1", "late")
    source.join("later", "room:1", "later", {})
    delta = source.take_delta()
    parts = [p for p, _, _ in iter_parts(delta, part_values, 1 << 20, orjson.dumps, 2)]
    assert read("delta", parts) == delta


def test_format_2_parts_fit_their_byte_budget_and_weigh_less_than_format_1() -> None:
    source, fresh = mixed_state()
    snapshot = source.extract(fresh.replica, fresh.clocks()[1])
    sizes = {}
    for fmt in (1, 2):
        encoded = [e for _, e, _ in iter_parts(snapshot, 1000, 2048, orjson.dumps, fmt)]
        assert all(len(e) <= 2048 for e in encoded)
        sizes[fmt] = sum(map(len, encoded))
    assert sizes[2] < sizes[1]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda g: g[1].__setitem__(0, True),  # a clock that is a bool
        lambda g: g[1].__setitem__(0, 0),  # clock 0
        lambda g: g[2].__setitem__(0, 99),  # a topic index outside the table
        lambda g: g[3].__setitem__(0, 1.5),  # an owner that is a float
        lambda g: g[5].__setitem__(0, {1: "x"}),  # a meta key that is not a str
        lambda g: g[5].__setitem__(0, []),  # a meta that is not a dict
        lambda g: g[4].pop(),  # columns of different lengths
        lambda g: g[1].__setitem__(1, g[1][0]),  # a tag twice
        lambda g: g.pop(),  # a group of five columns
    ],
)
def test_a_malformed_column_part_is_refused(spoil: Any) -> None:
    source, fresh = mixed_state()
    snapshot = source.extract(fresh.replica, fresh.clocks()[1])
    (part,) = [wire(p) for p, _, _ in iter_parts(snapshot, 10**6, 1 << 22, orjson.dumps, 2)]
    spoil(part["values"][0])
    with pytest.raises(MessageError):
        Assembly("snapshot", 10**6).add(0, part)


def test_a_tag_in_two_parts_and_formats_mixed_in_one_answer_are_refused() -> None:
    source, fresh = mixed_state()
    snapshot = source.extract(fresh.replica, fresh.clocks()[1])
    parts = [wire(p) for p, _, _ in iter_parts(snapshot, 50, 1 << 22, orjson.dumps, 2)]
    assembly = Assembly("snapshot", 10**6)
    assembly.add(0, parts[0])
    with pytest.raises(MessageError):
        assembly.add(1, {**parts[0], "f": 2})
    v1 = [wire(p) for p, _, _ in iter_parts(snapshot, 50, 1 << 22, orjson.dumps, 1)]
    mixed = Assembly("snapshot", 10**6)
    mixed.add(0, parts[0])
    with pytest.raises(MessageError, match="format"):
        mixed.add(1, v1[1])
    with pytest.raises(MessageError, match="format"):
        Assembly("snapshot", 10**6).add(0, {**parts[0], "f": 3})


# ----------------------------------------------------------- negotiation


def request_answer(a: Shard, b: Shard) -> list[dict[str, Any]]:
    """b holds presences a lacks; a asks; b's answer's parts as a receives them."""
    tick(b, 0.0)
    a.receive(beat(b, 1.0), 1.0)
    requests = [s for t in (1.0, 2.0) for s in tick(a, t).sends if s.message["t"] == "treq"]
    answer = b.receive(wire(requests[0].message), 2.0)
    return [wire(s.message) for parts in answer.later for s in parts]


def test_a_peer_gets_the_transfer_format_negotiated_with_it_and_merges_either() -> None:
    options = replace(OPTS, transfer_part_values=40, max_delta_sizes=(5,))
    for fmt in (None, 1, 2):
        a, b = make("a", options), make("b", options)
        if fmt is not None:
            b.set_versions(Versions(transfer={"a": fmt}))
        for i in range(200):
            b.track(i, T, i, {"i": i})
        parts = request_answer(a, b)
        assert {p["kind"] for p in parts} == {"snapshot"}
        marks = {p["data"].get("f") for p in parts}
        assert marks == ({2} if fmt == 2 else {None})  # format 1 carries no marker
        for part in parts:
            a.receive(part, 2.1)
        assert sorted(k for k, _ in a.list(T)) == list(range(200))
        assert a.counters["transfers_merged"] == 1


def test_a_mixed_version_cluster_catches_up_a_new_node_in_each_format() -> None:
    options = Options(
        broadcast_period=0.1,
        max_silent_periods=2,
        permdown_period=5.0,
        transfer_part_values=300,
        max_delta_sizes=(10,),
    )
    cluster = Cluster(options, seed=3, nodes=["a", "b"], network=Network(reorder=0.3))
    # a, b and d speak format 2 with each other; "old" (a node of the release before,
    # as the Tracker would negotiate it) is in no one's list: it gets format 1.
    two = {"a": 2, "b": 2, "d": 2}
    for name in ("a", "b"):
        cluster.set_versions(name, Versions(transfer={n: 2 for n in two if n != name}))
    for i in range(3_000):
        cluster.node("a").shards[0].track(f"a{i}", T, i, {})
        cluster.node("b").shards[0].track(f"b{i}", T, i, {})
    cluster.run_for(0.5)
    cluster.add_node("old")
    cluster.set_versions("old", Versions())
    cluster.add_node("d")
    cluster.set_versions("d", Versions(transfer={"a": 2, "b": 2}))
    assert cluster.settle(timeout=10.0)
    for node in ("a", "b", "old", "d"):
        assert len(cluster.list(node, T)) == 6_000
    tacks = [s for s in cluster.sent if s.message["t"] == "tack"]
    to_old = {s.message["data"].get("f") for s in tacks if s.to == "old"}
    to_d = {s.message["data"].get("f") for s in tacks if s.to == "d" and s.sender[0] != "old"}
    assert to_old == {None}  # format 1: no marker
    assert to_d == {2}


# ------------------------------------------------- the part-by-part merge


def test_a_part_by_part_merge_ends_where_a_one_step_merge_does() -> None:
    source, fresh = mixed_state()
    stale = State(fresh.replica)  # a requester holding an older view of a, b and c
    for r in (("a", 1), ("b", 2), "c"):
        stale.replica_up(r)
    one_step = State(fresh.replica)
    for r in (("a", 1), ("b", 2), "c"):
        one_step.replica_up(r)
    snapshot = source.extract(fresh.replica, fresh.clocks()[1])
    joins, leaves = one_step.merge(snapshot)
    for fmt in (1, 2):
        target = State(fresh.replica)
        for r in (("a", 1), ("b", 2), "c"):
            target.replica_up(r)
        assembly = Assembly("snapshot", 10**6)
        seen: list[Any] = []
        parts = list(iter_parts(snapshot, 37, 1 << 22, orjson.dumps, fmt))
        for index in reversed(range(len(parts))):  # in any order
            assembly.add(index, wire(parts[index][0]))
            part = assembly.take_values(source.replica)
            if part is not None:
                seen += target.merge(part)[0]
        seen += target.merge(assembly.finish())[0]
        assert sorted(map(repr, target.online_list())) == sorted(map(repr, one_step.online_list()))
        assert target.clocks() == one_step.clocks()
        assert sorted(map(repr, seen)) == sorted(map(repr, joins))
        assert leaves == []


def test_a_remove_that_overtakes_the_part_holding_its_value_still_wins() -> None:
    options = replace(OPTS, transfer_part_values=10, max_delta_sizes=(5,))
    a, b = make("a", options), make("b", options)
    b.set_versions(Versions(transfer={"a": 2}))
    for i in range(100):
        b.track(i, T, i, {})
    parts = request_answer(a, b)
    b.untrack(99, T, 99)  # the last part holds 99; b's next heartbeat says it left
    gone = beat(b, 2.05)
    for part in parts[:2]:
        a.receive(part, 2.1)
    a.receive(gone, 2.1)
    for part in parts[2:]:
        a.receive(part, 2.2)
    assert sorted(k for k, _ in a.list(T)) == list(range(99))
    assert a.counters["transfers_merged"] == 1


def test_heartbeats_keep_flowing_while_a_new_node_catches_up() -> None:
    """The new node merges a large state part by part: between two parts its loop ticks,
    so a presence it tracks during its catch-up reaches the holder before it is over."""

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            holder_ps, new_ps = await pubsubs(stack, 2)
            opts: dict[str, Any] = {
                "broadcast_period": 0.02,
                "clock_sample_periods": 1,
                "down_period": 5.0,  # a loaded machine must not flap the replicas
                "permdown_period": 30.0,
                "transfer_part_values": 500,
                "max_delta_sizes": (10,),
            }
            holder = await stack.enter_async_context(Tracker(holder_ps, **opts))
            for i in range(60_000):
                holder.track(i, "big", i, {})
            joined: set[Any] = set()
            diffs = []

            def handler(diff: Diff) -> None:
                joins = diff.get("big", ([], []))[0]
                if joins:
                    diffs.append(len(joins))
                    if not joined:
                        new.track("me", "during", "new-node", {})
                    joined.update(key for key, _ in joins)

            new = await stack.enter_async_context(Tracker(new_ps, handler=handler, **opts))
            await meshed([holder, new])
            await until(lambda: holder.list("during") != [], timeout=30.0, message="new-node")
            joined_when_seen = len(joined)
            await until(lambda: len(joined) == 60_000, timeout=30.0, message="the catch-up")
            assert len(diffs) > 1  # merged part by part
            assert joined_when_seen < 60_000  # the holder saw it before the catch-up ended
            assert len(new.list("big")) == 60_000

    run(body)
