"""Channel: one joined topic of one socket, a port of ``Phoenix.Channel``'s user side.

Not pure: a channel runs in its own asyncio Task (the connection starts it on
``phx_join``), and that Task owns what the channel tracks, as a Phoenix channel process
owns its presences. This module holds what user code calls; the Task's loop lives in
:mod:`tracker_zmq.channels.connection`.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from crdt_state import Key, Meta
from pubsub_zmq import Overflow, Subscription

from .wire import Message

if TYPE_CHECKING:
    from tracker_zmq.presence import Presence, Presences

    from .connection import Connection
    from .socket import Socket

__all__ = ["Channel"]


def _check_push(event: Any, payload: Any) -> None:
    if type(event) is not str or not event:
        raise TypeError(f"event must be a non-empty str, got {event!r}")
    if type(payload) is not dict:
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")


def merge_presences(lists: Iterable[Presences]) -> Presences:
    """The union of several ``presence.list`` results: the metas of a key concatenated."""
    out: dict[str, dict[str, Any]] = {}
    for presences in lists:
        for key, entry in presences.items():
            have = out.get(key)
            if have is None:
                out[key] = {**entry, "metas": builtins.list(entry["metas"])}
            else:
                have["metas"].extend(entry["metas"])
    return out


class _Lane:
    """The fastlane metadata of a channel's subscription to its own topic."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def fastlane(self, message: Any, cache: dict[Any, Any]) -> bool:
        return self.channel._fastlane(message, cache)


class Channel:
    """A joined topic: subclass it, and route topics to it in ``Endpoint(channels=...)``.

    ```python
    class Room(Channel):
        async def join(self, topic, payload):          # raise JoinError({"reason": ...})
            self.track(self.socket.assigns["user_id"], {"online_at": ...})
            self.push("presence_state", self.presence.list(topic))
            return {"joined": topic}                    # the ok reply's response (or None)

        async def handle_in(self, event, payload):     # a returned dict is the ok reply
            self.broadcast("new_msg", payload)          # every subscriber, every node
    ```

    One instance per join, run in its own asyncio Task: ``join``, then ``handle_in``
    for each message the client pushes, in order, then ``terminate``. The channel is
    subscribed to its topic before ``join`` runs; what ``join`` pushes, and what is
    broadcast on the topic meanwhile, goes out after the join's reply. When the channel
    leaves (``phx_leave``), its socket closes, the client joins the topic again, or a
    handler raises, the Task ends and everything the channel tracked leaves presence.
    ``join``, ``handle_in`` and ``terminate`` may be plain or ``async`` methods.

    Attributes:
        topic: The joined topic.
        socket: The connection's :class:`~tracker_zmq.channels.Socket` (its
            ``assigns``).
        join_ref: The client's ref of this join.
    """

    def __init__(self, topic: str, socket: Socket, connection: Connection, join_ref: Any) -> None:
        self.topic = topic
        self.socket = socket
        self.join_ref = join_ref
        self._conn = connection
        self._task: asyncio.Task[Any] | None = None
        self._joined = False
        self._close_sent = False
        self._ended = False
        self._pending: builtins.list[str] = []
        self._sub: Subscription | None = None
        self._follows: dict[str, Subscription] = {}

    # ------------------------------------------------------------- callbacks

    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Accept the join (the default) or refuse it by raising ``JoinError``.

        Args:
            topic: The topic joined (the channel's ``topic``).
            payload: The join's payload (phoenix.js's ``channel(topic, params)``).

        Returns:
            The ok reply's response, or None for ``{}``.

        Raises:
            JoinError: To refuse with an error reply.
        """
        return None

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        """Handle a message the client pushed; by default, refuse it.

        Args:
            event: The event name.
            payload: Its payload.

        Returns:
            None for an ``ok {}`` reply, a dict for an ``ok`` reply with that
            response, or ``("ok" | "error", dict)``.
        """
        return ("error", {"reason": "unhandled event"})

    async def terminate(self, reason: str) -> None:
        """Called once when a joined channel ends; by default, nothing.

        Args:
            reason: ``"left"`` (phx_leave), ``"closed"`` (the socket closed),
                ``"replaced"`` (joined again), ``"crashed"`` (a handler raised).
        """

    # ---------------------------------------------------------------- sending

    @property
    def presence(self) -> Presence:
        """The endpoint's :class:`~tracker_zmq.Presence`.

        Raises:
            ConfigError: The endpoint was made without a Presence.
        """
        return self._conn.endpoint.presence_required()

    def push(self, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to this channel's client only.

        Raises:
            TypeError: ``event`` is not a non-empty str, or ``payload`` is not a dict
                (or does not encode as JSON).
        """
        _check_push(event, payload)
        frame = self._conn.serializer.encode(
            Message(self.topic, event, payload, None, self.join_ref)
        )
        self._send(frame)

    def broadcast(self, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber of the topic on every node, this one too.

        Raises:
            TypeError: A bad event or payload.
            NotRunning: The PubSub is not running.
        """
        _check_push(event, payload)
        self._conn.endpoint.pubsub.broadcast(self.topic, {"event": event, "payload": payload})

    def broadcast_from(self, event: str, payload: dict[str, Any]) -> None:
        """Like :meth:`broadcast`, but not to this channel (other channels of its socket
        on the same topic do not exist: a topic is joined once per socket).

        Raises:
            TypeError: A bad event or payload.
            NotRunning: The PubSub is not running.
        """
        _check_push(event, payload)
        message = {"event": event, "payload": payload}
        pubsub = self._conn.endpoint.pubsub
        if self._sub is None:
            pubsub.broadcast(self.topic, message)
        else:
            pubsub.broadcast_from(self._sub, self.topic, message)

    # --------------------------------------------------------------- presence

    def _owner(self) -> asyncio.Task[Any]:
        if self._task is None:
            raise RuntimeError("the channel's task has not started")
        return self._task

    def track(self, key: Key, meta: Meta) -> str:
        """Track ``key`` on this channel's topic, owned by this channel's Task.

        Phoenix's ``Presence.track(socket, key, meta)``: it leaves when the channel
        ends. Errors are those of :meth:`Presence.track <tracker_zmq.Presence.track>`.

        Returns:
            The presence's ``phx_ref``.
        """
        return self.presence.track(self._owner(), self.topic, key, meta)

    def update(self, key: Key, meta: Meta | Callable[[Meta], Meta]) -> str:
        """Replace the meta of a presence this channel tracks (or apply a function).

        Returns:
            The new ``phx_ref``.
        """
        return self.presence.update(self._owner(), self.topic, key, meta)

    def untrack(self, key: Key | None = None) -> None:
        """Stop tracking ``key`` on this topic, or with no key everything this channel
        tracks."""
        if key is None:
            self.presence.untrack(self._owner())
        else:
            self.presence.untrack(self._owner(), self.topic, key)

    def follow(self, topics: Iterable[str]) -> None:
        """Add ``topics`` to this channel's presence view and push its ``presence_state``.

        The view is exactly the union of the followed topics (the metas of a key seen
        on several topics side by side), pushed on this channel's own topic: first
        ``presence_state`` of the whole union, then each followed topic's
        ``presence_diff``. While a channel follows, its own topic's ``presence_diff``
        broadcasts are not sent to it, so the view is never mixed. Each channel has its
        own view: two followers never see each other's.

        Args:
            topics: Topics to follow (already followed ones are kept once).
        """
        topics = [topics] if isinstance(topics, str) else builtins.list(topics)
        pubsub = self._conn.endpoint.pubsub
        for topic in topics:
            if topic not in self._follows:
                self._follows[topic] = pubsub.subscribe(
                    topic, callback=self._on_followed, local=True, link=False
                )
        self._push_view()

    def unfollow(self, topics: Iterable[str]) -> None:
        """Remove ``topics`` from the view and push ``presence_state`` of what remains."""
        topics = [topics] if isinstance(topics, str) else builtins.list(topics)
        pubsub = self._conn.endpoint.pubsub
        for topic in topics:
            sub = self._follows.pop(topic, None)
            if sub is not None:
                pubsub.unsubscribe(sub)
        self._push_view()

    @property
    def following(self) -> builtins.list[str]:
        """The followed topics, in the order they were followed."""
        return builtins.list(self._follows)

    # --------------------------------------------------------------- internal

    def _push_view(self) -> None:
        presence = self.presence
        self.push("presence_state", merge_presences(presence.list(t) for t in self._follows))

    def _on_followed(self, message: Any) -> None:
        if not self._follows or self._conn.closed:
            return
        if isinstance(message, Overflow):  # diffs were lost: resync the whole view
            self._conn.counters.resyncs += 1
            self._push_view()
            return
        if (
            type(message) is dict
            and message.get("event") == "presence_diff"
            and type(message.get("payload")) is dict
        ):
            self.push("presence_diff", message["payload"])

    def _send(self, frame: str) -> None:
        if self._joined:
            self._conn.write(frame)
        elif not self._ended:  # out after the join's reply
            self._pending.append(frame)

    def _fastlane(self, message: Any, cache: dict[Any, Any]) -> bool:
        conn = self._conn
        if conn.closed:
            return True
        counters = conn.counters
        if type(message) is not dict:
            counters.dropped_messages += 1
            return True
        event = message.get("event")
        payload = message.get("payload")
        if type(event) is not str or type(payload) is not dict or len(message) != 2:
            counters.dropped_messages += 1
            return True
        if event == "presence_diff":
            if self._follows:
                return True  # a follower's view is the followed topics only
            endpoint = conn.endpoint
            if endpoint.options.coalesce_diffs and endpoint._coalesce(self, payload, cache):
                return True
        serializer = conn.serializer
        frame = cache.get(serializer)
        if frame is None:
            try:
                frame = serializer.fastlane(self.topic, event, payload)
            except TypeError:
                counters.dropped_messages += 1
                return True
            cache[serializer] = frame
            counters.encodes += 1
        self._send(frame)
        return True
