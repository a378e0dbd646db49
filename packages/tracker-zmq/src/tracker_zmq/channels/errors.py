"""The errors of :mod:`tracker_zmq.channels`. Pure.

User code raises :class:`Reject` (in ``Socket.connect``) and :class:`JoinError` (in
``Channel.join``) to refuse; :class:`FrameError` is a client's frame that does not decode
(remote misbehaviour: the endpoint counts and drops it, never raises it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracker_zmq.errors import TrackerError

__all__ = ["ChannelError", "FrameError", "JoinError", "Reject"]


class ChannelError(TrackerError):
    """Base class of the errors of tracker_zmq.channels."""


class Reject(ChannelError):
    """Raised by ``Socket.connect`` to refuse a connection: the client gets HTTP 403.

    Phoenix's ``connect/3`` returning ``:error``. The message is logged (at info level),
    never sent to the client.
    """


class JoinError(ChannelError):
    """Raised by ``Channel.join`` to refuse a join with an error reply.

    Phoenix's ``{:error, reply}``: phoenix.js calls the join's ``receive("error", ...)``
    with ``response``.

    Args:
        response: The error reply's response, a JSON-able dict such as
            ``{"reason": "unauthorized"}``.

    Attributes:
        response: The response given.
    """

    def __init__(self, response: Mapping[str, Any] | None = None) -> None:
        self.response: dict[str, Any] = dict(response or {})
        super().__init__(f"join refused: {self.response!r}")


class FrameError(ChannelError, ValueError):
    """A client's frame that does not decode (bad JSON, a wrong shape, too large)."""
