"""Bulk operations without the cyclic garbage collector's quadratic-looking toll. Pure.

Public for the sibling packages (tracker-zmq pauses the collector around its own bulk
work with it); ``crdt_state._bulk`` is the same module under its old name.

Building a large container allocates one tracked object after another, and CPython runs
a full collection each time the objects that survived grow by a quarter: every one of
those walks every object the process holds. Merging or decoding a million presences
then spends about half its time in the collector, although it creates no reference
cycle at all. Bulk operations therefore pause the collector for their duration, as
Mercurial's ``util.nogc`` does, and restore it afterwards; allocation counts carry over,
so the collector catches up on its next regular run. Nothing is pruned from its work but
the repeated walks over objects that cannot be garbage.

A pause that let at least :data:`COLLECT_AFTER` tracked objects pile up ends with one
full collection. Left to itself, the collector would walk them three times: young (they
are all in the youngest generation), then middle-aged, and then in the full pass that
moving so many into the oldest generation triggers (0.41 s of passes after a million
records on this project's machine, against 0.16 s for the one full collection).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BULK_SIZE", "COLLECT_AFTER", "CollectorPause", "gc_paused"]

BULK_SIZE = 10_000
"""Payloads with at least this many values are merged or decoded with the collector paused."""

COLLECT_AFTER = 200_000
"""Tracked objects allocated in a pause (net) from which its end runs one full collection."""


def _restore() -> None:
    """Re-enable the collector, collecting once if a pause left many young objects."""
    gc.enable()
    if gc.get_count()[0] >= COLLECT_AFTER:
        gc.collect()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block, if it is enabled.

    The collector is re-enabled on exit only if this call disabled it, so an
    application that runs with it disabled keeps it that way; with one full collection
    when at least :data:`COLLECT_AFTER` tracked objects were allocated meanwhile.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        _restore()


class CollectorPause:
    """A pause of the cyclic garbage collector that spans several steps of a bulk job.

    For work spread over many event-loop turns, such as a large transfer merged part by
    part as its parts arrive: with the collector running, the state grows by a quarter
    again and again while it fills, and each time a full collection walks all of it
    (CPython never untracks a tuple that holds a dict, and every stored record holds its
    meta). Paused from the first part to the last, the collector runs once after.

    :meth:`resume` re-enables the collector only if :meth:`pause` disabled it, so pauses
    of several jobs at once, or an application that runs with the collector disabled,
    are left as they were; the owner of a pause must resume it whatever happens to the
    job (completed, abandoned, timed out).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this pause disabled the collector and has not resumed it yet."""
        return self._held

    def pause(self) -> None:
        """Disable the collector if it is enabled (and remember that this pause did)."""
        if not self._held and gc.isenabled():
            gc.disable()
            self._held = True

    def resume(self) -> None:
        """Re-enable the collector if this pause disabled it; idempotent.

        Collects once when the pause let :data:`COLLECT_AFTER` tracked objects pile up.
        """
        if self._held:
            self._held = False
            _restore()
