"""Delta generations: a port of ``Phoenix.Tracker.DeltaGeneration``. Pure.

A replica keeps a few deltas of growing windows (by default up to 100, 1,000 and 10,000
values plus cloud tags) built from every delta it sends or merges. When a peer that fell
behind asks for a transfer, the smallest window that covers the peer's gap is sent
instead of the full state; only when none does is the full state extracted.

Unlike Phoenix's (and :func:`~crdt_state.state.merge_deltas`, which stays the reference),
a push folds the delta into each generation in place, in time proportional to the delta
rather than to the generation: a node in a busy cluster pushes every heartbeat it
receives, and copying generations of up to 10,000 values on each was more than half of
what a heartbeat cost to receive. Each generation keeps an index, per replica, of the
tag of its value for every (owner, topic, key), so that "only the newest value per
presence" needs no scan either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crdt_state import clock as _clock
from crdt_state._types import Key, Owner, Replica, Topic
from crdt_state.state import (
    _EMPTY_SET,
    Delta,
    Snapshot,
    State,
    _clouds_size,
)

__all__ = ["DeltaGenerations"]


_Index = dict[Replica, dict[tuple[Owner, Topic, Key], int]]
"""Per replica, the tag (clock) of a generation's value for each (owner, topic, key)."""


class DeltaGenerations:
    """A list of deltas over growing windows, each capped in size, smallest first.

    Args:
        max_sizes: The cap of each generation (values plus cloud tags), ascending.

    Raises:
        ValueError: For an empty, non-positive or non-ascending list of caps.
    """

    __slots__ = ("_gens", "_indexes", "max_sizes")

    def __init__(self, max_sizes: Sequence[int] = (100, 1000, 10000)) -> None:
        sizes = tuple(max_sizes)
        if not sizes or any(type(s) is not int or s < 1 for s in sizes):
            raise ValueError(f"max_sizes must be positive ints, not {max_sizes!r}")
        if list(sizes) != sorted(sizes):
            raise ValueError(f"max_sizes must be ascending, not {max_sizes!r}")
        self.max_sizes: tuple[int, ...] = sizes
        # each generation is owned here (never shared with a caller or another
        # generation), so that a push may change it in place; _indexes[i] is _gens[i]'s
        self._gens: list[Delta] = []
        self._indexes: list[_Index] = []

    @property
    def generations(self) -> list[Delta]:
        """Copies of the generations, smallest window first (empty until the first push)."""
        return [gen.copy() for gen in self._gens]

    def sizes(self) -> list[int]:
        """Each generation's :meth:`~crdt_state.Delta.size`, smallest window first."""
        return [gen.size() for gen in self._gens]

    def push(self, state: State, delta: Delta) -> None:
        """Fold a delta that was sent or merged into every generation.

        With no generations yet, each starts as a copy of ``state``'s pending delta. Each
        generation merges ``delta`` when their ranges are contiguous; a generation whose
        merge would exceed its cap takes the previous (smaller) generation's result
        instead, so the windows slide. A non-contiguous delta leaves a generation as is.
        The result is :func:`~crdt_state.state.merge_deltas`'s, computed in place: in
        time proportional to ``delta``, plus a copy of a smaller generation when a
        window slides.

        Unlike Phoenix, a generation never holds more than its cap: when even the
        previous result is too big (``delta`` alone exceeds it), the generation becomes
        an empty window ending where the merge would end, and a remote behind it gets
        the full state, which is smaller than such a delta (no cloud tag per value).
        A delta with more cloud tags than a cap is not merged into that generation at
        all, since the result could not fit.

        Args:
            state: The State the generations belong to.
            delta: The delta just sent or merged.
        """
        if not self._gens:
            start = state.delta  # a copy already: the first generation takes it
            index = _index_of(start)
            rest = range(len(self.max_sizes) - 1)
            self._gens = [start, *(start.copy() for _ in rest)]
            self._indexes = [index, *(_copy_index(index) for _ in rest)]
        tags = _clouds_size(delta._clouds)
        gens: list[Delta] = []
        indexes: list[_Index] = []
        # the previous generation's merge result; `owned` when nothing else holds it
        prev, prev_index, owned = delta, None, False
        for gen, index, cap in zip(self._gens, self._indexes, self.max_sizes, strict=True):
            contiguous = _clock.dominates_or_equal(
                delta._end, gen._start
            ) and _clock.dominates_or_equal(gen._end, delta._start)
            if not contiguous:
                gens.append(gen)
                indexes.append(index)
                prev, prev_index, owned = gen, index, False
                continue
            merged = tags <= cap
            if merged:
                _merge_into(gen, index, delta)
                if gen.size() <= cap:
                    gens.append(gen)
                    indexes.append(index)
                    prev, prev_index, owned = gen, index, False
                    continue
            if prev.size() <= cap:
                if owned:
                    assert prev_index is not None
                    gens.append(prev)
                    indexes.append(prev_index)
                else:
                    gens.append(prev.copy())
                    copied = _index_of(prev) if prev_index is None else _copy_index(prev_index)
                    indexes.append(copied)
            else:
                end = _clock.upperbound(gen._end, delta._end)
                gens.append(Delta._make(gen.replica, {}, {}, dict(end), end))
                indexes.append({})
            if merged:
                # too big for this cap: the next generation may take it as is
                prev, prev_index, owned = gen, index, True
            elif owned:
                owned = False  # handed over above, unless it was too big
        self._gens = gens
        self._indexes = indexes

    def extract(
        self, state: State, remote_replica: Replica, remote_context: Mapping[Replica, int]
    ) -> Delta | Snapshot:
        """The smallest generation that brings a remote up to date, else the full state.

        A generation fits when, restricted to the remote's replicas, its window is not
        empty, the remote has everything before the window, and misses something in it.

        Args:
            state: The State the generations belong to.
            remote_replica: The requester's replica.
            remote_context: The requester's context (its :meth:`State.clocks`).

        Returns:
            A pruned :class:`Delta`, or a :class:`Snapshot` of ``state``.
        """
        known = list(remote_context)
        for gen in self._gens:
            start = _clock.filter_replicas(gen._start, known)
            end = _clock.filter_replicas(gen._end, known)
            if (
                not _clock.dominates_or_equal(start, end)
                and _clock.dominates_or_equal(remote_context, start)
                and not _clock.dominates(remote_context, end)
            ):
                return gen.extract(remote_replica, remote_context)
        return state.extract(remote_replica, remote_context)

    def remove_down_replicas(self, replica: Replica) -> None:
        """Prune a permanently down replica from every generation.

        Without this its values would come back from a generation (phoenix_pubsub#60).
        """
        for gen, index in zip(self._gens, self._indexes, strict=True):
            gen._values.pop(replica, None)
            gen._clouds.pop(replica, None)
            gen._start.pop(replica, None)
            gen._end.pop(replica, None)
            index.pop(replica, None)

    def reset(self) -> None:
        """Drop every generation (after a full-state transfer was merged, as Phoenix)."""
        self._gens = []
        self._indexes = []

    def __repr__(self) -> str:
        return f"DeltaGenerations(max_sizes={self.max_sizes!r}, sizes={self.sizes()!r})"


def _index_of(delta: Delta) -> _Index:
    """A new index of ``delta``'s values (the newest tag per presence, should two share one)."""
    index: _Index = {}
    for r, vals in delta._values.items():
        idents = index[r] = {}
        for c, rec in vals.items():
            ident = (rec[1], rec[0], rec[2])
            if idents.get(ident, -1) < c:
                idents[ident] = c
    return index


def _copy_index(index: _Index) -> _Index:
    return {r: dict(idents) for r, idents in index.items()}


def _merge_into(local: Delta, index: _Index, remote: Delta) -> None:
    """``merge_deltas(local, remote)``, contiguous ranges assumed, written into ``local``.

    Costs time in proportion to ``remote``'s values and clouds: a local value the remote
    observed removed is found through the remote's cloud, and a remote value that
    replaces an older value of the same presence through the index.
    """
    lvalues, lclouds = local._values, local._clouds
    rvalues, rclouds = remote._values, remote._clouds
    emptied: list[Replica] = []
    # a local value whose tag the remote's cloud holds and its values don't: removed
    for r, rcl in rclouds.items():
        lv = lvalues.get(r)
        if not lv or not rcl:
            continue
        gone = lv.keys() & rcl  # in C, over the smaller side
        if not gone:
            continue
        rv = rvalues.get(r)
        if rv:
            gone -= rv.keys()
        idents = index[r]
        for c in gone:
            rec = lv.pop(c)
            ident = (rec[1], rec[0], rec[2])
            if idents.get(ident) == c:
                del idents[ident]
        if not lv:
            emptied.append(r)
    # a remote value the local side has neither nor saw removed: added, newest per presence
    for r, rv in rvalues.items():
        if not rv:
            continue
        lcl = lclouds.get(r, _EMPTY_SET)
        lv = lvalues.get(r)
        if lv is None:
            lv = lvalues[r] = {}
            idents = index[r] = {}
        else:
            idents = index.setdefault(r, {})
        for c, rec in rv.items():
            if c in lv or c in lcl:
                continue
            ident = (rec[1], rec[0], rec[2])
            seen = idents.get(ident)
            if seen is None:
                lv[c] = rec
                idents[ident] = c
            elif seen < c:
                del lv[seen]
                lv[c] = rec
                idents[ident] = c
        if not lv:
            emptied.append(r)
    for r in emptied:  # a replica's values emptied by a remove (maybe refilled by an add)
        if not lvalues.get(r, True):
            del lvalues[r]
            index.pop(r, None)
    for r, rcl in rclouds.items():
        if not rcl:
            continue
        cl = lclouds.get(r)
        if cl is None:
            lclouds[r] = set(rcl)
        else:
            cl |= rcl
    local._start = _clock.lowerbound(local._start, remote._start)
    local._end = _clock.upperbound(local._end, remote._end)
