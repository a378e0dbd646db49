"""Connection: the server side of one socket, a port of ``Phoenix.Socket``'s message rules.

Not pure: it starts one asyncio Task per joined channel and reads the clock for the join
rate. It has no network code: the endpoint (or the test helper) feeds it the client's text
frames with :meth:`Connection.receive` and drains :attr:`Connection.out`, the bounded
outgoing buffer, to the websocket.

Theory of operation. ``receive`` decodes a frame with the socket's serializer and routes
it by topic, as ``Phoenix.Socket.handle_in``: a heartbeat (topic ``phoenix``) gets an ok
reply; ``phx_join`` of a routed topic starts a channel Task (a topic already joined is
closed first with ``phx_close`` to its old join_ref); a message to a joined topic goes to
that channel's inbox (stale join_refs are ignored, as Phoenix does); ``phx_leave`` of a
topic not joined gets ok; anything else to a topic not joined gets the error reply
``{"reason": "unmatched topic"}``. Nothing a client sends raises: bad frames, refused
joins and overfull inboxes are answered or dropped, and counted in :class:`Counters`.

Every frame for the client goes through :meth:`Connection.write` into ``out``; when the
buffer already holds ``max_buffered_frames`` the socket is closed (code 1013) and counted,
so a slow reader never holds up the broadcasts to the other sockets.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from pubsub_zmq import PubSubError, Subscription

from .channel import Channel, _Lane
from .errors import FrameError, JoinError
from .socket import Socket
from .wire import Message, Reply, Serializer, route

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = [
    "CLOSE_DRAIN",
    "CLOSE_EXPIRED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_OVERFLOW",
    "CLOSE_TOO_BIG",
    "FLUSH_ON_CLOSE",
    "Connection",
    "Counters",
    "Signal",
]

log = logging.getLogger("tracker_zmq.channels")

CLOSE_GOING_AWAY = 1001
"""Close code of a socket disconnected by its id, or closed for silence."""
CLOSE_EXPIRED = 1008
"""Close code of a socket whose ``Socket.expires_at`` passed (Policy Violation)."""
CLOSE_TOO_BIG = 1009
"""Close code of a socket that sent a frame over ``max_frame_bytes``."""
CLOSE_INTERNAL = 1011
"""Close code of a socket whose server side failed."""
CLOSE_DRAIN = 1012
"""Close code of a socket drained at shutdown (Service Restart, as Phoenix)."""
CLOSE_OVERFLOW = 1013
"""Close code of a socket whose outgoing buffer overflowed (Try Again Later)."""
FLUSH_ON_CLOSE = 5.0
"""Seconds a closing socket has to write what is queued before it is cut off."""


@dataclass(slots=True)
class Counters:
    """The endpoint's running totals (``Endpoint.stats()`` reports them).

    Attributes:
        connects: Sockets accepted.
        rejects: Connections refused (Reject, a bad origin, vsn or token: HTTP 403).
        frames_in: Frames received from clients.
        frames_out: Frames written to clients.
        encodes: Broadcasts encoded by the fastlane (once per serializer per message).
        garbage: Client frames dropped: not JSON, a wrong shape, binary.
        oversize: Client frames over ``max_frame_bytes`` (the socket is closed).
        unmatched: Messages to a topic the socket has not joined (answered).
        stale: Messages with the join_ref of an earlier join (ignored).
        joins: Joins accepted.
        join_errors: Joins refused (JoinError, a crash in join, a limit).
        limited: Joins refused for a limit (channels per socket, joins per second) and
            pushes refused because a channel's inbox was full.
        crashes: Channel handlers that raised (join, handle_in or terminate).
        overflow_closes: Sockets closed because their outgoing buffer overflowed.
        idle_closes: Sockets closed for silence past ``idle_timeout``.
        disconnects: Sockets closed by a ``disconnect`` broadcast on their id.
        drained: Sockets closed by ``shutdown``.
        expired: Sockets closed because their ``Socket.expires_at`` passed.
        dropped_messages: PubSub messages on a channel topic that were not
            ``{"event": str, "payload": dict}`` (dropped).
        resyncs: ``presence_state`` pushed again after an Overflow of a followed topic.
        coalesced_diffs: ``presence_diff`` broadcasts merged into another one's frame
            (``coalesce_diffs``): each socket of the topic got that many frames fewer.
        irregular_diffs: ``presence_diff`` broadcasts sent as they came because they
            were not regular diffs (``coalesce_diffs``).
        refused_banned: Connections refused (HTTP 403) because their socket id is
            banned (a backend's ``disconnect`` with ``ban_seconds``); also in
            ``rejects``.
        reserved: Joins refused because their topic is reserved (the bans topic, a
            socket id, a ``reserved_topics`` pattern); also in ``join_errors``.
    """

    connects: int = 0
    rejects: int = 0
    frames_in: int = 0
    frames_out: int = 0
    encodes: int = 0
    garbage: int = 0
    oversize: int = 0
    unmatched: int = 0
    stale: int = 0
    joins: int = 0
    join_errors: int = 0
    limited: int = 0
    crashes: int = 0
    overflow_closes: int = 0
    idle_closes: int = 0
    disconnects: int = 0
    drained: int = 0
    expired: int = 0
    dropped_messages: int = 0
    resyncs: int = 0
    coalesced_diffs: int = 0
    irregular_diffs: int = 0
    refused_banned: int = 0
    reserved: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Signal:
    """A light ``asyncio.Event`` for one waiter (one per socket: memory counts here)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        """Set the flag and wake the waiter."""
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        """Clear the flag."""
        self._set = False

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    async def wait(self) -> None:
        """Wait until the flag is set (returns at once if it is)."""
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None


class _Inbox:
    # a channel's queue of client messages: a deque and one waiter, lighter than an
    # asyncio.Queue (one per joined channel); the deque (760 bytes, its first block) is
    # made with the first message, as most channels of a large room never get one
    __slots__ = ("_items", "_signal")

    def __init__(self) -> None:
        self._items: deque[Message] | None = None
        self._signal = Signal()

    def put_nowait(self, message: Message) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(message)
        self._signal.set()

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def get(self) -> Message:
        while not self._items:
            self._signal.clear()
            await self._signal.wait()
        return self._items.popleft()


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Connection:
    """The server side of one client socket: its channels and its outgoing frames.

    Made by the endpoint once ``Socket.connect`` accepted. Drive it with
    :meth:`receive`; read frames for the client from :attr:`out` (woken through
    :attr:`wake`); :meth:`close` it once, then ``await`` :meth:`stop`.

    Attributes:
        endpoint: The endpoint.
        socket: The user's Socket.
        serializer: The serializer of the client's vsn.
        out: Frames waiting for the client, oldest first.
        wake: Set when ``out`` gains a frame or the connection closes.
        close_code: None while open; the websocket close code once closing.
        abort: Called (by the endpoint's writer) when an overflow closes the socket, to
            stop a write blocked on the slow client.
        last_seen: ``time.monotonic()`` of the client's last frame, for the endpoint's
            idle sweep; None for a connection it does not watch (``ChannelTest``'s).
        channels: The joined channels by topic.
    """

    def __init__(self, endpoint: Endpoint, socket: Socket, serializer: Serializer) -> None:
        self.endpoint = endpoint
        self.socket = socket
        self.serializer = serializer
        self.counters: Counters = endpoint.counters
        self.out: deque[str] = deque()
        self.wake = Signal()
        self.close_code: int | None = None
        self.abort: Callable[[], object] | None = None
        self.last_seen: float | None = None
        self.channels: dict[str, Channel] = {}
        self._tasks: dict[asyncio.Task[Any], Channel] = {}
        self._inboxes: dict[Channel, _Inbox] = {}
        self._tokens = float(endpoint.options.max_joins_per_second)
        self._refilled = time.monotonic()
        self._id_sub: Subscription | None = None
        socket_id = socket.id()
        if socket_id is not None:
            self._id_sub = endpoint.pubsub.subscribe(
                socket_id, callback=self._on_id_message, link=False
            )

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed."""
        return self.close_code is not None

    # ------------------------------------------------------------------ output

    def write(self, frame: str) -> None:
        """Queue a frame for the client; close the socket if its buffer is full.

        Never blocks and never raises: a socket that does not read fast enough is closed
        (code 1013, counted in ``overflow_closes``) instead of slowing anyone down.
        """
        if self.close_code is not None:
            return
        out = self.out
        if len(out) >= self.endpoint.options.max_buffered_frames:
            self.counters.overflow_closes += 1
            log.info("closing a socket whose outgoing buffer overflowed")
            out.clear()
            self.close(CLOSE_OVERFLOW)
            if self.abort is not None:  # stop a write blocked on the slow client now
                self.abort()
            return
        out.append(frame)
        self.wake.set()

    def reply(self, message: Message, status: str, response: dict[str, Any]) -> None:
        """Write the ``phx_reply`` to ``message``."""
        reply = Reply(message.topic, status, response, message.ref, message.join_ref)  # type: ignore[arg-type]
        self.write(self.serializer.encode(reply))

    def close(self, code: int) -> None:
        """Start closing with websocket close ``code``; the first code given wins."""
        if self.close_code is None:
            self.close_code = code
            self.wake.set()
            if self.abort is not None:  # a client that does not read is cut off
                asyncio.get_running_loop().call_later(FLUSH_ON_CLOSE, self.abort)

    async def stop(self) -> None:
        """End every channel (``terminate("closed")``) and the id subscription."""
        self.close(1000)
        if self._id_sub is not None:
            self.endpoint.pubsub.unsubscribe(self._id_sub)
            self._id_sub = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_id_message(self, message: Any) -> None:
        if type(message) is dict and message.get("event") == "disconnect":
            self.counters.disconnects += 1
            self.close(CLOSE_GOING_AWAY)

    # ------------------------------------------------------------------- input

    def receive(self, data: str | bytes) -> None:
        """Handle one text frame from the client. Never raises."""
        counters = self.counters
        counters.frames_in += 1
        if self.close_code is not None:
            return
        options = self.endpoint.options
        if isinstance(data, bytes):  # vsn 2's binary pushes are not supported
            counters.garbage += 1
            self.endpoint.log_limited("binary", "dropped a binary client frame")
            return
        try:
            message = self.serializer.decode(data, options.max_frame_bytes)
        except FrameError as exc:
            if len(data) > options.max_frame_bytes:
                counters.oversize += 1
                self.close(CLOSE_TOO_BIG)
            else:
                counters.garbage += 1
                self.endpoint.log_limited("garbage", "dropped a client frame: %s", exc)
            return
        topic, event = message.topic, message.event
        if topic == "phoenix" and event == "heartbeat":
            self.write(self.serializer.encode(Reply("phoenix", "ok", {}, message.ref, None)))
            return
        channel = self.channels.get(topic)
        if event == "phx_join":
            if channel is not None:
                self._end(channel, "replaced")
            self._join(message)
            return
        if channel is None:
            if event == "phx_leave":
                self.reply(message, "ok", {})
            else:
                counters.unmatched += 1
                self.reply(message, "error", {"reason": "unmatched topic"})
            return
        if message.join_ref is not None and message.join_ref != channel.join_ref:
            counters.stale += 1  # for a previous join of the topic: Phoenix ignores it
            return
        inbox = self._inboxes[channel]
        if event == "phx_leave":
            inbox.put_nowait(message)  # unbounded for leaves: one per join at most
            self.channels.pop(topic, None)
            return
        if inbox.qsize() >= options.channel_inbox_size:
            counters.limited += 1
            self.reply(message, "error", {"reason": "overloaded"})
            return
        inbox.put_nowait(message)

    def _join_allowed(self) -> bool:
        rate = self.endpoint.options.max_joins_per_second
        now = time.monotonic()
        self._tokens = min(float(rate), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _join(self, message: Message) -> None:
        counters = self.counters
        endpoint = self.endpoint
        cls = route(endpoint.channels, message.topic)
        if cls is None:
            counters.unmatched += 1
            self.reply(message, "error", {"reason": "unmatched topic"})
            return
        if endpoint.reserved(message.topic):
            # a channel on a socket id's topic could push "disconnect" to it, and one on
            # the bans topic could ban: no pattern reaches them
            counters.reserved += 1
            counters.join_errors += 1
            endpoint.log_limited("reserved", "refused a join of reserved topic %r", message.topic)
            self.reply(message, "error", {"reason": "unauthorized"})
            return
        if len(self.channels) >= endpoint.options.max_channels:
            counters.limited += 1
            counters.join_errors += 1
            self.reply(message, "error", {"reason": "too many channels joined"})
            return
        if not self._join_allowed():
            counters.limited += 1
            counters.join_errors += 1
            self.reply(message, "error", {"reason": "too many joins"})
            return
        channel = cls(message.topic, self.socket, self, message.join_ref)
        self.channels[message.topic] = channel
        self._inboxes[channel] = _Inbox()
        task = asyncio.get_running_loop().create_task(
            self._run(channel, message), name=f"channel {message.topic}"
        )
        channel._task = task
        self._tasks[task] = channel
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        channel = self._tasks.pop(task, None)
        if channel is not None:
            self._inboxes.pop(channel, None)
            if self.channels.get(channel.topic) is channel:
                del self.channels[channel.topic]

    def _end(self, channel: Channel, reason: str) -> None:
        # a rejoin of the topic: Phoenix shuts the old channel down and sends phx_close
        del self.channels[channel.topic]
        self._inboxes[channel].put_nowait(Message("", "__stop__", {"reason": reason}))
        if channel._joined:
            channel._close_sent = True
            self._send_close(channel)

    def _send_close(self, channel: Channel) -> None:
        ref = channel.join_ref
        self.write(self.serializer.encode(Message(channel.topic, "phx_close", {}, ref, ref)))

    # ---------------------------------------------------------- a channel's Task

    async def _run(self, channel: Channel, join: Message) -> None:
        counters = self.counters
        endpoint = self.endpoint
        inbox = self._inboxes[channel]
        reason = "closed"
        joined = False
        try:
            try:
                channel._sub = endpoint.pubsub.subscribe(
                    channel.topic, _Lane(channel), queue_size=1, link=True
                )
            except PubSubError as exc:  # not a valid PubSub topic (too long ...)
                counters.join_errors += 1
                self.endpoint.log_limited("topic", "refused a join: %s", exc)
                self.reply(join, "error", {"reason": "invalid topic"})
                return
            try:
                response = await _maybe_await(channel.join(channel.topic, join.payload))
                if response is not None and type(response) is not dict:
                    raise TypeError(f"join returned {type(response).__name__}, not a dict")
            except JoinError as exc:
                counters.join_errors += 1
                self.reply(join, "error", exc.response)
                return
            except Exception:
                counters.crashes += 1
                counters.join_errors += 1
                log.exception("join of %r in %s raised", channel.topic, type(channel).__name__)
                self.reply(join, "error", {"reason": "join crashed"})
                return
            counters.joins += 1
            joined = True
            self.reply(join, "ok", response or {})
            channel._joined = True
            pending, channel._pending = channel._pending, []
            for frame in pending:
                self.write(frame)
            while True:
                message = await inbox.get()
                if message.event == "__stop__":
                    reason = str(message.payload["reason"])
                    return
                if message.event == "phx_leave":
                    reason = "left"
                    self.reply(message, "ok", {})
                    return
                if not await self._handle_in(channel, message):
                    reason = "crashed"
                    return
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except Exception:  # a reply that does not encode, and the like
            counters.crashes += 1
            reason = "crashed"
            log.exception("channel %r of %s failed", channel.topic, type(channel).__name__)
        finally:
            await self._finish(channel, joined, reason)

    async def _handle_in(self, channel: Channel, message: Message) -> bool:
        try:
            result = await _maybe_await(channel.handle_in(message.event, message.payload))
            status, response = _reply_of(result)
            reply = Reply(message.topic, status, response, message.ref, message.join_ref)  # type: ignore[arg-type]
            frame = self.serializer.encode(reply)
        except Exception:
            self.counters.crashes += 1
            log.exception(
                "handle_in(%r) of %r in %s raised",
                message.event,
                channel.topic,
                type(channel).__name__,
            )
            return False
        self.write(frame)
        return True

    async def _finish(self, channel: Channel, joined: bool, reason: str) -> None:
        pubsub = self.endpoint.pubsub
        for sub in list(channel._follows.values()):
            pubsub.unsubscribe(sub)
        channel._follows.clear()
        if channel._sub is not None:
            pubsub.unsubscribe(channel._sub)
        channel._joined = False
        channel._ended = True  # later pushes (from a task it left behind) go nowhere
        channel._pending.clear()
        if joined:
            try:
                await _maybe_await(channel.terminate(reason))
            except Exception:
                self.counters.crashes += 1
                log.exception("terminate of %r raised", channel.topic)
        if reason in ("left", "replaced") and not channel._close_sent:
            channel._close_sent = True
            self._send_close(channel)
        elif reason == "crashed":
            ref = channel.join_ref
            message = Message(channel.topic, "phx_error", {"reason": "channel_crash"}, ref, ref)
            self.write(self.serializer.encode(message))


def _reply_of(result: Any) -> tuple[str, dict[str, Any]]:
    if result is None:
        return "ok", {}
    if type(result) is dict:
        return "ok", result
    if (
        type(result) is tuple
        and len(result) == 2
        and result[0] in ("ok", "error")
        and type(result[1]) is dict
    ):
        return result[0], result[1]
    raise TypeError(
        f"handle_in returned {result!r}: expected None, a dict, or ('ok' | 'error', dict)"
    )
