"""Delta generations: a port of ``Phoenix.Tracker.DeltaGeneration``. Pure.

A replica keeps a few deltas of growing windows (by default up to 100, 1,000 and 10,000
values plus cloud tags) built from every delta it sends or merges. When a peer that fell
behind asks for a transfer, the smallest window that covers the peer's gap is sent
instead of the full state; only when none does is the full state extracted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crdt_state import clock as _clock
from crdt_state._types import Replica
from crdt_state.state import Delta, Snapshot, State, _clouds_size, merge_deltas

__all__ = ["DeltaGenerations"]


class DeltaGenerations:
    """A list of deltas over growing windows, each capped in size, smallest first.

    Args:
        max_sizes: The cap of each generation (values plus cloud tags), ascending.

    Raises:
        ValueError: For an empty, non-positive or non-ascending list of caps.
    """

    __slots__ = ("_gens", "max_sizes")

    def __init__(self, max_sizes: Sequence[int] = (100, 1000, 10000)) -> None:
        sizes = tuple(max_sizes)
        if not sizes or any(type(s) is not int or s < 1 for s in sizes):
            raise ValueError(f"max_sizes must be positive ints, not {max_sizes!r}")
        if list(sizes) != sorted(sizes):
            raise ValueError(f"max_sizes must be ascending, not {max_sizes!r}")
        self.max_sizes: tuple[int, ...] = sizes
        self._gens: list[Delta] = []

    @property
    def generations(self) -> list[Delta]:
        """The generations, smallest window first (empty until the first push)."""
        return list(self._gens)

    def push(self, state: State, delta: Delta) -> None:
        """Fold a delta that was sent or merged into every generation.

        With no generations yet, each starts as a copy of ``state``'s pending delta. Each
        generation merges ``delta`` when their ranges are contiguous; a generation whose
        merge would exceed its cap takes the previous (smaller) generation's result
        instead, so the windows slide. A non-contiguous delta leaves a generation as is.

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
        gens = self._gens or [state.delta for _ in self.max_sizes]
        tags = _clouds_size(delta._clouds)
        out: list[Delta] = []
        prev = delta
        for gen, cap in zip(gens, self.max_sizes, strict=True):
            if tags <= cap:
                merged = merge_deltas(gen, delta)  # None: not contiguous
                contiguous = merged is not None
            else:
                merged = None
                contiguous = _clock.dominates_or_equal(
                    delta._end, gen._start
                ) and _clock.dominates_or_equal(gen._end, delta._start)
            if not contiguous:
                out.append(gen)
                prev = gen
                continue
            if merged is not None and merged.size() <= cap:
                out.append(merged)
                prev = merged
                continue
            if prev.size() <= cap:
                out.append(prev)
            else:
                end = _clock.upperbound(gen._end, delta._end)
                out.append(Delta._make(gen.replica, {}, {}, dict(end), end))
            if merged is not None:
                prev = merged
        self._gens = out

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
        pruned: list[Delta] = []
        for gen in self._gens:
            copy = gen.copy()
            copy._values.pop(replica, None)
            copy._clouds.pop(replica, None)
            copy._start.pop(replica, None)
            copy._end.pop(replica, None)
            pruned.append(copy)
        self._gens = pruned

    def reset(self) -> None:
        """Drop every generation (after a full-state transfer was merged, as Phoenix)."""
        self._gens = []

    def __repr__(self) -> str:
        sizes = [gen.size() for gen in self._gens]
        return f"DeltaGenerations(max_sizes={self.max_sizes!r}, sizes={sizes!r})"
