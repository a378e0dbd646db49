"""The ZeroMQ sockets of one node: what Phoenix.PubSub.PG2's workers and ``:pg`` do.

Not pure (zmq, asyncio). This module moves bytes and knows nothing of the protocol: the
owner (:class:`~pubsub_zmq.PubSub`) passes handlers that get every frame read.

Sockets of a node:

* a ROUTER bound at ``bind``: the control endpoint, where other nodes' DEALERs deliver
  hello, welcome, gossip and direct frames (it never replies);
* an XPUB bound at ``pub_bind`` (an ephemeral port on the same interface by default):
  broadcasts; it drops silently at its high-water mark, so a slow peer never blocks the
  node, and its subscription notifications (XPUB_VERBOSER) tell how many peers subscribe
  to each topic;
* one DEALER per peer control endpoint, for frames addressed to that node; sends are
  non-blocking and a full queue drops the frame;
* one SUB per member, connected to that member's PUB, so every received broadcast is
  known to come from that member (with CURVE, from the holder of its key); subscriptions
  are topic prefixes, and SNDHWM is 0 so that no subscription is lost in a burst.

With ``partitions`` P above 1 (:mod:`pubsub_zmq.partitions`), partition ``p`` from 1 up
has an XPUB of its own, bound on the same interface, and one SUB per member that has
that partition, connected to the member's PUB ``p``; each such partition lives in a
ZeroMQ context of its own, so it has its own I/O thread (partition 0 is the sockets
above, in the node's context). Subscription prefixes go on every SUB, and each XPUB's
notifications are reported with its partition.

Reading follows the drain pattern measured in the reference notes: await readiness on
the asyncio socket, then read with non-blocking calls on a synchronous shadow socket, at
most ``read_budget`` frames per turn before yielding, and sooner once a turn has spent
:data:`READ_STEP` seconds on large frames (a transfer's parts are up to 512 KiB each,
and a node catching up must still heartbeat between them). Every socket has LINGER 0 and is
closed by :meth:`Transport.close`, which also stops the tasks and the authenticator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from .curve import CurveConfig
from .errors import PubSubError

__all__ = ["Tasks", "Transport", "pub_endpoint_for"]

log = logging.getLogger("pubsub_zmq")

MAX_DEALERS = 4096


class Tasks:
    """The background tasks of one owner: started by :meth:`spawn`, ended by :meth:`cancel`.

    A finished task leaves the set by itself, so the set holds the running ones only
    (and keeps them referenced: the event loop holds tasks weakly).
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this owner and return the task."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel(self) -> None:
        """Cancel every running task and wait until all have finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def __len__(self) -> int:
        return len(self._tasks)


def pub_endpoint_for(bind: str) -> str:
    """The default PUB bind endpoint for a control endpoint: same interface, port 0.

    Args:
        bind: the control endpoint (``tcp://host:port`` or ``ipc://path``).
    """
    if bind.startswith("tcp://"):
        host = bind[len("tcp://") :].rsplit(":", 1)[0]
        return f"tcp://{host}:0"
    if bind.startswith("ipc://"):
        return bind + ".pub"
    if bind.startswith("inproc://"):
        return bind + ".pub"
    raise PubSubError(f"unsupported endpoint {bind!r}: use tcp://, ipc:// or inproc://")


class Transport:
    """The sockets and reader tasks of one node.

    Args:
        on_control: called with (frame, CURVE user id or None) for each ROUTER frame.
        on_data: called with (member name, frame) for each frame from a member's PUB.
        on_subscription: called with (prefix, subscribed, partition) for each XPUB
            notification.
        context: a zmq.asyncio.Context to use; by default the node owns one.
        curve: CURVE settings, or None for clear text.
        max_frame_bytes: the codec's frame limit; ZeroMQ refuses frames far above it.
        send_hwm: the PUB high-water mark, in frames per subscriber.
        recv_hwm: the receive high-water mark of ROUTER and SUB sockets, in frames.
        control_hwm: the send high-water mark of each DEALER, in frames.
        read_budget: frames read from one socket per event-loop turn.
        partitions: how many partitions (PUB sockets, I/O threads) to run and read.
    """

    def __init__(
        self,
        *,
        on_control: Callable[[bytes, str | None], None],
        on_data: Callable[[str, bytes], None],
        on_subscription: Callable[[bytes, bool, int], None],
        context: zmq.asyncio.Context | None = None,
        curve: CurveConfig | None = None,
        max_frame_bytes: int,
        send_hwm: int,
        recv_hwm: int,
        control_hwm: int,
        read_budget: int = 256,
        partitions: int = 1,
    ) -> None:
        self._on_control = on_control
        self._on_data = on_data
        self._on_subscription = on_subscription
        self._given_ctx = context
        self._ctx: zmq.asyncio.Context | None = None
        self._sync_ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._curve = curve
        # hard cap in ZeroMQ (a peer sending more is disconnected); the codec's softer
        # max_frame_bytes drops and counts anything between the two
        self._maxmsgsize = max_frame_bytes * 4 + 65536
        self._send_hwm = send_hwm
        self._recv_hwm = recv_hwm
        self._control_hwm = control_hwm
        self._budget = read_budget
        self._auth: AsyncioAuthenticator | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._xpub: zmq.asyncio.Socket | None = None
        self._xpub_shadow: zmq.Socket[bytes] | None = None
        self._dealers: dict[tuple[str, str | None], zmq.Socket[bytes]] = {}
        self._subs: dict[str, tuple[zmq.asyncio.Socket, asyncio.Task[None]]] = {}
        self._tasks = Tasks()
        self.control_endpoint = ""
        self.pub_endpoint = ""
        self._partitions = partitions
        # partitions 1 and up: (own context, its authenticator, XPUB, XPUB shadow)
        self._extra: list[
            tuple[zmq.asyncio.Context, AsyncioAuthenticator | None, zmq.asyncio.Socket, Any]
        ] = []
        self._extra_subs: dict[str, list[tuple[zmq.asyncio.Socket, asyncio.Task[None]]]] = {}
        self.pub_endpoints: list[str] = []
        """Every partition's PUB endpoint, partition 0's (``pub_endpoint``) first."""

    # -- life cycle ----------------------------------------------------------------

    async def open(self, bind: str, pub_bind: str) -> None:
        """Bind the ROUTER and the PUB and start reading them.

        Raises:
            PubSubError: an endpoint cannot be bound.
        """
        ctx = self._ctx = self._given_ctx or zmq.asyncio.Context()
        # a synchronous view of the same context, for the DEALERs (send-only, never awaited)
        self._sync_ctx = zmq.Context.shadow(ctx.underlying)
        try:
            if self._curve is not None:
                self._auth = self._curve.authenticator(ctx)
            router = self._router = ctx.socket(zmq.ROUTER)
            router.linger = 0
            router.rcvhwm = self._recv_hwm
            router.maxmsgsize = self._maxmsgsize
            xpub = self._xpub = ctx.socket(zmq.XPUB)
            self._xpub_options(xpub)
            if self._curve is not None:
                self._curve.server(router)
            for sock, endpoint in ((router, bind), (xpub, pub_bind)):
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise PubSubError(f"cannot bind {endpoint!r}: {exc}") from exc
                self.control_endpoint = _last_endpoint(router)
            self.pub_endpoint = _last_endpoint(xpub)
            self._xpub_shadow = zmq.Socket.shadow(xpub.underlying)
            self.pub_endpoints = [self.pub_endpoint]
            for p in range(1, self._partitions):
                self._open_partition(p, pub_bind)
        except BaseException:
            await self.close()
            raise
        self._tasks.spawn(self._read_router(router))
        self._tasks.spawn(self._read_xpub(xpub))
        for p, (_ctx, _auth, extra, _shadow) in enumerate(self._extra, 1):
            self._tasks.spawn(self._read_xpub(extra, p))

    def _xpub_options(self, xpub: zmq.asyncio.Socket) -> None:
        """What every XPUB of the node gets: partition 0's and each other partition's."""
        xpub.linger = 0
        xpub.sndhwm = self._send_hwm
        xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
        xpub.maxmsgsize = 65536
        if self._curve is not None:
            self._curve.server(xpub)

    def _open_partition(self, p: int, pub_bind: str) -> None:
        # inproc endpoints only reach sockets of the same context: those share the node's
        inproc = pub_bind.startswith("inproc://")
        assert self._ctx is not None
        ctx = self._ctx if inproc else zmq.asyncio.Context()
        auth = None
        if self._curve is not None and not inproc:
            auth = self._curve.authenticator(ctx)
        xpub = ctx.socket(zmq.XPUB)
        self._extra.append((ctx, auth, xpub, None))
        self._xpub_options(xpub)
        endpoint = (
            pub_endpoint_for(pub_bind) if pub_bind.startswith("tcp://") else f"{pub_bind}.{p}"
        )
        try:
            xpub.bind(endpoint)
        except zmq.ZMQError as exc:
            raise PubSubError(f"cannot bind {endpoint!r}: {exc}") from exc
        self._extra[-1] = (ctx, auth, xpub, zmq.Socket.shadow(xpub.underlying))
        self.pub_endpoints.append(_last_endpoint(xpub))

    async def close(self) -> None:
        """Stop every reader task and close every socket (LINGER 0), then the context."""
        await self._tasks.cancel()
        for sock, _task in self._subs.values():
            sock.close(linger=0)
        self._subs.clear()
        for subs in self._extra_subs.values():
            for sock, _task in subs:
                sock.close(linger=0)
        self._extra_subs.clear()
        extra, self._extra = self._extra, []
        for ctx, auth, xpub, _shadow in extra:
            xpub.close(linger=0)
            if auth is not None:
                auth.stop()
            if ctx is not self._ctx:
                for _ in range(3):  # the authenticator's task, as below
                    await asyncio.sleep(0)
                ctx.term()
        for dealer in self._dealers.values():
            dealer.close(linger=0)
        self._dealers.clear()
        for maybe in (self._router, self._xpub):
            if maybe is not None:
                maybe.close(linger=0)
        self._router = self._xpub = None
        self._xpub_shadow = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
            # let the authenticator's cancelled task finish before the loop moves on
            for _ in range(3):
                await asyncio.sleep(0)
        if self._ctx is not None and self._given_ctx is None:
            self._ctx.term()
        self._ctx = None
        self._sync_ctx = None

    # -- sending -------------------------------------------------------------------

    def publish(self, frame: bytes, partition: int = 0) -> bool:
        """Send a broadcast frame to every member subscribed on a partition; never blocks.

        Returns:
            False when the frame could not be queued (it is dropped).
        """
        shadow = self._xpub_shadow if partition == 0 else self._extra[partition - 1][3]
        return shadow is not None and _send_nowait(shadow, frame)

    def send_control(self, endpoint: str, key: str | None, frame: bytes) -> bool:
        """Send a frame to the ROUTER at ``endpoint`` through a DEALER; never blocks.

        Args:
            endpoint: the peer's control endpoint.
            key: the peer's CURVE public key (required with CURVE).
            frame: the frame.

        Returns:
            False when the frame was dropped (queue full, no key, bad endpoint).
        """
        dealer = self._dealers.get((endpoint, key))
        if dealer is None:
            dealer = self._dealer(endpoint, key)
            if dealer is None:
                return False
        return _send_nowait(dealer, frame)

    def _dealer(self, endpoint: str, key: str | None) -> zmq.Socket[bytes] | None:
        if self._ctx is None or len(self._dealers) >= MAX_DEALERS:
            return None
        if self._curve is not None and key is None:
            return None
        assert self._sync_ctx is not None
        dealer: zmq.Socket[bytes] = self._sync_ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.sndhwm = self._control_hwm
        _client_options(dealer)
        if self._curve is not None and key is not None:
            self._curve.client(dealer, key)
        try:
            dealer.connect(endpoint)
        except zmq.ZMQError as exc:
            log.warning("cannot connect to %r: %s", endpoint, exc)
            dealer.close(linger=0)
            return None
        self._dealers[(endpoint, key)] = dealer
        return dealer

    def close_dealer(self, endpoint: str, key: str | None) -> None:
        """Close the DEALER to ``endpoint`` if there is one."""
        dealer = self._dealers.pop((endpoint, key), None)
        if dealer is not None:
            dealer.close(linger=0)

    # -- subscribing ---------------------------------------------------------------

    def connect_member(
        self,
        name: str,
        pub_endpoint: str,
        key: str | None,
        prefixes: Iterable[bytes],
        pubs: Iterable[str] = (),
    ) -> bool:
        """Open a SUB to member ``name``'s PUB with the given subscription prefixes.

        Args:
            name: the member.
            pub_endpoint: its PUB (partition 0).
            key: its CURVE public key (required with CURVE).
            prefixes: the subscription prefixes.
            pubs: its PUBs of partitions 1 and up: each one this node reads gets a SUB
                too, in that partition's context.

        Returns:
            False when the endpoint cannot be connected (or, with CURVE, no key).
        """
        self.disconnect_member(name)
        prefixes = list(prefixes)
        if not self._connect_sub(name, self._ctx, pub_endpoint, key, prefixes):
            return False
        extra: list[tuple[zmq.asyncio.Socket, asyncio.Task[None]]] = []
        self._extra_subs[name] = extra
        for (ctx, _auth, _xpub, _shadow), endpoint in zip(self._extra, pubs, strict=False):
            self._connect_sub(name, ctx, endpoint, key, prefixes, extra)
        return True

    def _connect_sub(
        self,
        name: str,
        ctx: zmq.asyncio.Context | None,
        pub_endpoint: str,
        key: str | None,
        prefixes: list[bytes],
        extra: list[tuple[zmq.asyncio.Socket, asyncio.Task[None]]] | None = None,
    ) -> bool:
        if ctx is None or (self._curve is not None and key is None):
            return False
        sock = ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.sndhwm = 0  # else only 1,000 subscriptions of a burst reach the publisher
        sock.rcvhwm = self._recv_hwm
        sock.maxmsgsize = self._maxmsgsize
        _client_options(sock)
        if self._curve is not None and key is not None:
            self._curve.client(sock, key)
        for prefix in prefixes:
            sock.subscribe(prefix)
        try:
            sock.connect(pub_endpoint)
        except zmq.ZMQError as exc:
            log.warning("cannot connect to %r's PUB %r: %s", name, pub_endpoint, exc)
            sock.close(linger=0)
            return False

        def handle(data: bytes) -> None:
            self._on_data(name, data)

        task = self._tasks.spawn(self._read_loop(sock, handle))
        if extra is None:
            self._subs[name] = (sock, task)
        else:
            extra.append((sock, task))
        return True

    def disconnect_member(self, name: str) -> None:
        """Close the SUBs to member ``name`` if there are any."""
        entry = self._subs.pop(name, None)
        entries = self._extra_subs.pop(name, [])
        for sock, task in [entry, *entries] if entry is not None else entries:
            task.cancel()
            sock.close(linger=0)

    def subscribe(self, prefix: bytes) -> None:
        """Add a subscription prefix on every member's SUBs."""
        for sock, _task in self._subs.values():
            sock.subscribe(prefix)
        for subs in self._extra_subs.values():
            for sock, _task in subs:
                sock.subscribe(prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Remove a subscription prefix from every member's SUBs."""
        for sock, _task in self._subs.values():
            sock.unsubscribe(prefix)
        for subs in self._extra_subs.values():
            for sock, _task in subs:
                sock.unsubscribe(prefix)

    # -- reading -------------------------------------------------------------------

    async def _read_loop(self, sock: zmq.asyncio.Socket, handle: Callable[[bytes], None]) -> None:
        shadow: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        budget = self._budget
        while True:
            await sock.poll()
            deadline = time.monotonic() + READ_STEP
            for _ in range(budget):
                try:
                    data = shadow.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    handle(data)
                except Exception:
                    log.exception("error while handling a frame")
                if len(data) >= _LARGE_FRAME and time.monotonic() >= deadline:
                    await asyncio.sleep(0)
                    break
            else:
                await asyncio.sleep(0)  # budget spent: let the others run

    async def _read_router(self, router: zmq.asyncio.Socket) -> None:
        shadow: zmq.Socket[bytes] = zmq.Socket.shadow(router.underlying)
        curve = self._curve is not None
        budget = self._budget
        while True:
            await router.poll()
            deadline = time.monotonic() + READ_STEP
            for _ in range(budget):
                try:
                    parts = shadow.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if len(parts) != 2:
                    self._on_control(b"", None)  # wrong shape: counted as garbage
                    continue
                frame = parts[1]
                user_id: str | None = None
                if curve:
                    try:
                        user_id = str(frame.get("User-Id"))
                    except zmq.ZMQError:
                        user_id = None
                data = frame.bytes
                try:
                    self._on_control(data, user_id)
                except Exception:
                    log.exception("error while handling a control frame")
                if len(data) >= _LARGE_FRAME and time.monotonic() >= deadline:
                    await asyncio.sleep(0)
                    break
            else:
                await asyncio.sleep(0)

    async def _read_xpub(self, xpub: zmq.asyncio.Socket, partition: int = 0) -> None:
        shadow: zmq.Socket[bytes] = zmq.Socket.shadow(xpub.underlying)
        while True:
            await xpub.poll()
            for _ in range(self._budget):
                try:
                    data = shadow.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if data[:1] in (b"\x00", b"\x01"):
                    with contextlib.suppress(Exception):
                        self._on_subscription(data[1:], data[0] == 1, partition)
            else:
                await asyncio.sleep(0)


READ_STEP = 0.005
"""Seconds of reading one socket per event-loop turn, checked after each large frame."""

_LARGE_FRAME = 16 * 1024
"""Frames from this size on are costly to handle (decode, then merge): the clock is read
after each; smaller ones are bounded by the frame count alone."""


def _client_options(sock: zmq.Socket[Any]) -> None:
    sock.reconnect_ivl = 100
    sock.reconnect_ivl_max = 5000  # libzmq backs off reconnects up to 5 s
    sock.heartbeat_ivl = 1000  # ZMTP pings: a dead connection is dropped after 3 s
    sock.heartbeat_timeout = 3000


def _last_endpoint(sock: zmq.asyncio.Socket) -> str:
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)


def _send_nowait(sock: zmq.Socket[bytes], frame: bytes) -> bool:
    # a full queue drops the frame: the node never waits for a slow peer
    try:
        sock.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True
