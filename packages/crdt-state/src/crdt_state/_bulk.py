"""The old, private name of :mod:`crdt_state.bulk`, kept importable. Pure."""

from crdt_state.bulk import BULK_SIZE, gc_paused

__all__ = ["BULK_SIZE", "gc_paused"]
