"""Socket: one client connection's identity, a port of ``Phoenix.Socket``'s user side.

Not pure in spirit (``connect`` may do I/O), but holds no I/O itself: the endpoint makes
one instance per websocket, calls :meth:`Socket.connect`, and keeps the connection's
machinery elsewhere (:mod:`tracker_zmq.channels.connection`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Socket"]


class Socket:
    """A client connection, subclassed to authenticate it and name it.

    ```python
    class UserSocket(Socket):
        async def connect(self, params, info):        # raise Reject -> HTTP 403
            self.assigns["user_id"] = verify(params.get("token") or info["auth_token"])

        def id(self):
            return f"user_socket:{self.assigns['user_id']}"
    ```

    Every channel joined over the connection sees it as ``channel.socket``.

    Attributes:
        assigns: What ``connect`` (or a channel) stores about the connection: a dict.
        params: The connect params (the query string without ``vsn``).
        info: The connect info: ``headers`` (lowercased names), ``cookies``, ``peer``
            (``(host, port)`` or None), ``uri`` (without the query string), ``origin``
            (or None) and ``auth_token`` (phoenix.js's ``authToken``, or None).
        vsn: The protocol version the client asked for (``"2.0.0"``, ``"1.0.0"``).
    """

    def __init__(self) -> None:
        self.assigns: dict[str, Any] = {}
        self.params: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.vsn = ""

    async def connect(self, params: Mapping[str, str], info: Mapping[str, Any]) -> None:
        """Accept or refuse the connection (Phoenix's ``connect/3``); default: accept.

        Args:
            params: The connect params (phoenix.js's ``params``), strings.
            info: The connect info (see the class).

        Raises:
            Reject: To refuse: the client gets HTTP 403.
        """

    def id(self) -> str | None:
        """The socket's id, or None (the default).

        Sockets that share an id are disconnected together by a broadcast of
        ``{"event": "disconnect", "payload": {}}`` on that id as a topic (Phoenix's
        ``Endpoint.broadcast(id, "disconnect", %{})``), on every node.
        """
        return None
