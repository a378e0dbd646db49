"""Causal contexts and clocks: a port of ``Phoenix.Tracker.Clock``. Pure.

A *context* maps a replica to the highest clock ``n`` such that all of that replica's dots
``1..n`` have been observed (a version vector). A *clock* is a pair ``(replica, context)``
and a *clockset* a list of clocks. The tracker samples the clocks its peers send in
heartbeats into a clockset and asks the replicas whose clocks dominate its own for a
transfer. Every function here returns new containers and never mutates its arguments.

The semantics, including the asymmetric ones, are Phoenix's on purpose:
:func:`dominates` ignores keys found only in its first argument, :func:`dominates_or_equal`
ignores keys found only in its second, and :func:`lowerbound` keeps one-sided keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from crdt_state._types import Context, Replica

__all__ = [
    "Clock",
    "append_clock",
    "clockset_replicas",
    "dominates",
    "dominates_or_equal",
    "filter_replicas",
    "lowerbound",
    "replicas",
    "upperbound",
]

Clock = tuple[Replica, Mapping[Replica, int]]
"""A replica and its context, as sent in heartbeats."""


def dominates(c1: Mapping[Replica, int], c2: Mapping[Replica, int]) -> bool:
    """Whether ``c1`` has seen everything ``c2`` has.

    False when ``c1`` has fewer replicas than ``c2``; otherwise true iff for every replica
    of ``c2``, ``c1``'s clock (0 when absent) is at least ``c2``'s. Reflexive.

    Args:
        c1: The context that may dominate.
        c2: The context compared against.

    Returns:
        True when ``c1`` dominates ``c2``.
    """
    if len(c1) < len(c2):
        return False
    get = c1.get
    return all(get(replica, 0) >= clock for replica, clock in c2.items())


def dominates_or_equal(c1: Mapping[Replica, int], c2: Mapping[Replica, int]) -> bool:
    """Whether ``c1`` is at least ``c2`` on every replica of ``c1``.

    Both empty gives True; ``c1`` empty and ``c2`` not gives False; otherwise true iff for
    every replica of ``c1``, ``c1``'s clock is at least ``c2``'s (0 when absent). Replicas
    only in ``c2`` are ignored. Used to check that delta ranges touch or overlap.

    Args:
        c1: The context that may dominate.
        c2: The context compared against.

    Returns:
        True when ``c1`` dominates or equals ``c2`` on ``c1``'s replicas.
    """
    if not c1:
        return not c2
    get = c2.get
    return all(clock >= get(replica, 0) for replica, clock in c1.items())


def upperbound(c1: Mapping[Replica, int], c2: Mapping[Replica, int]) -> Context:
    """The replica-wise maximum of two contexts, keeping replicas found on either side.

    Args:
        c1: A context.
        c2: Another context.

    Returns:
        A new context.
    """
    out = dict(c1)
    for replica, clock in c2.items():
        mine = out.get(replica)
        if mine is None or clock > mine:
            out[replica] = clock
    return out


def lowerbound(c1: Mapping[Replica, int], c2: Mapping[Replica, int]) -> Context:
    """The replica-wise minimum on shared replicas, keeping one-sided replicas unchanged.

    As in Phoenix, ``lowerbound({}, c) == c``, not ``{}``: a delta range's start keeps the
    replicas that only one of two merged deltas covers.

    Args:
        c1: A context.
        c2: Another context.

    Returns:
        A new context.
    """
    out = dict(c1)
    for replica, clock in c2.items():
        mine = out.get(replica)
        if mine is None or clock < mine:
            out[replica] = clock
    return out


def filter_replicas(c: Mapping[Replica, int], keep: Iterable[Replica]) -> Context:
    """The context restricted to the given replicas (unknown ones are skipped).

    Args:
        c: A context.
        keep: The replicas to keep.

    Returns:
        A new context.
    """
    return {replica: c[replica] for replica in keep if replica in c}


def replicas(c: Mapping[Replica, int]) -> list[Replica]:
    """The replicas of a context.

    Args:
        c: A context.

    Returns:
        Its replicas, in the context's order.
    """
    return list(c)


def clockset_replicas(clockset: Iterable[Clock]) -> list[Replica]:
    """The replicas of the clocks in a clockset.

    Args:
        clockset: Clocks as ``(replica, context)`` pairs.

    Returns:
        Their replicas, in order.
    """
    return [replica for replica, _ in clockset]


def append_clock(clockset: Sequence[Clock], clock: Clock) -> list[Clock]:
    """Add a sampled clock to a clockset, keeping only clocks that are not dominated.

    An empty context leaves the set unchanged. If the new context dominates the upper
    bound of the set it replaces the whole set; if that upper bound dominates it, it is
    not added. Otherwise the members it dominates are dropped and it is added unless
    every remaining member dominates it. As in Phoenix the result is not guaranteed
    minimal.

    Args:
        clockset: The current clockset.
        clock: A ``(replica, context)`` pair.

    Returns:
        A new clockset.
    """
    node, context = clock
    if not context:
        return list(clockset)
    big: Context = {}
    for _, member in clockset:
        big = upperbound(big, member)
    if dominates(context, big):
        return [(node, context)]
    if dominates(big, context):
        return list(clockset)
    kept: list[Clock] = []
    insert = False
    for other in clockset:
        if dominates(context, other[1]):
            insert = True
        else:
            kept.append(other)
            insert = insert or not dominates(other[1], context)
    if insert:
        kept.insert(0, (node, context))
    return kept
