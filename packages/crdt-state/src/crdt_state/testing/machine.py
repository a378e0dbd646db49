"""A Hypothesis rule-based machine: replicas under a lossy network, against the model.

:class:`ReplicaMachine` runs 3 to 5 States through local writes, heartbeats that are
lost, duplicated, reordered or read back from the wire, transfers, partitions,
crash-restarts and permanent downs; it checks every diff and its invariants after every
step and, in its teardown, that a full exchange makes every replica show the model.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from crdt_state import (
    Delta,
    DuplicatePresence,
    Entry,
    Key,
    Meta,
    Owner,
    PresenceNotFound,
    Replica,
    Snapshot,
    State,
    Tag,
    Topic,
    merge_deltas,
)
from crdt_state.testing.model import (
    EntryKey,
    PresenceModel,
    _describe,
    entry_key,
    freeze_meta,
    presences,
    seen_tags,
    visible_entries,
)
from crdt_state.testing.strategies import keys, metas, owners, topics


@dataclass
class _InFlight:
    """A delta on its way to one receiver, with its wire form when it was sent."""

    sender: Replica
    delta: Delta
    wire: dict[str, Any]


_NOBODY: Replica = ("crdt_state.testing", "nobody")
"""A ref no machine replica has: extracting for it carries every value."""


def _wire_copy(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


def _replica_count(machine: Any) -> st.SearchStrategy[int]:
    return st.integers(min_value=machine.min_replicas, max_value=machine.max_replicas)


_FATES = ("deliver", "queue", "lose", "duplicate", "wire")


def _fates(machine: Any) -> st.SearchStrategy[list[str]]:
    n = len(machine.states)
    return st.lists(st.sampled_from(_FATES), min_size=n, max_size=n)


class ReplicaMachine(RuleBasedStateMachine):
    """A cluster of 3 to 5 replicas under a lossy network, checked against the model.

    Rules: local writes (join, leave, update, leave_owner, and misuses that must raise),
    heartbeats (a replica takes its pending delta; each other replica merges it at once,
    possibly through the wire form, loses it, or gets it queued, possibly besides merging
    it), delivery of any queued delta in any order, possibly kept queued to be delivered
    again, loss, regrouping of two queued deltas with :func:`~crdt_state.merge_deltas`,
    snapshot transfers, partitions (a replica marks a peer down or up), crash-restarts (a
    new ref for the slot; every other replica marks the old ref down) and permanent downs
    (every replica forgets a dead ref), compaction.
    Every diff a replica reports must equal the change in its ``online_list``.

    Invariants after every step: each replica's own presences equal the model's; values
    are held only for admitted, never-forgotten replicas, are ones their replica really
    wrote, and are at most one per (replica, owner, topic, key); lists hide exactly the
    down replicas; contexts never run ahead of their replica, never go back, a tag once
    seen stays seen and a seen tag missing from the values never comes back.

    Teardown (when the run did not already fail): :meth:`final_check` runs
    :meth:`settle` (a full exchange) and asserts every replica shows exactly
    ``model.visible()``.

    Subclasses may change :attr:`min_replicas` and :attr:`max_replicas`, override
    :meth:`make_ref` and :meth:`transfer_payload`, and hook :meth:`check_state`,
    :meth:`on_diff`, :meth:`on_send`, :meth:`on_merge`, :meth:`on_restart` and
    :meth:`final_check`.

    Attributes:
        states: The State of each slot (a slot keeps its index across restarts).
        refs: The current ref of each slot.
        model: The :class:`PresenceModel`.
        inflight: Per slot, the deltas queued for it.
        history: Every tag ever written, with its ``(topic, owner, key, meta)``.
        dead: Refs of crashed incarnations not yet forgotten everywhere.
        forgotten: Refs every replica has forgotten (permanently down).
    """

    min_replicas: ClassVar[int] = 3
    """Fewest replicas a run starts with."""
    max_replicas: ClassVar[int] = 5
    """Most replicas a run starts with."""
    max_restarts: ClassVar[int] = 2
    """Most crash-restarts in one run (each one also starts a new incarnation)."""
    max_rounds: ClassVar[int] = 3
    """Most rounds of pairwise transfers :meth:`settle` may need before nothing changes."""

    slots: Bundle[int] = Bundle("slots")

    def __init__(self) -> None:
        super().__init__()
        self.states: list[State] = []
        self.refs: list[Replica] = []
        self.model = PresenceModel()
        self.inflight: list[list[_InFlight]] = []
        self.history: dict[Tag, tuple[Topic, Owner, Key, Meta]] = {}
        self.dead: list[Replica] = []
        self.forgotten: set[Replica] = set()
        self._incarnations: list[int] = []
        self._restarts = 0
        self._last_clock: dict[Replica, int] = {}
        self._places: set[tuple[Topic, Key]] = set()
        self._seen: list[set[Tag]] = []
        self._gone: list[set[Tag]] = []
        self._contexts: list[dict[Replica, int]] = []

    # ------------------------------------------------------------------ hooks

    def make_ref(self, slot: int, incarnation: int) -> Replica:
        """The ref of a slot's incarnation; distinct for every (slot, incarnation).

        Args:
            slot: The slot's index.
            incarnation: 0 at start, one more on every restart.

        Returns:
            ``(f"node-{slot}", incarnation)`` unless overridden.
        """
        return (f"node-{slot}", incarnation)

    def check_state(self, slot: int, state: State) -> None:
        """Check an invariant of your own on one replica; called after every step.

        Args:
            slot: The slot's index.
            state: Its State.
        """

    def on_diff(self, slot: int, joins: Sequence[Entry], leaves: Sequence[Entry]) -> None:
        """Observe a visible change of one replica (already checked against online_list).

        Called for local writes, merges, replica up/down and permanent downs alike, so
        folding every diff from an empty start reproduces ``online_list``.

        Args:
            slot: The slot's index.
            joins: Entries that became visible.
            leaves: Entries that stopped being visible.
        """

    def on_restart(self, slot: int, old: Replica, new: Replica) -> None:
        """Observe a crash-restart: ``slot`` now runs a fresh State named ``new``.

        Args:
            slot: The slot's index.
            old: The crashed incarnation's ref.
            new: The new incarnation's ref.
        """

    def on_send(self, slot: int, delta: Delta) -> None:
        """Observe a heartbeat: ``slot`` took its pending delta, before anyone merged it.

        Args:
            slot: The slot's index.
            delta: The delta taken (every copy sent is this delta or its wire form).
        """

    def on_merge(self, slot: int, payload: Snapshot | Delta) -> None:
        """Observe a merge into ``slot`` (a delivered delta or a transfer), once checked.

        Args:
            slot: The slot's index.
            payload: What it merged.
        """

    def transfer_payload(self, src: int, dst: int) -> Snapshot | Delta:
        """What replica ``src`` answers when ``dst`` asks it for a transfer.

        The ``transfer`` rule and :meth:`settle` merge this answer into ``dst``. Override
        it to answer from a cache of recent deltas, such as a
        :class:`~crdt_state.DeltaGenerations`, as the tracker's shard does.

        Args:
            src: The answering slot.
            dst: The requesting slot.

        Returns:
            ``src``'s State extracted for ``dst``'s clocks (a Snapshot), unless overridden.
        """
        return self.states[src].extract(self.refs[dst], self.states[dst].clocks()[1])

    # -------------------------------------------------------------- helpers

    def _diff(
        self,
        slot: int,
        before: Counter[EntryKey],
        joins: Sequence[Entry],
        leaves: Sequence[Entry],
        what: str,
    ) -> None:
        """Check that a reported diff is exactly the change in online_list, then hook it."""
        after = visible_entries(self.states[slot])
        joined = Counter(map(entry_key, joins))
        left = Counter(map(entry_key, leaves))
        ref = self.refs[slot]
        assert max(joined.values(), default=1) == 1, f"{what} at {ref!r}: a join reported twice"
        assert max(left.values(), default=1) == 1, f"{what} at {ref!r}: a leave reported twice"
        assert left <= before, f"{what} at {ref!r}: leaves {_describe(left, before & left)}"
        kept = before - left
        assert not (kept & joined), f"{what} at {ref!r}: joins already visible {kept & joined}"
        assert kept + joined == after, (
            f"{what} at {ref!r}: online_list changed other than reported: "
            f"{_describe(after, kept + joined)}"
        )
        if joins or leaves:
            self.on_diff(slot, joins, leaves)

    def _own(self) -> list[tuple[int, tuple[Owner, Topic, Key, Meta]]]:
        return [
            (slot, presence)
            for slot, ref in enumerate(self.refs)
            for presence in self.model.presences_of(ref)
        ]

    def _has_presences(self) -> bool:
        return any(self.model.presences_of(ref) for ref in self.refs)

    def _has_inflight(self) -> bool:
        return any(self.inflight)

    def _queued(self) -> list[tuple[int, int]]:
        return [(slot, n) for slot, queue in enumerate(self.inflight) for n in range(len(queue))]

    def _clock_of(self, replica: Replica) -> int:
        if replica in self.refs:
            return self.states[self.refs.index(replica)].context[replica]
        return self._last_clock[replica]

    def _held(self, state: State) -> list[Entry]:
        """Every value ``state`` holds, down replicas' included (read through extract)."""
        return list(state.extract(_NOBODY, state.context).values.values())

    def _remember(self, entry: Entry) -> None:
        self.history[entry.tag] = (entry.topic, entry.owner, entry.key, entry.meta)
        self._places.add((entry.topic, entry.key))

    def _merge(self, slot: int, payload: Snapshot | Delta, what: str) -> None:
        state = self.states[slot]
        wire = payload.to_wire()
        before = visible_entries(state)
        joins, leaves = state.merge(payload)
        assert payload.to_wire() == wire, f"{what}: merge mutated its argument"
        me = self.refs[slot]
        for entry in (*joins, *leaves):
            assert entry.tag[0] != me, f"{what}: merge reported a local entry {entry}"
        # An observed remove is relayed in the pending delta (as Phoenix's merge does),
        # so that replicas which missed the remover's delta learn it from this one. A
        # value superseded by a newer one of the same presence needs no relay.
        superseded = {(e.tag[0], e.owner, e.topic, e.key) for e in joins}
        relayed = state.delta.clouds
        for entry in leaves:
            if (entry.tag[0], entry.owner, entry.topic, entry.key) not in superseded:
                assert entry.tag in relayed.get(entry.tag[0], ()), (
                    f"{what}: the observed remove of {entry} is not relayed"
                )
        self._diff(slot, before, joins, leaves, what)
        self.on_merge(slot, payload)

    def _forget(self, replica: Replica) -> None:
        """Every replica permanently downs ``replica`` (a dead incarnation)."""
        for slot, state in enumerate(self.states):
            before = visible_entries(state)
            leaves = state.remove_down_replicas(replica)
            assert leaves == [], f"permdown of down {replica!r} at {self.refs[slot]!r}: {leaves}"
            self._diff(slot, before, [], leaves, f"permdown of {replica!r}")
            self._contexts[slot].pop(replica, None)
            self._seen[slot] = {tag for tag in self._seen[slot] if tag[0] != replica}
            self._gone[slot] = {tag for tag in self._gone[slot] if tag[0] != replica}
        self.dead.remove(replica)
        self.forgotten.add(replica)

    # ---------------------------------------------------------------- rules

    @initialize(target=slots, n=st.runner().flatmap(_replica_count))
    def start(self, n: int) -> MultipleResults[int]:
        """Start ``n`` replicas, each with every other one up."""
        for slot in range(n):
            ref = self.make_ref(slot, 0)
            self.states.append(State(ref))
            self.refs.append(ref)
            self.model.add_replica(ref)
            self.inflight.append([])
            self._incarnations.append(0)
            self._seen.append(set())
            self._gone.append(set())
            self._contexts.append({})
        assert len(set(self.refs)) == n, f"make_ref gave equal refs: {self.refs}"
        for state in self.states:
            for ref in self.refs:
                if ref != state.replica:
                    assert state.replica_up(ref) == []
        return multiple(*range(n))

    @rule(i=slots, owner=owners(), topic=topics(), key=keys(), meta=metas())
    def join(self, i: int, owner: Owner, topic: Topic, key: Key, meta: Meta) -> None:
        """Replica ``i`` tracks a presence.

        When it already holds it, join must raise DuplicatePresence; when it does not,
        leave and leave_join of it must first be refused. Refusals change nothing.
        """
        state, ref = self.states[i], self.refs[i]
        before = visible_entries(state)
        context = state.context
        if self.model.holds(ref, owner, topic, key):
            try:
                state.join(owner, topic, key, meta)
            except DuplicatePresence:
                pass
            else:
                raise AssertionError(f"a second join of a held presence passed at {ref!r}")
            assert visible_entries(state) == before, "a refused join changed what is visible"
            assert state.context == context, "a refused join changed the context"
            return
        assert state.leave(owner, topic, key) is None, f"leave of an absent presence at {ref!r}"
        try:
            state.leave_join(owner, topic, key, meta)
        except PresenceNotFound:
            pass
        else:
            raise AssertionError(f"leave_join of an absent presence passed at {ref!r}")
        assert state.context == context, "a refused leave or leave_join changed the context"
        entry = state.join(owner, topic, key, meta)
        assert entry[:4] == (topic, owner, key, meta), f"join returned {entry}"
        assert entry.tag[0] == ref, f"join at {ref!r} tagged {entry.tag}"
        assert entry.tag not in self.history, f"join reused tag {entry.tag}"
        self.model.join(ref, owner, topic, key, meta)
        self._remember(entry)
        self._diff(i, before, [entry], [], "join")

    @precondition(lambda self: self._has_presences())
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def leave(self, pick: int) -> None:
        """A replica untracks one of its presences (``pick`` chooses which)."""
        own = self._own()
        i, (owner, topic, key, meta) = own[pick % len(own)]
        state, ref = self.states[i], self.refs[i]
        before = visible_entries(state)
        entry = state.leave(owner, topic, key)
        assert entry is not None, f"leave at {ref!r} found no {(owner, topic, key)}"
        assert entry[:4] == (topic, owner, key, meta), f"leave returned {entry}"
        assert entry.tag[0] == ref, f"leave at {ref!r} removed {entry.tag}"
        self.model.leave(ref, owner, topic, key)
        self._diff(i, before, [], [entry], "leave")

    @precondition(lambda self: self._has_presences())
    @rule(pick=st.integers(min_value=0, max_value=1000), meta=metas())
    def update(self, pick: int, meta: Meta) -> None:
        """A replica updates the meta of one of its presences (leave_join)."""
        own = self._own()
        i, (owner, topic, key, _) = own[pick % len(own)]
        state, ref = self.states[i], self.refs[i]
        before = visible_entries(state)
        old = state.get(owner, topic, key)
        assert old is not None, f"get at {ref!r} found no {(owner, topic, key)}"
        assert old.tag[0] == ref, f"get at {ref!r} returned {old}"
        entry = state.leave_join(owner, topic, key, meta)
        assert entry[:4] == (topic, owner, key, meta), f"leave_join returned {entry}"
        assert entry.tag[0] == ref, f"leave_join at {ref!r} tagged {entry}"
        assert entry.tag[1] > old.tag[1], f"leave_join tagged {entry} after {old}"
        self.model.leave_join(ref, owner, topic, key, meta)
        self._remember(entry)
        self._diff(i, before, [entry], [old], "update")

    @precondition(lambda self: self._has_presences())
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def leave_owner(self, pick: int) -> None:
        """A replica untracks every presence of one owner it holds presences of."""
        own = self._own()
        i, (owner, _, _, _) = own[pick % len(own)]
        state, ref = self.states[i], self.refs[i]
        before = visible_entries(state)
        expected = set(self.model.leave_owner(ref, owner))
        left = state.leave_owner(owner)
        removed = Counter((e.topic, e.key) for e in left)
        assert removed == Counter(expected), (
            f"leave_owner({owner!r}) at {ref!r} removed {left}, expected {expected}"
        )
        assert all(e.tag[0] == ref and e.owner == owner for e in left), f"removed {left}"
        self._diff(i, before, [], left, "leave_owner")

    @precondition(lambda self: any(state.has_delta() for state in self.states))
    @rule(i=slots, fates=st.runner().flatmap(_fates))
    def heartbeat(self, i: int, fates: list[str]) -> None:
        """Replica ``i`` (or the next one with a pending delta) sends its pending delta.

        ``fates[j]`` says what happens to the copy for replica ``j``: ``deliver`` (merged
        now), ``wire`` (merged now, read back from its JSON wire form), ``queue`` (left
        in flight for :meth:`deliver`, :meth:`lose` or :meth:`regroup`), ``duplicate``
        (merged now and also left in flight) or ``lose``.
        """
        n = len(self.states)
        i = next(k % n for k in range(i, i + n) if self.states[k % n].has_delta())
        state = self.states[i]
        delta = state.take_delta()
        assert not state.has_delta(), "take_delta left a pending delta"
        self.on_send(i, delta)
        wire = delta.to_wire()
        sender = self.refs[i]
        for slot, fate in enumerate(fates):
            if slot == i:
                continue
            if fate in ("queue", "duplicate"):
                self.inflight[slot].append(_InFlight(sender, delta, wire))
            if fate in ("deliver", "duplicate"):
                self._merge(slot, delta, f"delta from {sender!r} to {self.refs[slot]!r}")
            elif fate == "wire":
                read = Delta.from_wire(_wire_copy(wire))
                assert read == delta, "a delta read back from the wire differs"
                self._merge(slot, read, f"delta from {sender!r} to {self.refs[slot]!r}")

    @precondition(lambda self: self._has_inflight())
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        duplicate=st.booleans(),
        wire=st.booleans(),
    )
    def deliver(self, pick: int, duplicate: bool, wire: bool) -> None:
        """Deliver any queued delta (reordering); keep it queued to duplicate it."""
        queued = self._queued()
        slot, n = queued[pick % len(queued)]
        message = self.inflight[slot][n]
        if not duplicate:
            del self.inflight[slot][n]
        assert message.delta.to_wire() == message.wire, "a queued delta changed"
        payload = message.delta
        if wire:
            payload = Delta.from_wire(_wire_copy(message.wire))
            assert payload == message.delta, "a delta read back from the wire differs"
        self._merge(slot, payload, f"delta from {message.sender!r} to {self.refs[slot]!r}")

    @precondition(lambda self: self._has_inflight())
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def lose(self, pick: int) -> None:
        """Lose any queued delta."""
        slot, n = self._queued()[pick % len(self._queued())]
        del self.inflight[slot][n]

    @precondition(lambda self: self._has_inflight())
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def regroup(self, pick: int) -> None:
        """Replace a queued delta and the next one from the same sender by their merge."""
        slot, n = self._queued()[pick % len(self._queued())]
        queue = self.inflight[slot]
        first = queue[n]
        for m in range(n + 1, len(queue)):
            second = queue[m]
            if second.sender == first.sender:
                break
        else:
            return
        merged = merge_deltas(first.delta, second.delta)
        assert first.delta.to_wire() == first.wire, "merge_deltas mutated its first argument"
        assert second.delta.to_wire() == second.wire, "merge_deltas mutated its second argument"
        if merged is None:
            return
        queue[n] = _InFlight(first.sender, merged, merged.to_wire())
        del queue[m]

    @rule(src=slots, dst=slots, wire=st.booleans())
    def transfer(self, src: int, dst: int, wire: bool) -> None:
        """Replica ``dst`` merges ``src``'s answer to a transfer (:meth:`transfer_payload`)."""
        if src == dst:
            return
        payload = self.transfer_payload(src, dst)
        if wire:
            read: Snapshot | Delta
            if isinstance(payload, Delta):
                read = Delta.from_wire(_wire_copy(payload.to_wire()))
            else:
                read = Snapshot.from_wire(_wire_copy(payload.to_wire()))
            assert read == payload, "a transfer read back from the wire differs"
            payload = read
        self._merge(dst, payload, f"transfer from {self.refs[src]!r} to {self.refs[dst]!r}")

    @rule(i=slots, j=slots, up=st.booleans())
    def mark(self, i: int, j: int, up: bool) -> None:
        """Replica ``i`` marks ``j`` up or down (it hears from it again, or stopped to)."""
        if i == j:
            return
        state, peer = self.states[i], self.refs[j]
        before = visible_entries(state)
        if up:
            self._diff(i, before, state.replica_up(peer), [], f"replica_up({peer!r})")
        else:
            self._diff(i, before, [], state.replica_down(peer), f"replica_down({peer!r})")

    @precondition(lambda self: self._restarts < self.max_restarts)
    @rule(i=slots)
    def restart(self, i: int) -> None:
        """Replica ``i`` crashes and restarts with a new ref; the others mark the old down.

        Deltas queued for the old incarnation are lost; the ones it sent stay queued.
        """
        self._restarts += 1
        old = self.refs[i]
        self._last_clock[old] = self.states[i].context[old]
        self._incarnations[i] += 1
        new = self.make_ref(i, self._incarnations[i])
        assert new not in self.refs, f"make_ref reused the live ref {new!r}"
        assert new not in self._last_clock, f"make_ref reused the dead ref {new!r}"
        self.model.permdown(old)
        self.dead.append(old)
        self.states[i] = State(new)
        self.refs[i] = new
        self.inflight[i] = []
        self._seen[i], self._gone[i], self._contexts[i] = set(), set(), {}
        self.on_restart(i, old, new)
        fresh = self.states[i]
        for slot, state in enumerate(self.states):
            if slot == i:
                continue
            before = visible_entries(state)
            leaves = state.replica_down(old)
            self._diff(slot, before, [], leaves, f"replica_down({old!r})")
            assert state.replica_up(new) == [], "replica_up of a new replica reported joins"
            assert fresh.replica_up(self.refs[slot]) == [], "a fresh State reported joins"

    @precondition(lambda self: bool(self.dead))
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def permdown(self, pick: int) -> None:
        """Every replica forgets a crashed incarnation (remove_down_replicas)."""
        self._forget(self.dead[pick % len(self.dead)])

    @precondition(lambda self: any(state.clouds for state in self.states))
    @rule(i=slots)
    def compact(self, i: int) -> None:
        """Replica ``i`` compacts: nothing visible and nothing seen changes."""
        state = self.states[i]
        before = visible_entries(state)
        seen = seen_tags(state, self.history)
        state.compact()
        assert visible_entries(state) == before, "compact changed what is visible"
        assert seen_tags(state, self.history) == seen, "compact changed what is seen"

    # ----------------------------------------------------------- invariants

    @invariant()
    def own_presences_match_model(self) -> None:
        """Each replica shows exactly its own presences of the model."""
        for state, ref in zip(self.states, self.refs, strict=True):
            own = [e for e in state.online_list() if e.tag[0] == ref]
            actual, expected = presences(own), self.model.presences(ref)
            assert actual == expected, f"own presences of {ref!r}: {_describe(actual, expected)}"

    @invariant()
    def values_are_well_formed(self) -> None:
        """Values: admitted replicas only, really written, one per replica and presence."""
        for state, ref in zip(self.states, self.refs, strict=True):
            known = state.replicas
            assert not (self.forgotten & set(known)), f"{ref!r} still knows {known}"
            held = self._held(state)
            assert len(held) == len(state), f"{ref!r}: len {len(state)} but {len(held)} values"
            by_owner = Counter(
                entry_key(e) for owner in {e.owner for e in held} for e in state.get_by_owner(owner)
            )
            assert by_owner == Counter(map(entry_key, held)), (
                f"get_by_owner at {ref!r}: {_describe(by_owner, Counter(map(entry_key, held)))}"
            )
            idents = Counter((e.tag[0], e.owner, e.topic, e.key) for e in held)
            twice = [ident for ident, count in idents.items() if count > 1]
            assert not twice, f"{ref!r} holds two values of {twice}"
            for entry in held:
                replica = entry.tag[0]
                assert replica in known, f"{ref!r} holds {entry} of an unknown replica"
                written = self.history.get(entry.tag)
                assert written == entry[:4], f"{ref!r} holds {entry}, written as {written}"

    @invariant()
    def lists_hide_down_replicas(self) -> None:
        """online_list, get_by_topic and get_by_key show exactly the up replicas' values."""
        for state, ref in zip(self.states, self.refs, strict=True):
            status = state.replicas
            shown = visible_entries(state)
            expected = Counter(
                entry_key(e) for e in self._held(state) if status.get(e.tag[0]) == "up"
            )
            assert shown == expected, f"online_list of {ref!r}: {_describe(shown, expected)}"
            listed = state.online_list()
            assert all(e.tag[0] not in self.dead for e in listed), f"{ref!r} shows the dead"
            for topic, key in self._places:
                by_key = Counter((o, freeze_meta(m)) for o, m in state.get_by_key(topic, key))
                want = Counter(
                    (e.owner, freeze_meta(e.meta))
                    for e in listed
                    if e.topic == topic and e.key == key
                )
                assert by_key == want, f"get_by_key{(topic, key)} at {ref!r}"
            for topic in {topic for topic, _ in self._places}:
                by_topic = Counter((k, freeze_meta(m)) for k, m in state.get_by_topic(topic))
                want = Counter((e.key, freeze_meta(e.meta)) for e in listed if e.topic == topic)
                assert by_topic == want, f"get_by_topic({topic!r}) at {ref!r}"

    @invariant()
    def causal_context_is_sound(self) -> None:
        """Contexts never run ahead or back; a seen tag stays seen and never comes back."""
        for slot, (state, ref) in enumerate(zip(self.states, self.refs, strict=True)):
            context = state.context
            previous = self._contexts[slot]
            for replica, clock in context.items():
                limit = self._clock_of(replica)
                assert clock <= limit, f"{ref!r} has {replica!r} at {clock} > its {limit}"
                assert clock >= previous.get(replica, 0), f"{ref!r}: {replica!r} went back"
            for replica, tags in state.clouds.items():
                upto = context[replica]
                limit = self._clock_of(replica)
                assert all(upto < c <= limit for _, c in tags), f"{ref!r}: cloud {tags}"
            self._contexts[slot] = context
            seen = seen_tags(state, self.history)
            assert self._seen[slot] <= seen, f"{ref!r} forgot {self._seen[slot] - seen}"
            held = {entry.tag for entry in self._held(state)}
            assert held <= seen, f"{ref!r} holds unseen tags {held - seen}"
            back = held & self._gone[slot]
            assert not back, f"{ref!r} resurrected removed values {back}"
            self._seen[slot] = seen
            self._gone[slot] |= seen - held

    @invariant()
    def user_checks(self) -> None:
        """Run :meth:`check_state` on every replica."""
        for slot, state in enumerate(self.states):
            self.check_state(slot, state)

    # --------------------------------------------------------- final check

    def _fingerprint(self) -> list[Any]:
        return [
            (visible_entries(state), state.context, state.clouds, state.replicas)
            for state in self.states
        ]

    def settle(self) -> int:
        """The final full exchange: heal everything, then transfer until nothing changes.

        Drops the queued deltas, forgets every dead incarnation, has every replica mark
        every other one up, then runs rounds of pairwise transfers (every replica merges
        every other one's :meth:`transfer_payload`) until a round changes nothing.

        Returns:
            The number of rounds run, the last one changing nothing.

        Raises:
            AssertionError: When :attr:`max_rounds` rounds did not reach a fixed point.
        """
        for queue in self.inflight:
            queue.clear()
        for replica in list(self.dead):
            self._forget(replica)
        for slot, state in enumerate(self.states):
            for ref in self.refs:
                if ref != state.replica:
                    before = visible_entries(state)
                    joins = state.replica_up(ref)
                    self._diff(slot, before, joins, [], f"replica_up({ref!r})")
        for rounds in range(1, self.max_rounds + 1):
            start = self._fingerprint()
            for src in range(len(self.states)):
                for dst in range(len(self.states)):
                    if src != dst:
                        self._merge(dst, self.transfer_payload(src, dst), "final transfer")
            if self._fingerprint() == start:
                return rounds
        raise AssertionError(f"no fixed point after {self.max_rounds} rounds of transfers")

    def final_check(self) -> None:
        """Settle, then assert every replica shows the model and all agree on the clocks.

        Override to check more after the exchange; call ``super().final_check()`` first.
        """
        self.settle()
        expected = self.model.visible()
        for state, ref in zip(self.states, self.refs, strict=True):
            actual = presences(state.online_list())
            assert actual == expected, f"{ref!r} after the exchange: {_describe(actual, expected)}"
            assert state.clouds == {}, f"{ref!r} keeps clouds {state.clouds} after the exchange"
            want = {r: self._clock_of(r) for r in self.refs}
            assert state.context == want, f"{ref!r} context {state.context}, expected {want}"
            assert state.replicas == dict.fromkeys(self.refs, "up"), f"{ref!r}: {state.replicas}"

    def teardown(self) -> None:
        """Run :meth:`final_check`, unless a step or an invariant already failed."""
        if sys.exc_info()[1] is not None or not self.states:
            return
        self.final_check()
