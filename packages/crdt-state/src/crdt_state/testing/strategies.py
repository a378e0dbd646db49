"""Hypothesis strategies for the parts of a presence and for local writes.

Owners, topics and keys are drawn from a few values each, so that writes often hit the
same presence; metas are small JSON-able dicts that JSON carries back equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from crdt_state import Key, Meta, Owner, Replica, Topic
from crdt_state.testing.model import Join, Leave, LeaveOwner, Operation, Update

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
