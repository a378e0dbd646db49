"""The errors tracker_zmq raises. Pure."""

from __future__ import annotations

__all__ = [
    "AlreadyTracked",
    "ConfigError",
    "NoPresence",
    "TooManyPresences",
    "TrackerError",
    "TrackerNotRunning",
]


class TrackerError(Exception):
    """Base class of every error tracker_zmq raises on purpose."""


class ConfigError(TrackerError, ValueError):
    """An option is missing, of the wrong type, or inconsistent with another."""


class AlreadyTracked(TrackerError, ValueError):
    """``track`` of an (owner, topic, key) this node already tracks."""


class NoPresence(TrackerError, LookupError):
    """``update`` of an (owner, topic, key) this node does not track."""


class TrackerNotRunning(TrackerError, RuntimeError):
    """A tracker method was called before ``start`` or after ``stop``."""


class TooManyPresences(TrackerError):
    """``track`` on a node that already tracks its ``max_presences`` (a Tracker option).

    Attributes:
        limit: The node's ``max_presences``.
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
