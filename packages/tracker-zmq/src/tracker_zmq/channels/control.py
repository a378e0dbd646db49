"""What a backend does to websockets on every node: broadcast to a topic, disconnect a socket.

Phoenix's ``Endpoint.broadcast(topic, event, payload)`` and
``Endpoint.broadcast(socket_id, "disconnect", %{})``, as two functions over a
:class:`~pubsub_zmq.PubSub`, so any part of a node calls them: the client endpoint's
``broadcast`` and ``disconnect`` ops, the standalone node's HTTP API, or an app.

```python
from tracker_zmq.channels import broadcast, disconnect

broadcast(pubsub, "room:lobby", "new_msg", {"body": "hi"})   # every socket, every node
disconnect(pubsub, "user_socket:42", ban_seconds=60)          # closed and refused 60 s
```

A ban travels on :data:`BANS_TOPIC` to every node that runs an
:class:`~tracker_zmq.channels.Endpoint`; each one refuses a connection whose
``Socket.id()`` is banned until the ban ends there (measured from when that node hears
of it). A node that starts after the ban does not know it.
"""

from __future__ import annotations

import math
from typing import Any

from pubsub_zmq import PubSub
from tracker_zmq.protocol import MAX_BAN_SECONDS

__all__ = ["BANS_TOPIC", "MAX_BAN_SECONDS", "SOCKET_ID_PREFIX", "broadcast", "disconnect"]

SOCKET_ID_PREFIX = "user_socket:"
"""The prefix of socket ids by convention (the standalone node's are ``user_socket:<sub>``):
a backend's broadcast never goes to one (a disconnect does)."""

BANS_TOPIC = "phx_bans"
"""The topic bans travel on: ``{"socket_id": str, "ban_seconds": float}``.

Like socket ids, it is reserved: no client joins or pushes to it."""


def _check_topic(name: str, value: Any) -> None:
    if type(value) is not str or not value:
        raise TypeError(f"{name} must be a non-empty str, got {value!r}")


def broadcast(pubsub: PubSub, topic: str, event: str, payload: dict[str, Any]) -> None:
    """Send ``event`` to every websocket subscriber of ``topic``, on every node.

    The message is the channels' shape, ``{"event": event, "payload": payload}``, so
    every channel joined to ``topic`` pushes it to its client, as Phoenix's
    ``Endpoint.broadcast`` does.

    Args:
        pubsub: The node's running PubSub.
        topic: The topic, a non-empty str.
        event: The event name, a non-empty str.
        payload: A JSON object.

    Raises:
        TypeError: A bad topic, event or payload.
        ValueError: ``topic`` is reserved (:data:`BANS_TOPIC`, ``phoenix``, a socket id
            ``user_socket:*``: see :func:`disconnect`), ``event`` starts with ``phx_``
            (the protocol's own events), or the topic is not a valid PubSub topic (too
            long, a NUL); or the message is too large for one frame.
        NotRunning: The PubSub is not running.
    """
    _check_topic("topic", topic)
    if topic in (BANS_TOPIC, "phoenix") or topic.startswith(SOCKET_ID_PREFIX):
        raise ValueError(
            f"topic {topic!r} is reserved (socket ids {SOCKET_ID_PREFIX}*, {BANS_TOPIC}, "
            "phoenix): to close a user's sockets, disconnect it (the disconnect op, "
            "POST /api/disconnect, tracker_zmq.channels.disconnect)"
        )
    _check_topic("event", event)
    if event.startswith("phx_"):
        raise ValueError(f"event {event!r}: events starting with phx_ are the protocol's own")
    if type(payload) is not dict:
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    pubsub.broadcast(topic, {"event": event, "payload": payload})


def disconnect(pubsub: PubSub, socket_id: str, ban_seconds: float = 0.0) -> None:
    """Close every websocket whose ``Socket.id()`` is ``socket_id``, on every node.

    Args:
        pubsub: The node's running PubSub.
        socket_id: The socket id (the standalone node's are ``user_socket:<sub>``).
        ban_seconds: How long every node then refuses that socket id's connects
            (HTTP 403); 0 (the default) refuses nothing.

    Raises:
        TypeError: A bad socket id or ban.
        ValueError: A ban that is negative, not finite or longer than
            :data:`MAX_BAN_SECONDS`.
        NotRunning: The PubSub is not running.
    """
    _check_topic("socket_id", socket_id)
    if type(ban_seconds) not in (int, float):
        raise TypeError(f"ban_seconds must be a number, got {ban_seconds!r}")
    ban = float(ban_seconds)
    if not math.isfinite(ban) or ban < 0 or ban > MAX_BAN_SECONDS:
        raise ValueError(f"ban_seconds must be within 0..{MAX_BAN_SECONDS:g}, got {ban_seconds!r}")
    if ban > 0:
        pubsub.broadcast(BANS_TOPIC, {"socket_id": socket_id, "ban_seconds": ban})
    pubsub.broadcast(socket_id, {"event": "disconnect", "payload": {}})
