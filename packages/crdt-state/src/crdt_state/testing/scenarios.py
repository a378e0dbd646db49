"""Histories of a small cluster (:class:`Scenario`) and the States they build.

A :class:`Scenario` is data: replica refs and steps (local writes, lossy heartbeats,
transfers, partitions, compactions). It prints as the program that built it, and
:meth:`Scenario.build` replays it deterministically into fresh States with their
:class:`~crdt_state.testing.PresenceModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from hypothesis import strategies as st

from crdt_state import Delta, Replica, State
from crdt_state.testing.model import (
    Join,
    Leave,
    LeaveOwner,
    Operation,
    PresenceModel,
    Update,
    apply_operation,
)
from crdt_state.testing.strategies import (
    _default_keys,
    _default_owners,
    _default_topics,
    metas,
    replicas,
)


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
