"""Hypothesis properties of the CRDT laws, on histories drawn by crdt_state.testing.

Every test draws a :class:`~crdt_state.testing.Scenario` (a small cluster's history:
local writes, lossy heartbeats, transfers, partitions) and rebuilds it as often as it
needs the same starting States, so a failure prints as the program that builds them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_state import Delta, Entry, Replica, Snapshot, State, merge_deltas
from crdt_state.testing import (
    Cluster,
    EntryKey,
    Scenario,
    connected_states,
    entry_key,
    metas,
    presences,
    scenarios,
    states,
    visible_entries,
)

SETTINGS = settings(max_examples=100, deadline=None)

OBSERVER: Replica = ("observer", "replica")
"""A ref no scenario uses (scenario tuples end with an int): a fresh replica's name."""

KINDS = ("snapshot", "pending", "history")
"""What one replica sends another: its state extracted for the other (a Snapshot), its
pending delta, or every delta it ever sent plus the pending one, merged into one."""

Payload = Snapshot | Delta


def payload(cluster: Cluster, src: int, dst: int, kind: str) -> Payload:
    source, target = cluster.states[src], cluster.states[dst]
    if kind == "snapshot":
        return source.extract(target.replica, target.clocks()[1])
    if kind == "pending":
        return source.delta
    return merged_history([*cluster.deltas_of(src), source.delta])


def merged_history(deltas: Sequence[Delta]) -> Delta:
    """One replica's consecutive windows merged into one; they are always contiguous."""
    merged = deltas[0]
    for delta in deltas[1:]:
        grown = merge_deltas(merged, delta)
        assert grown is not None, f"consecutive windows not contiguous: {merged} {delta}"
        merged = grown
    return merged


def observer(cluster: Cluster) -> State:
    """A fresh replica that has every replica of the cluster up."""
    state = State(OBSERVER)
    for other in cluster.states:
        state.replica_up(other.replica)
    return state


def causal(state: State) -> tuple[dict[Replica, int], dict[Replica, set[tuple[Replica, int]]]]:
    """What ``state`` shows of its causal information to peers: clocks and clouds of up
    replicas."""
    _, context = state.clocks()
    return context, {r: tags for r, tags in state.clouds.items() if r in context}


def assert_diff(
    before: Counter[EntryKey], state: State, joins: list[Entry], leaves: list[Entry]
) -> None:
    """The reported (joins, leaves) are exactly the change in online_list."""
    after = visible_entries(state)
    joined = Counter(map(entry_key, joins))
    left = Counter(map(entry_key, leaves))
    assert all(count == 1 for count in joined.values()), f"a join reported twice: {joins}"
    assert all(count == 1 for count in left.values()), f"a leave reported twice: {leaves}"
    assert left <= before, f"leaves of entries that were not visible: {left - before}"
    kept = before - left
    assert not (kept & joined), f"joins of entries already visible: {kept & joined}"
    assert kept + joined == after, (
        f"unreported change: +{after - kept - joined} -{kept + joined - after}"
    )


def merge_checked(state: State, remote: Payload) -> tuple[list[Entry], list[Entry]]:
    """Merge, checking that the argument is not mutated and that the diff is exact."""
    wire = remote.to_wire()
    before = visible_entries(state)
    joins, leaves = state.merge(remote)
    assert remote.to_wire() == wire, "merge mutated its argument"
    assert_diff(before, state, joins, leaves)
    return joins, leaves


payload_specs = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3), st.sampled_from(KINDS)),
    min_size=1,
    max_size=4,
)


# ------------------------------------------------------------------- the laws


@given(scenario=scenarios(min_replicas=4, max_replicas=4), specs=payload_specs, data=st.data())
@SETTINGS
def test_merge_is_commutative(
    scenario: Scenario, specs: list[tuple[int, str]], data: st.DataObject
) -> None:
    """Merging the same payloads in any order gives the same visible set and clocks."""
    order = data.draw(st.permutations(range(len(specs))), label="order")

    def run(indices: Sequence[int]) -> tuple[object, ...]:
        cluster = scenario.build()
        payloads = [payload(cluster, src, 0, kind) for src, kind in specs]
        target = cluster.states[0]
        for n in indices:
            merge_checked(target, payloads[n])
        return visible_entries(target), causal(target)

    assert run(range(len(specs))) == run(order)


def relay(cluster: Cluster, payloads: Sequence[Payload], target: State) -> Snapshot:
    """``payloads`` merged into one: through a fresh replica, extracted for ``target``."""
    middle = observer(cluster)
    for remote in payloads:
        merge_checked(middle, remote)
    return middle.extract(target.replica, target.clocks()[1])


@given(
    scenario=scenarios(min_replicas=4, max_replicas=4),
    kinds=st.tuples(*[st.sampled_from(KINDS)] * 3),
)
@SETTINGS
def test_merge_is_associative(scenario: Scenario, kinds: tuple[str, str, str]) -> None:
    """(t + x + y) + z == t + (x + y) + z == t + x + (y + z), on what t shows."""

    def run(grouping: Callable[[State, list[Payload], Cluster], None]) -> tuple[object, ...]:
        cluster = scenario.build()
        target = cluster.states[0]
        x, y, z = (payload(cluster, src, 0, kind) for src, kind in enumerate(kinds, start=1))
        grouping(target, [x, y, z], cluster)
        return visible_entries(target), causal(target)

    def flat(t: State, p: list[Payload], c: Cluster) -> None:
        for remote in p:
            merge_checked(t, remote)

    def left(t: State, p: list[Payload], c: Cluster) -> None:
        merge_checked(t, relay(c, p[:2], t))
        merge_checked(t, p[2])

    def right(t: State, p: list[Payload], c: Cluster) -> None:
        merge_checked(t, p[0])
        merge_checked(t, relay(c, p[1:], t))

    expected = run(flat)
    assert run(left) == expected
    assert run(right) == expected


@given(
    scenario=scenarios(min_replicas=2, max_replicas=4),
    src=st.integers(min_value=1, max_value=3),
    kind=st.sampled_from(KINDS),
)
@SETTINGS
def test_merge_is_idempotent(scenario: Scenario, src: int, kind: str) -> None:
    """Merging a payload again reports nothing and changes nothing, pending delta included."""
    cluster = scenario.build()
    src = 1 + (src - 1) % (len(cluster.states) - 1)
    target = cluster.states[0]
    remote = payload(cluster, src, 0, kind)
    merge_checked(target, remote)
    shown, clocks, pending = visible_entries(target), causal(target), target.delta
    assert merge_checked(target, remote) == ([], [])
    assert visible_entries(target) == shown
    assert causal(target) == clocks
    assert target.delta == pending


# ------------------------------------------------- transfers and delivery orders


@given(scenario=scenarios(min_replicas=1, max_replicas=4))
@SETTINGS
def test_snapshots_equal_replaying_every_delta(scenario: Scenario) -> None:
    """A fresh replica gets the same state from everyone's snapshot as from every delta."""
    cluster = scenario.build()
    cluster.flush()
    by_deltas = observer(cluster)
    for _, delta in cluster.sent:
        merge_checked(by_deltas, delta)
    by_snapshots = observer(cluster)
    for source in cluster.states:
        merge_checked(by_snapshots, source.extract(OBSERVER, by_snapshots.clocks()[1]))
    expected = cluster.model.visible()
    assert presences(by_deltas.online_list()) == expected
    assert visible_entries(by_snapshots) == visible_entries(by_deltas)
    assert by_snapshots.context == by_deltas.context
    assert by_snapshots.clouds == by_deltas.clouds == {}
    for source in cluster.states:
        assert by_deltas.context[source.replica] == source.context[source.replica]


@given(scenario=scenarios(min_replicas=2, max_replicas=3), src=st.integers(1, 2))
@SETTINGS
def test_extract_then_merge_equals_a_full_merge(scenario: Scenario, src: int) -> None:
    """Pruning a snapshot to the requester's replicas hides nothing it would show."""
    src = min(src, len(scenario.replicas) - 1)

    def run(full: bool) -> Counter[EntryKey]:
        cluster = scenario.build()
        source, target = cluster.states[src], cluster.states[0]
        known = dict.fromkeys((*source.context, *target.context), 0) if full else None
        remote_context = known if known is not None else target.clocks()[1]
        merge_checked(target, source.extract(target.replica, remote_context))
        return visible_entries(target)

    assert run(full=False) == run(full=True)


def regrouped(cluster: Cluster, data: st.DataObject) -> list[Delta]:
    """Every replica's windows, consecutive runs of them merged with merge_deltas."""
    out: list[Delta] = []
    for index in range(len(cluster.states)):
        windows = cluster.deltas_of(index)
        run: list[Delta] = []
        for window in windows:
            run.append(window)
            if data.draw(st.booleans(), label="cut here"):
                out.append(merged_history(run))
                run = []
        if run:
            out.append(merged_history(run))
    return out


def converge_target(cluster: Cluster) -> State:
    """Replica 0 with every other replica marked up again."""
    target = cluster.states[0]
    for other in cluster.states[1:]:
        before = visible_entries(target)
        assert_diff(before, target, target.replica_up(other.replica), [])
    return target


@given(scenario=scenarios(min_replicas=2, max_replicas=4), data=st.data())
@SETTINGS
def test_any_order_duplication_or_regrouping_of_deltas_converges(
    scenario: Scenario, data: st.DataObject
) -> None:
    """Every delta, in any order, duplicated, regrouped: replica 0 shows the model."""
    cluster = scenario.build()
    cluster.flush()
    deltas = [d for d in regrouped(cluster, data) if d.replica != cluster.states[0].replica]
    schedule = data.draw(st.permutations(deltas), label="order")
    if deltas:
        schedule += data.draw(st.lists(st.sampled_from(deltas), max_size=4), label="again")
    target = converge_target(cluster)
    for delta in schedule:
        merge_checked(target, delta)
    assert presences(target.online_list()) == cluster.model.visible()


@given(scenario=scenarios(min_replicas=2, max_replicas=4), data=st.data())
@SETTINGS
def test_lost_deltas_are_repaired_by_snapshots(scenario: Scenario, data: st.DataObject) -> None:
    """Some deltas lost, the rest in any order and duplicated, then one snapshot from each
    replica: replica 0 shows the model, and nothing stale survives the repair."""
    cluster = scenario.build()
    cluster.flush()
    deltas = [d for d in regrouped(cluster, data) if d.replica != cluster.states[0].replica]
    kept = [d for d in deltas if data.draw(st.booleans(), label="delivered")]
    schedule = data.draw(st.permutations(kept), label="order")
    if kept:
        schedule += data.draw(st.lists(st.sampled_from(kept), max_size=4), label="again")
    target = converge_target(cluster)
    for delta in schedule:
        merge_checked(target, delta)
    for source in cluster.states[1:]:
        merge_checked(target, source.extract(target.replica, target.clocks()[1]))
    assert presences(target.online_list()) == cluster.model.visible()
    for source in cluster.states:
        assert target.context[source.replica] == source.context[source.replica]
    assert target.clouds == {}


# ------------------------------------------------------------ values, not views


@given(
    scenario=scenarios(min_replicas=2, max_replicas=3),
    kind=st.sampled_from(KINDS),
    meta=metas(),
)
@SETTINGS
def test_merge_never_mutates_its_argument_and_results_share_nothing(
    scenario: Scenario, kind: str, meta: dict[str, object]
) -> None:
    """A payload merged into two replicas is unchanged; extracts and delta copies stay
    as they were while their State goes on."""
    cluster = scenario.build()
    source, target, other = cluster.states[1], cluster.states[0], observer(cluster)
    remote = payload(cluster, 1, 0, kind)
    wire = remote.to_wire()
    merge_checked(target, remote)
    merge_checked(other, remote)
    assert remote.to_wire() == wire

    snapshot = source.extract(target.replica, target.clocks()[1])
    pending = source.delta
    snapshot_wire, pending_wire = snapshot.to_wire(), pending.to_wire()
    source.join("late-owner", "late-topic", "late-key", meta)
    source.merge(target.extract(source.replica, source.clocks()[1]))
    source.leave_owner("late-owner")
    source.compact()
    assert snapshot.to_wire() == snapshot_wire
    assert pending.to_wire() == pending_wire
    taken = source.take_delta()
    taken_wire = taken.to_wire()
    source.join("later-owner", "late-topic", "late-key", meta)
    assert taken.to_wire() == taken_wire


@given(scenario=scenarios(min_replicas=1, max_replicas=4), kind=st.sampled_from(KINDS))
@SETTINGS
def test_wire_round_trip_is_exact(scenario: Scenario, kind: str) -> None:
    """from_wire(to_wire(x)) == x, also through JSON text, for snapshots and deltas."""
    cluster = scenario.build()
    cluster.flush()
    target = cluster.states[0]
    payloads: list[Payload] = [delta for _, delta in cluster.sent]
    payloads += [target.extract(OBSERVER, dict.fromkeys(target.context, 0))]
    if len(cluster.states) > 1:
        payloads.append(payload(cluster, 1, 0, kind))
    for remote in payloads:
        kind_of = type(remote)
        wire = remote.to_wire()
        assert kind_of.from_wire(wire) == remote
        through_json = json.loads(json.dumps(wire))
        read = kind_of.from_wire(through_json)
        assert read == remote
        assert read.to_wire() == through_json


@given(state=states(), data=st.data())
@SETTINGS
def test_state_extracts_round_trip(state: State, data: st.DataObject) -> None:
    """Whatever a State holds, its full extract survives the wire and merges the same,
    and a replica with the same replicas down then shows what the State shows."""
    context = dict.fromkeys(state.context, 0)
    snapshot = state.extract(OBSERVER, context)
    read = Snapshot.from_wire(json.loads(json.dumps(snapshot.to_wire())))
    assert read == snapshot
    one, two = State(OBSERVER), State(OBSERVER)
    for r in state.context:
        one.replica_up(r)
        two.replica_up(r)
    assert sorted(map(entry_key, one.merge(snapshot)[0]), key=repr) == sorted(
        map(entry_key, two.merge(read)[0]), key=repr
    )
    for r, status in state.replicas.items():
        if status == "down":
            one.replica_down(r)
            two.replica_down(r)
    assert visible_entries(one) == visible_entries(two) == visible_entries(state)


# ------------------------------------------------------------------------ diffs


@given(pair=connected_states(2), kind=st.sampled_from(KINDS), down_first=st.booleans())
@SETTINGS
def test_diffs_are_the_change_in_online_list(
    pair: tuple[State, ...], kind: str, down_first: bool
) -> None:
    """merge, replica_down and replica_up report exactly what appears and disappears."""
    target, source = pair
    remote: Payload
    if kind == "snapshot":
        remote = source.extract(target.replica, target.clocks()[1])
    else:
        remote = source.take_delta()
    if down_first:
        before = visible_entries(target)
        assert_diff(before, target, [], target.replica_down(source.replica))
    merge_checked(target, remote)
    before = visible_entries(target)
    assert_diff(before, target, target.replica_up(source.replica), [])
    before = visible_entries(target)
    assert_diff(before, target, [], target.replica_down(source.replica))
    before = visible_entries(target)
    assert target.replica_down(source.replica) == []
    assert visible_entries(target) == before
    assert_diff(before, target, [], target.remove_down_replicas(source.replica))
    assert all(e.tag[0] != source.replica for e in target.online_list())
