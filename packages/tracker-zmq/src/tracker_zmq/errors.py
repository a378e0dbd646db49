"""Every error tracker_zmq raises, in one place. Pure.

One base, :class:`TrackerError`; option errors are also ``ValueError``. Local misuse
(a bad argument, a call out of order) and remote misbehaviour (a frame that does not
decode: :class:`MessageError`, :class:`ProtocolError`) are different errors, as in h11.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AlreadyTracked",
    "ClientClosed",
    "ClientError",
    "ConfigError",
    "KeyCollision",
    "LimitExceeded",
    "MessageError",
    "NoPresence",
    "ProtocolError",
    "RequestError",
    "RequestTimeout",
    "TooManyPresences",
    "TrackerError",
    "TrackerNotRunning",
    "UnsupportedOp",
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


class KeyCollision(TrackerError, ValueError):
    """A topic holds the int key ``n`` and the str key ``"n"``, which group as one key.

    Presence keys are strings in ``list`` and in diffs (Phoenix's ``to_string(key)``), so
    ``1`` and ``"1"`` in one topic cannot be told apart there: use one type of key per
    topic.
    """


# ------------------------------------------------------------ remote misbehaviour


class MessageError(TrackerError, ValueError):
    """A message from the network that is not a valid tracker message (dropped, counted)."""


class ProtocolError(TrackerError, ValueError):
    """A frame that is not a valid message of the client protocol.

    The one exception the client protocol's codec raises. A node drops such a frame
    (counting it) and, when the frame still had a usable request ``id``, answers with
    ``code``.

    Attributes:
        code: ``"bad_request"``, ``"unsupported_version"`` or ``"unknown_op"``.
        request_id: The frame's request id when it had a valid one, else None.
    """

    def __init__(self, message: str, code: str = "bad_request", request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id


# ------------------------------------------------------------ the client's errors


class ClientError(TrackerError):
    """Base class of the errors the :class:`~tracker_zmq.Client` raises on purpose."""


class RequestError(ClientError):
    """The node refused a request.

    ``already_tracked`` and ``no_presence`` are raised as :class:`AlreadyTracked` and
    :class:`NoPresence` instead (as the Tracker does), ``limit_exceeded`` as
    :class:`LimitExceeded`.

    Attributes:
        code: The protocol's error code (see ``tracker_zmq.protocol.ERROR_CODES``).
        error: The whole error object the node sent.
    """

    def __init__(self, code: str, message: str, error: Mapping[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.error = dict(error or {})


class LimitExceeded(RequestError):
    """``track`` beyond the node's per-session presence limit (``limit_exceeded``)."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply from the node within the request timeout (node down or unreachable)."""


class ClientClosed(ClientError):
    """The client was closed (or never connected)."""


class UnsupportedOp(ClientError):
    """A :class:`~tracker_zmq.Client` method whose op the node does not serve.

    The node is of an older release: its hello reply does not list the op (a node that
    lists no ops serves those of the first release, ``tracker_zmq.protocol.V1_OPS``).
    Raised before anything is sent; also when a node answers ``unknown_op``. The session
    is unharmed: other methods go on working.

    Attributes:
        op: The op.
        node: The node's name (None when no hello was answered yet).
        endpoint: The node's client endpoint.
    """

    def __init__(self, op: str, node: str | None, endpoint: str) -> None:
        where = f"node {node!r} at {endpoint}" if node is not None else f"the node at {endpoint}"
        super().__init__(
            f"{op}: {where} does not serve this op (a node of an older release); "
            "upgrade the node, or use another node"
        )
        self.op = op
        self.node = node
        self.endpoint = endpoint
