"""A standalone tracker node: PubSub + Tracker in one process, with a client endpoint.

Not pure: this is an asyncio layer that owns sockets, tasks and the clock. Phoenix has
no counterpart (there the tracked processes live on the node); here other processes, in
any language with ZeroMQ, track presences through a node, as a Phoenix channel process
would through its node's tracker.

Theory of operation
-------------------
:class:`Node` starts a :class:`~pubsub_zmq.PubSub` and a :class:`~tracker_zmq.Tracker`
on it, and binds a ROUTER (the *client endpoint*) that speaks the protocol of
:mod:`tracker_zmq.protocol` (specified in ``docs/reference/protocol.md``). Every decision about the
clients' sessions (hello, tokens, leases, limits, subscriptions, the stall rule) is
made by :class:`~tracker_zmq.sessions.Sessions`, a pure machine that this module feeds
and whose actions it carries out; this module only moves frames, runs the timer and
wires CURVE.

Reading follows the transport's drain pattern (as :mod:`pubsub_zmq.transport` does):
await readiness on the asyncio socket, then read with non-blocking calls on a
synchronous shadow of it, at most ``_READ_BUDGET`` messages per turn before yielding.
Replies and pushes go out without blocking: a client whose queue is full, or that is
gone, misses them (pushes missed are counted).

The lease timer wakes every ``check_interval``. When it wakes more than an interval late
(a GC pause, SIGSTOP, a long merge), the sessions' stall rule judges nothing that round
and this module first lets the loop read the requests that piled up; see
:mod:`tracker_zmq.sessions`. Every wait of the timer is measured, those of that reading
too: a node stuck again while it reads (a second stall on a loaded machine) has that
time forgiven as well, instead of judging leases against it right after. Diffs reach
the tracker's handler, which logs them and pushes them to the sessions subscribed to
their topics, and, on a node made with ``presence=True``, hands them to its
:class:`~tracker_zmq.Presence` (which publishes them as ``presence_diff`` for the
channels of this node). Frames that do not decode are dropped and counted (and
answered when they carried a request id); nothing a client sends can stop the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from crdt_state import Key, Meta
from pubsub_zmq import NotRunning, Peer, PubSub, PubSubError
from pubsub_zmq import Options as PubSubOptions
from pubsub_zmq.curve import CurveConfig
from tracker_zmq.channels import control
from tracker_zmq.errors import ConfigError, TrackerNotRunning
from tracker_zmq.options import Options, check_positive
from tracker_zmq.presence import Presence
from tracker_zmq.protocol import PROTOCOL_VERSION
from tracker_zmq.sessions import (
    Action,
    ClientLimits,
    FrameDropped,
    RequestFailed,
    SendFrame,
    SessionEnded,
    SessionOpened,
    Sessions,
)
from tracker_zmq.shard import Diff
from tracker_zmq.tracker import Tracker

__all__ = ["ClientLimits", "Node"]

log = logging.getLogger("tracker_zmq.node")

_STALL_DRAIN_ROUNDS = 10
_STALL_DRAIN_SLEEP = 0.002
_READ_BUDGET = 64  # messages read before yielding to the loop
_LOG_KEYS = 8  # keys named per topic in a diff log line
_GARBAGE_LOG_EVERY = 10.0  # seconds between two lines about dropped frames


class Node:
    """A standalone tracker node: a PubSub, a Tracker and a client endpoint.

    ``tracker-zmq node`` runs one (see ``docs/node.md``). Start it with ``async with
    node`` (or :meth:`start` / :meth:`stop`).

    Args:
        name: The node's name, unique in the cluster.
        bind: The cluster (PubSub control) endpoint other nodes list as peers.
        peers: Seed endpoints; with CURVE ``(endpoint, public_key)`` pairs.
        client_bind: The client endpoint to bind (a ROUTER).
        tracker_name: The tracker's name; nodes replicate trackers of the same name.
        tracker_options: Keyword arguments of :class:`~tracker_zmq.Tracker` (periods,
            ``pool_size`` and so on; not ``handler``, ``permdown_on_shutdown`` or
            ``log_level``, which are this class's).
        pubsub_options: Keyword arguments of :class:`~pubsub_zmq.PubSub` (timings and
            limits; not the endpoints or keys). ``forget_after`` defaults to at least
            the tracker's ``permdown_period``.
        curve_secret_key: This node's CURVE secret key (Z85): turns CURVE on, for the
            cluster and for the client endpoint.
        curve_allow: With CURVE, the peers' public keys (or node name -> key).
        curve_client_allow: With CURVE, the public keys of the clients allowed on the
            client endpoint; None: the same keys as ``curve_allow``. The node's own key
            is always allowed (for ``tracker-zmq status`` run with the node's key).
        limits: The client endpoint's leases and limits.
        permdown_on_shutdown: Whether :meth:`stop` tells the peers to drop this node's
            presences at once (graceful permdown), instead of after ``down_period``.
        log_level: Level of the lines about replicas (up, down, permdown), diffs and
            client sessions.
        presence: True, or a :class:`~tracker_zmq.Presence` subclass (its ``fetch``
            and ``handle_metas`` hooks): the node also keeps a Presence over its own
            tracker, :attr:`presence`, fed every diff after the client sessions, so
            channels (``Endpoint(node.presence, ...)``), the client endpoint's
            sessions and ``tracker-zmq list`` share one tracker. False: none.

    Attributes:
        presence: The Presence over the node's tracker (``presence=True``), or None.

    Raises:
        ConfigError: An option is invalid (from this class, the Tracker or the PubSub;
            all are ValueErrors).
    """

    def __init__(
        self,
        name: str,
        bind: str = "tcp://127.0.0.1:0",
        peers: Iterable[Peer] = (),
        *,
        client_bind: str = "tcp://127.0.0.1:0",
        tracker_name: str = "presence",
        tracker_options: Mapping[str, Any] | None = None,
        pubsub_options: Mapping[str, Any] | None = None,
        curve_secret_key: str | None = None,
        curve_allow: Iterable[str] | Mapping[str, str] | None = None,
        curve_client_allow: Iterable[str] | None = None,
        limits: ClientLimits | None = None,
        permdown_on_shutdown: bool = False,
        log_level: int = logging.INFO,
        presence: bool | type[Presence] = False,
    ) -> None:
        if type(log_level) is not int:
            raise ConfigError(f"log_level must be an int logging level, not {log_level!r}")
        if type(presence) is not bool and not (
            isinstance(presence, type) and issubclass(presence, Presence)
        ):
            raise ConfigError(f"presence must be a bool or a Presence subclass, not {presence!r}")
        if not isinstance(client_bind, str) or not client_bind.startswith(
            ("tcp://", "ipc://", "inproc://")
        ):
            raise ConfigError("client_bind must be a tcp://, ipc:// or inproc:// endpoint")
        topts = dict(tracker_options or {})
        for reserved in ("handler", "permdown_on_shutdown", "log_level"):
            if reserved in topts:
                raise ConfigError(f"{reserved} is a Node argument, not a tracker option")
        popts = dict(pubsub_options or {})
        for reserved in ("bind", "peers", "curve_secret_key", "curve_allow", "context"):
            if reserved in popts:
                raise ConfigError(f"{reserved} is a Node argument, not a pubsub option")
        # the PubSub forgets a silent member no sooner than the tracker forgets its
        # replica; a bad permdown_period is left for the Tracker to report
        permdown = topts.get("permdown_period", Options.defaults()["permdown_period"])
        with contextlib.suppress(ConfigError):
            permdown = check_positive("permdown_period", permdown)
            popts.setdefault("forget_after", max(permdown, PubSubOptions().forget_after))
        allow: Any = curve_allow
        self.pubsub = PubSub(
            name,
            bind=bind,
            peers=peers,
            curve_secret_key=curve_secret_key,
            curve_allow=allow,
            **popts,
        )
        self.tracker = Tracker(
            self.pubsub,
            name=tracker_name,
            handler=self._on_diff,
            permdown_on_shutdown=permdown_on_shutdown,
            log_level=log_level,
            **topts,
        )
        self.presence: Presence | None = None
        if presence is not False:
            kind = Presence if presence is True else presence
            self.presence = kind(self.pubsub, tracker=self.tracker)
        self.limits = limits if limits is not None else ClientLimits()
        self._client_curve: CurveConfig | None = None
        if curve_secret_key is not None:
            if curve_client_allow is None:
                keys: Iterable[str] = (
                    curve_allow.values() if isinstance(curve_allow, Mapping) else curve_allow or ()
                )
            else:
                keys = curve_client_allow
            self._client_curve = CurveConfig.build(curve_secret_key, list(keys))
        elif curve_client_allow is not None:
            raise ConfigError("curve_client_allow needs curve_secret_key")
        self.name = name
        self.log_level = log_level
        self._client_bind = client_bind
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._shadow: zmq.Socket[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.sessions = Sessions(
            name,
            self.tracker,
            self.limits,
            tokens=functools.partial(secrets.token_urlsafe, 24),
            status=self.status,
            broadcaster=_Control(self.pubsub),
        )
        """The session table (pure): every decision about the client sessions."""
        self._frames_read = 0
        self._started_at = 0.0
        self._running = False
        self.client_endpoint = ""
        """The bound client endpoint (known after start)."""
        self.counters: dict[str, int] = {"pushes": 0, "push_dropped": 0, "reply_dropped": 0}
        """The socket's counters: diffs pushed, diffs a full or gone client missed, and
        replies it missed (a client with more requests in flight than its queue holds,
        or gone before its answer)."""
        self._garbage_logged_at = -math.inf

    # ------------------------------------------------------------ life cycle

    @property
    def endpoint(self) -> str:
        """The cluster endpoint (the PubSub's control endpoint)."""
        return self.pubsub.endpoint

    @property
    def vsn(self) -> int:
        """This node's incarnation (the tracker's vsn; 0 before start)."""
        return self.tracker.vsn

    @property
    def running(self) -> bool:
        """Whether the node is started and not stopped."""
        return self._running

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the PubSub, the tracker and the client endpoint.

        Raises:
            PubSubError: An endpoint cannot be bound (the node is stopped again).
            TrackerNotRunning: The node was already started.
        """
        if self._started_at:
            raise TrackerNotRunning(f"node {self.name!r} can start only once")
        self._started_at = time.monotonic()
        try:
            await self.pubsub.start()
            if self.presence is not None:  # its init hook, before the first diff
                await self.presence.start()
            await self.tracker.start()
            router, shadow = self._open_clients()
        except BaseException:
            await self._close()
            raise
        self._running = True
        self._tasks.append(asyncio.create_task(self._read_loop(router, shadow)))
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        log.info(
            "node %s (vsn %d) ready: cluster %s, clients %s",
            self.name,
            self.vsn,
            self.endpoint,
            self.client_endpoint,
            extra={"vsn": self.vsn, "cluster": self.endpoint, "clients": self.client_endpoint},
        )

    def _open_clients(self) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
        ctx = self._ctx = zmq.asyncio.Context()
        if self._client_curve is not None:
            self._auth = self._client_curve.authenticator(ctx)
        router = self._router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.router_mandatory = 1  # a full or gone client raises: counted, not blocked
        router.sndhwm = 1000
        # ZeroMQ cuts a client off above this; frames between it and max_frame_bytes
        # are read, counted and dropped
        router.maxmsgsize = self.limits.max_frame_bytes * 2 + 4096
        if self._client_curve is not None:
            self._client_curve.server(router)
        try:
            router.bind(self._client_bind)
        except zmq.ZMQError as exc:
            raise PubSubError(
                f"cannot bind the client endpoint {self._client_bind!r}: {exc}"
            ) from exc
        bound = router.getsockopt(zmq.LAST_ENDPOINT)
        self.client_endpoint = bound.decode() if isinstance(bound, bytes) else str(bound)
        shadow = self._shadow = zmq.Socket.shadow(router.underlying)
        return router, shadow

    async def stop(self) -> None:
        """Stop the client endpoint, the tracker (graceful permdown when configured)
        and the PubSub, closing every socket and task. Idempotent."""
        if not self._running:
            return
        self._running = False
        log.info("node %s stopping", self.name)
        await self._close()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            if self.tracker.running:
                await self.tracker.stop()
        finally:
            await self.pubsub.stop()
            self._shadow = None
            if self._router is not None:
                self._router.close(linger=0)
                self._router = None
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
                for _ in range(3):  # let the authenticator's task finish
                    await asyncio.sleep(0)
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None
            self.sessions.clear()

    # -------------------------------------------------------------- status

    def stats(self) -> dict[str, Any]:
        """The client endpoint's counters and sessions (what ``status`` reports).

        Returns:
            ``sessions``, ``presences`` (tracked by sessions), ``subscriptions``
            (topics subscribed, summed over sessions) and the counters: requests,
            errors (error replies), garbage (frames dropped), pushes, push_dropped
            (diffs a full or gone client missed), reply_dropped (replies it missed),
            sessions opened, closed (bye) and
            expired (lease ran out), lease_checks_skipped (the stall rule).
        """
        return {**self.sessions.stats(), **self.counters}

    def status(self) -> dict[str, Any]:
        """What the ``status`` request answers: node, protocol and ops, endpoints, peers,
        replicas, stats."""
        tstats = self.tracker.stats()
        totals = tstats["totals"]
        return {
            "node": self.name,
            "vsn": self.vsn,
            "protocol": PROTOCOL_VERSION,
            "ops": sorted(self.sessions.ops),
            "tracker": self.tracker.name,
            "endpoint": self.endpoint,
            "client_endpoint": self.client_endpoint,
            "uptime": round(time.monotonic() - self._started_at, 3),
            "peers": self.pubsub.peers(),
            "replicas": tstats["replicas"],
            "presences": totals.get("presences", 0),
            "tracker_stats": {
                k: v for k, v in tstats.items() if k not in ("replicas", "shards", "totals")
            }
            | {"totals": totals},
            "clients": self.stats(),
            "limits": self.limits.as_dict(),
        }

    # -------------------------------------------------------------- diffs

    async def _on_diff(self, diff: Diff) -> None:
        for topic, (joins, leaves) in diff.items():
            if log.isEnabledFor(self.log_level):
                log.log(
                    self.log_level,
                    "node %s: %s in topic %r",
                    self.name,
                    _describe(joins, leaves),
                    topic,
                    extra={"topic": topic, "joins": len(joins), "leaves": len(leaves)},
                )
            self._carry_out(self.sessions.on_diff(topic, joins, leaves))
        if self.presence is not None:
            await self.presence.handle_diff(diff)

    # ------------------------------------------------------------ the socket

    async def _read_loop(self, router: zmq.asyncio.Socket, shadow: zmq.Socket[bytes]) -> None:
        while True:
            await router.poll()
            for _ in range(_READ_BUDGET):
                try:
                    frames = shadow.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._frames_read += 1
                try:
                    self._carry_out(self.sessions.receive(frames, time.monotonic()))
                except Exception:  # never let one request stop the endpoint
                    log.exception("node %s: handling a client frame failed", self.name)
            else:
                await asyncio.sleep(0)  # budget spent: let the others run

    def _carry_out(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case SendFrame(envelope, frame, push):
                    self._send(envelope, frame, push=push)
                case SessionOpened(session, lease):
                    log.log(
                        self.log_level,
                        "node %s: client session %s opened (lease %g s)",
                        self.name,
                        session,
                        lease,
                        extra={"session": session, "lease": lease},
                    )
                case SessionEnded(session, why, untracked):
                    log.log(
                        self.log_level,
                        "node %s: client session %s %s (%d presences untracked)",
                        self.name,
                        session,
                        why,
                        untracked,
                        extra={"session": session, "why": why, "untracked": untracked},
                    )
                case FrameDropped(reason, total):
                    now = time.monotonic()
                    if now - self._garbage_logged_at >= _GARBAGE_LOG_EVERY:
                        self._garbage_logged_at = now
                        log.warning(
                            "node %s: dropped a bad client frame (%d so far): %s",
                            self.name,
                            total,
                            reason[:200],
                        )
                case RequestFailed(op, error):
                    log.error("node %s: %s request failed", self.name, op, exc_info=error)

    def _send(self, envelope: tuple[bytes, ...], frame: bytes, *, push: bool) -> None:
        shadow = self._shadow
        if shadow is None:
            return
        try:
            shadow.send_multipart([*envelope, frame], zmq.NOBLOCK)
        except zmq.ZMQError:
            # EAGAIN: the client's queue is full; EHOSTUNREACH: it is gone
            self.counters["push_dropped" if push else "reply_dropped"] += 1
            return
        if push:
            self.counters["pushes"] += 1

    # ------------------------------------------------------------ the lease timer

    async def _lease_loop(self) -> None:
        interval = self.limits.interval
        due = time.monotonic() + interval
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if self.sessions.stalled(now - due, now):
                # the clients' heartbeats may be sitting unread: read them, judge later
                await self._drain_input()
                due = time.monotonic() + interval
                continue
            due += interval
            self._carry_out(self.sessions.expire(now))

    async def _drain_input(self) -> None:
        # Let the read loop take what piled up: at least 3 short rounds, until one reads
        # nothing. A round that wakes more than a check interval late is a stall of its
        # own (the node was stuck again, say SIGSTOPped while it drained): it is not
        # counted against the leases either, and the reading starts over. Without this,
        # the lease loop, whose next check is timed from the end of the drain, would
        # judge against all that silence an interval later.
        round_ = 0
        while round_ < _STALL_DRAIN_ROUNDS:
            before = self._frames_read
            expected = time.monotonic() + _STALL_DRAIN_SLEEP
            await asyncio.sleep(_STALL_DRAIN_SLEEP)
            now = time.monotonic()
            if self.sessions.stalled(now - expected, now):
                round_ = 0
                continue
            if round_ >= 2 and self._frames_read == before:
                return
            round_ += 1


class _Control:
    """The client endpoint's ``broadcast`` and ``disconnect``: :mod:`tracker_zmq.channels.
    control` over the node's PubSub (a :class:`~tracker_zmq.sessions.Broadcaster`)."""

    __slots__ = ("_pubsub",)

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        try:
            control.broadcast(self._pubsub, topic, event, payload)
        except NotRunning as exc:
            raise TrackerNotRunning(str(exc)) from None

    def disconnect(self, socket_id: str, ban_seconds: float) -> None:
        try:
            control.disconnect(self._pubsub, socket_id, ban_seconds)
        except NotRunning as exc:
            raise TrackerNotRunning(str(exc)) from None


def _describe(joins: list[tuple[Key, Meta]], leaves: list[tuple[Key, Meta]]) -> str:
    parts = []
    for sign, entries in (("joined", joins), ("left", leaves)):
        if entries:
            keys = [str(key) for key, _ in entries[:_LOG_KEYS]]
            more = f" (and {len(entries) - _LOG_KEYS} more)" if len(entries) > _LOG_KEYS else ""
            parts.append(f"{', '.join(keys)}{more} {sign}")
    return "; ".join(parts)
