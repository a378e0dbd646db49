"""Comparing presences, local writes and the reference model. Pure; needs no Hypothesis.

The naive sequential :class:`PresenceModel` every replica of a cluster must converge to,
the local writes (:data:`Operation`) that both a State (:func:`apply_operation`) and the
model (:meth:`PresenceModel.apply`) apply, and the helpers that count what a State shows
as comparable multisets (:func:`presences`, :func:`visible_entries`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from crdt_state import Entry, Key, Meta, Owner, Replica, State, Tag, Topic

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


# ------------------------------------------------------------------- local writes


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
