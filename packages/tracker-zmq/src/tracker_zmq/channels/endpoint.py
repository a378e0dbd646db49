"""Endpoint: Phoenix's websocket transport as a pure ASGI app.

Not pure: it serves websockets on the event loop. A port of ``Phoenix.Transports.
WebSocket`` with the socket drainer of ``Phoenix.Socket.PoolSupervisor``; the protocol
rules live in :mod:`~tracker_zmq.channels.connection` and the frames in
:mod:`~tracker_zmq.channels.wire`. It imports no web framework: any ASGI server runs it,
and Starlette or FastAPI mount it (``app.mount("/socket", endpoint)``; the mount's
``root_path`` is stripped, so the socket is at ``<mount>/websocket``).

Theory of operation. A websocket request to ``path`` is checked (origin, ``vsn``, the
``authToken`` subprotocol), the Socket's ``connect`` runs, and then the request is either
refused with HTTP 403 or accepted (selecting the ``phoenix`` subprotocol when offered).
Two tasks serve an accepted socket: the reader hands each frame to the connection, and
the writer drains the connection's bounded outgoing buffer to the client. One timer for
all sockets, every ``idle_timeout / 8`` seconds, closes those silent for ``idle_timeout``
seconds (phoenix.js heartbeats every 30 s). A socket whose ``Socket.expires_at`` was set
(its credentials' expiry) has a timer of its own and is closed then, with code 1008. With
``coalesce_diffs``, a topic's ``presence_diff`` broadcasts wait in a window
(:mod:`~tracker_zmq.channels.coalesce`) and go out merged, encoded once per serializer,
to the channels that got them. Query strings carry tokens, so they are never logged: the
endpoint blanks the scope's ``query_string`` once it has read the params (servers'
access logs then show the path only).

Bans. From its construction until :meth:`Endpoint.shutdown` the endpoint subscribes to
:data:`~tracker_zmq.channels.BANS_TOPIC`, where a backend's ``disconnect`` with
``ban_seconds`` travels, and keeps the bans in a bounded
:class:`~tracker_zmq.channels.bans.BanTable`: a socket whose ``Socket.id()`` is banned is
refused at connect (HTTP 403, counted in ``refused_banned``). Reserved topics (the bans
topic, the socket-id topics: ``reserved_topics`` patterns and the ids of the sockets
connected here) cannot be joined through any channel pattern, so no client can push a
``disconnect`` to another socket's id or a ban.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from pubsub_zmq import PubSub, PubSubError, Subscription
from tracker_zmq.errors import ConfigError

from .bans import BanTable
from .channel import Channel
from .coalesce import DiffMerger
from .connection import (
    CLOSE_DRAIN,
    CLOSE_EXPIRED,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    Connection,
    Counters,
)
from .control import BANS_TOPIC
from .errors import FrameError, Reject
from .socket import Socket
from .wire import OriginCheck, auth_token, origin_allowed, parse_query, serializer_for

if TYPE_CHECKING:
    from tracker_zmq.presence import Presence

__all__ = ["Endpoint", "EndpointOptions"]

log = logging.getLogger("tracker_zmq.channels")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """The endpoint's options (keyword arguments of :class:`Endpoint`).

    Attributes:
        path: The websocket's path below the mount point (phoenix.js appends
            ``/websocket`` to the socket URL).
        check_origin: The Origin rule (see :data:`~tracker_zmq.channels.wire.OriginCheck`):
            True, the request's own host (Phoenix's default).
        idle_timeout: Seconds without a frame from the client before its socket is
            closed (Phoenix's websocket ``timeout``, 60 s).
        max_frame_bytes: The largest client frame; a larger one closes the socket (1009).
        max_channels: Channels one socket may have joined at once (Phoenix's
            ``max_channels_per_transport``, 100).
        max_joins_per_second: Joins per second per socket, with a burst of as many.
        max_buffered_frames: Frames waiting for a slow client before its socket is
            closed (1013) instead of holding up the others.
        channel_inbox_size: Pushes waiting for one channel's ``handle_in`` before
            further ones get ``{"reason": "overloaded"}``.
        drain_batch_size: Sockets closed per batch by ``shutdown``.
        drain_interval: Seconds between two drain batches.
        drain_timeout: Seconds ``shutdown`` waits for the drained sockets to finish.
        coalesce_diffs: Seconds over which a topic's ``presence_diff`` broadcasts are
            merged into one frame per socket (see :mod:`~tracker_zmq.channels.coalesce`);
            0, the default, sends each one as it comes, as Phoenix does.
        max_bans: Socket ids banned at once; beyond it the ban that would end soonest
            is forgotten (counted in ``bans_evicted``).
        reserved_topics: Topic patterns (exact, or a prefix ending in ``*``) no client
            may join whatever the channel routes say: the socket-id topics. The default
            reserves ``user_socket:*``, the ids of the standalone node and of the
            docs' examples; an app whose ``Socket.id()`` has another form lists it
            here. The bans topic and the ids of the sockets connected to this endpoint
            are reserved in any case.
    """

    path: str = "/websocket"
    check_origin: OriginCheck = True
    idle_timeout: float = 60.0
    max_frame_bytes: int = 1 << 20
    max_channels: int = 100
    max_joins_per_second: float = 100.0
    max_buffered_frames: int = 1024
    channel_inbox_size: int = 100
    drain_batch_size: int = 10_000
    drain_interval: float = 2.0
    drain_timeout: float = 30.0
    coalesce_diffs: float = 0.0
    max_bans: int = 100_000
    reserved_topics: tuple[str, ...] = ("user_socket:*",)

    def __post_init__(self) -> None:
        reserved: Any = self.reserved_topics
        if type(reserved) not in (tuple, list) or not all(
            type(p) is str and p and "*" not in p[:-1] for p in reserved
        ):
            raise ConfigError(
                f"reserved_topics must be topic patterns (a topic, or a prefix and '*'), "
                f"got {reserved!r}"
            )
        object.__setattr__(self, "reserved_topics", tuple(reserved))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("path", "check_origin", "reserved_topics"):
                continue
            if f.name == "coalesce_diffs":
                if type(value) not in (int, float) or not 0 <= value <= 60:
                    raise ConfigError(f"coalesce_diffs must be 0 to 60 seconds, got {value!r}")
                continue
            if type(value) not in (int, float) or value <= 0:
                raise ConfigError(f"{f.name} must be a positive number, got {value!r}")
        for name in ("max_frame_bytes", "max_channels", "max_buffered_frames", "max_bans"):
            if type(getattr(self, name)) is not int:
                raise ConfigError(f"{name} must be an int")
        if type(self.drain_batch_size) is not int or type(self.channel_inbox_size) is not int:
            raise ConfigError("drain_batch_size and channel_inbox_size must be ints")
        if not self.path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {self.path!r}")


class _Window:
    # one topic's presence_diffs being coalesced: the merge, the channels that got a
    # diff during the window (the fastlane told them), and the timer of the flush
    __slots__ = ("handle", "merger", "recipients")

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self.handle = handle
        self.merger = DiffMerger()
        self.recipients: dict[Channel, None] = {}


class Endpoint:
    """Phoenix's socket endpoint as an ASGI app: phoenix.js connects to it unchanged.

    ```python
    endpoint = Endpoint(presence, socket=UserSocket, channels={"room:*": Room})
    app.mount("/socket", endpoint)      # Starlette, FastAPI; any ASGI server
    ```

    Served alone, it also answers the ASGI lifespan (its shutdown drains what is still
    open). uvicorn closes every websocket itself before the lifespan's shutdown, so to
    drain in batches serve with :class:`~tracker_zmq.channels.server.DrainingServer`,
    which calls ``await endpoint.shutdown()`` on SIGTERM before uvicorn stops.

    Args:
        presence: The node's started :class:`~tracker_zmq.Presence` (``Channel.track``
            and ``channel.presence`` use it), or None for channels without presence.
        socket: The :class:`~tracker_zmq.channels.Socket` subclass made per connection.
        channels: Topic patterns to :class:`~tracker_zmq.channels.Channel` subclasses:
            exact topics, or prefixes ending in ``*`` (``"room:*"``).
        pubsub: The PubSub (default: the presence's).
        **options: :class:`EndpointOptions` fields.

    Attributes:
        presence: The Presence, or None.
        pubsub: The PubSub channel messages travel on.
        channels: The routes.
        options: The options.
        counters: The running totals (:class:`~tracker_zmq.channels.connection.Counters`).

    Raises:
        ConfigError: No PubSub, a bad route, or a bad option.
    """

    def __init__(
        self,
        presence: Presence | None = None,
        *,
        socket: type[Socket] = Socket,
        channels: Mapping[str, type[Channel]] | None = None,
        pubsub: PubSub | None = None,
        **options: Any,
    ) -> None:
        if pubsub is None:
            if presence is None:
                raise ConfigError("an Endpoint needs a presence or a pubsub")
            pubsub = presence.pubsub
        routes = dict(channels or {})
        for pattern, cls in routes.items():
            if type(pattern) is not str or not pattern or "*" in pattern[:-1]:
                raise ConfigError(f"bad topic pattern {pattern!r}: a topic, or a prefix and '*'")
            if not (isinstance(cls, type) and issubclass(cls, Channel)):
                raise ConfigError(f"{pattern!r} routes to {cls!r}, not a Channel subclass")
        if not (isinstance(socket, type) and issubclass(socket, Socket)):
            raise ConfigError(f"socket must be a Socket subclass, got {socket!r}")
        try:
            self.options = EndpointOptions(**options)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        self.presence = presence
        self.pubsub = pubsub
        self.channels = routes
        self.socket_class = socket
        self.counters = Counters()
        self._connections: set[Connection] = set()
        self._draining = False
        self._all_closed = asyncio.Event()
        self._logged: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._expiries: dict[Connection, asyncio.TimerHandle] = {}  # Socket.expires_at
        self.bans = BanTable(self.options.max_bans)
        """The socket ids banned here, until when (see :mod:`~tracker_zmq.channels.bans`)."""
        self._socket_ids: dict[str, int] = {}  # ids of the sockets connected here: count
        self._reserved_exact = {p for p in self.options.reserved_topics if not p.endswith("*")}
        self._reserved_prefixes = tuple(
            p[:-1] for p in self.options.reserved_topics if p.endswith("*")
        )
        self._bans_sub: Subscription | None = None
        try:
            self._bans_sub = pubsub.subscribe(BANS_TOPIC, callback=self._on_ban, link=False)
        except PubSubError as exc:  # a stopped PubSub: nothing will connect anyway
            raise ConfigError(f"the Endpoint's PubSub cannot subscribe: {exc}") from None

    # ---------------------------------------------------------------- public

    def presence_required(self) -> Presence:
        """The Presence, or ConfigError when the endpoint has none."""
        if self.presence is None:
            raise ConfigError("this Endpoint was made without a Presence")
        return self.presence

    def stats(self) -> dict[str, int]:
        """What the endpoint serves and has done.

        Returns:
            ``sockets`` (open now), ``channels`` (joined now), and the running totals
            of :class:`~tracker_zmq.channels.connection.Counters`: ``frames_in``,
            ``frames_out``, ``encodes`` (a broadcast to N sockets of one protocol
            version is encoded once), ``overflow_closes``, ``expired`` (closed at
            their ``Socket.expires_at``), ``garbage``, ``refused_banned`` and the
            others; then the bans: ``banned`` (socket ids banned now), ``bans_heard``,
            ``bans_invalid`` (malformed ban messages, dropped) and ``bans_evicted``
            (forgotten early at ``max_bans``).
        """
        bans = self.bans.counters
        return {
            "sockets": len(self._connections),
            "channels": sum(len(c.channels) for c in self._connections),
            **self.counters.as_dict(),
            "banned": len(self.bans),
            "bans_heard": bans["heard"],
            "bans_invalid": bans["invalid"],
            "bans_evicted": bans["evicted"],
        }

    def reserved(self, topic: str) -> bool:
        """Whether ``topic`` is reserved: no channel pattern lets a client join it.

        The bans topic, the ``reserved_topics`` patterns and the socket ids of the
        sockets connected to this endpoint.
        """
        return (
            topic == BANS_TOPIC
            or topic in self._reserved_exact
            or topic in self._socket_ids
            or topic.startswith(self._reserved_prefixes)
        )

    def _on_ban(self, message: Any) -> None:
        if not self.bans.receive(message, time.monotonic()):
            self.log_limited("ban", "dropped a malformed ban message")

    async def shutdown(self) -> None:
        """Drain the sockets in batches, as Phoenix's socket drainer, then return.

        New connections are refused from the start; the open ones are closed
        ``drain_batch_size`` at a time (code 1012, so phoenix.js reconnects, to
        another node behind the load balancer), ``drain_interval`` seconds apart.
        Returns when every socket finished, or after ``drain_timeout`` seconds.
        """
        self._draining = True
        if self._bans_sub is not None:
            self.pubsub.unsubscribe(self._bans_sub)
            self._bans_sub = None
        for topic in list(self._windows):  # what is being coalesced goes out first
            self._flush(topic)
        opts = self.options
        pending = list(self._connections)
        for start in range(0, len(pending), opts.drain_batch_size):
            if start:
                await asyncio.sleep(opts.drain_interval)
            for conn in pending[start : start + opts.drain_batch_size]:
                if not conn.closed:
                    self.counters.drained += 1
                    conn.close(CLOSE_DRAIN)
        if self._connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(opts.drain_timeout):
                    await self._all_closed.wait()

    def log_limited(self, kind: str, message: str, *args: object) -> None:
        """Log a client's misbehaviour: the first ten of a kind, then every thousandth."""
        seen = self._logged.get(kind, 0) + 1
        self._logged[kind] = seen
        if seen <= 10 or seen % 1000 == 0:
            log.info(message + " (%d so far)", *args, seen)

    # ------------------------------------------------------------- idle sweep

    def _sweep_period(self) -> float:
        # a silent socket is closed between idle_timeout and 1.125 times it
        return self.options.idle_timeout / 8

    def _sweep(self) -> None:
        # one timer for every socket's idle timeout, instead of a timeout around each
        # socket's receive (a Timeout and a TimerHandle per socket, ~600 bytes)
        self._sweeper = None
        if not self._connections:
            return
        deadline = time.monotonic() - self.options.idle_timeout
        for conn in self._connections:
            last = conn.last_seen
            if last is not None and last <= deadline and not conn.closed:
                self.counters.idle_closes += 1
                conn.close(CLOSE_GOING_AWAY)
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self._sweep_period(), self._sweep)

    # ------------------------------------------------------------- expiry

    def _expire_later(self, conn: Connection, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._expiries[conn] = loop.call_later(max(0.0, delay), self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        # the deadline the endpoint knew has come: the app may have moved expires_at
        # since (a token refreshed over a channel), later or to None
        self._expiries.pop(conn, None)
        if conn.closed:
            return
        try:
            expires_at = _deadline(conn.socket)
        except TypeError as exc:  # set to garbage after connect: the socket ends now
            log.error("closing a socket: %s", exc)
            expires_at = -math.inf
        if expires_at is None:
            return
        remaining = expires_at - time.time()
        if remaining > 0:
            self._expire_later(conn, remaining)
            return
        self.counters.expired += 1
        conn.close(CLOSE_EXPIRED)

    # ------------------------------------------------------------- coalescing

    def _coalesce(self, channel: Channel, payload: Any, cache: dict[Any, Any]) -> bool:
        # called by a channel's fastlane for a presence_diff when coalescing is on: the
        # first channel of a dispatch merges the payload into its topic's window (the
        # cache, one per dispatch, remembers that), every channel joins the recipients;
        # False: not coalesced, the channel sends the diff as it came
        window = cache.get(self)
        if window is None:
            if self in cache:
                return False
            topic = channel.topic
            window = self._windows.get(topic)
            if window is None:
                loop = asyncio.get_running_loop()
                handle = loop.call_later(self.options.coalesce_diffs, self._flush, topic)
                window = self._windows[topic] = _Window(handle)
            if not window.merger.add(payload):
                # not a regular diff: what came before goes out first, then this one
                self.counters.irregular_diffs += 1
                self._flush(topic)
                cache[self] = None
                return False
            cache[self] = window
        window.recipients[channel] = None
        return True

    def _flush(self, topic: str) -> None:
        window = self._windows.pop(topic, None)
        if window is None:
            return
        window.handle.cancel()
        merger = window.merger
        if not merger.count:
            return
        counters = self.counters
        counters.coalesced_diffs += merger.count - 1
        payload = merger.payload()
        frames: dict[Any, str | None] = {}
        for channel in window.recipients:
            conn = channel._conn
            if conn.closed:
                continue
            serializer = conn.serializer
            if serializer in frames:
                frame = frames[serializer]
            else:
                try:
                    frame = serializer.fastlane(topic, "presence_diff", payload)
                    counters.encodes += 1
                except TypeError:  # a meta that is not JSON: as the fastlane does
                    frame = None
                    counters.dropped_messages += merger.count
                frames[serializer] = frame
            if frame is not None:
                channel._send(frame)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (websocket, http and lifespan scopes)."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if kind == "http":
            status = 400 if path == self.options.path else 404
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if kind != "websocket":
            return
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        # tokens travel in the query string: take it out of the scope before anything
        # (the server's access log among them) can log it
        query = scope.get("query_string", b"")
        scope["query_string"] = b""
        if path != self.options.path:
            await self._refuse(scope, send, 404)
            return
        connection = await self._connect(scope, query)
        if connection is None:
            self.counters.rejects += 1
            await self._refuse(scope, send, 403)
            return
        await self._serve(scope, connection, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _refuse(self, scope: Scope, send: Send, status: int) -> None:
        # A 403 is a close before the accept, which every ASGI server answers with 403:
        # uvicorn 0.54 logs a false "returned without completing handshake" ERROR after
        # a websocket.http.response (Kludex/uvicorn#3138), and refusals are common.
        if status != 403 and "websocket.http.response" in scope.get("extensions", {}):
            start = {"type": "websocket.http.response.start", "status": status, "headers": []}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": b""})
        else:  # a close before the accept: the server answers 403
            await send({"type": "websocket.close", "code": 1008})

    async def _connect(self, scope: Scope, query: bytes) -> Connection | None:
        if self._draining:
            return None
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host"), self.options.check_origin):
            self.log_limited("origin", "refused a websocket from origin %r", origin)
            return None
        try:
            params = parse_query(query)
            token, _ = auth_token(scope.get("subprotocols", []))
        except FrameError as exc:
            self.log_limited("handshake", "refused a websocket: %s", exc)
            return None
        vsn = params.pop("vsn", None)
        serializer = serializer_for(vsn)
        if serializer is None:
            self.log_limited("vsn", "refused a websocket of unsupported vsn %r", vsn)
            return None
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            with contextlib.suppress(CookieError):
                jar = SimpleCookie(headers["cookie"])
                cookies = {k: m.value for k, m in jar.items()}
        client = scope.get("client")
        scheme = "wss" if scope.get("scheme") in ("wss", "https") else "ws"
        full_path = scope.get("root_path", "") + self.options.path
        info: dict[str, Any] = {
            "headers": headers,
            "cookies": cookies,
            "peer": tuple(client) if client else None,
            "uri": f"{scheme}://{headers.get('host', '')}{full_path}",
            "origin": origin,
            "auth_token": token,
        }
        socket = self.socket_class()
        socket.params, socket.info, socket.vsn = params, info, vsn or "1.0.0"
        try:
            result = socket.connect(params, info)
            if inspect.isawaitable(result):
                await result
            socket_id = socket.id()
            if socket_id is not None and (type(socket_id) is not str or not socket_id):
                raise TypeError(f"{type(socket).__name__}.id() returned {socket_id!r}")
            if socket_id is not None and self.bans.banned(socket_id, time.monotonic()):
                self.counters.refused_banned += 1
                self.log_limited("banned", "refused a connection of a banned socket id")
                return None
            expires_at = _deadline(socket)
            if expires_at is not None and expires_at <= time.time():
                self.log_limited("expired", "refused a connection whose expires_at has passed")
                return None
        except Reject as exc:
            self.log_limited("reject", "%s refused a connection: %s", type(socket).__name__, exc)
            return None
        except Exception:
            log.exception("%s.connect raised", type(socket).__name__)
            return None
        return Connection(self, socket, serializer)

    async def _serve(self, scope: Scope, conn: Connection, receive: Receive, send: Send) -> None:
        offered = scope.get("subprotocols", [])
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if "phoenix" in offered:
            accept["subprotocol"] = "phoenix"
        loop = asyncio.get_running_loop()
        conn.last_seen = time.monotonic()
        self._connections.add(conn)
        socket_id = conn.socket.id()
        if socket_id is not None:
            self._socket_ids[socket_id] = self._socket_ids.get(socket_id, 0) + 1
        self._all_closed.clear()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_period(), self._sweep)
        self.counters.connects += 1
        if conn.socket.expires_at is not None:  # checked by _connect
            self._expire_later(conn, conn.socket.expires_at - time.time())
        gone = False
        writer = loop.create_task(self._write(conn, send), name="websocket writer")
        conn.abort = writer.cancel

        async def read() -> None:
            nonlocal gone
            try:
                while True:
                    event = await receive()
                    conn.last_seen = time.monotonic()
                    if event["type"] != "websocket.receive":
                        gone = True
                        writer.cancel()
                        return
                    text = event.get("text")
                    conn.receive(text if text is not None else event.get("bytes") or b"")
            finally:
                conn.close(CLOSE_INTERNAL)  # whatever ended the reading ends the socket

        reader: asyncio.Task[None] | None = None
        try:
            await send(accept)
            reader = loop.create_task(read(), name="websocket reader")
            await asyncio.wait([writer])
        finally:
            if reader is not None:
                reader.cancel()
            writer.cancel()
            await asyncio.gather(writer, *([reader] if reader else []), return_exceptions=True)
            expiry = self._expiries.pop(conn, None)
            if expiry is not None:
                expiry.cancel()
            await conn.stop()
            self._connections.discard(conn)
            if socket_id is not None:
                left = self._socket_ids.pop(socket_id, 1) - 1
                if left > 0:
                    self._socket_ids[socket_id] = left
            if not self._connections:
                self._all_closed.set()
            if not gone and conn.close_code is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await send({"type": "websocket.close", "code": conn.close_code})

    async def _write(self, conn: Connection, send: Send) -> None:
        out = conn.out
        counters = self.counters
        while True:
            while out and conn.close_code is None:
                await send({"type": "websocket.send", "text": out.popleft()})
                counters.frames_out += 1
            if conn.close_code is not None:
                # a graceful close (drain, idle, disconnect) sends what is queued first;
                # an overflow cleared the queue
                while out:
                    await send({"type": "websocket.send", "text": out.popleft()})
                    counters.frames_out += 1
                return
            conn.wake.clear()
            await conn.wake.wait()


def _deadline(socket: Socket) -> float | None:
    # Socket.expires_at, checked: seconds since the epoch, or None
    expires_at: Any = socket.expires_at
    if expires_at is None:
        return None
    if type(expires_at) not in (int, float) or not math.isfinite(expires_at):
        raise TypeError(
            f"{type(socket).__name__}.expires_at must be None or seconds since the epoch "
            f"(time.time()), not {expires_at!r}"
        )
    return float(expires_at)
