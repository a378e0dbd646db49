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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BULK_SIZE", "gc_paused"]

BULK_SIZE = 10_000
"""Payloads with at least this many values are merged or decoded with the collector paused."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block, if it is enabled.

    The collector is re-enabled on exit only if this call disabled it, so an
    application that runs with it disabled keeps it that way.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
