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
            claims = verify(params.get("token") or info["auth_token"])
            self.assigns["user_id"] = claims["sub"]
            self.expires_at = claims["exp"]             # closed (1008) when it passes

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
        expires_at: When the connection must end, in seconds since the epoch (as
            ``time.time()`` and a JWT's ``exp``), or None (the default: never). Set it
            in ``connect``, from the credentials' expiry: the endpoint closes the
            socket then (code 1008, :data:`~tracker_zmq.channels.connection.
            CLOSE_EXPIRED`; phoenix.js reconnects, and its ``params`` function can
            hand it a fresh token) and counts it in ``expired``. A time already past
            refuses the connection (HTTP 403). A channel may move it later (a token
            refreshed over a channel) or clear it: the endpoint reads it again when
            the time it knew comes.
    """

    def __init__(self) -> None:
        self.assigns: dict[str, Any] = {}
        self.params: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.vsn = ""
        self.expires_at: float | None = None

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
