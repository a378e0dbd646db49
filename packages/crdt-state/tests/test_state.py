"""Unit tests of crdt_state.State.

Part 1 restates every case of Phoenix's ``state_test.exs`` (replicas are ``(name, 1)``
tuples as in Phoenix; "connected" means mutual ``replica_up``). Part 2 has one test per
rule of DESIGN.md where we deliberately do better than Phoenix. Part 3 covers the rest of
the contract: errors, diffs, views, the pending delta and type checks.

Results are compared as multisets: order is unspecified.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from crdt_state import (
    Delta,
    DeltaGenerations,
    DuplicatePresence,
    Entry,
    PresenceNotFound,
    Snapshot,
    State,
    StateError,
    merge_deltas,
)
from crdt_state import state as state_module
from crdt_state.testing import ReplicaMachine, presences

OUTSIDER = ("outsider", 0)  # a requester that is none of the states, to extract everything


# ------------------------------------------------------------------------- helpers


def new(name):
    return State((name, 1))


def connected(*names):
    states = [new(name) for name in names]
    for state in states:
        for other in states:
            if other is not state:
                assert state.replica_up(other.replica) == []
    return states


def keys(entries):
    """The sorted keys of entries (Phoenix's ``keys/1``)."""
    return sorted(entry.key for entry in entries)


def ordered(entries):
    return sorted(entries, key=repr)


def everything(state):
    """A snapshot of every value held, down replicas' included."""
    return state.extract(OUTSIDER, state.context)


def rows(state):
    """Every held (owner, topic, key), sorted: Phoenix's pids table."""
    return sorted((e.owner, e.topic, e.key) for e in everything(state).values.values())


def fingerprint(state):
    """Everything observable about a State, to check it did not change."""
    return (
        state.replica,
        state.context,
        state.clouds,
        state.replicas,
        state.clocks(),
        everything(state),
        state.delta,
        state.has_delta(),
        len(state),
        ordered(state.online_list()),
    )


def pull(receiver, sender):
    """Merge into ``receiver`` the full state ``sender`` extracts for it."""
    return receiver.merge(sender.extract(receiver.replica, receiver.context))


def wire_delta(replica, clouds, values, start, end):
    """A Delta read from hand-written wire data (tuple replicas written as lists)."""
    return Delta.from_wire(
        {
            "replica": replica,
            "clouds": clouds,
            "values": values,
            "range": [start, end],
        }
    )


# ======================================================= part 1: Phoenix's state_test.exs


def test_that_this_is_set_up_correctly():
    a = new("a")
    snapshot = a.extract(a.replica, a.context)
    assert isinstance(snapshot, Snapshot)
    assert snapshot.values == {}
    assert a.context == {("a", 1): 0}
    assert a.clouds == {}
    assert a.replicas == {("a", 1): "up"}
    assert not a.has_delta()


def test_user_added_online_is_online():
    a = new("a")
    a.join("pid-john", "lobby", "john", {})
    assert a.get_by_topic("lobby") == [("john", {})]
    a.leave("pid-john", "lobby", "john")
    assert a.get_by_topic("lobby") == []


def test_users_from_other_servers_merge():
    a, b = connected("a", "b")

    assert rows(a) == []
    a.join("pid-alice", "lobby", "alice", {})
    assert rows(a) == [("pid-alice", "lobby", "alice")]
    b.join("pid-bob", "lobby", "bob", {})

    # Merging emits a bob join event.
    joins, leaves = pull(a, b)
    assert keys(joins) == ["bob"]
    assert leaves == []
    assert keys(a.online_list()) == ["alice", "bob"]

    # Merging twice doesn't dupe events, and changes nothing.
    before = fingerprint(a)
    rows_before = rows(a)
    assert pull(a, b) == ([], [])
    assert fingerprint(a) == before
    assert rows(a) == rows_before

    joins, leaves = pull(b, a)
    assert keys(joins) == ["alice"]
    assert leaves == []
    before = fingerprint(b)
    assert pull(b, a) == ([], [])
    assert fingerprint(b) == before

    # Observed remove.
    assert rows(a) == [("pid-alice", "lobby", "alice"), ("pid-bob", "lobby", "bob")]
    a.leave("pid-alice", "lobby", "alice")
    assert rows(a) == [("pid-bob", "lobby", "bob")]
    b_rows_before = rows(b)
    assert b_rows_before == [("pid-alice", "lobby", "alice"), ("pid-bob", "lobby", "bob")]

    joins, leaves = pull(b, a)
    assert joins == []
    assert keys(leaves) == ["alice"]
    assert sorted(set(b_rows_before) - set(rows(b))) == [("pid-alice", "lobby", "alice")]
    assert keys(b.online_list()) == ["bob"]
    before = fingerprint(b)
    assert pull(b, a) == ([], [])
    assert fingerprint(b) == before

    b.join("pid-carol", "lobby", "carol", {})
    assert keys(b.online_list()) == ["bob", "carol"]

    joins, leaves = pull(a, b)
    assert keys(joins) == ["carol"]
    assert leaves == []
    before = fingerprint(a)
    assert pull(a, b) == ([], [])
    assert fingerprint(a) == before

    assert ordered(b.online_list()) == ordered(a.online_list())

    # Update: one merge reports the new meta as a join and the old one as a leave.
    old_carol = b.get("pid-carol", "lobby", "carol")
    new_carol = b.leave_join("pid-carol", "lobby", "carol", {"updated": True})
    rows_before = rows(a)
    joins, leaves = pull(a, b)
    assert joins == [new_carol]
    assert joins[0].meta == {"updated": True}
    assert leaves == [old_carol]
    assert leaves[0].meta == {}
    before = fingerprint(a)
    assert pull(a, b) == ([], [])
    assert fingerprint(a) == before
    assert rows(a) == rows_before


def test_basic_netsplit():
    a, b = connected("a", "b")

    a.join("pid-alice", "lobby", "alice", {})
    b.join("pid-bob", "lobby", "bob", {})

    joins, _ = pull(a, b)
    assert keys(joins) == ["bob"]
    assert keys(a.online_list()) == ["alice", "bob"]

    a.join("pid-carol", "lobby", "carol", {})
    a.leave("pid-alice", "lobby", "alice")
    a.join("pid-david", "lobby", "david", {})

    assert keys(a.replica_down(("b", 1))) == ["bob"]
    assert keys(a.online_list()) == ["carol", "david"]

    assert pull(a, b) == ([], [])
    assert keys(a.online_list()) == ["carol", "david"]

    assert keys(a.replica_up(("b", 1))) == ["bob"]
    assert keys(a.online_list()) == ["bob", "carol", "david"]


def split_a_from_c_then_bob_joins_on_a():
    """Phoenix's set-up of the two tests below: c has alice from a, then a netsplit
    between a and c, then bob joins on a and b pulls both from a."""
    a, b, c = connected("a", "b", "c")
    alice = a.join("pid-alice", "lobby", "alice", {})
    # So that c has some context from a.
    joins, leaves = pull(c, a)
    assert joins == [alice]
    assert leaves == []

    # Netsplit between a and c.
    assert a.replica_down(c.replica) == []
    assert c.replica_down(a.replica) == [alice]

    bob = a.join("pid-bob", "lobby", "bob", {})

    joins, leaves = pull(b, a)
    assert ordered(joins) == ordered([alice, bob])
    assert leaves == []
    return a, b, c, alice, bob


def test_joins_are_observed_via_other_node():
    a, b, c, alice, bob = split_a_from_c_then_bob_joins_on_a()

    # c learns bob through b, alice being already in c's context. Where Phoenix reports
    # bob as a join although a is down on c, we report only changes in what is visible:
    # bob is held, hidden while a is down, and joins when a comes back up.
    assert pull(c, b) == ([], [])
    assert c.get("pid-bob", "lobby", "bob") == bob
    assert c.get_by_topic("lobby") == []
    assert ordered(c.replica_up(a.replica)) == ordered([alice, bob])
    assert keys(c.online_list()) == ["alice", "bob"]


def test_removes_are_observed_via_other_node():
    a, b, c, alice, bob = split_a_from_c_then_bob_joins_on_a()

    assert pull(c, b) == ([], [])  # bob held, hidden: a is down on c
    assert c.get("pid-bob", "lobby", "bob") == bob

    a.leave("pid-bob", "lobby", "bob")

    assert pull(b, a) == ([], [bob])

    # c observes the remove through b; silently, as a is down on c.
    assert pull(c, b) == ([], [])
    assert c.get("pid-bob", "lobby", "bob") is None
    assert c.replica_up(a.replica) == [alice]
    assert keys(c.online_list()) == ["alice"]


def test_joins_and_removes_are_observed_via_other_node_while_all_are_up():
    # The visible variant of the two tests above: a and c never talk but stay up, and c
    # sees bob join and leave through b (the remove relayed in b's own pending delta).
    a, b, c = connected("a", "b", "c")
    bob = a.join("pid-bob", "lobby", "bob", {})

    assert b.merge(a.take_delta()) == ([bob], [])
    assert pull(c, b) == ([bob], [])

    a.leave("pid-bob", "lobby", "bob")
    b.reset_delta()
    assert b.merge(a.take_delta()) == ([], [bob])
    assert b.has_delta()  # the observed remove is relayed
    relay = b.take_delta()
    assert relay.values == {}
    assert relay.clouds == {("a", 1): {(("a", 1), 1)}}

    assert c.merge(relay) == ([], [bob])
    assert c.online_list() == []


def test_get_by_pid():
    state = new("node1")
    owner = "pid-self"

    assert state.get_by_owner(owner) == []
    state.join(owner, "topic", "key1", {})

    expected = Entry("topic", owner, "key1", {}, (("node1", 1), 1))
    assert state.get_by_owner(owner) == [expected]
    assert state.get(owner, "topic", "key1") == expected
    assert state.get(owner, "notopic", "key1") is None
    assert state.get(owner, "notopic", "nokey") is None
    assert state.get(owner, "topic", "nokey") is None
    assert state.get("pid-other", "topic", "key1") is None


def test_get_by_key():
    state = new("node1")

    assert state.get_by_key("topic", "key1") == []
    state.join("pid", "topic", "key1", {"device": "browser"})
    state.join("pid2", "topic", "key1", {"device": "ios"})
    state.join("pid2", "topic", "key2", {"device": "ios"})

    assert sorted(state.get_by_key("topic", "key1"), key=repr) == [
        ("pid", {"device": "browser"}),
        ("pid2", {"device": "ios"}),
    ]
    assert state.get_by_key("another_topic", "key1") == []
    assert state.get_by_key("topic", "another_key") == []


def test_get_by_topic():
    state, state2, state3 = connected("node1", "node2", "node3")
    everyone = {("node1", 1): 0, ("node2", 1): 0, ("node3", 1): 0}
    assert state.context == everyone
    assert state2.context == everyone
    assert state3.context == everyone

    assert state.get_by_topic("topic") == []
    state.join("pid", "topic", "key1", {})
    state.join("pid", "topic", "key2", {})
    state2.join("user2", "topic", "user2", {})
    state3.join("user3", "topic", "user3", {})

    # All replicas online.
    assert sorted(state.get_by_topic("topic"), key=repr) == [("key1", {}), ("key2", {})]

    pull(state, state2)
    pull(state, state3)
    assert sorted(state.get_by_topic("topic"), key=repr) == [
        ("key1", {}),
        ("key2", {}),
        ("user2", {}),
        ("user3", {}),
    ]

    # One replica offline.
    state.replica_down(state2.replica)
    assert sorted(state.get_by_topic("topic"), key=repr) == [
        ("key1", {}),
        ("key2", {}),
        ("user3", {}),
    ]

    # Two replicas offline.
    state.replica_down(state3.replica)
    assert sorted(state.get_by_topic("topic"), key=repr) == [("key1", {}), ("key2", {})]

    assert state.get_by_topic("another:topic") == []


def test_remove_down_replicas():
    state1, state2 = connected("node1", "node2")

    state1.join("pid-alice", "lobby", "alice", {})
    state2.join("pid-bob", "lobby", "bob", {})
    pull(state2, state1)
    assert keys(state2.online_list()) == ["alice", "bob"]

    state2.replica_down(("node1", 1))
    assert rows(state2) == [("pid-alice", "lobby", "alice"), ("pid-bob", "lobby", "bob")]

    assert state2.remove_down_replicas(("node1", 1)) == []
    assert rows(state2) == [("pid-bob", "lobby", "bob")]
    assert state2.replica_up(("node1", 1)) == []
    assert keys(state2.online_list()) == ["bob"]


def test_basic_deltas():
    a, b = connected("a", "b")

    a.join("pid-alice", "lobby", "alice", {})
    b.join("pid-bob", "lobby", "bob", {})

    joins, leaves = b.merge(a.delta)
    assert keys(joins) == ["alice"]
    assert leaves == []
    assert b.clocks() == (("b", 1), {("a", 1): 1, ("b", 1): 1})

    a.reset_delta()
    a.leave("pid-alice", "lobby", "alice")

    joins, leaves = b.merge(a.delta)
    assert joins == []
    assert keys(leaves) == ["alice"]
    assert b.clocks() == (("b", 1), {("a", 1): 2, ("b", 1): 1})

    a.join("pid-alice", "lobby", "alice", {})
    joins, leaves = b.merge(a.delta)
    assert keys(joins) == ["alice"]
    assert leaves == []
    assert b.clocks() == (("b", 1), {("a", 1): 3, ("b", 1): 1})
    assert b.clouds == {}  # every cloud empty (only non-empty ones are shown)


def test_deltas_are_not_merged_for_non_contiguous_ranges():
    s = new("s1")
    s.join("pid-1", "lobby", "user1", {})
    first = s.delta  # {s1: 0} -> {s1: 1}
    s.join("pid-2", "lobby", "user2", {})
    s.reset_delta()
    s.join("pid-3", "lobby", "user3", {})
    last = s.delta  # {s1: 2} -> {s1: 3}
    assert first.range == ({("s1", 1): 0}, {("s1", 1): 1})
    assert last.range == ({("s1", 1): 2}, {("s1", 1): 3})

    assert merge_deltas(first, last) is None
    assert merge_deltas(last, first) is None


def test_extracted_state_context_contains_only_replicas_known_to_remote_replica():
    s1, s2, s3 = new("s1"), new("s2"), new("s3")
    s1.replica_up(s2.replica)
    s2.replica_up(s1.replica)
    s2.replica_up(s3.replica)
    s1.join("pid-1", "lobby", "user1", {})
    s2.join("pid-2", "lobby", "user2", {})
    s3.join("pid-3", "lobby", "user3", {})
    s1.merge(s2.delta)
    s2.merge(s1.delta)
    s2.merge(s3.delta)

    extracted = s2.extract(s1.replica, s1.context)
    assert extracted.context == {("s1", 1): 1, ("s2", 1): 1}
    assert {tag[0] for tag in extracted.values} <= {("s1", 1), ("s2", 1)}
    assert keys(extracted.values.values()) == ["user2"]  # s1's own entry is left out


def test_merging_deltas():
    s1, s2 = new("s1"), new("s2")
    r1, r2 = s1.replica, s2.replica

    s1.join("user1", "lobby", "user1", {})
    s1.join("user1", "private", "user1", {})
    s2.join("user2", "lobby", "user2", {})
    s2.join("user2", "private", "user2", {})

    delta1 = merge_deltas(s1.delta, s2.delta)
    assert delta1 is not None
    assert delta1.values == {
        (r1, 1): Entry("lobby", "user1", "user1", {}, (r1, 1)),
        (r1, 2): Entry("private", "user1", "user1", {}, (r1, 2)),
        (r2, 1): Entry("lobby", "user2", "user2", {}, (r2, 1)),
        (r2, 2): Entry("private", "user2", "user2", {}, (r2, 2)),
    }
    assert delta1.clouds == {r1: {(r1, 1), (r1, 2)}, r2: {(r2, 1), (r2, 2)}}
    assert delta1.size() == 8


def test_merging_deltas_with_removes():
    s1, s2 = connected("s1", "s2")
    r1, r2 = s1.replica, s2.replica

    # Concurrent add wins.
    s1.join("user1", "lobby", "user1", {})
    s1.join("user1", "private", "user1", {})
    s2.join("user1", "lobby", "user1", {})
    s2.leave("user1", "lobby", "user1")

    delta1 = merge_deltas(s1.delta, s2.delta)
    assert delta1 is not None
    assert delta1.values == {
        (r1, 1): Entry("lobby", "user1", "user1", {}, (r1, 1)),
        (r1, 2): Entry("private", "user1", "user1", {}, (r1, 2)),
    }
    assert delta1.clouds == {r1: {(r1, 1), (r1, 2)}, r2: {(r2, 1), (r2, 2)}}

    # Merging duplicates maintains the delta.
    assert merge_deltas(delta1, s2.delta) == delta1

    # Observed remove. Phoenix lets s2 remove s1's "private" element itself; here a
    # replica writes only its own presences, so s1 removes it and s2 observes the remove,
    # which s2 relays in its own pending delta.
    s2.merge(delta1)
    s1.reset_delta()
    s1.leave("user1", "private", "user1")
    assert s2.merge(s1.delta) == ([], [Entry("private", "user1", "user1", {}, (r1, 2))])

    merged = merge_deltas(delta1, s2.delta)
    assert merged is not None
    assert merged.values == {(r1, 1): Entry("lobby", "user1", "user1", {}, (r1, 1))}
    # Maintains the tombstone.
    assert merged.clouds == {r1: {(r1, 1), (r1, 2)}, r2: {(r2, 1), (r2, 2)}}


# ============================================== part 2: where we do better than Phoenix


def test_rule_a_replica_writes_only_its_own_presences():
    a, b = connected("a", "b")
    theirs = b.join("conn", "room", "alice", {"on": "b"})
    b.join("conn", "other", "alice", {"on": "b"})
    a.merge(b.take_delta())

    # With only b's presences held, a's local writes find nothing to act on.
    before = fingerprint(a)
    assert a.leave("conn", "room", "alice") is None
    assert a.leave_owner("conn") == []
    with pytest.raises(PresenceNotFound):
        a.leave_join("conn", "room", "alice", {"on": "a"})
    assert fingerprint(a) == before

    # a tracks the same (owner, topic, key): its writes touch only its own entry.
    mine = a.join("conn", "room", "alice", {"on": "a"})
    assert a.leave_join("conn", "room", "alice", {"on": "a", "v": 2}).tag == (a.replica, 3)
    assert a.get("conn", "room", "alice").meta == {"on": "a", "v": 2}
    assert a.leave("conn", "room", "alice").tag == (a.replica, 3)
    assert a.get("conn", "room", "alice") == theirs
    a.join("conn", "room", "alice", {"on": "a"})
    left = a.leave_owner("conn")
    assert [entry.tag[0] for entry in left] == [a.replica]
    assert ordered(a.get_by_owner("conn")) == ordered(b.get_by_owner("conn"))
    assert all(entry.tag[0] == b.replica for entry in a.get_by_owner("conn"))
    assert mine.tag == (a.replica, 1)


def test_rule_merge_never_admits_or_removes_entries_of_the_local_replica():
    a, b = connected("a", "b")
    ra = a.replica
    alice = a.join("conn", "room", "alice", {})
    b.merge(a.delta)

    # A payload claiming a's tags: a new value, a remove of a's value, a higher context.
    forged = wire_delta(
        ["b", 1],
        clouds=[[["a", 1], [1, 7]]],
        values=[["room", "conn", "bob", {}, [["a", 1], 7]]],
        start=[[["a", 1], 0]],
        end=[[["a", 1], 7]],
    )
    before = fingerprint(a)
    assert a.merge(forged) == ([], [])
    assert fingerprint(a) == before

    snapshot = Snapshot.from_wire(
        {
            "replica": ["b", 1],
            "context": [[["a", 1], 9], [["b", 1], 0]],
            "clouds": [[["a", 1], [12]]],
            "values": [["room", "conn", "carol", {}, [["a", 1], 12]]],
        }
    )
    assert a.merge(snapshot) == ([], [])
    assert fingerprint(a) == before
    assert a.context[ra] == 1
    assert a.get("conn", "room", "alice") == alice

    # A stale copy of a's own entry after a removed it never comes back either.
    a.leave("conn", "room", "alice")
    stale = b.extract(OUTSIDER, b.context)  # holds a's alice
    assert alice in stale.values.values()
    assert a.merge(stale) == ([], [])
    assert a.get("conn", "room", "alice") is None
    assert a.online_list() == []


def test_rule_same_presence_on_two_replicas_is_two_presences_converging_in_any_order():
    names = ("a", "b", "c")
    states = connected(*names)
    entries = [s.join("conn", "room", "alice", {"on": s.replica[0]}) for s in states]
    deltas = [s.delta for s in states]
    snapshots = [s.extract(OUTSIDER, s.context) for s in states]
    assert len({entry.tag for entry in entries}) == 3

    # Every order of delivery, by deltas or snapshots, converges to all three.
    for payloads in (deltas, snapshots):
        for order in itertools.permutations(range(3)):
            observer = State(("observer", 1))
            for s in states:
                observer.replica_up(s.replica)
            joined = []
            for i in order:
                joins, leaves = observer.merge(payloads[i])
                assert leaves == []
                joined += joins
            assert ordered(joined) == ordered(entries)
            assert ordered(observer.online_list()) == ordered(entries)
            assert sorted(observer.get_by_key("room", "alice"), key=repr) == sorted(
                [("conn", {"on": name}) for name in names], key=repr
            )

    # The replicas themselves, each in both orders of the other two.
    for i, state in enumerate(states):
        others = [j for j in range(3) if j != i]
        for order in (others, others[::-1]):
            replica = State(state.replica)  # a twin, to replay the same history
            for s in states:
                if s is not state:
                    replica.replica_up(s.replica)
            replica.join("conn", "room", "alice", {"on": state.replica[0]})
            for j in order:
                replica.merge(deltas[j])
            assert ordered(replica.online_list()) == ordered(entries)
        for j in others:
            state.merge(deltas[j])
        assert ordered(state.online_list()) == ordered(entries)

    # One of them leaves: everyone converges to the other two.
    a, b, c = states
    left = a.leave("conn", "room", "alice")
    assert b.merge(a.delta) == ([], [left])
    assert c.merge(a.delta) == ([], [left])
    rest = [entries[1], entries[2]]
    for state in states:
        assert ordered(state.online_list()) == ordered(rest)


def test_rule_newer_tag_supersedes_older_reported_as_leave_and_join():
    a, b = connected("a", "b")
    old = a.join("conn", "room", "alice", {"v": 1})
    assert b.merge(a.take_delta()) == ([old], [])

    # A plain update.
    new_entry = a.leave_join("conn", "room", "alice", {"v": 2})
    assert new_entry.tag == (a.replica, 3)
    assert b.merge(a.take_delta()) == ([new_entry], [old])
    assert b.get_by_key("room", "alice") == [("conn", {"v": 2})]

    # A newer tag of the same replica for the same presence supersedes the held one even
    # when the payload does not carry the old tag's remove.
    newest = wire_delta(
        ["a", 1],
        clouds=[[["a", 1], [9]]],
        values=[["room", "conn", "alice", {"v": 9}, [["a", 1], 9]]],
        start=[[["a", 1], 8]],
        end=[[["a", 1], 9]],
    )
    joins, leaves = b.merge(newest)
    assert joins == [Entry("room", "conn", "alice", {"v": 9}, (a.replica, 9))]
    assert leaves == [new_entry]
    assert b.get_by_key("room", "alice") == [("conn", {"v": 9})]
    assert len(b) == 1


def test_rule_a_stale_snapshot_never_rolls_back():
    a, b, c = connected("a", "b", "c")
    old = a.join("conn", "room", "alice", {"v": 1})
    first = a.take_delta()
    stale = a.extract(b.replica, b.context)  # extracted before the update
    assert b.merge(first) == ([old], [])

    new_entry = a.leave_join("conn", "room", "alice", {"v": 2})
    update = a.take_delta()
    assert b.merge(update) == ([new_entry], [old])

    # The stale snapshot arrives late: nothing changes.
    before = fingerprint(b)
    assert b.merge(stale) == ([], [])
    assert fingerprint(b) == before
    assert b.get("conn", "room", "alice") == new_entry

    # c never saw the first delta: the update first, then the stale snapshot and delta.
    assert c.merge(update) == ([new_entry], [])
    assert c.merge(stale) == ([], [])
    assert c.merge(first) == ([], [])
    assert c.online_list() == [new_entry]


def test_rule_an_older_tag_arriving_after_a_newer_one_is_dropped():
    b = new("b")
    b.replica_up(("a", 1))
    newer = wire_delta(
        ["a", 1],
        clouds=[[["a", 1], [3]]],
        values=[["room", "conn", "alice", {"v": 3}, [["a", 1], 3]]],
        start=[[["a", 1], 1]],
        end=[[["a", 1], 3]],
    )
    older = wire_delta(
        ["a", 1],
        clouds=[[["a", 1], [1]]],
        values=[["room", "conn", "alice", {"v": 1}, [["a", 1], 1]]],
        start=[[["a", 1], 0]],
        end=[[["a", 1], 1]],
    )
    assert b.merge(newer) == ([Entry("room", "conn", "alice", {"v": 3}, (("a", 1), 3))], [])
    assert b.merge(older) == ([], [])
    assert b.get_by_key("room", "alice") == [("conn", {"v": 3})]
    # The dropped tag is seen all the same: it never comes back.
    assert b.context[("a", 1)] == 1
    assert b.merge(older) == ([], [])
    assert len(b) == 1

    # merge_deltas keeps the larger clock too, in both orders.
    for merged in (merge_deltas(older, newer), merge_deltas(newer, older)):
        assert merged is not None
        assert list(merged.values) == [(("a", 1), 3)]


@pytest.mark.parametrize("reverse", [False, True])
def test_rule_duplicates_within_one_payload_keep_only_the_larger_clock(reverse):
    ra = ("a", 1)
    rows_ = [
        ["room", "conn", "alice", {"v": 1}, [["a", 1], 1]],
        ["room", "conn", "alice", {"v": 3}, [["a", 1], 3]],
        ["room", "conn", "bob", {}, [["a", 1], 2]],
    ]
    if reverse:
        rows_.reverse()
    payloads = [
        wire_delta(["a", 1], [[["a", 1], [1, 2, 3]]], rows_, [[["a", 1], 0]], [[["a", 1], 3]]),
        Snapshot.from_wire(
            {"replica": ["a", 1], "context": [[["a", 1], 3]], "clouds": [], "values": rows_}
        ),
    ]
    expected = [
        Entry("room", "conn", "alice", {"v": 3}, (ra, 3)),
        Entry("room", "conn", "bob", {}, (ra, 2)),
    ]
    for payload in payloads:
        b = new("b")
        b.replica_up(ra)
        joins, leaves = b.merge(payload)
        assert ordered(joins) == ordered(expected)
        assert leaves == []
        assert ordered(b.online_list()) == ordered(expected)
        assert b.context[ra] == 3


def test_rule_a_tag_once_seen_stays_seen_no_resurrection():
    # The scenario where Phoenix diverges: the join delta, the leave delta, then the join
    # delta again (duplicated or reordered heartbeats).
    a, b, c = connected("a", "b", "c")
    alice = a.join("conn", "room", "alice", {})
    join_delta = a.take_delta()
    a.leave("conn", "room", "alice")
    leave_delta = a.take_delta()

    assert b.merge(join_delta) == ([alice], [])
    assert b.merge(leave_delta) == ([], [alice])
    assert b.merge(join_delta) == ([], [])
    assert b.online_list() == []

    # Reordered: the leave first.
    assert c.merge(leave_delta) == ([], [])
    assert c.merge(join_delta) == ([], [])
    assert c.online_list() == []
    assert b.context == c.context == a.context


def test_rule_a_seen_tag_stays_in_the_clouds_until_compaction_folds_it():
    a, b = connected("a", "b")
    ra = a.replica
    a.join("conn", "room", "xavier", {})
    d1 = a.take_delta()
    bob = a.join("conn", "room", "bob", {})
    d2 = a.take_delta()
    a.leave("conn", "room", "bob")
    d3 = a.take_delta()

    # d1 is missing, so nothing compacts: the removed tag stays seen in the cloud.
    assert b.merge(d2) == ([bob], [])
    assert b.merge(d3) == ([], [bob])
    assert b.clouds == {ra: {(ra, 2), (ra, 3)}}
    assert b.context[ra] == 0
    assert b.merge(d2) == ([], [])
    assert b.online_list() == []

    # d1 arrives: the cloud folds into the context, and the tag is still seen.
    assert keys(b.merge(d1)[0]) == ["xavier"]
    assert b.clouds == {}
    assert b.context[ra] == 3
    assert b.merge(d2) == ([], [])
    assert keys(b.online_list()) == ["xavier"]


def test_rule_permdown_forgets_the_replica_entirely():
    a, b = connected("a", "b")
    rb = b.replica
    b.join("conn", "room", "bob", {})
    b.join("conn2", "room", "bob2", {})
    b.take_delta()
    b.join("conn3", "room", "bob3", {})
    a.merge(b.take_delta())  # a gap: b's cloud is not empty on a
    assert a.clouds == {rb: {(rb, 3)}}

    assert len(a.replica_down(rb)) == 1
    assert a.remove_down_replicas(rb) == []

    assert rb not in a.context
    assert rb not in a.clouds
    assert rb not in a.replicas
    assert a.replicas == {a.replica: "up"}
    assert a.clocks() == (a.replica, {a.replica: 0})
    assert len(a) == 0
    assert a.get_by_owner("conn3") == []
    assert a.get("conn3", "room", "bob3") is None
    assert everything(a).values == {}
    assert a.delta.values == {}
    assert a.delta.clouds == {}

    # Re-adding the forgotten ref starts it from zero.
    assert a.replica_up(rb) == []
    assert a.context[rb] == 0
    assert a.replicas[rb] == "up"


def test_rule_permdown_keeps_state_bounded_however_many_replicas_come_and_go():
    a = new("a")
    a.join("conn", "room", "me", {})
    for i in range(200):
        remote = State(("r", i))
        remote.replica_up(a.replica)
        a.replica_up(remote.replica)
        remote.join(f"conn-{i}", "room", f"user-{i}", {"i": i})
        remote.take_delta()
        remote.join(f"conn-{i}", "room", f"later-{i}", {"i": i})  # leaves a gap on a
        a.merge(remote.take_delta())
        a.replica_down(remote.replica)
        a.remove_down_replicas(remote.replica)

    assert a.replicas == {a.replica: "up"}
    assert a.context == {a.replica: 1}
    assert a.clouds == {}
    assert len(a) == 1
    assert keys(a.online_list()) == ["me"]
    assert [key for key, _ in a.get_by_topic("room")] == ["me"]
    assert a.delta.size() == 2  # only a's own join is pending: one value, one dot
    assert a.delta.range == ({a.replica: 0}, {a.replica: 1})


# ========================================================= part 3: the rest of the contract


def test_join_of_a_held_presence_raises_and_leaves_the_state_unchanged():
    a, b = connected("a", "b")
    a.join("conn", "room", "alice", {"v": 1})
    b.join("conn", "room", "bob", {})
    a.merge(b.delta)
    before = fingerprint(a)
    with pytest.raises(DuplicatePresence):
        a.join("conn", "room", "alice", {"v": 2})
    assert fingerprint(a) == before
    # A remote replica holding the same presence does not block a local join.
    assert a.join("conn", "room", "bob", {}).tag == (a.replica, 2)
    assert issubclass(DuplicatePresence, ValueError)
    assert issubclass(DuplicatePresence, StateError)


def test_leave_join_of_an_absent_presence_raises_and_leaves_the_state_unchanged():
    a = new("a")
    a.join("conn", "room", "alice", {})
    before = fingerprint(a)
    with pytest.raises(PresenceNotFound):
        a.leave_join("conn", "room", "bob", {})
    with pytest.raises(DuplicatePresence):
        a.leave_join("other", "room", "alice", {})
    assert fingerprint(a) == before
    assert issubclass(PresenceNotFound, DuplicatePresence)


def test_leave_of_an_absent_presence_is_a_no_op():
    a = new("a")
    a.join("conn", "room", "alice", {})
    a.take_delta()
    before = fingerprint(a)
    assert a.leave("conn", "room", "bob") is None
    assert a.leave_owner("nobody") == []
    assert fingerprint(a) == before


def test_leave_owner_removes_every_presence_of_the_owner():
    a = new("a")
    entries = [
        a.join("conn", "room", "alice", {}),
        a.join("conn", "room", "alice2", {}),
        a.join("conn", "other", "alice", {}),
    ]
    kept = a.join("conn2", "room", "bob", {})
    assert ordered(a.get_by_owner("conn")) == ordered(entries)
    assert ordered(a.leave_owner("conn")) == ordered(entries)
    assert a.get_by_owner("conn") == []
    assert a.online_list() == [kept]
    assert a.context == {a.replica: 7}  # one bump per join and per leave
    assert a.delta.values == {kept.tag: kept}
    assert a.delta.clouds == {a.replica: {(a.replica, c) for c in range(1, 8)}}


@pytest.mark.parametrize("method", ["replica_down", "remove_down_replicas", "replica_up"])
def test_marking_the_local_replica_raises_state_error(method):
    a, _ = connected("a", "b")
    a.join("conn", "room", "alice", {})
    before = fingerprint(a)
    with pytest.raises(StateError):
        getattr(a, method)(a.replica)
    assert fingerprint(a) == before


def test_merge_never_mutates_its_argument():
    a, b = connected("a", "b")
    b.join("conn", "room", "bob", {"x": [1]})
    b.join("conn", "room", "bob2", {})
    b.leave("conn", "room", "bob2")
    delta = b.delta
    snapshot = b.extract(a.replica, a.context)
    delta_wire, snapshot_wire = delta.to_wire(), snapshot.to_wire()
    delta_copy = delta.copy()

    a.join("conn", "room", "alice", {})
    a.merge(delta)
    a.merge(snapshot)
    # Later changes to a don't reach the payloads either.
    a.replica_down(b.replica)
    a.join("conn", "room", "carol", {})
    a.remove_down_replicas(b.replica)
    a.compact()

    assert delta.to_wire() == delta_wire
    assert delta == delta_copy
    assert snapshot.to_wire() == snapshot_wire
    assert {e.key for e in snapshot.values.values()} == {"bob"}


def test_extract_shares_nothing_mutable_with_the_state():
    a, b = connected("a", "b")
    b.join("conn", "room", "bob", {})
    b.take_delta()
    b.join("conn", "room", "bob2", {})
    a.merge(b.take_delta())  # a has a cloud for b
    a.join("conn", "room", "alice", {})
    snapshot = a.extract(OUTSIDER, a.context)
    wire = snapshot.to_wire()

    # Mutate the State every way: the snapshot doesn't change.
    a.join("conn", "room", "carol", {})
    a.leave("conn", "room", "alice")
    a.leave_join("conn", "room", "carol", {"v": 2})
    a.merge(b.extract(a.replica, a.context))
    a.replica_down(b.replica)
    a.remove_down_replicas(b.replica)
    a.compact()
    assert snapshot.to_wire() == wire

    # Mutating what the snapshot hands out doesn't change it or the State.
    fp = fingerprint(a)
    snapshot.context.clear()
    snapshot.clouds.clear()
    snapshot.values.clear()
    assert snapshot.to_wire() == wire
    assert fingerprint(a) == fp

    # Likewise a delta's extract.
    b.join("conn", "room", "bob3", {})
    delta = b.delta
    part = delta.extract(OUTSIDER, {b.replica: 0})
    part_wire = part.to_wire()
    b.join("conn", "room", "late", {})
    assert part.to_wire() == part_wire
    assert delta.extract(OUTSIDER, {b.replica: 0}).to_wire() == part_wire


def test_views_are_copies():
    a, b = connected("a", "b")
    b.join("conn", "room", "bob", {})
    b.take_delta()
    b.join("conn", "room", "bob2", {})
    a.merge(b.take_delta())
    a.join("conn", "room", "alice", {})
    fp = fingerprint(a)
    a.context[a.replica] = 99
    a.clouds.clear()
    a.clouds.get(b.replica, set()).clear()
    a.replicas[b.replica] = "down"
    a.clocks()[1].clear()
    a.online_list().clear()
    a.get_by_owner("conn").clear()
    a.get_by_topic("room").clear()
    a.get_by_key("room", "alice").clear()
    a.delta.values.clear()
    assert fingerprint(a) == fp


def test_diffs_report_only_changes_in_visibility():
    a, b = connected("a", "b")
    bob = b.join("conn", "room", "bob", {})
    assert a.merge(b.take_delta()) == ([bob], [])

    assert a.replica_down(b.replica) == [bob]
    assert a.replica_down(b.replica) == []  # already down

    # While b is down its entries come and go silently.
    carol = b.join("conn", "room", "carol", {})
    assert a.merge(b.take_delta()) == ([], [])
    assert a.get("conn", "room", "carol") == carol
    b.leave("conn", "room", "bob")
    assert a.merge(b.take_delta()) == ([], [])
    assert a.get("conn", "room", "bob") is None
    updated = b.leave_join("conn", "room", "carol", {"v": 2})
    assert a.merge(b.take_delta()) == ([], [])

    assert a.replica_up(b.replica) == [updated]
    assert a.replica_up(b.replica) == []  # already up

    # Up again: remove_down_replicas of an up replica reports the visible leaves.
    assert a.remove_down_replicas(b.replica) == [updated]
    assert a.remove_down_replicas(b.replica) == []  # unknown now
    assert a.replica_down(("never", 1)) == []


def test_down_replicas_are_hidden_from_lists_but_not_from_get():
    a, b = connected("a", "b")
    mine = a.join("conn", "room", "alice", {"on": "a"})
    theirs = b.join("conn", "room", "alice", {"on": "b"})
    other = b.join("conn", "room", "bob", {})
    a.merge(b.delta)
    a.replica_down(b.replica)

    assert a.get("conn", "room", "alice") == mine  # the local replica's first
    assert a.get("conn", "room", "bob") == other  # a down replica's entry too
    assert ordered(a.get_by_owner("conn")) == ordered([mine, theirs, other])
    assert a.get_by_topic("room") == [("alice", {"on": "a"})]
    assert a.get_by_key("room", "alice") == [("conn", {"on": "a"})]
    assert a.get_by_key("room", "bob") == []
    assert a.online_list() == [mine]

    a.leave("conn", "room", "alice")
    assert a.get("conn", "room", "alice") == theirs  # any replica's when no local one


def test_clocks_omit_down_replicas():
    a, b, c = connected("a", "b", "c")
    b.join("conn", "room", "bob", {})
    a.merge(b.delta)
    a.replica_down(b.replica)
    assert a.clocks() == (a.replica, {a.replica: 0, c.replica: 0})
    assert a.context == {a.replica: 0, b.replica: 1, c.replica: 0}
    assert a.replicas == {a.replica: "up", b.replica: "down", c.replica: "up"}
    a.replica_up(b.replica)
    assert a.clocks() == (a.replica, {a.replica: 0, b.replica: 1, c.replica: 0})


def test_merge_ignores_unknown_replicas():
    a, b = new("a"), new("b")
    b.join("conn", "room", "bob", {})
    before = fingerprint(a)
    assert a.merge(b.delta) == ([], [])
    assert a.merge(b.extract(a.replica, b.context)) == ([], [])
    assert fingerprint(a) == before
    with pytest.raises(TypeError):
        a.merge(b.delta.to_wire())


def test_the_local_replica_folds_its_own_dots_into_its_context():
    a = new("a")
    a.join("conn", "room", "alice", {})
    a.join("conn", "room", "bob", {})
    a.leave("conn", "room", "alice")
    assert a.context == {a.replica: 3}
    assert a.clouds == {}


def test_pending_delta_semantics():
    a, b = connected("a", "b")
    ra = a.replica
    assert not a.has_delta()
    empty = a.delta
    assert empty.range == ({ra: 0}, {ra: 0})
    assert empty.values == {}
    assert empty.clouds == {}
    assert empty.size() == 0

    alice = a.join("conn", "room", "alice", {})
    assert a.has_delta()
    copy = a.delta
    bob = a.join("conn", "room", "bob", {})
    # The copy doesn't see later changes; the pending delta does.
    assert copy.values == {alice.tag: alice}
    assert copy.range == ({ra: 0}, {ra: 1})
    assert a.delta.values == {alice.tag: alice, bob.tag: bob}
    assert a.delta.range == ({ra: 0}, {ra: 2})
    copy.values.clear()
    assert len(a.delta.values) == 2

    taken = a.take_delta()
    assert taken.values == {alice.tag: alice, bob.tag: bob}
    assert taken.clouds == {ra: {(ra, 1), (ra, 2)}}
    assert taken.size() == 4
    assert not a.has_delta()
    assert a.delta.range == ({ra: 2}, {ra: 2})

    # The taken delta is no longer the State's: later writes don't reach it.
    a.leave("conn", "room", "alice")
    assert taken.values == {alice.tag: alice, bob.tag: bob}
    assert a.has_delta()
    tombstone = a.delta
    assert tombstone.values == {}
    assert tombstone.clouds == {ra: {(ra, 1), (ra, 3)}}

    a.reset_delta()
    assert not a.has_delta()
    assert a.delta.range == ({ra: 3}, {ra: 3})
    assert a.online_list() == [bob]  # reset drops the delta, not the values

    # A merge that only admits leaves nothing pending; an observed remove is relayed.
    joins, leaves = b.merge(taken)
    assert ordered(joins) == ordered([alice, bob])
    assert leaves == []
    assert not b.has_delta()
    assert b.merge(tombstone) == ([], [alice])
    assert b.has_delta()
    assert b.delta.clouds == {ra: {(ra, 1)}}
    assert b.delta.values == {}
    b.reset_delta()
    assert not b.has_delta()


def test_compact_is_idempotent_and_changes_nothing_visible():
    a, b = connected("a", "b")
    b.join("conn", "room", "x", {})
    b.take_delta()
    b.join("conn", "room", "y", {})
    a.merge(b.take_delta())
    before = fingerprint(a)
    a.compact()
    a.compact()
    assert fingerprint(a) == before


@pytest.mark.parametrize(
    "bad", [1.5, None, True, (), ("a", ("b",)), ("a", 1.0), ["a"], {"a": 1}, b"a", ("a", True)]
)
def test_bad_replicas_raise_type_error(bad):
    with pytest.raises(TypeError):
        State(bad)
    with pytest.raises(TypeError):
        Delta(bad)
    with pytest.raises(TypeError):
        Snapshot(bad)
    a = State(("local", 0))
    before = fingerprint(a)
    with pytest.raises(TypeError):
        a.replica_up(bad)
    assert fingerprint(a) == before


@pytest.mark.parametrize("good", ["a", 7, ("a", 1), ("a", "b", 3), (1,)])
def test_good_replicas_are_accepted(good):
    state = State(good)
    assert state.replica == good
    other = State("other" if good != "other" else "x")
    assert other.replica_up(good) == []
    entry = state.join("conn", "room", "k", {})
    assert entry.tag == (good, 1)
    assert other.merge(state.delta) == ([entry], [])


@pytest.mark.parametrize("bad", [1.5, None, True, False, ("a",), ["a"], b"a", {"a": 1}])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_bad_owner_topic_or_key_raise_type_error(bad, position):
    a = new("a")
    args = ["conn", "room", "alice"]
    args[position] = bad
    before = fingerprint(a)
    with pytest.raises(TypeError):
        a.join(*args, {})
    assert fingerprint(a) == before


@pytest.mark.parametrize("bad", [None, [], "meta", 1, (("a", 1),), frozenset()])
def test_bad_meta_raises_type_error(bad):
    a = new("a")
    a.join("conn", "room", "alice", {})
    before = fingerprint(a)
    with pytest.raises(TypeError):
        a.join("conn", "room", "bob", bad)
    with pytest.raises(TypeError):
        a.leave_join("conn", "room", "alice", bad)
    assert fingerprint(a) == before


def test_int_owners_topics_and_keys():
    a, b = connected("a", "b")
    entry = a.join(1, 2, 3, {"n": 4})
    assert b.merge(a.delta) == ([entry], [])
    assert b.get(1, 2, 3) == entry
    assert b.get("1", "2", "3") is None
    assert b.get_by_topic(2) == [(3, {"n": 4})]
    assert b.get_by_key(2, 3) == [(1, {"n": 4})]
    assert b.get_by_owner(1) == [entry]


# ================================================ property: diffs and convergence


class GenerationsMachine(ReplicaMachine):
    """The shipped replica machine, with transfers answered from delta generations.

    As the tracker's shard does: every replica keeps :class:`DeltaGenerations` of every
    delta it sends or merges (reset when it merges a full state), and answers a transfer
    from the smallest generation that brings the requester up to date, else with its
    full state. The machine checks every diff against ``online_list`` and, in the final
    exchange (answered from the generations too), that every replica shows the model.
    On top: a transfer answered earlier may reach its requester again at any time; once
    converged, full-state transfers, every stale transfer and every delta ever sent
    change nothing.
    """

    def __init__(self):
        super().__init__()
        self.generations = {}  # slot -> DeltaGenerations
        self.sent = []  # every heartbeat delta: any replica may receive it again
        self.transfers = []  # (requester's ref, payload): only the requester may

    def gens(self, slot):
        return self.generations.setdefault(slot, DeltaGenerations((3, 8, 20)))

    def on_send(self, slot, delta):
        self.sent.append(delta)
        self.gens(slot).push(self.states[slot], delta)

    def on_merge(self, slot, payload):
        # as Phoenix's shard: a delta is pushed into the generations, a full state resets them
        if isinstance(payload, Delta):
            self.gens(slot).push(self.states[slot], payload)
        else:
            self.gens(slot).reset()

    def on_restart(self, slot, old, new):
        self.generations.pop(slot, None)

    def transfer_payload(self, src, dst):
        target = self.states[dst]
        payload = self.gens(src).extract(self.states[src], self.refs[dst], target.clocks()[1])
        self.transfers.append((self.refs[dst], payload))
        return payload

    @precondition(lambda self: any(ref in self.refs for ref, _ in self.transfers))
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def stale(self, pick):
        """A transfer answered earlier reaches its (still running) requester late."""
        late = [(ref, payload) for ref, payload in self.transfers if ref in self.refs]
        ref, payload = late[pick % len(late)]
        self._merge(self.refs.index(ref), payload, f"stale transfer to {ref!r}")

    def final_check(self):
        super().final_check()
        expected = self.model.visible()
        # Full-state transfers on top change nothing.
        for dst, target in enumerate(self.states):
            for src, source in enumerate(self.states):
                if src != dst:
                    snapshot = source.extract(target.replica, target.clocks()[1])
                    assert target.merge(snapshot) == ([], [])
        # And stale transfers or replayed deltas delivered now change nothing.
        for ref, payload in self.transfers:
            if ref in self.refs:
                assert self.states[self.refs.index(ref)].merge(payload) == ([], [])
        for delta in self.sent:
            for state in self.states:
                assert state.merge(delta) == ([], [])
        for state in self.states:
            assert presences(state.online_list()) == expected


TestGenerationsMachine = GenerationsMachine.TestCase
TestGenerationsMachine.settings = settings(
    max_examples=120,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_payload_length_and_value_replicas_without_building_entries():
    a, b = State(("a", 1)), State(("b", 1))
    a.replica_up(b.replica)
    b.replica_up(a.replica)
    a.join("o1", "t", "k1", {})
    a.join("o2", "t", "k2", {})
    a.leave("o1", "t", "k1")
    delta = a.take_delta()
    assert len(delta) == len(delta.values) == 1
    assert delta.value_replicas() == {("a", 1)}
    b.merge(delta)
    snapshot = b.extract(("c", 1), {("a", 1): 0, ("b", 1): 0})
    assert len(snapshot) == 1
    assert snapshot.value_replicas() == {("a", 1)}
    assert len(State(("c", 1)).take_delta()) == 0
    assert State(("c", 1)).take_delta().value_replicas() == set()


# ------------------------------------------------------------ bulk admission


def _bulk_case() -> tuple[State, Delta]:
    """A state that already holds some of the payload's keys (another replica's, and an
    older value of the same replica), and a payload of 600 unseen values of ``a`` in
    which one presence also comes twice (a stale and a newer value)."""
    holder = State("z")
    for r in ("a", "b"):
        holder.replica_up(r)
    b = State("b")
    b.replica_up("z")
    for i in range(0, 600, 7):
        b.join(f"b-owner{i}", f"t{i % 13}", f"k{i}", {"b": i})  # same keys, another owner
    holder.merge(b.take_delta())
    older = {
        "replica": "a",
        "clouds": [["a", [1]]],
        "values": [["t1", "owner1", "k1", {"old": True}, ["a", 1]]],
        "range": [[["a", 0]], [["a", 1]]],
    }
    holder.merge(Delta.from_wire(older))
    rows = [[f"t{i % 13}", f"owner{i}", f"k{i}", {"i": i}, ["a", i + 10]] for i in range(600)]
    rows.append(["t5", "owner5", "k5", {"stale": True}, ["a", 5]])  # older than clock 15
    payload = {
        "replica": "a",
        "clouds": [["a", [row[4][1] for row in rows]]],
        "values": rows,
        "range": [[["a", 1]], [["a", 700]]],
    }
    return holder, Delta.from_wire(payload)


def test_a_bulk_admission_ends_where_the_value_by_value_one_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bulk, payload = _bulk_case()
    bulk_diff = bulk.merge(payload)
    one_by_one, payload = _bulk_case()
    monkeypatch.setattr(state_module, "_BULK_MIN", 10**9)
    slow_diff = one_by_one.merge(payload)
    assert sorted(map(repr, bulk.online_list())) == sorted(map(repr, one_by_one.online_list()))
    assert bulk.clocks() == one_by_one.clocks()
    for mine, theirs in zip(bulk_diff, slow_diff, strict=True):
        assert sorted(map(repr, mine)) == sorted(map(repr, theirs))
    assert bulk.get_by_key("t1", "k1") == [("owner1", {"i": 1})]  # the older one left
    assert sorted(owner for owner, _ in bulk.get_by_key("t7", "k7")) == ["b-owner7", "owner7"]
    assert bulk.get_by_key("t5", "k5") == [("owner5", {"i": 5})]  # the stale one dropped


def test_presences_of_one_topic_share_its_name() -> None:
    state = State("a")
    first, second = "".join(["room:", "42"]), "".join(["room", ":42"])
    assert first == second and first is not second  # noqa: PT018 (one precondition)
    state.join("o1", first, "k1", {})
    entry = state.join("o2", second, "k2", {})
    assert entry.topic is first
    assert {e.topic for e in state.online_list()} == {"room:42"}
