"""The errors crdt_state raises. Pure."""

from __future__ import annotations

__all__ = ["DuplicatePresence", "PresenceNotFound", "StateError", "WireError"]


class StateError(Exception):
    """Base class of every error crdt_state raises on purpose.

    Raised as itself for misuse of a State, such as marking the local replica down.
    """


class DuplicatePresence(StateError, ValueError):
    """A local write names a presence the wrong way round.

    ``join`` raises it when the local replica already holds that (owner, topic, key):
    Phoenix's State would corrupt its tables there (phoenix_pubsub#49).
    """


class PresenceNotFound(DuplicatePresence, LookupError):
    """``leave_join`` (an update) names a presence the local replica does not hold.

    A subclass of :class:`DuplicatePresence`, which the contract names for both misuses
    of a presence's identity, and of ``LookupError``, which says what went wrong.
    """


class WireError(StateError, ValueError):
    """``from_wire`` was given data that is not a valid Snapshot or Delta.

    Raised for any malformed input, whatever its shape: wrong types, missing fields,
    clocks that are not positive integers, value tags outside the context and clouds,
    a range whose start exceeds its end, or a payload over the size caps.
    """
