"""Phoenix Channels for Python: phoenix.js, unchanged, talks to an ASGI app.

A port of Phoenix's socket and channel protocol (``Phoenix.Socket``,
``Phoenix.Channel``, ``Phoenix.Transports.WebSocket``) as a pure ASGI app on top of
:class:`~tracker_zmq.Presence` and :class:`~pubsub_zmq.PubSub`: presence and broadcasts
are cluster-wide. It imports no web framework.

```python
from tracker_zmq.channels import Endpoint, Socket, Channel, JoinError, Reject

endpoint = Endpoint(presence, socket=UserSocket, channels={"room:*": Room})
app.mount("/socket", endpoint)      # Starlette, FastAPI; any ASGI server
```

Modules: :mod:`~tracker_zmq.channels.wire` (pure: the serializers and handshake
rules), :mod:`~tracker_zmq.channels.socket`, :mod:`~tracker_zmq.channels.channel`,
:mod:`~tracker_zmq.channels.connection` (one socket's protocol rules),
:mod:`~tracker_zmq.channels.endpoint` (ASGI), :mod:`~tracker_zmq.channels.control`
(a backend's broadcast and disconnect, on every node) and :mod:`~tracker_zmq.channels.testing`
(channels under test without a socket).
"""

from __future__ import annotations

from .channel import Channel
from .connection import Counters
from .control import BANS_TOPIC, broadcast, disconnect
from .endpoint import Endpoint, EndpointOptions
from .errors import ChannelError, FrameError, JoinError, Reject
from .socket import Socket
from .wire import V1, V2, Message, Reply

__all__ = [
    "BANS_TOPIC",
    "V1",
    "V2",
    "Channel",
    "ChannelError",
    "Counters",
    "Endpoint",
    "EndpointOptions",
    "FrameError",
    "JoinError",
    "Message",
    "Reject",
    "Reply",
    "Socket",
    "broadcast",
    "disconnect",
]
