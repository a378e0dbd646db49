"""The errors tracker_zmq raises. Pure."""

from __future__ import annotations

__all__ = ["AlreadyTracked", "ConfigError", "NoPresence", "TrackerError", "TrackerNotRunning"]


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
