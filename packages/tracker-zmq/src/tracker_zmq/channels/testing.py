"""Channels under test without a browser or a socket, a port of ``Phoenix.ChannelTest``.

Not pure: it runs the channels' Tasks on the event loop. A :class:`ChannelTest` drives
the endpoint's own connection code in-process: frames are encoded and decoded with the
vsn 2.0.0 serializer as a client would, so a channel behaves here as it does behind a
real websocket, minus the network.

```python
async with ChannelTest(endpoint) as case:
    client = await case.connect({"token": token})        # Socket.connect (or Reject)
    reply = await client.join("room:lobby", {})           # Reply(status, response)
    assert reply.status == "ok"
    await client.assert_push("room:lobby", "presence_state")
    reply = await client.push("room:lobby", "new_msg", {"body": "hi"})
    await case.assert_broadcast("room:lobby", "new_msg", {"body": "hi"})
```
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Mapping
from typing import Any, Self

from pubsub_zmq import Overflow, Subscription

from .connection import Connection
from .endpoint import Endpoint
from .wire import V2, Message, Reply

__all__ = ["ChannelTest", "ClientUnderTest"]


def _is_channel_message(message: Any) -> bool:
    return (
        not isinstance(message, Overflow)
        and type(message) is dict
        and type(message.get("event")) is str
        and type(message.get("payload")) is dict
    )


def _matches(payload: Any, expected: Mapping[str, Any] | None) -> bool:
    # Phoenix's assert_push pattern-matches; here the expected fields must be equal
    return expected is None or all(payload.get(k) == v for k, v in expected.items())


class ClientUnderTest:
    """One in-process client socket (made by :meth:`ChannelTest.connect`).

    Attributes:
        socket: The endpoint's Socket instance, after ``connect``.
        connection: The server side of the socket.
        received: Every frame the server sent so far, decoded: :class:`Reply` for
            ``phx_reply``, :class:`Message` for the rest, oldest first.
    """

    def __init__(self, case: ChannelTest, connection: Connection) -> None:
        self.socket = connection.socket
        self.connection = connection
        self.received: list[Message | Reply] = []
        self._case = case
        self._unread: list[Message | Reply] = []
        self._refs = itertools.count(1)
        self._join_refs: dict[str, str] = {}

    def _pump(self) -> None:
        out = self.connection.out
        while out:
            message = V2.decode(out.popleft(), 1 << 62)
            frame: Message | Reply = message
            if message.event == "phx_reply":
                payload = message.payload
                frame = Reply(
                    message.topic,
                    payload["status"],
                    payload["response"],
                    message.ref,
                    message.join_ref,
                )
            self.received.append(frame)
            self._unread.append(frame)

    async def _next(self, match: Any, within: float, what: str) -> Any:
        conn = self.connection
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            self._pump()
            for i, frame in enumerate(self._unread):
                if match(frame):
                    del self._unread[i]
                    return frame
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {within} s; unread: {self._unread!r}")
            conn.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await conn.wake.wait()

    def send(self, topic: str, event: str, payload: Mapping[str, Any] | None = None) -> str:
        """Send a message as the client would, without waiting; returns its ref."""
        ref = str(next(self._refs))
        join_ref = ref if event == "phx_join" else self._join_refs.get(topic)
        if event == "phx_join":
            self._join_refs[topic] = ref
        frame = V2.encode(Message(topic, event, dict(payload or {}), ref, join_ref))
        self.connection.receive(frame)
        return ref

    async def reply_to(self, ref: str, within: float = 5.0) -> Reply:
        """Wait for the reply to the message of ``ref``."""
        found: Reply = await self._next(
            lambda f: isinstance(f, Reply) and f.ref == ref, within, f"reply to ref {ref}"
        )
        return found

    async def join(
        self, topic: str, payload: Mapping[str, Any] | None = None, within: float = 5.0
    ) -> Reply:
        """Join ``topic`` (subscribing the case to it first, for ``assert_broadcast``).

        Returns:
            The join's reply: ``status`` ``"ok"`` with what ``join`` returned, or
            ``"error"`` with the JoinError's response.
        """
        self._case.subscribe(topic)
        return await self.reply_to(self.send(topic, "phx_join", payload), within)

    async def push(
        self, topic: str, event: str, payload: Mapping[str, Any] | None = None, within: float = 5.0
    ) -> Reply:
        """Push ``event`` to the channel of ``topic`` and wait for its reply."""
        return await self.reply_to(self.send(topic, event, payload), within)

    async def leave(self, topic: str, within: float = 5.0) -> Reply:
        """Leave ``topic``; returns the ok reply (``phx_close`` follows)."""
        return await self.reply_to(self.send(topic, "phx_leave"), within)

    async def assert_push(
        self,
        topic: str,
        event: str,
        payload: Mapping[str, Any] | None = None,
        within: float = 5.0,
    ) -> Message:
        """Wait for a push (or broadcast) of ``event`` on ``topic`` not yet asserted.

        Args:
            topic: The topic.
            event: The event.
            payload: Fields the payload must have (equal), or None for any payload.
            within: Seconds to wait.

        Returns:
            The message; later asserts look past it.

        Raises:
            AssertionError: None came within ``within``.
        """
        found: Message = await self._next(
            lambda f: (
                isinstance(f, Message)
                and f.topic == topic
                and f.event == event
                and _matches(f.payload, payload)
            ),
            within,
            f"push {event!r} on {topic!r}",
        )
        return found

    async def refute_push(self, topic: str, event: str, within: float = 0.1) -> None:
        """Fail if a push of ``event`` on ``topic`` arrives within ``within`` seconds."""
        try:
            message = await self.assert_push(topic, event, within=within)
        except AssertionError:
            return
        raise AssertionError(f"unexpected push {message!r}")

    async def close(self) -> None:
        """Close the socket: every channel ends as when a websocket closes."""
        await self.connection.stop()
        self._case.endpoint._connections.discard(self.connection)


class ChannelTest:
    """Connect in-process clients to an endpoint and assert what its channels send.

    Use it as an async context manager on the event loop where the endpoint's Presence
    and PubSub run; leaving it closes every client and subscription it made.

    Args:
        endpoint: The :class:`~tracker_zmq.channels.Endpoint` under test.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.clients: list[ClientUnderTest] = []
        self._subs: dict[str, Subscription] = {}
        self._seen: dict[str, list[Any]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(
        self,
        params: Mapping[str, str] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> ClientUnderTest:
        """Run the endpoint's ``Socket.connect`` and return a connected client.

        Args:
            params: The connect params.
            info: The connect info (``auth_token``, ``headers`` ... default empty).

        Raises:
            Reject: ``connect`` refused the connection.
        """
        endpoint = self.endpoint
        socket = endpoint.socket_class()
        full_info: dict[str, Any] = {
            "headers": {},
            "cookies": {},
            "peer": None,
            "uri": "ws://test" + endpoint.options.path,
            "origin": None,
            "auth_token": None,
            **(info or {}),
        }
        socket.params, socket.info, socket.vsn = dict(params or {}), full_info, "2.0.0"
        result = socket.connect(socket.params, full_info)
        if inspect.isawaitable(result):
            await result
        connection = Connection(endpoint, socket, V2)
        endpoint._connections.add(connection)
        client = ClientUnderTest(self, connection)
        self.clients.append(client)
        return client

    def subscribe(self, topic: str) -> None:
        """Listen to ``topic``'s broadcasts for :meth:`assert_broadcast` (idempotent)."""
        if topic not in self._subs:
            self._subs[topic] = self.endpoint.pubsub.subscribe(topic, link=False)
            self._seen[topic] = []

    async def assert_broadcast(
        self,
        topic: str,
        event: str,
        payload: Mapping[str, Any] | None = None,
        within: float = 5.0,
    ) -> dict[str, Any]:
        """Wait for a broadcast of ``event`` on ``topic`` (subscribed by ``join`` or
        :meth:`subscribe`) not yet asserted; returns its payload."""
        self.subscribe(topic)
        sub = self._subs[topic]
        seen = self._seen[topic]
        try:
            async with asyncio.timeout(within):
                while True:
                    seen.extend(m for m in sub.drain() if _is_channel_message(m))
                    for i, message in enumerate(seen):
                        if message["event"] == event and _matches(message["payload"], payload):
                            del seen[i]
                            return dict(message["payload"])
                    message = await sub.get()
                    if _is_channel_message(message):
                        seen.append(message)
        except TimeoutError:
            raise AssertionError(
                f"no broadcast {event!r} on {topic!r} within {within} s; seen: {seen!r}"
            ) from None

    async def close(self) -> None:
        """Close every client and subscription of this case."""
        for client in self.clients:
            await client.close()
        self.clients.clear()
        for sub in self._subs.values():
            sub.unsubscribe()
        self._subs.clear()
