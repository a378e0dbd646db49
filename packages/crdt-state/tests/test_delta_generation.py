"""Unit tests of crdt_state.DeltaGenerations: every case of Phoenix's
delta_generation_test.exs, and argument validation.

Phoenix's generation functions take and return a plain list; here a DeltaGenerations
object holds it (``push`` folds a delta in, ``generations`` reads the list). Where a
Phoenix case hand-builds a list of deltas that no sequence of pushes produces, the same
selection rule is exercised on generations built by pushes.
"""

from __future__ import annotations

import pytest

from crdt_state import Delta, DeltaGenerations, Entry, Snapshot, State

CAPS = (2, 5, 6)


def keys(delta):
    return sorted(entry.key for entry in delta.values.values())


def sorted_clouds(clouds):
    return sorted(tag for cloud in clouds.values() for tag in cloud)


def test_generations():
    s1, s2 = State("s1"), State("s2")
    gens = DeltaGenerations(CAPS)
    assert gens.generations == []

    s1.join("pid-1", "lobby", "user1", {})
    gens.push(s1, s1.delta)
    gen1, gen2, gen3 = gens.generations
    assert gen1 == gen2 == gen3
    assert keys(gen1) == ["user1"]
    assert sorted_clouds(gen1.clouds) == [("s1", 1)]

    # Duplicate merges have no effect.
    before = gens.generations
    gens.push(s1, s1.delta)
    assert gens.generations == before

    s1.reset_delta()
    s1.join("pid-2", "lobby", "user2", {})
    gens.push(s1, s1.delta)
    gen1, gen2, gen3 = gens.generations
    assert keys(gen1) == ["user2"]
    assert keys(gen2) == ["user1", "user2"]
    assert keys(gen3) == ["user1", "user2"]
    assert sorted_clouds(gen1.clouds) == [("s1", 2)]
    assert sorted_clouds(gen2.clouds) == [("s1", 1), ("s1", 2)]
    assert sorted_clouds(gen3.clouds) == [("s1", 1), ("s1", 2)]

    s1.reset_delta()
    s1.join("pid-3", "lobby", "user3", {})
    gens.push(s1, s1.delta)
    gen1, gen2, gen3 = gens.generations
    assert gen1 == s1.delta
    assert keys(gen1) == ["user3"]
    assert keys(gen2) == ["user2", "user3"]
    assert keys(gen3) == ["user1", "user2", "user3"]
    assert sorted_clouds(gen1.clouds) == [("s1", 3)]
    assert sorted_clouds(gen2.clouds) == [("s1", 2), ("s1", 3)]
    assert sorted_clouds(gen3.clouds) == [("s1", 1), ("s1", 2), ("s1", 3)]

    s1.reset_delta()
    s1.join("pid-4", "lobby", "user4", {})
    gens.push(s1, s1.delta)
    gen1, gen2, gen3 = gens.generations
    assert keys(gen1) == ["user4"]
    assert keys(gen2) == ["user3", "user4"]
    assert keys(gen3) == ["user2", "user3", "user4"]
    assert sorted_clouds(gen1.clouds) == [("s1", 4)]
    assert sorted_clouds(gen2.clouds) == [("s1", 3), ("s1", 4)]
    assert sorted_clouds(gen3.clouds) == [("s1", 2), ("s1", 3), ("s1", 4)]
    assert [gen.size() for gen in gens.generations] == [2, 4, 6]

    # Remote deltas.
    s2.join("pid-5", "lobby", "user5", {})
    gens.push(s1, s2.delta)
    gen1, gen2, gen3 = gens.generations
    assert keys(gen1) == ["user5"]
    assert keys(gen2) == ["user4", "user5"]
    assert keys(gen3) == ["user3", "user4", "user5"]
    assert sorted_clouds(gen1.clouds) == [("s2", 1)]
    assert sorted_clouds(gen2.clouds) == [("s1", 4), ("s2", 1)]
    assert sorted_clouds(gen3.clouds) == [("s1", 3), ("s1", 4), ("s2", 1)]

    # Tombstones.
    s2.leave_owner("pid-5")
    gens.push(s1, s2.delta)
    gen1, gen2, gen3 = gens.generations
    assert keys(gen1) == []
    assert keys(gen2) == ["user4"]
    assert keys(gen3) == ["user3", "user4"]
    assert sorted_clouds(gen1.clouds) == [("s2", 1), ("s2", 2)]
    assert sorted_clouds(gen2.clouds) == [("s1", 4), ("s2", 1), ("s2", 2)]
    assert sorted_clouds(gen3.clouds) == [("s1", 3), ("s1", 4), ("s2", 1), ("s2", 2)]

    # Pushing the same delta again has no effect.
    before = gens.generations
    gens.push(s1, s2.delta)
    assert gens.generations == before


def test_does_not_include_non_contiguous_deltas():
    s1, s3 = State("s1"), State("s3")
    s1.join("pid-1", "lobby", "user1", {})
    s3.join("pid-3a", "lobby", "user3", {})
    old_s3_delta = s3.delta
    s3.reset_delta()
    s3.join("pid-3b", "lobby", "user3", {})
    s3.reset_delta()
    s3.join("pid-3c", "lobby", "user3", {})
    assert s3.delta.range == ({"s3": 2}, {"s3": 3})

    gens = DeltaGenerations((5, 10, 15))
    gens.push(s1, old_s3_delta)
    gen1, gen2, gen3 = gens.generations
    assert gen1 == gen2 == gen3
    assert sorted(gen1.values) == [("s1", 1), ("s3", 1)]

    gens.push(s1, s3.delta)
    assert gens.generations == [gen1, gen1, gen1]


def test_remove_down_replicas():
    s1, s2 = State("s1"), State("s2")
    s2.join("pid-2", "lobby", "user2", {})
    gens = DeltaGenerations((5, 10, 15))
    gens.push(s1, s2.delta)
    unpruned = gens.generations
    assert unpruned[0] == unpruned[1] == unpruned[2]

    gens.remove_down_replicas("s2")
    pruned1, pruned2, pruned3 = gens.generations
    assert pruned1 == pruned2 == pruned3
    assert pruned1.values == {}
    assert pruned1.clouds == {}
    assert "s2" not in pruned1.range[0]
    assert "s2" not in pruned1.range[1]

    s3 = State("s3")
    assert s3.merge(pruned1) == ([], [])
    assert s3.get_by_topic("lobby") == []

    # Even for a replica that knows s2, the pruned generation brings nothing back (the
    # unpruned one would: it is not mutated by the pruning).
    s4 = State("s4")
    s4.replica_up("s2")
    assert s4.merge(pruned1) == ([], [])
    assert s4.get_by_topic("lobby") == []
    joins, _ = s4.merge(unpruned[0])
    assert [entry.key for entry in joins] == ["user2"]


def test_whole_state_is_extracted_if_there_are_no_deltas():
    s = State("r1")
    s.join("pid", "lobby", "user1", {})
    gens = DeltaGenerations()
    extracted = gens.extract(s, "r2", {"r1": 1})
    assert isinstance(extracted, Snapshot)
    assert extracted == s.extract("r2", {"r1": 1})
    assert extracted.replica == "r1"
    assert extracted.context == {"r1": 1}
    assert extracted.values == {("r1", 1): Entry("lobby", "pid", "user1", {}, ("r1", 1))}


def test_delta_is_extracted_for_the_first_delta_with_dominating_clocks():
    s = State("r1")
    s.join("pid", "lobby", "user1", {})
    d2 = s.take_delta()  # {r1: 0} -> {r1: 1}
    gens = DeltaGenerations((2, 4))
    gens.push(s, d2)
    s.join("pid", "lobby", "user2", {})
    d3 = s.take_delta()  # {r1: 1} -> {r1: 2}
    gens.push(s, d3)
    small, large = gens.generations
    assert small == d3
    assert large.range == ({"r1": 0}, {"r1": 2})

    # Both fit a remote at {r1: 1}: the first (smallest) is chosen.
    assert gens.extract(s, "r2", {"r1": 1}) == d3
    # A remote at {r1: 0} lacks what comes before d3's window: the larger one.
    assert gens.extract(s, "r2", {"r1": 0}) == large
    # A remote that has it all, or more, gets the full state.
    assert isinstance(gens.extract(s, "r2", {"r1": 2}), Snapshot)
    assert isinstance(gens.extract(s, "r2", {"r1": 5}), Snapshot)

    # Phoenix's case: with only d2 {r1: 0 -> 1} kept, a remote at {r1: 1} already has it.
    only_d2 = DeltaGenerations((10,))
    only_d2.push(State("r1"), d2)
    assert only_d2.generations == [d2]
    assert isinstance(only_d2.extract(s, "r2", {"r1": 1}), Snapshot)
    assert only_d2.extract(s, "r2", {"r1": 0}) == d2


def test_an_empty_delta_is_not_extracted():
    # A generation whose window is empty is never sent: the full state is.
    s = State("r1")
    s.join("pid", "lobby", "user1", {})
    s.reset_delta()
    gens = DeltaGenerations((5, 10))
    gens.push(s, s.delta)  # an empty delta {r1: 1} -> {r1: 1}
    assert all(gen.size() == 0 for gen in gens.generations)
    assert isinstance(gens.extract(s, "r2", {"r1": 0}), Snapshot)

    # A window that is empty on the replicas the remote knows is skipped too. The remote
    # r3 knows only r2; the first generation only moved r1, the second moved r2 as well.
    s = State("r1")
    r2 = State("r2")
    s.replica_up("r2")
    s.join("pid", "lobby", "user1", {})
    r2.join("pid", "lobby", "user2", {})
    gens = DeltaGenerations((2, 10))
    gens.push(s, s.take_delta())
    from_r2 = r2.take_delta()
    s.merge(from_r2)
    gens.push(s, from_r2)
    s.join("pid", "lobby", "user3", {})
    gens.push(s, s.take_delta())
    small, large = gens.generations
    assert small.range == ({"r1": 1}, {"r1": 2})
    assert large.range == ({"r1": 0, "r2": 0}, {"r1": 2, "r2": 1})

    extracted = gens.extract(s, "r3", {"r2": 0})
    assert isinstance(extracted, Delta)
    assert extracted.values == {("r2", 1): Entry("lobby", "pid", "user2", {}, ("r2", 1))}
    assert extracted.clouds == {"r2": {("r2", 1)}}
    assert extracted.range == ({"r2": 0}, {"r2": 1})
    assert extracted == large.extract("r3", {"r2": 0})


def test_delta_that_isnt_dominating_on_common_set_of_replicas_is_not_extracted():
    # One generation spanning {r1: 0, r2: 0} -> {r1: 1, r2: 1}: a remote at {r1: 1} knows
    # only r1 and already has r1: 1, so it gets the full state; once the window also
    # holds r1: 2, it gets the window pruned to r1.
    s = State("r1")
    r2 = State("r2")
    s.replica_up("r2")
    s.join("pid", "lobby", "user1", {})
    r2.join("pid", "lobby", "user2", {})
    gens = DeltaGenerations((10,))
    gens.push(s, s.take_delta())
    from_r2 = r2.take_delta()
    s.merge(from_r2)
    gens.push(s, from_r2)
    (d1,) = gens.generations
    assert d1.range == ({"r1": 0, "r2": 0}, {"r1": 1, "r2": 1})
    assert isinstance(gens.extract(s, "r3", {"r1": 1}), Snapshot)

    s.join("pid", "lobby", "user3", {})
    gens.push(s, s.take_delta())
    (d2,) = gens.generations
    assert d2.range == ({"r1": 0, "r2": 0}, {"r1": 2, "r2": 1})
    extracted = gens.extract(s, "r3", {"r1": 1})
    assert isinstance(extracted, Delta)
    assert sorted(entry.key for entry in extracted.values.values()) == ["user1", "user3"]
    assert extracted.range == ({"r1": 0}, {"r1": 2})
    assert extracted.clouds == {"r1": {("r1", 1), ("r1", 2)}}


def test_extract_leaves_out_the_requesters_own_values():
    s = State("r1")
    s.replica_up("r2")
    r2 = State("r2")
    r2.replica_up("r1")
    r2.join("pid", "lobby", "theirs", {})
    s.join("pid", "lobby", "mine", {})
    gens = DeltaGenerations((10,))
    gens.push(s, s.take_delta())
    from_r2 = r2.take_delta()
    s.merge(from_r2)
    gens.push(s, from_r2)
    extracted = gens.extract(s, "r2", {"r1": 0, "r2": 0})
    assert isinstance(extracted, Delta)
    assert [entry.key for entry in extracted.values.values()] == ["mine"]


def test_generations_are_not_changed_by_later_pushes_or_state_changes():
    s = State("r1")
    s.join("pid", "lobby", "user1", {})
    gens = DeltaGenerations((2, 10))
    gens.push(s, s.take_delta())
    snapshot = [gen.to_wire() for gen in gens.generations]
    held = gens.generations
    s.join("pid", "lobby", "user2", {})
    gens.push(s, s.take_delta())
    s.leave_owner("pid")
    assert [gen.to_wire() for gen in held] == snapshot
    gens.generations.clear()
    assert len(gens.generations) == 2


def test_reset_drops_every_generation():
    s = State("r1")
    s.join("pid", "lobby", "user1", {})
    gens = DeltaGenerations((2, 10))
    gens.push(s, s.take_delta())
    assert len(gens.generations) == 2
    gens.reset()
    assert gens.generations == []
    assert isinstance(gens.extract(s, "r2", {"r1": 0}), Snapshot)


def test_default_max_sizes():
    assert DeltaGenerations().max_sizes == (100, 1000, 10000)
    assert DeltaGenerations([3, 7]).max_sizes == (3, 7)


@pytest.mark.parametrize(
    "max_sizes",
    [
        (),
        [],
        (0,),
        (-1, 5),
        (5, 0),
        (10, 5),
        (1, 3, 2),
        (1.5,),
        (1, "2"),
        (True, 2),
        (1, None),
    ],
)
def test_bad_max_sizes_raise_value_error(max_sizes):
    with pytest.raises(ValueError, match="max_sizes"):
        DeltaGenerations(max_sizes)


def test_equal_max_sizes_are_accepted():
    assert DeltaGenerations((5, 5)).max_sizes == (5, 5)


# ------------------------------------- transfers pushed into the requester's generations


def three_connected():
    states = [State(("r", i)) for i in range(3)]
    for state in states:
        for other in states:
            if other is not state:
                state.replica_up(other.replica)
    return states, [DeltaGenerations() for _ in states]


def answer(gens, sender, requester):
    """A transfer as the tracker answers it; the requester merges it and, as Phoenix's
    shard, pushes a delta into its generations or resets them after a full state."""
    payload = gens[sender[0]].extract(sender[1], requester[1].replica, requester[1].clocks()[1])
    diff = requester[1].merge(payload)
    if isinstance(payload, Delta):
        gens[requester[0]].push(requester[1], payload)
    else:
        gens[requester[0]].reset()
    return payload, diff


def test_a_transfer_never_makes_the_requesters_generations_tombstone_its_own_presences():
    (r0, r1, r2), gens = three_connected()
    p = r0.join("conn-p", "room", "p", {})
    d0 = r0.take_delta()
    gens[0].push(r0, d0)
    for i, s in ((1, r1), (2, r2)):
        s.merge(d0)
        gens[i].push(s, d0)
    r1.join("conn-q", "room", "q", {})
    d1 = r1.take_delta()
    gens[1].push(r1, d1)  # r0 misses it

    payload, (joins, leaves) = answer(gens, (1, r1), (0, r0))
    assert isinstance(payload, Delta)
    assert [entry.key for entry in joins] == ["q"]
    assert leaves == []
    # r0's generations still hold its own presence as live, never as a remove.
    for gen in gens[0].generations:
        assert p.tag in gen.values
    # So what r0 serves from them never removes p anywhere.
    r0.join("conn-r", "room", "r", {})
    gens[0].push(r0, r0.take_delta())  # r2 misses it
    payload, (joins, leaves) = answer(gens, (0, r0), (2, r2))
    assert leaves == []
    assert sorted(e.key for e in r2.online_list()) == ["p", "q", "r"]


def test_a_transfer_pushed_into_the_requesters_generations_does_not_stall_a_third_replica():
    # r2 misses r0's first heartbeat; r0 later takes a full transfer (its generations
    # reset) and then a delta transfer from r1 whose window spans r0's own first dot.
    # When r2 then asks r0, the replica whose clock dominates its own, it must catch up.
    (r0, r1, r2), gens = three_connected()
    r0.join("conn-p", "room", "p", {})
    d0 = r0.take_delta()
    gens[0].push(r0, d0)
    r1.merge(d0)
    gens[1].push(r1, d0)  # r2 misses d0
    r1.join("conn-q", "room", "q", {})
    gens[1].push(r1, r1.take_delta())  # r0 and r2 miss it
    r2.join("conn-t", "room", "t", {})
    d2 = r2.take_delta()  # r2 keeps no generations yet: it answers with its full state
    r1.merge(d2)
    gens[1].push(r1, d2)

    payload, _ = answer(gens, (2, r2), (0, r0))
    assert isinstance(payload, Snapshot)
    payload, _ = answer(gens, (1, r1), (0, r0))
    assert isinstance(payload, Delta)
    assert sorted(e.key for e in r0.online_list()) == ["p", "q", "t"]

    # r0 dominates r2 on r0's replica; r2 asks r0 until it has caught up.
    assert r2.clocks()[1][r0.replica] == 0 < r0.clocks()[1][r0.replica]
    for _ in range(3):
        answer(gens, (0, r0), (2, r2))
    assert r2.clocks()[1][r0.replica] == r0.clocks()[1][r0.replica]
    assert sorted(e.key for e in r2.online_list()) == ["p", "q", "t"]


def test_a_delta_larger_than_every_cap_leaves_empty_windows_and_a_full_transfer():
    # Phoenix keeps such a delta as the first generation, over its cap, and every later
    # merge inherits it; here each generation stays within its cap.
    s1, s2 = State("s1"), State("s2")
    gens = DeltaGenerations(CAPS)
    s1.join("pid-0", "lobby", "user0", {})
    gens.push(s1, s1.take_delta())
    for i in range(1, 8):  # 7 values and 7 cloud tags: more than the largest cap (6)
        s1.join(f"pid-{i}", "lobby", f"user{i}", {})
    big = s1.take_delta()
    gens.push(s1, big)
    assert [gen.size() for gen in gens.generations] == [0, 0, 0]
    assert all(gen.range == (s1.context, s1.context) for gen in gens.generations)
    s2.replica_up("s1")
    # a remote that has only user0 gets the full state, as a snapshot
    s2.merge(gens.generations[0])  # an empty window changes nothing
    answer = gens.extract(s1, "s2", {"s1": 1, "s2": 0})
    assert isinstance(answer, Snapshot)
    s2.merge(answer)
    assert sorted(key for key, _ in s2.get_by_topic("lobby")) == [f"user{i}" for i in range(8)]
    # later small deltas slide into the windows again, contiguous with the empty ones
    s1.leave("pid-3", "lobby", "user3")
    gens.push(s1, s1.take_delta())
    assert len({gen.size() for gen in gens.generations}) == 1
    assert 0 < gens.generations[0].size() <= CAPS[0]
    answer = gens.extract(s1, "s2", s2.clocks()[1])
    assert isinstance(answer, Delta)
    s2.merge(answer)
    assert "user3" not in {key for key, _ in s2.get_by_topic("lobby")}
