"""The replicated presence state: a port of ``Phoenix.Tracker.State``. Pure.

Theory of operation
-------------------
A State is a delta-state ORSWOT (an observed-remove set without tombstones) of presences
``(topic, owner, key, meta)``. Every add is tagged with a *dot* ``(replica, clock)``: the
local replica bumps its own clock for each join, leave and update, so dots are unique.
What a replica has observed is its *causal context* (replica -> highest contiguous clock)
plus its *clouds* (replica -> clocks seen beyond that prefix). A tag that is seen but
whose value is not held was removed, which is how removes travel without tombstones.

Local writes (join, leave, leave_owner, leave_join) act only on the local replica's own
presences and are also recorded in a pending :class:`Delta`: the values added and every
dot produced or removed in the window, plus the window's range of clocks. The tracker
sends that delta in its heartbeat and resets it; peers merge it. A peer that missed a
delta has a gap in its cloud, its context stalls behind the sender's clock, and it asks
for a transfer: a :class:`Snapshot` of the full state (:meth:`State.extract`) or a larger
delta kept by :class:`~crdt_state.delta_generation.DeltaGenerations`.

:meth:`State.merge` takes either. A remote value is admitted when its replica is known
(``replica_up`` was called for it), it is not the local replica, and its tag was never
seen. A held remote value is removed when the remote has seen its tag and does not hold
it. Where this differs from Phoenix (see DESIGN.md):

* Per (tag replica, owner, topic, key) there is at most one value; the larger clock wins.
  A stale transfer therefore never rolls back a newer value (phoenix_pubsub#148).
* A tag once seen stays seen (in the context, or in the clouds until compaction folds it
  into the context). Phoenix forgets an observed-removed tag, so a duplicated or late
  delta resurrects the value and replicas diverge.
* Merges cost time in proportion to what they carry: values are indexed by tag, per
  replica, so observing a delta's removes looks tags up instead of scanning every remote
  value as Phoenix's ``observe_removes`` does.
* ``remove_down_replicas`` forgets a replica entirely, its status included, so state stays
  bounded however many replicas come and go (phoenix_pubsub#179).
* Diffs report changes in what is visible only: values of a down replica come and go
  silently, and marking a replica up or down twice reports nothing the second time.

Storage. Values are stored once, as flat tuples (see :data:`~crdt_state._types.Record`),
and indexed three ways: by replica then clock (merges), by topic then key (lists and the
duplicate check) and by owner. An index slot holds the record itself while there is one
and a list when there are several, which keeps the common case small. Records, metas
and the records of pending deltas are shared, never copied: they are immutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal, Self, TypeAlias, cast

from crdt_state import clock as _clock
from crdt_state._types import (
    Context,
    Entry,
    Key,
    Meta,
    Owner,
    Record,
    Replica,
    Tag,
    Topic,
    _tuple_new,
    entry_of,
    is_id,
    is_replica,
)
from crdt_state.bulk import BULK_SIZE, gc_paused
from crdt_state.errors import DuplicatePresence, PresenceNotFound, StateError

__all__ = ["Delta", "Snapshot", "State", "check_id", "check_ids", "merge_deltas"]

_Values: TypeAlias = "dict[Replica, dict[int, Record]]"
_Clouds: TypeAlias = "dict[Replica, set[int]]"
_Slot: TypeAlias = "Record | list[Record]"

_BULK_MIN = 256
"""Merges admit at least this many unseen values of one replica with the bulk path."""

_TOPIC, _OWNER, _KEY, _META, _CLOCK = (itemgetter(i) for i in (0, 1, 2, 3, 5))
_ENTRY = partial(_tuple_new, Entry)
"""An Entry from its five fields as one tuple, without a Python-level call."""

_EMPTY_SET: frozenset[int] = frozenset()
_EMPTY_DICT: Mapping[int, Record] = {}


def _check_replica(replica: object) -> None:
    if not is_replica(replica):
        raise TypeError(
            f"a replica must be a str, an int or a non-empty tuple of them, not {replica!r}"
        )


def check_id(name: str, value: object) -> None:
    """Check one owner, topic or key: the one rule for ids, for every layer above too.

    Args:
        name: What the value is (``"owner"``, ``"topic"`` or ``"key"``), for the message.
        value: The id.

    Raises:
        TypeError: Unless ``value`` is a str or an int (a bool is neither).
    """
    if not is_id(value):
        raise TypeError(f"{name} must be a str or an int, not {type(value).__name__}")


def check_ids(owner: object, topic: object, key: object) -> None:
    """Check a presence's three ids with :func:`check_id`.

    A layer that checked them at its own public boundary passes ``checked=True`` to
    :meth:`State.join` and :meth:`State.leave_join`, so one call checks once.

    Raises:
        TypeError: For an owner, topic or key that is not a str or an int.
    """
    check_id("owner", owner)
    check_id("topic", topic)
    check_id("key", key)


def _tags_view(clouds: _Clouds) -> dict[Replica, set[Tag]]:
    return {r: {(r, c) for c in cl} for r, cl in clouds.items() if cl}


def _values_view(values: _Values) -> dict[Tag, Entry]:
    return {(r, c): entry_of(rec) for r, vals in values.items() for c, rec in vals.items()}


def _normal_values(values: _Values) -> dict[Replica, dict[int, Record]]:
    return {r: vals for r, vals in values.items() if vals}


def _normal_clouds(clouds: _Clouds) -> dict[Replica, set[int]]:
    return {r: cl for r, cl in clouds.items() if cl}


def _copy_values(values: _Values) -> _Values:
    return {r: dict(vals) for r, vals in values.items() if vals}


def _copy_clouds(clouds: _Clouds) -> _Clouds:
    return {r: set(cl) for r, cl in clouds.items() if cl}


def _known_but(remote_context: Mapping[Replica, int], remote_replica: Replica) -> set[Replica]:
    """The replicas whose values and clouds a transfer for ``remote_replica`` carries.

    Those it knows, but itself: it is the authority on its own values. Its cloud tags go
    with its values, since a payload that kept them without the values would tell any
    other replica it reached (through delta generations, say) that they were removed.
    """
    known = set(remote_context)
    known.discard(remote_replica)
    return known


def _values_size(values: _Values) -> int:
    return sum(map(len, values.values()))


def _clouds_size(clouds: _Clouds) -> int:
    return sum(map(len, clouds.values()))


class _Payload:
    """What a Delta and a Snapshot share: values and clouds, their views and wire form."""

    __slots__ = ("_clouds", "_values", "replica")

    replica: Replica
    _values: _Values
    _clouds: _Clouds

    @property
    def values(self) -> dict[Tag, Entry]:
        """The values carried, tag -> Entry (a new dict on each access)."""
        return _values_view(self._values)

    @property
    def clouds(self) -> dict[Replica, set[Tag]]:
        """The dots seen beyond a context, replica -> set of tags (a new dict each time).

        A delta has no context: its clouds hold every dot produced or observed removed
        in its window.
        """
        return _tags_view(self._clouds)

    def size(self) -> int:
        """The number of values plus the number of cloud tags (Phoenix's delta_size)."""
        return _values_size(self._values) + _clouds_size(self._clouds)

    def __len__(self) -> int:
        """The number of values carried (without building them, unlike :attr:`values`)."""
        return _values_size(self._values)

    def value_replicas(self) -> set[Replica]:
        """The replicas that tagged the values carried, in time proportional to them."""
        return {r for r, vals in self._values.items() if vals}

    def to_wire(self) -> dict[str, Any]:
        """Plain lists, dicts, str, int and None, for any JSON or msgpack codec.

        The layout is tabled in :mod:`crdt_state.wire`.
        """
        from crdt_state.wire import payload_to_wire

        return payload_to_wire(cast("Snapshot | Delta", self))

    @classmethod
    def from_wire(
        cls,
        data: object,
        *,
        max_size: int | None = None,
        max_replicas: int | None = None,
    ) -> Self:
        """Read what :meth:`to_wire` wrote and check every invariant.

        Args:
            data: The decoded payload.
            max_size: Most values plus cloud tags accepted; None for no cap.
            max_replicas: Most distinct replicas accepted; None for no cap.

        Returns:
            An object of the class it is called on.

        Raises:
            WireError: For any malformed input.
        """
        from crdt_state.wire import payload_from_wire

        payload = payload_from_wire(cls, data, max_size=max_size, max_replicas=max_replicas)
        return cast(Self, payload)


class Delta(_Payload):
    """The changes of a window: values added and every dot produced or removed in it.

    A Delta is what a heartbeat carries, what :class:`DeltaGenerations` keep, and one of
    the two kinds of transfer. It has no context of its own: its clouds are its causal
    information (a tag in the clouds and not in the values was removed), and its range
    says which clocks the window covers.

    Deltas come from :attr:`State.delta`, :meth:`State.take_delta`, :func:`merge_deltas`,
    :meth:`Delta.extract` and :meth:`Delta.from_wire`; ``Delta(replica)`` is an empty one.
    Treat a Delta as a value: methods never mutate it (a State mutates only its own
    pending delta, before handing it over with :meth:`State.take_delta`).

    Attributes:
        replica: The replica whose window this is.
    """

    __slots__ = ("_end", "_start")

    def __init__(self, replica: Replica) -> None:
        _check_replica(replica)
        self.replica: Replica = replica
        self._values: _Values = {}
        self._clouds: _Clouds = {}
        self._start: Context = {}
        self._end: Context = {}

    @classmethod
    def _make(
        cls, replica: Replica, values: _Values, clouds: _Clouds, start: Context, end: Context
    ) -> Delta:
        delta = cls.__new__(cls)
        delta.replica = replica
        delta._values = values
        delta._clouds = clouds
        delta._start = start
        delta._end = end
        return delta

    @property
    def range(self) -> tuple[Context, Context]:
        """``(start, end)``: the contexts the window starts after and ends at."""
        return dict(self._start), dict(self._end)

    def copy(self) -> Delta:
        """A copy that shares nothing mutable with this delta (records are shared)."""
        return Delta._make(
            self.replica,
            _copy_values(self._values),
            _copy_clouds(self._clouds),
            dict(self._start),
            dict(self._end),
        )

    def extract(self, remote_replica: Replica, remote_context: Mapping[Replica, int]) -> Delta:
        """This delta as a transfer for a remote: pruned to the replicas it knows.

        Values, clouds and both range ends keep only replicas in ``remote_context``, the
        remote's own replica left out: a requester that pushes the answer into its own
        generations must not get a window that claims its own clocks without their values.

        Args:
            remote_replica: The requester's replica.
            remote_context: The requester's context (its :meth:`State.clocks`).

        Returns:
            A new Delta.
        """
        carried = _known_but(remote_context, remote_replica)
        return Delta._make(
            self.replica,
            {r: dict(vals) for r, vals in self._values.items() if vals and r in carried},
            {r: set(cl) for r, cl in self._clouds.items() if cl and r in carried},
            {r: c for r, c in self._start.items() if r in carried},
            {r: c for r, c in self._end.items() if r in carried},
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delta):
            return NotImplemented
        return (
            self.replica == other.replica
            and _normal_values(self._values) == _normal_values(other._values)
            and _normal_clouds(self._clouds) == _normal_clouds(other._clouds)
            and self._start == other._start
            and self._end == other._end
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Delta(replica={self.replica!r}, range={self._start!r}->{self._end!r}, "
            f"values={_values_size(self._values)}, cloud_tags={_clouds_size(self._clouds)})"
        )


class Snapshot(_Payload):
    """A full state as extracted for one remote: its context, clouds and values.

    Built by :meth:`State.extract` and :meth:`Snapshot.from_wire`; merged with
    :meth:`State.merge`. It shares nothing mutable with the State it came from.

    Attributes:
        replica: The replica it was extracted from.
    """

    __slots__ = ("_context",)

    def __init__(self, replica: Replica) -> None:
        _check_replica(replica)
        self.replica: Replica = replica
        self._context: Context = {}
        self._clouds: _Clouds = {}
        self._values: _Values = {}

    @classmethod
    def _make(
        cls, replica: Replica, context: Context, clouds: _Clouds, values: _Values
    ) -> Snapshot:
        snap = cls.__new__(cls)
        snap.replica = replica
        snap._context = context
        snap._clouds = clouds
        snap._values = values
        return snap

    @property
    def context(self) -> Context:
        """The extracted context, restricted to the replicas the remote knows."""
        return dict(self._context)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.replica == other.replica
            and self._context == other._context
            and _normal_clouds(self._clouds) == _normal_clouds(other._clouds)
            and _normal_values(self._values) == _normal_values(other._values)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Snapshot(replica={self.replica!r}, context={self._context!r}, "
            f"values={_values_size(self._values)}, cloud_tags={_clouds_size(self._clouds)})"
        )


def merge_deltas(local: Delta, remote: Delta) -> Delta | None:
    """Merge two deltas whose ranges touch or overlap, as Phoenix's ``merge_deltas``.

    The ranges are contiguous when each one's end reaches the other's start
    (:func:`~crdt_state.clock.dominates_or_equal` both ways). The result spans both
    windows (lower bound of the starts, upper bound of the ends), unions the clouds and
    keeps the values neither side has seen removed: a local value the remote observed
    removed is dropped, and a remote value the local side removed is never resurrected.
    Per (tag replica, owner, topic, key) only the value with the larger clock stays.

    Args:
        local: The older window (its replica names the result).
        remote: The newer window.

    Returns:
        The merged delta, or None when the ranges are not contiguous.
    """
    if not (
        _clock.dominates_or_equal(remote._end, local._start)
        and _clock.dominates_or_equal(local._end, remote._start)
    ):
        return None
    lclouds, rclouds = local._clouds, remote._clouds
    lvalues, rvalues = local._values, remote._values
    values: _Values = {}
    for r in {*lvalues, *rvalues}:
        lv = lvalues.get(r, _EMPTY_DICT)
        rv = rvalues.get(r, _EMPTY_DICT)
        rcl = rclouds.get(r, _EMPTY_SET)
        lcl = lclouds.get(r, _EMPTY_SET)
        out = {c: rec for c, rec in lv.items() if c in rv or c not in rcl}
        added = False
        for c, rec in rv.items():
            if c not in lv and c not in lcl:
                out[c] = rec
                added = True
        if added and out:
            out = _latest_per_presence(out)
        if out:
            values[r] = out
    clouds: _Clouds = {}
    for r in {*lclouds, *rclouds}:
        merged = lclouds.get(r, _EMPTY_SET) | rclouds.get(r, _EMPTY_SET)
        if merged:
            clouds[r] = set(merged)
    return Delta._make(
        local.replica,
        values,
        clouds,
        _clock.lowerbound(local._start, remote._start),
        _clock.upperbound(local._end, remote._end),
    )


def _latest_per_presence(values: dict[int, Record]) -> dict[int, Record]:
    """Keep, per (owner, topic, key) of one replica, only the value with the largest clock."""
    newest: dict[tuple[Owner, Topic, Key], int] = {}
    drop: list[int] = []
    for c, rec in values.items():
        ident = (rec[1], rec[0], rec[2])
        seen = newest.get(ident)
        if seen is None:
            newest[ident] = c
        elif seen < c:
            drop.append(seen)
            newest[ident] = c
        else:
            drop.append(c)
    if not drop:
        return values
    for c in drop:
        del values[c]
    return values


ReplicaStatus: TypeAlias = Literal["up", "down"]


class State:
    """The replicated set of presences of one replica (one tracker shard).

    ``State(replica)`` starts empty with the local replica up and its clock at 0. Other
    replicas are admitted with :meth:`replica_up`; merges ignore replicas not admitted.

    A State is a mutable object with pure semantics: no I/O, no clock, no randomness, no
    global state. Methods mutate only the State they are called on and never their
    arguments; results are new lists in no specified order.

    Args:
        replica: The local replica's name (a str, an int or a flat tuple such as
            ``("node-a", vsn)``). Refs must never be reused for a new incarnation.

    Raises:
        TypeError: For a replica of another type.
    """

    __slots__ = (
        "_by_owner",
        "_by_topic",
        "_clouds",
        "_context",
        "_delta",
        "_down",
        "_own",
        "_replica",
        "_shared_keys",
        "_status",
        "_values",
    )

    def __init__(self, replica: Replica) -> None:
        _check_replica(replica)
        self._replica: Replica = replica
        self._context: Context = {replica: 0}
        self._clouds: _Clouds = {}
        self._status: dict[Replica, bool] = {replica: True}
        self._down: set[Replica] = set()
        self._own: dict[int, Record] = {}
        self._values: _Values = {replica: self._own}
        self._by_topic: dict[Topic, dict[Key, _Slot]] = {}
        # the local replica's values only: leave_owner is a local write
        self._by_owner: dict[Owner, _Slot] = {}
        # topic -> how many of its keys hold several presences (a list slot)
        self._shared_keys: dict[Topic, int] = {}
        self._delta: Delta = self._empty_delta()

    # ------------------------------------------------------------------ views

    @property
    def replica(self) -> Replica:
        """The local replica's name."""
        return self._replica

    @property
    def context(self) -> Context:
        """A copy of the causal context, replica -> clock (down replicas included)."""
        return dict(self._context)

    @property
    def clouds(self) -> dict[Replica, set[Tag]]:
        """A copy of the non-empty clouds, replica -> set of tags seen beyond the context."""
        return _tags_view(self._clouds)

    @property
    def replicas(self) -> dict[Replica, ReplicaStatus]:
        """Every known replica, the local one included, and whether it is up or down."""
        return {r: "up" if up else "down" for r, up in self._status.items()}

    @property
    def delta(self) -> Delta:
        """A copy of the pending delta: later changes to this State don't show in it."""
        return self._pending().copy()

    def __len__(self) -> int:
        """The number of values held, of every replica, down ones included."""
        return sum(map(len, self._values.values()))

    def local_count(self) -> int:
        """The number of values the local replica holds: its own presences. O(1)."""
        return len(self._own)

    def __repr__(self) -> str:
        return f"State(replica={self._replica!r}, context={self._context!r}, values={len(self)})"

    # ----------------------------------------------------------- local writes

    def join(
        self, owner: Owner, topic: Topic, key: Key, meta: Meta, *, checked: bool = False
    ) -> Entry:
        """Add a presence of the local replica, tagged with a new dot.

        Args:
            owner: What holds the presence.
            topic: Where it is.
            key: Who is present.
            meta: Its metadata, a JSON-able dict; stored as is, so don't mutate it after.
            checked: The caller already ran :func:`check_ids` on these ids (at its own
                public boundary): they are not checked again.

        Returns:
            The new Entry.

        Raises:
            DuplicatePresence: The local replica already holds (owner, topic, key).
            TypeError: For an owner, topic or key that is not a str or an int, or a meta
                that is not a dict.
        """
        # The hot path of every tracker: lookups and index updates are inlined, and so is
        # the test of check_ids (a call costs about 5% of a join); it raises the error.
        if not checked and not (
            (type(owner) is str or type(owner) is int)
            and (type(topic) is str or type(topic) is int)
            and (type(key) is str or type(key) is int)
        ):
            check_ids(owner, topic, key)
        if type(meta) is not dict:
            raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
        replica = self._replica
        by_topic = self._by_topic
        keys = by_topic.get(topic)
        slot = None if keys is None else keys.get(key)
        if slot is not None and (
            any(rec[1] == owner and rec[4] == replica for rec in slot)
            if isinstance(slot, list)
            else slot[1] == owner and slot[4] == replica
        ):
            raise DuplicatePresence(
                f"{replica!r} already tracks owner {owner!r} in topic {topic!r} as {key!r}"
            )
        context = self._context
        now = context[replica] + 1
        context[replica] = now
        if keys is not None:
            # Equal topics share one object: the one the topic's first record holds (a
            # topic decoded from each client's message is a new string every time).
            first = next(iter(keys.values()))
            topic = first[0][0] if isinstance(first, list) else first[0]
        record: Record = (topic, owner, key, meta, replica, now)
        self._own[now] = record
        if keys is None:
            by_topic[topic] = {key: record}
        elif slot is None:
            keys[key] = record
        elif isinstance(slot, list):
            slot.append(record)
        else:
            keys[key] = [slot, record]
            self._shared_keys[topic] = self._shared_keys.get(topic, 0) + 1
        by_owner = self._by_owner
        held = by_owner.get(owner)
        if held is None:
            by_owner[owner] = record
        elif isinstance(held, list):
            held.append(record)
        else:
            by_owner[owner] = [held, record]
        delta = self._delta
        delta._values[replica][now] = record
        delta._clouds[replica].add(now)
        return _tuple_new(Entry, (topic, owner, key, meta, (replica, now)))

    def leave(self, owner: Owner, topic: Topic, key: Key) -> Entry | None:
        """Remove a presence of the local replica; a no-op when it is absent.

        Args:
            owner: What holds the presence.
            topic: Where it is.
            key: Who is present.

        Returns:
            The removed Entry, or None when there was none.
        """
        record = self._find(self._replica, owner, topic, key)
        if record is None:
            return None
        self._leave_own(record)
        return entry_of(record)

    def leave_owner(self, owner: Owner) -> list[Entry]:
        """Remove every presence of ``owner`` held by the local replica.

        Args:
            owner: What holds the presences.

        Returns:
            The removed entries.
        """
        slot = self._by_owner.get(owner)
        if slot is None:
            return []
        replica = self._replica
        if not isinstance(slot, list):
            if slot[4] != replica:
                return []
            topic, _, key, meta, _, was = slot
            keys = self._by_topic[topic]
            if not isinstance(keys[key], list):
                # The common case, inlined: the owner's only presence, alone on its key.
                del keys[key]
                if not keys:
                    del self._by_topic[topic]
                del self._by_owner[owner]
                del self._own[was]
                context = self._context
                now = context[replica] + 1
                context[replica] = now
                delta = self._delta
                delta._values[replica].pop(was, None)
                cloud = delta._clouds[replica]
                cloud.add(was)
                cloud.add(now)
                return [_tuple_new(Entry, (topic, owner, key, meta, (replica, was)))]
        records = [slot] if not isinstance(slot, list) else list(slot)
        left: list[Entry] = []
        for record in records:
            if record[4] == replica:
                self._leave_own(record)
                left.append(entry_of(record))
        return left

    def leave_join(
        self, owner: Owner, topic: Topic, key: Key, meta: Meta, *, checked: bool = False
    ) -> Entry:
        """Update a presence of the local replica: its old tag is removed, a new one added.

        Readers never see the presence missing in between. Remotes see a leave of the old
        meta and a join of the new one in the same merge, as in Phoenix.

        Args:
            owner: What holds the presence.
            topic: Where it is.
            key: Who is present.
            meta: The new metadata.
            checked: The caller already ran :func:`check_ids` on these ids.

        Returns:
            The new Entry.

        Raises:
            PresenceNotFound: The local replica holds no such presence (a
                :class:`DuplicatePresence`).
            TypeError: For an owner, topic or key that is not a str or an int, or a meta
                that is not a dict.
        """
        if not checked:
            check_ids(owner, topic, key)
        if type(meta) is not dict:
            raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
        record = self._find(self._replica, owner, topic, key)
        if record is None:
            raise PresenceNotFound(
                f"{self._replica!r} tracks no owner {owner!r} in topic {topic!r} as {key!r}"
            )
        self._leave_own(record)
        return entry_of(self._add_own(owner, topic, key, meta))

    # ---------------------------------------------------------------- reading

    def get(self, owner: Owner, topic: Topic, key: Key) -> Entry | None:
        """The presence of (owner, topic, key), the local replica's first, else any.

        Values of down replicas are included.

        Returns:
            The Entry, or None.
        """
        slot = self._slot(topic, key)
        if slot is None:
            return None
        if not isinstance(slot, list):
            return entry_of(slot) if slot[1] == owner else None
        found: Record | None = None
        replica = self._replica
        for record in slot:
            if record[1] == owner:
                if record[4] == replica:
                    return entry_of(record)
                if found is None:
                    found = record
        return None if found is None else entry_of(found)

    def get_by_owner(self, owner: Owner) -> list[Entry]:
        """Every presence held by ``owner``, of every replica, down ones included.

        The local replica's come from an index; the other replicas' values are walked
        (time in proportion to everything held), as Phoenix's ``get_by_pid`` matches
        its whole values table: owners are indexed for :meth:`leave_owner`, which only
        the local replica does, and an index of every remote owner cost about 30 bytes
        per presence held and a dict insert per value merged.
        """
        slot = self._by_owner.get(owner)
        local = [] if slot is None else [slot] if not isinstance(slot, list) else slot
        out = [entry_of(record) for record in local]
        replica = self._replica
        for r, vals in self._values.items():
            if r != replica:
                out.extend(entry_of(record) for record in vals.values() if record[1] == owner)
        return out

    def get_by_topic(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every visible presence of a topic as ``(key, meta)``; down replicas are hidden.

        Costs time in proportion to the topic's presences.
        """
        keys = self._by_topic.get(topic)
        if keys is None:
            return []
        down = self._down
        if not down and topic not in self._shared_keys:
            # The common case: one presence per key and every replica up.
            return [(key, record[3]) for key, record in keys.items()]  # type: ignore[misc]
        out: list[tuple[Key, Meta]] = []
        append = out.append
        for key, slot in keys.items():
            if not isinstance(slot, list):
                if not down or slot[4] not in down:
                    append((key, slot[3]))
            else:
                for record in slot:
                    if not down or record[4] not in down:
                        append((key, record[3]))
        return out

    def get_by_key(self, topic: Topic, key: Key) -> list[tuple[Owner, Meta]]:
        """Every visible presence of ``key`` in ``topic`` as ``(owner, meta)``."""
        slot = self._slot(topic, key)
        if slot is None:
            return []
        down = self._down
        records = (slot,) if not isinstance(slot, list) else slot
        return [(rec[1], rec[3]) for rec in records if not down or rec[4] not in down]

    def online_list(self) -> list[Entry]:
        """Every visible presence: values of replicas that are up."""
        down = self._down
        return [
            entry_of(rec)
            for r, vals in self._values.items()
            if r not in down
            for rec in vals.values()
        ]

    def online_count(self) -> int:
        """How many presences :meth:`online_list` would list, without building them.

        O(replicas): a count per replica, the values are not walked.
        """
        down = self._down
        return sum(len(vals) for r, vals in self._values.items() if r not in down)

    def clocks(self) -> tuple[Replica, Context]:
        """``(replica, context)`` with down replicas left out of the context.

        A down replica in the clock would make this replica look ahead forever and keep
        peers asking for transfers that cannot satisfy them (phoenix_pubsub#135).
        """
        down = self._down
        return self._replica, {r: c for r, c in self._context.items() if r not in down}

    # --------------------------------------------------------- pending delta

    def has_delta(self) -> bool:
        """Whether the pending delta holds anything: a local change or a relayed remove."""
        return any(self._delta._clouds.values())

    def delta_size(self) -> int:
        """The size of the pending delta (:meth:`Delta.size`) without copying it.

        O(replicas), unlike ``state.delta.size()``, which copies the delta first.
        """
        return self._delta.size()

    def take_delta(self) -> Delta:
        """Hand over the pending delta (no copy) and start a new, empty one."""
        delta = self._pending()
        self._delta = self._empty_delta()
        return delta

    def reset_delta(self) -> None:
        """Drop the pending delta and start a new, empty one."""
        self._delta = self._empty_delta()

    # --------------------------------------------------------------- transfer

    def extract(self, remote_replica: Replica, remote_context: Mapping[Replica, int]) -> Snapshot:
        """The full state as a transfer for a remote, pruned to the replicas it knows.

        Only replicas in ``remote_context`` are included (their context, clouds and
        values), and the remote's own values and cloud tags are left out: it is the
        authority on its own values. A snapshot is meant for that remote alone. A replica
        the remote does not know is never transferred: the remote learns it from that
        replica's own heartbeat first.

        Args:
            remote_replica: The requester's replica.
            remote_context: The requester's context (its :meth:`clocks`).

        Returns:
            A Snapshot sharing nothing mutable with this State.
        """
        carried = _known_but(remote_context, remote_replica)
        return Snapshot._make(
            self._replica,
            {r: c for r, c in self._context.items() if r in remote_context},
            {r: set(cl) for r, cl in self._clouds.items() if cl and r in carried},
            {r: dict(vals) for r, vals in self._values.items() if vals and r in carried},
        )

    def merge(self, remote: Snapshot | Delta) -> tuple[list[Entry], list[Entry]]:
        """Merge a snapshot or a delta; return what became visible and what stopped being.

        Values, clouds and context entries of replicas not known here (no
        :meth:`replica_up`) are ignored, and so is anything of the local replica. Held
        remote values whose tags the remote has seen but does not hold leave, and each
        such observed remove is relayed in the pending delta. Unseen remote values join
        unless this replica holds a newer value of the same replica for the same
        (owner, topic, key). A delta costs time in proportion to its size. A payload of
        :data:`~crdt_state.bulk.BULK_SIZE` values or more is merged with the cyclic
        garbage collector paused (see :func:`~crdt_state.bulk.gc_paused`).

        Args:
            remote: A :class:`Snapshot` or a :class:`Delta`.

        Returns:
            ``(joins, leaves)``: entries that became visible and entries that stopped
            being visible (values of down replicas change silently).
        """
        if isinstance(remote, Delta):
            context = None
        elif isinstance(remote, Snapshot):
            context = remote._context
        else:
            raise TypeError(f"merge takes a Snapshot or a Delta, not {type(remote).__name__}")
        if _values_size(remote._values) < BULK_SIZE:
            return self._merge(remote._values, remote._clouds, context)
        with gc_paused():
            return self._merge(remote._values, remote._clouds, context)

    # --------------------------------------------------------------- replicas

    def replica_up(self, replica: Replica) -> list[Entry]:
        """Admit a replica, or mark a down one up again.

        Returns:
            The joins: every held value of a replica that was down; ``[]`` for a new
            replica or one already up.

        Raises:
            StateError: For the local replica.
        """
        _check_replica(replica)
        self._check_remote(replica)
        status = self._status.get(replica)
        if status is None:
            self._context[replica] = 0
            self._status[replica] = True
            return []
        if status:
            return []
        self._status[replica] = True
        self._down.discard(replica)
        held = self._values.get(replica, _EMPTY_DICT)
        if len(held) >= BULK_SIZE:
            with gc_paused():
                return [entry_of(rec) for rec in held.values()]
        return [entry_of(rec) for rec in held.values()]

    def replica_down(self, replica: Replica) -> list[Entry]:
        """Mark a replica down: its values stay held but hidden.

        Returns:
            The leaves: every held value of a replica that was up; ``[]`` for one
            already down or unknown.

        Raises:
            StateError: For the local replica.
        """
        self._check_remote(replica)
        if not self._status.get(replica):
            return []
        self._status[replica] = False
        self._down.add(replica)
        held = self._values.get(replica, _EMPTY_DICT)
        if len(held) >= BULK_SIZE:
            with gc_paused():
                return [entry_of(rec) for rec in held.values()]
        return [entry_of(rec) for rec in held.values()]

    def remove_down_replicas(self, replica: Replica) -> list[Entry]:
        """Forget a replica entirely: its values, context, clouds and status.

        Its values are also pruned from the pending delta. Admitting the same replica
        again starts it from zero, which is why replica refs are never reused.

        Returns:
            Leaves of values that were still visible (none when it was down).

        Raises:
            StateError: For the local replica.
        """
        self._check_remote(replica)
        status = self._status.pop(replica, None)
        if status is None:
            return []
        self._down.discard(replica)
        self._context.pop(replica, None)
        self._clouds.pop(replica, None)
        held = self._values.pop(replica, None) or {}
        for record in held.values():
            self._unindex(record)
        delta = self._delta
        delta._values.pop(replica, None)
        delta._clouds.pop(replica, None)
        delta._start.pop(replica, None)
        delta._end.pop(replica, None)
        return [entry_of(rec) for rec in held.values()] if status else []

    def compact(self) -> None:
        """Fold every cloud's contiguous clocks into the context.

        Merges already compact the replicas they touch, so this is rarely needed.
        """
        for replica in list(self._clouds):
            self._compact(replica)

    # ---------------------------------------------------------------- private

    def _pending(self) -> Delta:
        """The pending delta with its range brought up to date.

        Local writes don't store the range's end each time: it is always the local
        clock, set here whenever the pending delta is read.
        """
        delta = self._delta
        delta._end[self._replica] = self._context[self._replica]
        return delta

    def _empty_delta(self) -> Delta:
        # The local replica's containers always exist in the pending delta (hot paths
        # index them directly); equality and copies ignore empty containers.
        replica = self._replica
        now = self._context[replica]
        return Delta._make(replica, {replica: {}}, {replica: set()}, {replica: now}, {replica: now})

    def _check_remote(self, replica: Replica) -> None:
        if replica == self._replica:
            raise StateError(f"{replica!r} is the local replica")

    def _slot(self, topic: Topic, key: Key) -> _Slot | None:
        keys = self._by_topic.get(topic)
        return None if keys is None else keys.get(key)

    def _find(self, replica: Replica, owner: Owner, topic: Topic, key: Key) -> Record | None:
        """The value of ``replica`` for (owner, topic, key), if held."""
        keys = self._by_topic.get(topic)
        if keys is None:
            return None
        slot = keys.get(key)
        if slot is None:
            return None
        if not isinstance(slot, list):
            return slot if slot[1] == owner and slot[4] == replica else None
        for record in slot:
            if record[1] == owner and record[4] == replica:
                return record
        return None

    def _bump(self) -> int:
        """Consume the local replica's next dot and record it in the pending delta."""
        replica = self._replica
        now = self._context[replica] + 1
        self._context[replica] = now
        delta = self._delta
        delta._clouds[replica].add(now)
        return now

    def _add_own(self, owner: Owner, topic: Topic, key: Key, meta: Meta) -> Record:
        now = self._bump()
        replica = self._replica
        record: Record = (topic, owner, key, meta, replica, now)
        self._own[now] = record
        self._index(record)
        self._delta._values[replica][now] = record
        return record

    def _leave_own(self, record: Record) -> None:
        """Remove a local value and consume a dot, both recorded in the pending delta."""
        replica, was = record[4], record[5]
        del self._own[was]
        self._unindex(record)
        context = self._context
        now = context[replica] + 1
        context[replica] = now
        delta = self._delta
        delta._values[replica].pop(was, None)
        cloud = delta._clouds[replica]
        cloud.add(was)
        cloud.add(now)

    def _index(self, record: Record) -> None:
        topic, owner, key = record[0], record[1], record[2]
        keys = self._by_topic.get(topic)
        if keys is None:
            self._by_topic[topic] = {key: record}
        else:
            slot = keys.get(key)
            if slot is None:
                keys[key] = record
            elif not isinstance(slot, list):
                keys[key] = [slot, record]
                self._shared_keys[topic] = self._shared_keys.get(topic, 0) + 1
            else:
                slot.append(record)
        if record[4] != self._replica:
            return  # the owner index holds the local replica's values only
        by_owner = self._by_owner
        slot = by_owner.get(owner)
        if slot is None:
            by_owner[owner] = record
        elif not isinstance(slot, list):
            by_owner[owner] = [slot, record]
        else:
            slot.append(record)

    def _unindex(self, record: Record) -> None:
        topic, owner, key = record[0], record[1], record[2]
        keys = self._by_topic[topic]
        slot = keys[key]
        if not isinstance(slot, list):
            del keys[key]
            if not keys:
                del self._by_topic[topic]
        else:
            slot.remove(record)
            if len(slot) == 1:
                keys[key] = slot[0]
                shared = self._shared_keys
                if shared[topic] == 1:
                    del shared[topic]
                else:
                    shared[topic] -= 1
        if record[4] != self._replica:
            return
        by_owner = self._by_owner
        slot = by_owner[owner]
        if not isinstance(slot, list):
            del by_owner[owner]
        else:
            slot.remove(record)
            if len(slot) == 1:
                by_owner[owner] = slot[0]

    def _compact(self, replica: Replica) -> None:
        cloud = self._clouds.get(replica)
        if not cloud:
            return
        # Clouds only ever hold clocks above the context (merges add no others and a
        # snapshot that raises the context purges what it covers), so this costs what
        # it folds, not the cloud's size.
        now = self._context[replica]
        size = len(cloud)
        if now + 1 in cloud and now + size in cloud and max(cloud) == now + size:
            # n distinct clocks above ``now`` whose largest is now + n: all contiguous,
            # all fold (the parts of a transfer come this way), in one C-level pass.
            self._context[replica] = now + size
            del self._clouds[replica]
            return
        while now + 1 in cloud:
            now += 1
            cloud.remove(now)
        self._context[replica] = now
        if not cloud:
            del self._clouds[replica]

    def _admit_bulk(
        self,
        replica: Replica,
        theirs: dict[int, Record],
        held: dict[int, Record],
        joins: list[Entry] | None,
    ) -> list[Record]:
        """Admit unseen values whose keys no value holds yet in their topics, in bulk.

        Indexes by topic in one Python pass and does everything else (the held values,
        the joins) in C-level passes. Remote values are not indexed by owner.

        Returns:
            The records whose (topic, key) some value already holds: the caller admits
            them one by one, as any other merge does.
        """
        by_topic = self._by_topic
        fast: list[Record] = []
        slow: list[Record] = []
        keep, defer = fast.append, slow.append
        for record in theirs.values():
            topic, key = record[0], record[2]
            keys = by_topic.get(topic)
            if keys is None:
                by_topic[topic] = {key: record}
            elif key in keys:
                defer(record)
                continue
            else:
                keys[key] = record
            keep(record)
        if len(fast) == len(theirs):
            held.update(theirs)
        else:
            held.update(zip(map(_CLOCK, fast), fast, strict=False))
        if joins is not None:
            joins.extend(
                map(
                    _ENTRY,
                    zip(
                        map(_TOPIC, fast),
                        map(_OWNER, fast),
                        map(_KEY, fast),
                        map(_META, fast),
                        zip(repeat(replica), map(_CLOCK, fast)),
                        strict=False,
                    ),
                )
            )
        return slow

    def _merge(
        self, values: _Values, clouds: _Clouds, context: Context | None
    ) -> tuple[list[Entry], list[Entry]]:
        local = self._replica
        known = self._context
        down = self._down
        joins: list[Entry] = []
        leaves: list[Entry] = []
        relay = self._delta._clouds

        # 1. Observed removes: held remote values whose tags the remote has seen and
        #    does not hold. A delta's causal information is its clouds alone; a snapshot
        #    has a context too, so every held value of a replica it covers is checked.
        seen_by_remote: Iterable[Replica] = clouds if context is None else {*context, *clouds}
        for r in seen_by_remote:
            if r == local or r not in known:
                continue
            held = self._values.get(r)
            if not held:
                continue
            theirs = values.get(r, _EMPTY_DICT)
            cloud = clouds.get(r, _EMPTY_SET)
            gone: Iterable[int]
            if context is None:
                # in C, over the smaller side: a heartbeat relays hundreds of tags
                gone = held.keys() & cloud
                if gone and theirs:
                    gone -= theirs.keys()
            else:
                upto = context.get(r, 0)
                # held minus theirs in one C-level pass (a full state holds most of it)
                gone = [c for c in held.keys() - theirs.keys() if c <= upto or c in cloud]
            if not gone:
                continue
            mine = relay.get(r)
            if mine is None:
                mine = relay[r] = set()
            visible = r not in down
            for c in gone:
                record = held.pop(c)
                self._unindex(record)
                mine.add(c)
                if visible:
                    leaves.append(entry_of(record))

        # 2. Admissions: unseen values of known remote replicas, newest per presence.
        cancelled: set[Tag] = set()
        by_topic = self._by_topic
        for r, theirs in values.items():
            if r == local or r not in known or not theirs:
                continue
            upto = known[r]
            cloud = self._clouds.get(r, _EMPTY_SET)
            held = self._values.get(r)
            if held is None:
                held = self._values[r] = {}
            if max(theirs) <= upto:
                continue  # all seen (a full state whose parts were merged as they came)
            visible = r not in down
            items: Iterable[tuple[int, Record]] = theirs.items()
            if (
                len(theirs) >= _BULK_MIN
                and min(theirs) > upto
                and cloud.isdisjoint(theirs)
                and held.keys().isdisjoint(theirs)
            ):
                # Every value is unseen (a transfer's part, a new replica's state):
                # admitted in bulk, only keys already held go the way below.
                slow = self._admit_bulk(r, theirs, held, joins if visible else None)
                if not slow:
                    continue
                items = ((rec[5], rec) for rec in slow)
            for c, record in items:
                if c <= upto or c in cloud or c in held:
                    continue
                topic, owner, key, meta, _, _ = record
                keys = by_topic.get(topic)
                if keys is not None and key in keys:
                    # Another value holds this key: maybe an older one of this replica.
                    older = self._find(r, owner, topic, key)
                    if older is not None:
                        was = older[5]
                        if was > c:
                            continue  # a stale value never rolls back a newer one
                        del held[was]
                        self._unindex(older)
                        if was <= upto or was in cloud:
                            if visible:
                                leaves.append(entry_of(older))
                        else:
                            cancelled.add((r, was))  # admitted earlier in this same merge
                    held[c] = record
                    self._index(record)
                else:
                    # The common case, inlined: a key nobody holds in this topic.
                    held[c] = record
                    if keys is None:
                        by_topic[topic] = {key: record}
                    else:
                        keys[key] = record
                if visible:
                    joins.append(_tuple_new(Entry, (topic, owner, key, meta, (r, c))))
        if cancelled:
            joins = [entry for entry in joins if entry.tag not in cancelled]

        # 3. Causal information: union the clouds, raise the context (snapshots only),
        #    then fold what became contiguous into the context.
        touched: set[Replica] = set()
        if context is not None:
            for r, upto in context.items():
                if r != local and r in known and upto > known[r]:
                    known[r] = upto
                    touched.add(r)
                    covered = self._clouds.get(r)
                    if covered:
                        covered.difference_update([c for c in covered if c <= upto])
                        if not covered:
                            del self._clouds[r]
        for r, theirs_cloud in clouds.items():
            if r == local or r not in known or not theirs_cloud:
                continue
            upto = known[r]
            fresh = [c for c in theirs_cloud if c > upto]
            if fresh:
                mine_cloud = self._clouds.get(r)
                if mine_cloud is None:
                    self._clouds[r] = set(fresh)
                else:
                    mine_cloud.update(fresh)
                touched.add(r)
        for r in touched:
            self._compact(r)
        return joins, leaves
