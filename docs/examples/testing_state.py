"""Testing code built on crdt_state with crdt_state.testing (the testing guide's example).

Run it with pytest (``pytest docs/examples/testing_state.py``) or as a script.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis.stateful import run_state_machine_as_test

from crdt_state import Entry, State
from crdt_state.testing import ReplicaMachine, connected_states, scenarios


# --8<-- [start:code]
class RoomCounts:
    """The code under test: head counts per topic, kept up to date from diffs."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def apply(self, joins: Iterable[Entry], leaves: Iterable[Entry]) -> None:
        self.counts.update(str(e.topic) for e in joins)
        self.counts.subtract(str(e.topic) for e in leaves)
        self.counts = +self.counts  # drop topics that reached zero


def counts_of(state: State) -> Counter[str]:
    """What the counts must be: computed from scratch from what the state shows."""
    return Counter(str(e.topic) for e in state.online_list())


# --8<-- [end:code]


# --8<-- [start:example]
def test_a_join_and_a_leave_travel_in_deltas():
    a, b = State(("a", 1)), State(("b", 1))
    a.replica_up(b.replica)
    b.replica_up(a.replica)
    view = RoomCounts()
    a.join("conn-1", "room:1", "alice", {})
    a.join("conn-2", "room:1", "bob", {})
    view.apply(*b.merge(a.take_delta()))
    assert view.counts == {"room:1": 2}
    a.leave_owner("conn-1")
    view.apply(*b.merge(a.take_delta()))
    assert view.counts == {"room:1": 1}


# --8<-- [end:example]


# --8<-- [start:property]
@settings(max_examples=50, deadline=None, database=None)
@given(scenarios(min_replicas=2, max_replicas=3, max_steps=25))
def test_counts_follow_any_history(scenario):
    # A scenario is a cluster's history (writes, lossy heartbeats, transfers,
    # partitions) that prints as a readable program when a test fails.
    cluster = scenario.build()
    first = cluster.states[0]
    view = RoomCounts()
    view.apply(first.online_list(), [])
    for sender, delta in cluster.sent:  # deliver every heartbeat again, lost ones too
        if sender != 0:
            view.apply(*first.merge(delta))
    assert view.counts == counts_of(first)


@settings(max_examples=50, deadline=None, database=None)
@given(connected_states(2))
def test_a_transfer_brings_the_counts_level(pair):
    a, b = pair
    view = RoomCounts()
    view.apply(b.online_list(), [])
    view.apply(*b.merge(a.extract(b.replica, b.clocks()[1])))
    assert view.counts == counts_of(b)


# --8<-- [end:property]


# --8<-- [start:machine]
class RoomCountsMachine(ReplicaMachine):
    """The library's replica machine, with one RoomCounts per replica riding along."""

    def __init__(self) -> None:
        super().__init__()
        self.views: dict[int, RoomCounts] = {}

    def on_diff(self, slot: int, joins: Sequence[Entry], leaves: Sequence[Entry]) -> None:
        self.views.setdefault(slot, RoomCounts()).apply(joins, leaves)

    def on_restart(self, slot, old, new) -> None:
        self.views[slot] = RoomCounts()  # a restarted replica starts from nothing

    def check_state(self, slot: int, state: State) -> None:
        assert self.views.get(slot, RoomCounts()).counts == counts_of(state)


TestRoomCounts = RoomCountsMachine.TestCase  # pytest collects this
TestRoomCounts.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, database=None
)
# --8<-- [end:machine]


if __name__ == "__main__":
    test_a_join_and_a_leave_travel_in_deltas()
    test_counts_follow_any_history()
    test_a_transfer_brings_the_counts_level()
    run_state_machine_as_test(RoomCountsMachine, settings=TestRoomCounts.settings)
    print("RoomCounts agrees with online_list in every history tried")
