"""The asyncio Python client of a standalone node's client endpoint. Not pure.

There is no Phoenix module to port here: in Phoenix the tracked processes live on the
node. :class:`Client` owns a DEALER socket and two tasks (the reader and the
heartbeat) and speaks the protocol of :mod:`tracker_zmq.protocol` (the pure codec,
specified in ``docs/reference/protocol.md``).

Requests pipeline: every call sends its frame at once and waits for the reply with its
id, so calls awaited together (``asyncio.gather``, many tasks) share the one socket with
up to ``max_in_flight`` requests outstanding; replies are matched by id in whatever
order they come. The codec's names are also importable from here, as they
were when it lived in this module; :func:`decode_request` here returns the generic
:class:`~tracker_zmq.protocol.Request`.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

import zmq
import zmq.asyncio

from crdt_state import Key, Meta, Topic
from tracker_zmq import protocol
from tracker_zmq.errors import (
    AlreadyTracked,
    ClientClosed,
    ClientError,
    LimitExceeded,
    NoPresence,
    ProtocolError,
    RequestError,
    RequestTimeout,
    TrackerError,
    UnsupportedOp,
)
from tracker_zmq.options import check_positive
from tracker_zmq.protocol import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_FRAME_BYTES,
    ERROR_CODES,
    MAX_ID_CHARS,
    OPS,
    PROTOCOL_VERSION,
    SESSION_OPS,
    Event,
    Reply,
    Request,
    TrackItem,
    UntrackItem,
    decode_message,
    encode_diff,
    encode_error,
    encode_ok,
    encode_request,
    served_ops,
    to_request,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ERROR_CODES",
    "MAX_ID_CHARS",
    "OPS",
    "PROTOCOL_VERSION",
    "SESSION_OPS",
    "Client",
    "ClientClosed",
    "ClientDiff",
    "ClientError",
    "DiffCallback",
    "DiffSubscription",
    "Event",
    "LimitExceeded",
    "PresenceSpec",
    "ProtocolError",
    "Reply",
    "Request",
    "RequestError",
    "RequestTimeout",
    "UnsupportedOp",
    "decode_message",
    "decode_request",
    "encode_diff",
    "encode_error",
    "encode_ok",
    "encode_request",
]

log = logging.getLogger("tracker_zmq.client")

_READ_BUDGET = 256  # frames read before yielding to the loop


def _error_of(error: dict[str, Any]) -> TrackerError:
    """The exception of one failed item of a bulk reply (as a single request raises)."""
    code = str(error.get("code") or "internal")
    message = str(error.get("message") or "")
    if code == "already_tracked":
        return AlreadyTracked(message)
    if code == "limit_exceeded":
        return LimitExceeded(code, message, error)
    return RequestError(code, message, error)


def decode_request(frame: bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Request:
    """Decode one request frame into the generic :class:`Request` (the form of old).

    Kept so that code written against this module goes on working; a node decodes with
    :func:`tracker_zmq.protocol.decode_request`, which returns the op's own dataclass
    and checks exactly the same.

    Raises:
        ProtocolError: As :func:`tracker_zmq.protocol.decode_request`.
    """
    return to_request(protocol.decode_request(frame, max_bytes))


# ----------------------------------------------------------------------- the client


@dataclass(frozen=True, slots=True)
class ClientDiff:
    """A diff of one topic pushed by the node.

    Attributes:
        topic: The topic.
        joins: ``[(key, meta), ...]`` that joined.
        leaves: ``[(key, meta), ...]`` that left.
    """

    topic: Topic
    joins: list[tuple[Key, Meta]]
    leaves: list[tuple[Key, Meta]]


DiffCallback: TypeAlias = Callable[[ClientDiff], Awaitable[object] | object]
"""A diff callback: called with each :class:`ClientDiff` in order; may be async."""


class DiffSubscription:
    """Diffs of one topic: an async iterator of :class:`ClientDiff`, or a callback.

    Made by :meth:`Client.subscribe`. The queue is bounded: when it is full the oldest
    diff is dropped (counted in ``dropped``); a consumer that falls behind should
    re-read :meth:`Client.list`. Iteration ends when the subscription or the client is
    closed.

    Attributes:
        topic: The subscribed topic.
        dropped: Diffs dropped because the queue was full.
    """

    def __init__(
        self, client: Client, topic: Topic, queue_size: int, callback: DiffCallback | None
    ) -> None:
        self.topic = topic
        self.dropped = 0
        self._client = client
        self._items: collections.deque[ClientDiff] = collections.deque(maxlen=queue_size)
        self._waiter: asyncio.Future[None] | None = None
        self._active = True
        self._callback = callback
        self._pump: asyncio.Task[None] | None = None
        if callback is not None:
            self._pump = asyncio.create_task(self._run_callback(callback))

    @property
    def active(self) -> bool:
        """Whether the subscription still receives diffs."""
        return self._active

    def _push(self, diff: ClientDiff) -> None:
        if not self._active:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(diff)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ClientDiff:
        while not self._items:
            if not self._active:
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    async def _run_callback(self, callback: DiffCallback) -> None:
        async for diff in self:
            try:
                result = callback(diff)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("diff callback for topic %r raised", self.topic)

    async def close(self) -> None:
        """Stop this subscription (the node stops pushing the topic once no
        subscription of this client wants it). Idempotent."""
        if not self._active:
            return
        await self._client._unsubscribe(self)

    def _close(self) -> None:
        self._active = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _finish(self) -> None:
        self._close()
        pump = self._pump
        if pump is not None and pump is not asyncio.current_task():
            # let the callback consume what is queued, then end
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(pump)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


_Presence = tuple[str | None, Topic, Key]


class _Slots:
    """A FIFO counting semaphore whose release is O(1) however many wait (asyncio's
    Semaphore scans its waiters on every release: quadratic with thousands of requests
    started at once)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


PresenceSpec: TypeAlias = tuple[Topic, Key, Meta] | tuple[Topic, Key, Meta, str | None]
"""One presence of :meth:`Client.track_many`: ``(topic, key, meta)`` or ``(topic, key,
meta, owner)``."""


class Client:
    """An asyncio client of a standalone node's client endpoint.

    The client holds a session with the node: it says hello, heartbeats every
    ``heartbeat_interval`` seconds, and remembers every presence it tracked and every
    topic it subscribed to. When the node answers ``unknown_session`` (the node
    restarted, or the session's lease ran out while the client was cut off) the client
    opens a new session and tracks and subscribes everything again, then retries the
    request. Use it as an async context manager, or call :meth:`connect` and
    :meth:`close`.

    Hello tells the client which ops the node serves (:attr:`ops`): during a rolling
    upgrade a node may be of an older release, and a method whose op it does not serve
    raises :class:`~tracker_zmq.errors.UnsupportedOp` without sending anything.

    Example::

        async with Client("tcp://127.0.0.1:5560", client_id="web-7") as client:
            await client.track("room:42", "alice", {"status": "online"})
            diffs = await client.subscribe("room:42")
            print(await client.list("room:42"))
            async for diff in diffs:
                ...

    Args:
        endpoint: The node's client endpoint (``--client-bind``).
        client_id: A label of this client (1 to 256 characters) used in logs and in the
            owner ids of its presences; default: a random one.
        heartbeat_interval: Seconds between heartbeats.
        lease: Seconds the node keeps the session's presences without hearing from the
            client; default ``3 * heartbeat_interval``. The node refuses a lease
            outside its bounds (``bad_lease``).
        timeout: Seconds a request waits for its reply.
        queue_size: Diffs each subscription holds before dropping the oldest.
        max_frame_bytes: The largest frame accepted from the node.
        curve_secret_key: This client's CURVE secret key (Z85), when the node uses
            CURVE; its public key must be on the node's client allow-list.
        curve_server_key: The node's CURVE public key (Z85); needed with
            ``curve_secret_key``.
        max_in_flight: Requests outstanding at once; more wait for a reply to come
            first. Bounded so that the replies fit the node's queue to this client
            (1,000 messages, pushed diffs included): a reply over it would be dropped.

    Raises:
        ValueError: An option is invalid.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        client_id: str | None = None,
        heartbeat_interval: float = 2.0,
        lease: float | None = None,
        timeout: float = 5.0,
        queue_size: int = 10_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        curve_secret_key: str | None = None,
        curve_server_key: str | None = None,
        max_in_flight: int = 500,
    ) -> None:
        if type(endpoint) is not str or not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(
                f"endpoint must be a tcp://, ipc:// or inproc:// address: {endpoint!r}"
            )
        if client_id is None:
            client_id = f"py-{secrets.token_hex(6)}"
        if type(client_id) is not str or not 0 < len(client_id) <= MAX_ID_CHARS:
            raise ValueError(f"client_id must be a str of 1 to {MAX_ID_CHARS} characters")
        heartbeat_interval = check_positive("heartbeat_interval", heartbeat_interval)
        timeout = check_positive("timeout", timeout)
        lease = 3 * heartbeat_interval if lease is None else check_positive("lease", lease)
        if lease <= heartbeat_interval:
            raise ValueError(f"lease must be seconds above heartbeat_interval, not {lease!r}")
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, not {queue_size!r}")
        if (curve_secret_key is None) != (curve_server_key is None):
            raise ValueError("curve_secret_key and curve_server_key go together")
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive int, not {max_in_flight!r}")
        self.endpoint = endpoint
        self.client_id = client_id
        self.heartbeat_interval = float(heartbeat_interval)
        self.lease = float(lease)
        self.timeout = float(timeout)
        self.queue_size = queue_size
        self.max_frame_bytes = max_frame_bytes
        self._curve = (
            (curve_secret_key, curve_server_key)
            if curve_secret_key is not None and curve_server_key is not None
            else None
        )
        self.session: str | None = None
        """The current session's id (``"<client>@<node>:<vsn>:<n>"``), once connected."""
        self.node: str | None = None
        """The name of the node the session is with."""
        self.node_vsn: int | None = None
        """The node's incarnation the session belongs to."""
        self.resyncs = 0
        """How many times the client opened a new session and re-tracked everything."""
        self.max_presences: int | None = None
        """The node's per-session presence limit (told in hello)."""
        self.max_batch: int = DEFAULT_MAX_BATCH
        """The most presences sent in one bulk request: :meth:`track_many` and
        :meth:`untrack_many` split larger ones. A node whose limit is lower refuses a
        batch with its ``max_batch``: the client then takes that and splits again."""
        self.max_in_flight = max_in_flight
        self.ops: frozenset[str] | None = None
        """The ops the node serves, as its last hello reply listed them (a node of the
        first release lists none: ``protocol.V1_OPS``); None before the first hello.
        A method whose op is not in it raises :class:`UnsupportedOp` without sending."""
        self._token: str | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._shadow: zmq.Socket[bytes] | None = None  # the same socket, for non-blocking I/O
        self._outbox: collections.deque[bytes] = collections.deque()  # frames not sent yet
        self._flushing = False  # a flush is scheduled, or a sender task waits on the socket
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._next_id = 0
        self._presences: dict[_Presence, Meta] = {}
        self._subs: dict[Topic, list[DiffSubscription]] = {}
        self._resync_lock = asyncio.Lock()
        self._slots = _Slots(max_in_flight)
        self._closed = False
        self.dropped_frames = 0
        """Frames from the node that did not decode (dropped)."""

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, open a session and start heartbeating.

        Raises:
            RequestTimeout: The node did not answer hello within ``timeout``.
            RequestError: The node refused the session (e.g. ``bad_lease``).
            ProtocolError: The node's hello reply lists its ``ops`` malformed.
            ClientClosed: The client was already closed.
        """
        await self.open()
        try:
            await self._hello()
        except BaseException:
            await self.close(bye=False)
            raise
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))

    async def open(self) -> None:
        """Connect the socket without opening a session.

        Enough for the session-less requests (:meth:`list`, :meth:`get_by_key`,
        :meth:`status`); :meth:`connect` calls it.

        Raises:
            ClientClosed: The client was closed.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._sock is not None:
            return
        ctx = self._ctx = zmq.asyncio.Context()
        sock = self._sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = 1  # never queue requests for a node that is not connected
        sock.maxmsgsize = self.max_frame_bytes * 2 + 65536
        sock.rcvhwm = max(1000, 2 * self.max_in_flight)  # the replies always fit
        if self._curve is not None:
            secret, server = self._curve
            sock.curve_secretkey = secret.encode("ascii")
            sock.curve_publickey = zmq.curve_public(secret.encode("ascii"))
            sock.curve_serverkey = server.encode("ascii")
        sock.connect(self.endpoint)
        self._shadow = zmq.Socket.shadow(sock.underlying)
        self._tasks.append(asyncio.create_task(self._read_loop(sock, self._shadow)))

    async def close(self, *, bye: bool = True) -> None:
        """Close the client: end the session, the tasks and the socket. Idempotent.

        Args:
            bye: Tell the node to untrack this session's presences now (best effort,
                within ``timeout``). False just goes silent: the node untracks them when
                the lease runs out, as for a client that died.
        """
        if self._closed:
            return
        self._closed = True
        if bye and self._token is not None and self._sock is not None:
            with contextlib.suppress(ClientError):
                await self._request("bye", self._token)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ClientClosed("the client was closed"))
        self._pending.clear()
        subs = [sub for subs in self._subs.values() for sub in subs]
        self._subs.clear()
        for sub in subs:
            await sub._finish()
        self._shadow = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self._token = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -------------------------------------------------------------- the API

    async def track(self, topic: Topic, key: Key, meta: Meta, *, owner: str | None = None) -> str:
        """Track a presence of this client under ``key`` in ``topic``.

        Args:
            topic: The topic (str or int).
            key: The key (str or int), e.g. a user id.
            meta: The meta: a JSON object (dict).
            owner: A sub-owner inside the session (e.g. one connection of the client),
                so that the same key can be tracked twice in one topic and untracked
                per owner.

        Returns:
            The presence's ``phx_ref``.

        Raises:
            AlreadyTracked: The session already tracks (owner, topic, key).
            LimitExceeded: The session holds the node's most presences.
            RequestError: Another refusal (``bad_request`` for a bad meta).
            RequestTimeout: No reply within ``timeout``.
        """
        result = await self._call("track", topic=topic, key=key, meta=meta, owner=owner)
        self._presences[(owner, topic, key)] = meta
        return str(result["ref"])

    async def update(self, topic: Topic, key: Key, meta: Meta, *, owner: str | None = None) -> str:
        """Replace the meta of a presence this client tracks.

        Returns:
            The new ``phx_ref`` (the meta gets the old one as ``phx_ref_prev``).

        Raises:
            NoPresence: The session does not track (owner, topic, key).
            RequestError: Another refusal.
            RequestTimeout: No reply within ``timeout``.
        """
        result = await self._call("update", topic=topic, key=key, meta=meta, owner=owner)
        self._presences[(owner, topic, key)] = meta
        return str(result["ref"])

    async def untrack(
        self, topic: Topic | None = None, key: Key | None = None, *, owner: str | None = None
    ) -> int:
        """Untrack one presence, or with no topic and key every presence of ``owner``
        (of the whole session when ``owner`` is None too).

        Returns:
            How many presences were untracked.

        Raises:
            TypeError: ``topic`` without ``key`` or the reverse.
            RequestTimeout: No reply within ``timeout``.
        """
        if (topic is None) != (key is None):
            raise TypeError("untrack takes topic and key, or neither")
        result = await self._call("untrack", topic=topic, key=key, owner=owner)
        if topic is not None:
            self._presences.pop((owner, topic, key), None)  # type: ignore[arg-type]
        else:
            for held in [p for p in self._presences if owner is None or p[0] == owner]:
                del self._presences[held]
        return int(result.get("untracked", 0))

    async def track_many(
        self, presences: Iterable[PresenceSpec]
    ) -> builtins.list[str | TrackerError]:
        """Track many presences of this client, in bulk requests sent together.

        The presences go in batches of the node's ``max_batch`` (:attr:`max_batch`),
        all in flight at once. Each batch is checked whole by the node first (room in
        the session, well-formed values: a refusal raises and tracks nothing of that
        batch), then each presence is tracked on its own.

        Args:
            presences: ``(topic, key, meta)`` or ``(topic, key, meta, owner)`` tuples.

        Returns:
            One entry per presence, in order: its ``phx_ref``, or the error that
            presence met (:class:`~tracker_zmq.errors.AlreadyTracked`,
            :class:`~tracker_zmq.errors.LimitExceeded` of the node's ``max_presences``,
            :class:`~tracker_zmq.errors.RequestError`).

        Raises:
            UnsupportedOp: The node does not serve ``track_many`` (an older release).
            LimitExceeded: A batch would take the session over its ``max_presences``.
            RequestError: Another refusal of a whole batch (``bad_request``).
            RequestTimeout: No reply within ``timeout``.
            TypeError: A presence is not a tuple of 3 or 4.
        """
        items: builtins.list[TrackItem] = []
        for spec in presences:
            if type(spec) is not tuple or len(spec) not in (3, 4):
                raise TypeError(f"a presence is (topic, key, meta[, owner]), not {spec!r:.80}")
            items.append(TrackItem(*spec))
        results = await self._bulk("track_many", items)
        out: builtins.list[str | TrackerError] = []
        for batch, result in results:
            refs = result.get("refs")
            if type(refs) is not list or len(refs) != len(batch):
                raise ProtocolError("track_many: the reply's refs do not match the batch")
            errors = {e.get("index"): e for e in result.get("errors", []) if type(e) is dict}
            for index, (item, ref) in enumerate(zip(batch, refs, strict=True)):
                if ref is not None:
                    self._presences[(item.owner, item.topic, item.key)] = item.meta
                    out.append(str(ref))
                else:
                    out.append(_error_of(errors.get(index, {})))
        return out

    async def untrack_many(
        self, presences: Iterable[tuple[Topic, Key] | tuple[Topic, Key, str | None]]
    ) -> int:
        """Untrack many presences of this client, in bulk requests sent together.

        Args:
            presences: ``(topic, key)`` or ``(topic, key, owner)`` tuples; those the
                session does not track are skipped.

        Returns:
            How many presences were untracked.

        Raises:
            UnsupportedOp: The node does not serve ``untrack_many``.
            RequestTimeout: No reply within ``timeout``.
            TypeError: A presence is not a tuple of 2 or 3.
        """
        items: builtins.list[UntrackItem] = []
        for spec in presences:
            if type(spec) is not tuple or len(spec) not in (2, 3):
                raise TypeError(f"a presence is (topic, key[, owner]), not {spec!r:.80}")
            items.append(UntrackItem(*spec))
        total = 0
        for batch, result in await self._bulk("untrack_many", items):
            for item in batch:
                self._presences.pop((item.owner, item.topic, item.key), None)
            total += int(result.get("untracked", 0))
        return total

    async def _bulk(
        self, op: str, items: builtins.list[Any]
    ) -> builtins.list[tuple[builtins.list[Any], dict[str, Any]]]:
        if self.ops is not None and op not in self.ops:
            raise UnsupportedOp(op, self.node, self.endpoint)
        size = max(1, self.max_batch)
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        results = await asyncio.gather(
            *(self._batch(op, batch) for batch in batches), return_exceptions=True
        )
        done: builtins.list[tuple[builtins.list[Any], dict[str, Any]]] = []
        failure: BaseException | None = None
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                done.append((batch, result))
        if failure is not None:
            # what the batches that went through tracked is remembered before raising
            if op == "track_many":
                for batch, result in done:
                    for item, ref in zip(batch, result.get("refs") or [], strict=False):
                        if ref is not None:
                            self._presences[(item.owner, item.topic, item.key)] = item.meta
            raise failure
        return done

    async def _batch(self, op: str, batch: builtins.list[Any]) -> dict[str, Any]:
        try:
            return await self._call(op, presences=batch)
        except LimitExceeded as exc:
            smaller = exc.error.get("max_batch")
            if type(smaller) is not int or not 0 < smaller < len(batch):
                raise
        # the node takes smaller batches: remember its limit, split this one
        self.max_batch = smaller
        parts = [batch[i : i + smaller] for i in range(0, len(batch), smaller)]
        results = await asyncio.gather(*(self._call(op, presences=part) for part in parts))
        if op == "untrack_many":
            return {"untracked": sum(int(r.get("untracked", 0)) for r in results)}
        merged: dict[str, Any] = {"refs": [], "errors": []}
        for offset, result in zip(range(0, len(batch), smaller), results, strict=True):
            merged["refs"].extend(result.get("refs") or [])
            for error in result.get("errors") or []:
                if type(error) is dict and type(error.get("index")) is int:
                    merged["errors"].append({**error, "index": error["index"] + offset})
        return merged

    async def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Send ``event`` to every websocket subscriber of ``topic``, on every node.

        What a backend calls (Phoenix's ``Endpoint.broadcast``): every channel joined to
        ``topic`` on any node of the cluster pushes ``event`` with ``payload`` to its
        client. Needs no session (works after :meth:`open` alone).

        Args:
            topic: The channel topic (a string of 1 to 256 characters).
            event: The event name.
            payload: A JSON object.

        Raises:
            UnsupportedOp: The node does not serve ``broadcast`` (an older release).
            RequestError: ``bad_request`` (a reserved topic, a bad value).
            RequestTimeout: No reply within ``timeout``.
        """
        await self._call("broadcast", session=False, topic=topic, event=event, payload=payload)

    async def disconnect(self, socket_id: str, ban_seconds: float = 0) -> None:
        """Close every websocket whose socket id is ``socket_id``, on every node.

        Phoenix's ``Endpoint.broadcast(socket_id, "disconnect", %{})``, plus a ban: with
        ``ban_seconds``, every node then refuses that socket id's connects (HTTP 403)
        for that long, measured from when it hears of it. Needs no session.

        Args:
            socket_id: The socket id (``Socket.id()``; the standalone node's are
                ``user_socket:<sub>``).
            ban_seconds: Seconds of the ban, 0 (none) to 30 days.

        Raises:
            UnsupportedOp: The node does not serve ``disconnect`` (an older release).
            RequestError: ``bad_request`` (a bad socket id or ban).
            RequestTimeout: No reply within ``timeout``.
        """
        await self._call("disconnect", session=False, socket_id=socket_id, ban_seconds=ban_seconds)

    async def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every visible presence of ``topic``, cluster-wide, as ``(key, meta)``.

        Needs no session (works after :meth:`open` alone).
        """
        result = await self._call("list", session=False, topic=topic)
        return [(k, m) for k, m in result["presences"]]

    async def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[str | int, Meta]]:
        """Every visible presence of ``key`` in ``topic`` as ``(owner, meta)``.

        Owners of client sessions read ``"<client>@<node>:<vsn>:<n>"`` (and
        ``"/<owner>"`` after it for a sub-owner). Needs no session.
        """
        result = await self._call("get_by_key", session=False, topic=topic, key=key)
        return [(o, m) for o, m in result["presences"]]

    async def status(self) -> dict[str, Any]:
        """The node's status: name, vsn, endpoints, peers, replicas and counters.

        Needs no session.
        """
        return await self._call("status", session=False)

    async def subscribe(
        self, topic: Topic, callback: DiffCallback | None = None
    ) -> DiffSubscription:
        """Receive the diffs of ``topic`` as the node sees them.

        The subscription only sees diffs from now on: call :meth:`list` after
        subscribing to get the current presences (a join may then show in both).

        Args:
            topic: The topic.
            callback: Called with each :class:`ClientDiff` (sync or async, awaited
                before the next) instead of iterating the subscription.

        Returns:
            The subscription: ``async for diff in subscription``.
        """
        sub = DiffSubscription(self, topic, self.queue_size, callback)
        subs = self._subs.setdefault(topic, [])
        subs.append(sub)
        if len(subs) == 1:
            try:
                await self._call("subscribe", topic=topic)
            except BaseException:
                subs.remove(sub)
                if not subs:
                    del self._subs[topic]
                await sub._finish()
                raise
        return sub

    async def _unsubscribe(self, sub: DiffSubscription) -> None:
        subs = self._subs.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.topic]
                if not self._closed:
                    with contextlib.suppress(ClientError):
                        await self._call("unsubscribe", topic=sub.topic)
        await sub._finish()

    def presences(self) -> dict[tuple[str | None, Topic, Key], Meta]:
        """What this client tracks (and re-tracks after a new session):
        ``(owner, topic, key) -> meta``."""
        return dict(self._presences)

    # ---------------------------------------------------------- requests

    async def _call(self, op: str, *, session: bool = True, **fields: Any) -> dict[str, Any]:
        for attempt in range(3):
            token = None
            if session:
                async with self._resync_lock:
                    token = self._token
                if token is None:
                    raise ClientClosed("no session: call connect() first")
            try:
                return await self._request(op, token, **fields)
            except RequestError as exc:
                if exc.code != "unknown_session" or attempt == 2:
                    raise
                await self._resync(token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, op: str, token: str | None, **fields: Any) -> dict[str, Any]:
        sock = self._sock
        if sock is None or (self._closed and op != "bye"):
            raise ClientClosed("the client is closed")
        if self.ops is not None and op not in self.ops:
            raise UnsupportedOp(op, self.node, self.endpoint)
        self._next_id += 1
        rid = self._next_id
        frame = encode_request(
            Request(rid, op, token, **{k: v for k, v in fields.items() if v is not None})
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
                try:
                    self._pending[rid] = future
                    self._send(frame)
                    reply = await future
                finally:
                    self._slots.release()
        except TimeoutError:
            raise RequestTimeout(
                f"{op}: no reply from {self.endpoint} within {self.timeout} s"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if reply.ok:
            return reply.result
        code, message = reply.code or "internal", reply.message or ""
        if code == "already_tracked":
            raise AlreadyTracked(message)
        if code == "no_presence":
            raise NoPresence(message)
        if code == "limit_exceeded":
            raise LimitExceeded(code, message, reply.error)
        if code == "unknown_op":
            raise UnsupportedOp(op, self.node, self.endpoint)
        raise RequestError(code, message, reply.error)

    async def _hello(self) -> None:
        result = await self._request("hello", None, client=self.client_id, lease=self.lease)
        self._token = str(result["token"])
        self.session = str(result["session"])
        self.node = str(result["node"])
        self.node_vsn = int(result["vsn"])
        limit = result.get("max_presences")
        self.max_presences = limit if type(limit) is int else None
        self.ops = served_ops(result)

    async def _resync(self, stale: str | None) -> None:
        """Open a new session and track and subscribe everything again."""
        async with self._resync_lock:
            if self._token != stale or self._closed:
                return  # another request already did it
            old_session = self.session
            self._token = None
            try:
                await self._hello()
                token = self._token
                held = list(self._presences.items())
                if held and self.ops is not None and "track_many" in self.ops:
                    await self._retrack_in_bulk(token, held)
                    held = []
                for (owner, topic, key), meta in held:
                    try:
                        await self._request(
                            "track", token, topic=topic, key=key, meta=meta, owner=owner
                        )
                    except AlreadyTracked:
                        pass
                    except RequestError as exc:
                        if exc.code == "unknown_session":
                            raise
                        log.warning(
                            "client %s: re-tracking %r in %r failed: %s",
                            self.client_id,
                            key,
                            topic,
                            exc,
                        )
                for topic in list(self._subs):
                    await self._request("subscribe", token, topic=topic)
            except BaseException:
                self._token = stale  # try again with the next request or heartbeat
                raise
            self.resyncs += 1
            log.info(
                "client %s: session %s unknown to the node; now %s, %d presences re-tracked",
                self.client_id,
                old_session,
                self.session,
                len(self._presences),
            )

    async def _retrack_in_bulk(
        self, token: str | None, held: builtins.list[tuple[_Presence, Meta]]
    ) -> None:
        items = [TrackItem(topic, key, meta, owner) for (owner, topic, key), meta in held]
        while True:
            size = max(1, self.max_batch)
            batches = [items[i : i + size] for i in range(0, len(items), size)]
            results = await asyncio.gather(
                *(self._request("track_many", token, presences=batch) for batch in batches),
                return_exceptions=True,
            )
            smaller: builtins.list[int] = [
                int(r.error["max_batch"])
                for r in results
                if isinstance(r, LimitExceeded) and type(r.error.get("max_batch")) is int
            ]
            if smaller and 0 < min(smaller) < size:
                self.max_batch = min(smaller)  # the node takes smaller batches: again
                continue
            break
        for result in results:
            if isinstance(result, BaseException):
                raise result
            for error in result.get("errors", []):
                if type(error) is dict and error.get("code") != "already_tracked":
                    log.warning("client %s: re-tracking failed: %s", self.client_id, error)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._call("heartbeat")
            except (RequestTimeout, RequestError) as exc:
                # the node is down or restarting: keep trying; a new session is opened
                # (and everything re-tracked) as soon as it answers unknown_session
                log.debug("client %s: heartbeat failed: %s", self.client_id, exc)

    def _send(self, frame: bytes) -> None:
        # Frames wait for the end of this loop turn and go out together, in order, with
        # non-blocking sends: the requests of many tasks started at once leave in one
        # burst (ZeroMQ then wakes its I/O thread once, not once per frame). When the
        # socket cannot take a frame (not connected yet, its queue full), a task waits
        # until it can, and later frames queue behind it.
        self._outbox.append(frame)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, shadow = self._outbox, self._shadow
        while out and shadow is not None:
            try:
                shadow.send(out[0], zmq.NOBLOCK)
            except zmq.Again:
                self._tasks.append(asyncio.create_task(self._send_when_ready()))
                return
            out.popleft()
        self._flushing = False

    async def _send_when_ready(self) -> None:
        out = self._outbox
        try:
            while out and self._sock is not None and self._shadow is not None:
                await self._sock.send(out[0])
                out.popleft()
                while out:  # the rest at once, while the socket takes them
                    try:
                        self._shadow.send(out[0], zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    out.popleft()
        finally:
            self._flushing = False
            task = asyncio.current_task()
            if task in self._tasks:
                self._tasks.remove(task)

    async def _read_loop(self, sock: zmq.asyncio.Socket, shadow: zmq.Socket[bytes]) -> None:
        # the transport's drain pattern: await readiness, then read what is there with
        # non-blocking calls, a bounded number before letting the others run
        while True:
            await sock.poll(zmq.POLLIN)
            for _ in range(_READ_BUDGET):
                try:
                    frame = shadow.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_frame(frame)
            else:
                await asyncio.sleep(0)

    def _on_frame(self, frame: bytes) -> None:
        try:
            message = decode_message(frame, self.max_frame_bytes)
        except ProtocolError as exc:
            self.dropped_frames += 1
            log.warning("client %s: dropped a frame from the node: %s", self.client_id, exc)
            return
        if isinstance(message, Reply):
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
        elif message.kind == "diff" and message.topic is not None:
            diff = ClientDiff(message.topic, message.joins, message.leaves)
            for sub in self._subs.get(message.topic, ()):
                sub._push(diff)
