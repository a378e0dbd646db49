"""Type aliases shared by the crdt_state modules. Pure."""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

Replica: TypeAlias = "str | int | tuple[str | int, ...]"
"""A replica's name: a string, an integer or a flat tuple of them, e.g. ``("node-a", vsn)``.

Hashable and orderable (within one kind), and it crosses the wire unchanged (a tuple
travels as a list and is read back as a tuple)."""

Owner: TypeAlias = "str | int"
"""What holds a presence (a connection, a task): Phoenix's pid."""

Topic: TypeAlias = "str | int"
"""Where a presence is, e.g. ``"room:42"``."""

Key: TypeAlias = "str | int"
"""Who is present, e.g. a user id."""

Meta: TypeAlias = "dict[str, Any]"
"""A presence's metadata: a JSON-able dict, never mutated once stored."""

Tag: TypeAlias = "tuple[Replica, int]"
"""A dot: the replica that made an add and its clock at that moment. Unique per add."""

Context: TypeAlias = "dict[Replica, int]"
"""A version vector: replica -> highest clock ``n`` with all dots ``1..n`` observed."""

Record: TypeAlias = "tuple[Topic, Owner, Key, Meta, Replica, int]"
"""How a value is stored inside states and deltas: (topic, owner, key, meta, replica,
clock). A flat tuple of immutable parts costs less memory than an Entry with a tag tuple
and is left alone by the cyclic garbage collector; Entry objects are built on output."""


class Entry(NamedTuple):
    """One presence: what lists, joins and leaves hold.

    Attributes:
        topic: Where the presence is.
        owner: What holds it (a connection, a task).
        key: Who is present.
        meta: Its metadata (shared, never copied: do not mutate it).
        tag: ``(replica, clock)`` of the add that created it.
    """

    topic: Topic
    owner: Owner
    key: Key
    meta: Meta
    tag: Tag


_tuple_new = tuple.__new__


def entry_of(record: Record) -> Entry:
    """Build the public Entry of a stored record."""
    # tuple.__new__ skips the Python-level NamedTuple constructor: about twice as fast.
    topic, owner, key, meta, replica, clock = record
    return _tuple_new(Entry, (topic, owner, key, meta, (replica, clock)))


def is_id(value: object) -> bool:
    """Whether ``value`` may be an owner, topic or key: a str or an int, not a bool."""
    kind = type(value)
    return kind is str or kind is int


def is_replica(value: object) -> bool:
    """Whether ``value`` may name a replica: a str, an int, or a non-empty flat tuple."""
    kind = type(value)
    if kind is str or kind is int:
        return True
    if isinstance(value, tuple):
        return len(value) > 0 and all(is_id(part) for part in value)
    return False
