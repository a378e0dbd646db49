"""Errors of pubsub_zmq (Phoenix.PubSub raises ``BroadcastError``; we keep one base class).

Pure: no I/O. Local misuse raises; a bad frame from the network never raises into the node
(it is logged, counted in ``stats()`` and dropped), but the codec reports it with
:class:`WireError` so that the caller can count it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FrameTooLarge",
    "InvalidTopic",
    "MessageTooLarge",
    "NotRunning",
    "PubSubError",
    "UnknownVersion",
    "WireError",
]


class PubSubError(Exception):
    """Base class of every error raised by pubsub_zmq."""


class ConfigError(PubSubError, ValueError):
    """An option passed to :class:`~pubsub_zmq.PubSub` is invalid."""


class InvalidTopic(PubSubError, ValueError):
    """A topic is empty, too long, or contains the NUL separator byte."""


class NotRunning(PubSubError):
    """A network operation was called on a PubSub that is not started (or already stopped)."""


class MessageTooLarge(PubSubError, ValueError):
    """An encoded message does not fit in one frame of ``max_frame_bytes``.

    Large payloads must be split by the caller (the tracker sends transfers in parts).
    """


class WireError(PubSubError, ValueError):
    """A frame received from the network is malformed: garbage, wrong shape or bad value."""


class UnknownVersion(WireError):
    """A frame carries a protocol version this node does not speak."""


class FrameTooLarge(WireError):
    """A frame is larger than ``max_frame_bytes``."""
