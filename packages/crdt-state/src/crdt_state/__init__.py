"""crdt-state: the delta-state ORSWOT of Phoenix.Tracker.State, in pure Python.

Every replica of a cluster keeps a :class:`State`: a replicated, eventually consistent set
of presences ``(topic, owner, key, meta)``. Replicas exchange :class:`Delta` values in
heartbeats and :class:`Snapshot` values in transfers, and :meth:`State.merge` converges
them whatever the order, loss or duplication of those messages. No I/O, no clock, no
randomness, no dependencies: drive it directly in tests and simulations.

    >>> from crdt_state import State
    >>> a, b = State("a"), State("b")
    >>> a.replica_up("b"); b.replica_up("a")
    []
    []
    >>> entry = a.join("conn-1", "room:42", "alice", {"status": "online"})
    >>> joins, leaves = b.merge(a.take_delta())
    >>> b.get_by_topic("room:42")
    [('alice', {'status': 'online'})]
"""

from crdt_state import bulk, clock
from crdt_state._types import Context, Entry, Key, Meta, Owner, Replica, Tag, Topic
from crdt_state.delta_generation import DeltaGenerations
from crdt_state.errors import DuplicatePresence, PresenceNotFound, StateError, WireError
from crdt_state.state import Delta, Snapshot, State, check_id, check_ids, merge_deltas

__version__ = "0.1.0"

__all__ = [
    "Context",
    "Delta",
    "DeltaGenerations",
    "DuplicatePresence",
    "Entry",
    "Key",
    "Meta",
    "Owner",
    "PresenceNotFound",
    "Replica",
    "Snapshot",
    "State",
    "StateError",
    "Tag",
    "Topic",
    "WireError",
    "__version__",
    "bulk",
    "check_id",
    "check_ids",
    "clock",
    "merge_deltas",
]
