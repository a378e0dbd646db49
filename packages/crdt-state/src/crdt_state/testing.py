"""Hypothesis strategies, a reference model and a replica state machine for crdt_state.

This module needs the ``testing`` extra (``pip install 'crdt-state[testing]'``), which
brings in `Hypothesis <https://hypothesis.readthedocs.io>`_. ``import crdt_state`` never
imports it: import ``crdt_state.testing`` explicitly, from tests.

It ships what the package's own property tests use, so that code built on
:class:`~crdt_state.State` (a diff handler, a presence view, a transport) is tested the
same way:

* strategies for the parts of a presence (:func:`replicas`, :func:`owners`,
  :func:`topics`, :func:`keys`, :func:`metas`), for local writes (:func:`operations`),
  for whole histories of a small cluster (:func:`scenarios`, whose :class:`Scenario`
  values print as readable programs and rebuild the same States on every
  :meth:`Scenario.build`), and for States built from them (:func:`states`,
  :func:`connected_states`);
* :class:`PresenceModel`, the naive sequential model every replica must converge to:
  per replica, the presences added and not removed, minus permanently down replicas;
* :class:`ReplicaMachine`, a ``RuleBasedStateMachine`` over 3 to 5 replicas with a lossy,
  duplicating, reordering network, partitions, crash-restarts and permanent downs, that
  checks its invariants after every step and, in its teardown, that a full exchange makes
  every replica show exactly the model's presences.

Extend the machine by subclassing it: add ``@invariant`` methods or rules, override
:meth:`ReplicaMachine.check_state` (called for every replica after every step),
:meth:`ReplicaMachine.on_diff` (every visible change a replica reports, local writes
included) and :meth:`ReplicaMachine.on_restart`, or extend
:meth:`ReplicaMachine.final_check`::

    from hypothesis import settings
    from crdt_state.testing import ReplicaMachine

    class MyMachine(ReplicaMachine):
        def check_state(self, slot, state):
            assert my_view_of(state) == expected_view(state.online_list())

    TestMyMachine = MyMachine.TestCase
    TestMyMachine.settings = settings(max_examples=100, stateful_step_count=40,
                                      deadline=None)

Every draw goes through Hypothesis (nothing here uses :mod:`random`), so a failure
shrinks and prints as a short program that replays it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

try:
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
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "crdt_state.testing needs Hypothesis: pip install 'crdt-state[testing]'"
    ) from exc

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

__all__ = [
    "Cluster",
    "Compact",
    "Down",
    "EntryKey",
    "Heartbeat",
    "Join",
    "Leave",
    "LeaveOwner",
    "Local",
    "Operation",
    "Presence",
    "PresenceModel",
    "ReplicaMachine",
    "Scenario",
    "Step",
    "Transfer",
    "Up",
    "Update",
    "apply_operation",
    "connected_states",
    "entry_key",
    "freeze_meta",
    "keys",
    "metas",
    "operations",
    "owners",
    "presences",
    "replicas",
    "scenarios",
    "seen_tags",
    "states",
    "topics",
    "visible_entries",
]

# ---------------------------------------------------------------------- comparing

Presence: TypeAlias = "tuple[Replica, Owner, Topic, Key, str]"
"""A visible presence as compared by the tests: ``(replica, owner, topic, key, meta)``,
with the meta frozen by :func:`freeze_meta` so that it can be counted."""

EntryKey: TypeAlias = "tuple[Tag, Owner, Topic, Key, str]"
"""An Entry with its full tag and frozen meta: unique per add, so diffs can be checked."""


def freeze_meta(meta: Meta) -> str:
    """A hashable, readable form of a meta: its JSON with sorted keys.

    ``True`` and ``1`` stay apart; a value JSON cannot write is written by its ``repr``.

    Args:
        meta: A presence's metadata.

    Returns:
        The canonical JSON text of ``meta``.
    """
    return json.dumps(meta, sort_keys=True, default=repr)


def presences(entries: Iterable[Entry]) -> Counter[Presence]:
    """Count entries as presences ``(replica, owner, topic, key, meta)``, tags' clocks dropped.

    Two replicas may track the same (owner, topic, key): they stay two presences.

    Args:
        entries: Entries, e.g. :meth:`State.online_list`.

    Returns:
        The multiset of presences.
    """
    return Counter(
        (entry.tag[0], entry.owner, entry.topic, entry.key, freeze_meta(entry.meta))
        for entry in entries
    )


def entry_key(entry: Entry) -> EntryKey:
    """An Entry as a hashable key that keeps its whole tag (unique per add).

    Args:
        entry: The entry.

    Returns:
        ``(tag, owner, topic, key, frozen meta)``.
    """
    return (entry.tag, entry.owner, entry.topic, entry.key, freeze_meta(entry.meta))


def visible_entries(state: State) -> Counter[EntryKey]:
    """The multiset of :func:`entry_key` of ``state.online_list()``.

    Args:
        state: The State.

    Returns:
        What ``state`` shows, tags included.
    """
    return Counter(map(entry_key, state.online_list()))


def seen_tags(state: State, candidates: Iterable[Tag]) -> set[Tag]:
    """The tags among ``candidates`` that ``state`` has observed (context or clouds).

    Args:
        state: The State.
        candidates: Tags to test, e.g. every tag a test ever produced.

    Returns:
        The observed ones.
    """
    context = state.context
    clouds = state.clouds
    out: set[Tag] = set()
    for tag in candidates:
        replica, clock = tag
        upto = context.get(replica)
        if upto is None:
            continue
        if clock <= upto or tag in clouds.get(replica, ()):
            out.add(tag)
    return out


def _describe(actual: Counter[Any], expected: Counter[Any]) -> str:
    missing = sorted(map(repr, (expected - actual).elements()))
    extra = sorted(map(repr, (actual - expected).elements()))
    return f"missing {missing}, unexpected {extra}"


# --------------------------------------------------------------------- strategies

_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_:."
_TEXT_ALPHABET = st.characters(codec="utf-8")


def replicas() -> st.SearchStrategy[Replica]:
    """Replica refs of every kind the contract allows: str, int and ``(name, version)``.

    Returns:
        A strategy of replica refs (use ``st.lists(replicas(), unique=True)`` for
        several distinct ones).
    """
    names = st.text(_NAME_ALPHABET, min_size=1, max_size=8)
    return st.one_of(
        names,
        st.integers(min_value=0, max_value=2**31 - 1),
        st.tuples(names, st.integers(min_value=0, max_value=2**31 - 1)),
    )


def owners() -> st.SearchStrategy[Owner]:
    """A few owners, strings and integers, so that writes often hit the same one.

    Returns:
        A strategy of owners.
    """
    return st.sampled_from(("conn-1", "conn-2", "conn-3", 4))


def topics() -> st.SearchStrategy[Topic]:
    """A few topics, strings and an integer, so that presences share topics.

    Returns:
        A strategy of topics.
    """
    return st.sampled_from(("room:1", "room:2", 3))


def keys() -> st.SearchStrategy[Key]:
    """A few keys (who is present), strings and an integer.

    Returns:
        A strategy of keys.
    """
    return st.sampled_from(("alice", "bob", 7))


def metas() -> st.SearchStrategy[Meta]:
    """Small JSON-able metadata dicts that JSON carries back equal (no floats).

    Returns:
        A strategy of dicts with str keys and None, bool, int, str or list values.
    """
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.text(_TEXT_ALPHABET, max_size=8),
    )
    values = st.one_of(scalars, st.lists(scalars, max_size=3))
    return st.dictionaries(st.sampled_from(("status", "n", "device", "tags")), values, max_size=3)


@dataclass(frozen=True, slots=True)
class Join:
    """Track a presence (:meth:`State.join`); skipped when the replica already holds it."""

    owner: Owner
    topic: Topic
    key: Key
    meta: Meta


@dataclass(frozen=True, slots=True)
class Leave:
    """Untrack a presence (:meth:`State.leave`); a no-op when absent."""

    owner: Owner
    topic: Topic
    key: Key


@dataclass(frozen=True, slots=True)
class Update:
    """Update a presence's meta (:meth:`State.leave_join`); skipped when absent."""

    owner: Owner
    topic: Topic
    key: Key
    meta: Meta


@dataclass(frozen=True, slots=True)
class LeaveOwner:
    """Untrack every presence of an owner (:meth:`State.leave_owner`)."""

    owner: Owner


Operation: TypeAlias = "Join | Leave | Update | LeaveOwner"
"""A local write, as drawn by :func:`operations`."""


def operations(
    owners: st.SearchStrategy[Owner] | None = None,
    topics: st.SearchStrategy[Topic] | None = None,
    keys: st.SearchStrategy[Key] | None = None,
    metas: st.SearchStrategy[Meta] | None = None,
) -> st.SearchStrategy[Operation]:
    """Local writes: joins (most often), leaves, updates and leaves by owner.

    Args:
        owners: Owners to draw from; :func:`owners` by default.
        topics: Topics to draw from; :func:`topics` by default.
        keys: Keys to draw from; :func:`keys` by default.
        metas: Metas to draw from; :func:`metas` by default.

    Returns:
        A strategy of :data:`Operation` values, applied by :func:`apply_operation`.
    """
    o = owners if owners is not None else _default_owners
    t = topics if topics is not None else _default_topics
    k = keys if keys is not None else _default_keys
    m = metas if metas is not None else _default_metas
    join = st.builds(Join, o, t, k, m)
    return st.one_of(
        join,
        join,
        st.builds(Leave, o, t, k),
        st.builds(Update, o, t, k, m),
        st.builds(LeaveOwner, o),
    )


_default_owners = owners()
_default_topics = topics()
_default_keys = keys()
_default_metas = metas()


def _holds(state: State, owner: Owner, topic: Topic, key: Key) -> bool:
    entry = state.get(owner, topic, key)
    return entry is not None and entry.tag[0] == state.replica


def apply_operation(state: State, operation: Operation) -> bool:
    """Apply a local write to a State, skipping the ones the contract would refuse.

    A :class:`Join` of a presence the replica holds and an :class:`Update` of one it does
    not hold are skipped instead of raising; :meth:`PresenceModel.apply` skips the same.

    Args:
        state: The State to write to.
        operation: The write.

    Returns:
        Whether the State changed.
    """
    if isinstance(operation, Join):
        if _holds(state, operation.owner, operation.topic, operation.key):
            return False
        state.join(operation.owner, operation.topic, operation.key, operation.meta)
        return True
    if isinstance(operation, Leave):
        return state.leave(operation.owner, operation.topic, operation.key) is not None
    if isinstance(operation, Update):
        if not _holds(state, operation.owner, operation.topic, operation.key):
            return False
        state.leave_join(operation.owner, operation.topic, operation.key, operation.meta)
        return True
    return bool(state.leave_owner(operation.owner))


# ------------------------------------------------------------------------ model


class PresenceModel:
    """The naive sequential model of the presences a cluster must converge to.

    Per replica, the presences added and not removed (at most one per owner, topic and
    key); a permanently down replica's presences are gone and the replica can never
    write again. What a replica shows once converged is :meth:`visible` of the replicas
    it has up.
    """

    def __init__(self) -> None:
        self._live: dict[Replica, dict[tuple[Owner, Topic, Key], Meta]] = {}
        self.permdowned: set[Replica] = set()
        """Replicas declared permanently down."""

    def _of(self, replica: Replica) -> dict[tuple[Owner, Topic, Key], Meta]:
        held = self._live.get(replica)
        if held is None:
            if replica in self.permdowned:
                raise ValueError(f"{replica!r} is permanently down and never writes again")
            held = self._live[replica] = {}
        return held

    def add_replica(self, replica: Replica) -> None:
        """Start a replica with no presences (writes start one implicitly too).

        Raises:
            ValueError: For a permanently down replica (refs are never reused).
        """
        self._of(replica)

    @property
    def replicas(self) -> list[Replica]:
        """The replicas started and not permanently down."""
        return list(self._live)

    def holds(self, replica: Replica, owner: Owner, topic: Topic, key: Key) -> bool:
        """Whether ``replica`` holds that presence."""
        return (owner, topic, key) in self._live.get(replica, {})

    def presences_of(self, replica: Replica) -> list[tuple[Owner, Topic, Key, Meta]]:
        """The presences of ``replica`` as ``(owner, topic, key, meta)``, in a stable order."""
        held = self._live.get(replica, {})
        return sorted(((*ident, meta) for ident, meta in held.items()), key=repr)

    def join(self, replica: Replica, owner: Owner, topic: Topic, key: Key, meta: Meta) -> bool:
        """Add a presence; False (and no change) when ``replica`` already holds it."""
        held = self._of(replica)
        if (owner, topic, key) in held:
            return False
        held[owner, topic, key] = meta
        return True

    def leave(self, replica: Replica, owner: Owner, topic: Topic, key: Key) -> Meta | None:
        """Remove a presence; its meta, or None when it was absent."""
        return self._of(replica).pop((owner, topic, key), None)

    def leave_join(
        self, replica: Replica, owner: Owner, topic: Topic, key: Key, meta: Meta
    ) -> bool:
        """Replace a presence's meta; False (and no change) when it is absent."""
        held = self._of(replica)
        if (owner, topic, key) not in held:
            return False
        held[owner, topic, key] = meta
        return True

    def leave_owner(self, replica: Replica, owner: Owner) -> list[tuple[Topic, Key]]:
        """Remove every presence of ``owner`` held by ``replica``; their (topic, key)."""
        held = self._of(replica)
        gone = [(t, k) for (o, t, k) in held if o == owner]
        for t, k in gone:
            del held[owner, t, k]
        return gone

    def apply(self, replica: Replica, operation: Operation) -> bool:
        """Apply a write as :func:`apply_operation` does; whether anything changed."""
        if isinstance(operation, Join):
            return self.join(
                replica, operation.owner, operation.topic, operation.key, operation.meta
            )
        if isinstance(operation, Leave):
            return self.leave(replica, operation.owner, operation.topic, operation.key) is not None
        if isinstance(operation, Update):
            return self.leave_join(
                replica, operation.owner, operation.topic, operation.key, operation.meta
            )
        return bool(self.leave_owner(replica, operation.owner))

    def permdown(self, replica: Replica) -> None:
        """Declare ``replica`` permanently down: its presences are gone for good."""
        self._live.pop(replica, None)
        self.permdowned.add(replica)

    def presences(self, replica: Replica) -> Counter[Presence]:
        """The presences of one replica, as :func:`presences` counts them."""
        return Counter(
            (replica, o, t, k, freeze_meta(m))
            for (o, t, k), m in self._live.get(replica, {}).items()
        )

    def visible(self, up: Iterable[Replica] | None = None) -> Counter[Presence]:
        """What a converged replica shows when ``up`` are the replicas it has up.

        Args:
            up: The replicas up (the viewer's own included); every live one when None.

        Returns:
            The multiset of presences, as :func:`presences` counts them.
        """
        chosen = self._live if up is None else up
        out: Counter[Presence] = Counter()
        for replica in chosen:
            out += self.presences(replica)
        return out


# -------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Local:
    """Replica ``replica`` applies a local write."""

    replica: int
    operation: Operation


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``sender`` takes its pending delta; ``receivers`` merge it in order, others lose it."""

    sender: int
    receivers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Transfer:
    """``target`` merges ``source``'s state extracted for it (a Snapshot)."""

    source: int
    target: int


@dataclass(frozen=True, slots=True)
class Down:
    """``replica`` marks ``peer`` down (a partition, as ``replica`` sees it)."""

    replica: int
    peer: int


@dataclass(frozen=True, slots=True)
class Up:
    """``replica`` marks ``peer`` up again."""

    replica: int
    peer: int


@dataclass(frozen=True, slots=True)
class Compact:
    """``replica`` compacts its clouds."""

    replica: int


Step: TypeAlias = "Local | Heartbeat | Transfer | Down | Up | Compact"
"""One step of a :class:`Scenario`; replicas are named by their index."""


@dataclass
class Cluster:
    """The States a :class:`Scenario` built, with its model and every delta sent.

    Attributes:
        states: One State per replica, in the scenario's order.
        model: The :class:`PresenceModel` of the writes applied.
        sent: Every delta taken by a heartbeat, as ``(sender index, delta)``, in order.
    """

    states: list[State]
    model: PresenceModel
    sent: list[tuple[int, Delta]] = field(default_factory=list)

    def flush(self) -> None:
        """Take every State's pending delta into :attr:`sent`, delivering nothing.

        Afterwards the deltas in :attr:`sent` of each replica are its whole history.
        """
        for index, state in enumerate(self.states):
            self.sent.append((index, state.take_delta()))

    def deltas_of(self, index: int) -> list[Delta]:
        """The deltas of one replica in :attr:`sent`, in the order they were taken."""
        return [delta for sender, delta in self.sent if sender == index]


@dataclass(frozen=True)
class Scenario:
    """A small cluster's history: replica refs and steps, replayable as often as needed.

    Every replica starts with every other one up. :meth:`build` is deterministic, so a
    test can build the same States twice and compare two ways of going on from there.

    Attributes:
        replicas: The refs, all distinct.
        steps: The history.
    """

    replicas: tuple[Replica, ...]
    steps: tuple[Step, ...]

    def build(self) -> Cluster:
        """Replay the history into fresh States.

        Returns:
            The :class:`Cluster`.
        """
        refs = self.replicas
        states = [State(ref) for ref in refs]
        model = PresenceModel()
        for ref in refs:
            model.add_replica(ref)
        for state in states:
            for ref in refs:
                if ref != state.replica:
                    state.replica_up(ref)
        cluster = Cluster(states, model)
        for step in self.steps:
            if isinstance(step, Local):
                apply_operation(states[step.replica], step.operation)
                model.apply(refs[step.replica], step.operation)
            elif isinstance(step, Heartbeat):
                delta = states[step.sender].take_delta()
                cluster.sent.append((step.sender, delta))
                for receiver in step.receivers:
                    if receiver != step.sender:
                        states[receiver].merge(delta)
            elif isinstance(step, Transfer):
                if step.source != step.target:
                    target = states[step.target]
                    target.merge(states[step.source].extract(target.replica, target.clocks()[1]))
            elif isinstance(step, Down):
                if step.replica != step.peer:
                    states[step.replica].replica_down(refs[step.peer])
            elif isinstance(step, Up):
                if step.replica != step.peer:
                    states[step.replica].replica_up(refs[step.peer])
            else:
                states[step.replica].compact()
        return cluster


_STEP_KINDS = ("local",) * 8 + ("heartbeat",) * 5 + ("transfer",) * 2 + ("down", "up", "compact")
_WRITE_KINDS = ("join", "join", "join", "leave", "update", "leave_owner")


def _draw_operation(draw: st.DrawFn, model: PresenceModel, replica: Replica) -> Operation:
    """A write that mostly hits: leaves and updates pick one of the replica's presences."""
    kind = draw(st.sampled_from(_WRITE_KINDS))
    held = model.presences_of(replica)
    if kind == "join" or not held:
        return Join(
            draw(_default_owners), draw(_default_topics), draw(_default_keys), draw(metas())
        )
    owner, topic, key, _ = draw(st.sampled_from(held))
    if kind == "leave":
        return Leave(owner, topic, key)
    if kind == "update":
        return Update(owner, topic, key, draw(metas()))
    return LeaveOwner(owner)


@st.composite
def scenarios(
    draw: st.DrawFn,
    min_replicas: int = 2,
    max_replicas: int = 3,
    max_steps: int = 30,
    operations: st.SearchStrategy[Operation] | None = None,
) -> Scenario:
    """Histories of a small cluster: local writes, lossy heartbeats, transfers, partitions.

    Local writes are the most frequent steps, then heartbeats (each receiver loses the
    delta one time in four), then transfers, partitions and compactions. By default
    leaves and updates name a presence the replica holds, so most writes change
    something; pass ``operations`` to draw writes from your own strategy instead.

    Args:
        draw: Supplied by Hypothesis.
        min_replicas: Fewest replicas (at least 1).
        max_replicas: Most replicas.
        max_steps: Most steps.
        operations: Local writes to draw from; state-aware writes by default.

    Returns:
        A strategy of :class:`Scenario` values.
    """
    n = draw(st.integers(min_value=min_replicas, max_value=max_replicas))
    refs = tuple(draw(st.lists(replicas(), min_size=n, max_size=n, unique=True)))
    count = draw(st.integers(min_value=0, max_value=max_steps))
    index = st.integers(min_value=0, max_value=n - 1)
    kinds = _STEP_KINDS if n > 1 else ("local", "local", "heartbeat", "compact")
    model = PresenceModel()
    steps: list[Step] = []
    for _ in range(count):
        kind = draw(st.sampled_from(kinds))
        i = draw(index)
        if kind == "local":
            op = (
                draw(operations)
                if operations is not None
                else _draw_operation(draw, model, refs[i])
            )
            model.apply(refs[i], op)
            steps.append(Local(i, op))
        elif kind == "heartbeat":
            lost = [draw(st.integers(min_value=0, max_value=3)) == 0 for _ in range(n)]
            steps.append(Heartbeat(i, tuple(j for j in range(n) if j != i and not lost[j])))
        elif kind == "compact":
            steps.append(Compact(i))
        else:
            j = (i + draw(st.integers(min_value=1, max_value=n - 1))) % n
            step: Step = Transfer(j, i) if kind == "transfer" else Down(i, j)
            steps.append(step if kind != "up" else Up(i, j))
    return Scenario(refs, tuple(steps))


_default_operations = operations()


def states(max_replicas: int = 3, max_steps: int = 30) -> st.SearchStrategy[State]:
    """A State with a random history: its own writes and what it merged from peers.

    Prefer :func:`scenarios` when a failure should print readably: a State prints as a
    summary, a :class:`Scenario` as the program that built it.

    Args:
        max_replicas: Most replicas in the history (the State's peers plus itself).
        max_steps: Most steps in the history.

    Returns:
        A strategy of States (the first replica of a built :class:`Scenario`).
    """
    return scenarios(min_replicas=1, max_replicas=max_replicas, max_steps=max_steps).map(
        lambda scenario: scenario.build().states[0]
    )


def connected_states(size: int = 2, max_steps: int = 30) -> st.SearchStrategy[tuple[State, ...]]:
    """``size`` States that know each other, with a random shared history.

    ``connected_states(2)`` gives pairs and ``connected_states(3)`` triples.

    Args:
        size: How many States.
        max_steps: Most steps in the history.

    Returns:
        A strategy of tuples of States, every one with every other one admitted.
    """
    return scenarios(min_replicas=size, max_replicas=size, max_steps=max_steps).map(
        lambda scenario: tuple(scenario.build().states)
    )


# ---------------------------------------------------------------------- machine


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
    :meth:`make_ref`, and hook :meth:`check_state`, :meth:`on_diff`,
    :meth:`on_restart` and :meth:`final_check`.

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
        """Replica ``dst`` merges ``src``'s state extracted for it (a Snapshot)."""
        if src == dst:
            return
        target = self.states[dst]
        snapshot = self.states[src].extract(self.refs[dst], target.clocks()[1])
        if wire:
            read = Snapshot.from_wire(_wire_copy(snapshot.to_wire()))
            assert read == snapshot, "a snapshot read back from the wire differs"
            snapshot = read
        self._merge(dst, snapshot, f"transfer from {self.refs[src]!r} to {self.refs[dst]!r}")

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
        every other one's extract) until a round changes nothing.

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
            for src, source in enumerate(self.states):
                for dst, target in enumerate(self.states):
                    if src != dst:
                        snapshot = source.extract(self.refs[dst], target.clocks()[1])
                        self._merge(dst, snapshot, "final transfer")
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
