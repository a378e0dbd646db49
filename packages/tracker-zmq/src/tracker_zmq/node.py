"""A standalone tracker node: PubSub + Tracker in one process, with a client endpoint.

Not pure: this is an asyncio layer that owns sockets, tasks and the clock. Phoenix has
no counterpart (there the tracked processes live on the node); here other processes, in
any language with ZeroMQ, track presences through a node, as a Phoenix channel process
would through its node's tracker.

Theory of operation
-------------------
:class:`Node` starts a :class:`~pubsub_zmq.PubSub` and a :class:`~tracker_zmq.Tracker`
on it, and binds a ROUTER (the *client endpoint*) that speaks the protocol of
:mod:`tracker_zmq.client` (specified in ``docs/node.md``). A client says hello and
gets a *session*: the pair (client id, node incarnation), named
``"<client>@<node>:<vsn>:<n>"``, and a secret token that its later requests carry.
Every presence a session tracks is owned, in the tracker, by the session's name (or
``"<session>/<owner>"`` for a sub-owner), so one client can never untrack another's.

A session lives as long as its client is heard from: each request renews its lease;
a session silent for its lease is ended and its presences untracked, as Phoenix
untracks the presences of a pid that died. Leases are judged every ``check_interval``
by a timer task that follows the tracker's stall rule: when the timer wakes up more
than an interval late (a GC pause, SIGSTOP, a long merge), it first lets the loop read
the requests that piled up and judges nothing that round, and the time it was stuck is
not counted against any lease, so a node that stalled does not expire the clients that
kept heartbeating. A token the node does not know (it
restarted, or the lease ran out) gets ``unknown_session``: the client says hello again
and re-tracks what it holds.

Diffs reach the tracker's handler, which logs them and pushes them to the sessions
subscribed to their topics. Frames that do not decode are dropped and counted (and
answered when they carried a request id); nothing a client sends can stop the node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from crdt_state import Key, Meta, Topic
from pubsub_zmq import Peer, PubSub, PubSubError
from pubsub_zmq.curve import CurveConfig
from tracker_zmq.client import (
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    Request,
    decode_request,
    encode_diff,
    encode_error,
    encode_ok,
)
from tracker_zmq.errors import (
    AlreadyTracked,
    ConfigError,
    NoPresence,
    TooManyPresences,
    TrackerNotRunning,
)
from tracker_zmq.shard import Diff
from tracker_zmq.tracker import Tracker

__all__ = ["ClientLimits", "Node"]

log = logging.getLogger("tracker_zmq.node")

_STALL_DRAIN_ROUNDS = 10
_STALL_DRAIN_SLEEP = 0.002
_READ_BUDGET = 64  # frames read before yielding to the loop
_LOG_KEYS = 8  # keys named per topic in a diff log line


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The client endpoint's options and limits, checked at construction.

    Attributes:
        lease: Seconds a session lives without a word from its client, when the client
            asks for none in hello.
        min_lease: The shortest lease a client may ask for, in seconds.
        max_lease: The longest lease a client may ask for, in seconds.
        max_presences: Most presences one session may track (``limit_exceeded``).
        max_subscriptions: Most topics one session may subscribe to.
        max_sessions: Most sessions at once (``too_many_sessions``).
        max_frame_bytes: The largest request frame; a larger one is dropped.
        check_interval: Seconds between lease checks; None: a quarter of
            ``min_lease``, at most 1 s.
    """

    lease: float = 15.0
    min_lease: float = 1.0
    max_lease: float = 300.0
    max_presences: int = 1000
    max_subscriptions: int = 1000
    max_sessions: int = 10_000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    check_interval: float | None = None

    def __post_init__(self) -> None:
        for name in ("lease", "min_lease", "max_lease"):
            value = getattr(self, name)
            if not _positive(value):
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if not self.min_lease <= self.lease <= self.max_lease:
            raise ConfigError(
                f"lease ({self.lease} s) must lie between min_lease ({self.min_lease} s) "
                f"and max_lease ({self.max_lease} s)"
            )
        for name in ("max_presences", "max_subscriptions", "max_sessions"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, not {value!r}")
        if type(self.max_frame_bytes) is not int or self.max_frame_bytes < 1024:
            raise ConfigError(
                f"max_frame_bytes must be an int >= 1024, not {self.max_frame_bytes!r}"
            )
        if self.check_interval is None:
            object.__setattr__(self, "check_interval", min(self.min_lease / 4, 1.0))
        elif not _positive(self.check_interval):
            raise ConfigError(
                f"check_interval must be a positive number of seconds, not {self.check_interval!r}"
            )

    @property
    def interval(self) -> float:
        """``check_interval`` once resolved."""
        assert self.check_interval is not None
        return self.check_interval


def _positive(value: object) -> bool:
    return (
        type(value) in (int, float)
        and math.isfinite(value)  # type: ignore[arg-type]
        and value > 0  # type: ignore[operator]
    )


@dataclass(slots=True, eq=False)
class _Session:
    name: str
    client: str
    token: str
    lease: float
    last_seen: float
    envelope: list[bytes]
    presences: set[tuple[str | None, Topic, Key]] = field(default_factory=set)
    topics: set[Topic] = field(default_factory=set)

    def owner_id(self, owner: str | None) -> str:
        return self.name if owner is None else f"{self.name}/{owner}"


class _Refused(Exception):
    """A request the node answers with an error (internal to the node)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


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
    ) -> None:
        if type(log_level) is not int:
            raise ConfigError(f"log_level must be an int logging level, not {log_level!r}")
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
        permdown = topts.get("permdown_period", 1200)
        if _positive(permdown):
            popts.setdefault("forget_after", max(float(permdown), 1200.0))
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
        self._sender: zmq.Socket[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sessions: dict[str, _Session] = {}  # by token
        self._subscribers: dict[Topic, set[_Session]] = {}
        self._session_counter = 0
        self._started_at = 0.0
        self._running = False
        self.client_endpoint = ""
        """The bound client endpoint (known after start)."""
        self.counters: dict[str, int] = {
            "requests": 0,
            "errors": 0,
            "garbage": 0,
            "pushes": 0,
            "push_dropped": 0,
            "sessions_opened": 0,
            "sessions_closed": 0,
            "sessions_expired": 0,
            "lease_checks_skipped": 0,
        }
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
            await self.tracker.start()
            self._open_clients()
        except BaseException:
            await self._close()
            raise
        self._running = True
        self._tasks.append(asyncio.create_task(self._read_loop()))
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        log.info(
            "node %s (vsn %d) ready: cluster %s, clients %s",
            self.name,
            self.vsn,
            self.endpoint,
            self.client_endpoint,
        )

    def _open_clients(self) -> None:
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
        self._sender = zmq.Socket.shadow(router.underlying)

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
            self._sender = None
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
            self._sessions.clear()
            self._subscribers.clear()

    # -------------------------------------------------------------- status

    def stats(self) -> dict[str, Any]:
        """The client endpoint's counters and sessions (what ``status`` reports).

        Returns:
            ``sessions``, ``presences`` (tracked by sessions), ``subscriptions``
            (topics subscribed, summed over sessions) and the counters: requests,
            errors (error replies), garbage (frames dropped), pushes, push_dropped
            (diffs a full or gone client missed), sessions opened, closed (bye) and
            expired (lease ran out), lease_checks_skipped (the stall rule).
        """
        return {
            "sessions": len(self._sessions),
            "presences": sum(len(s.presences) for s in self._sessions.values()),
            "subscriptions": sum(len(s.topics) for s in self._sessions.values()),
            **self.counters,
        }

    def status(self) -> dict[str, Any]:
        """What the ``status`` request answers: node, endpoints, peers, replicas, stats."""
        tstats = self.tracker.stats()
        totals = tstats["totals"]
        return {
            "node": self.name,
            "vsn": self.vsn,
            "protocol": PROTOCOL_VERSION,
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
            "limits": {
                "lease": self.limits.lease,
                "min_lease": self.limits.min_lease,
                "max_lease": self.limits.max_lease,
                "max_presences": self.limits.max_presences,
                "max_subscriptions": self.limits.max_subscriptions,
                "max_sessions": self.limits.max_sessions,
                "max_frame_bytes": self.limits.max_frame_bytes,
            },
        }

    # -------------------------------------------------------------- diffs

    def _on_diff(self, diff: Diff) -> None:
        for topic, (joins, leaves) in diff.items():
            if log.isEnabledFor(self.log_level):
                log.log(
                    self.log_level,
                    "node %s: %s in topic %r",
                    self.name,
                    _describe(joins, leaves),
                    topic,
                )
            sessions = self._subscribers.get(topic)
            if not sessions:
                continue
            body = encode_diff(topic, joins, leaves)
            for session in list(sessions):
                self._send(session.envelope, body, push=True)

    # ------------------------------------------------------------ the reader

    def _send(self, envelope: list[bytes], body: bytes, *, push: bool = False) -> None:
        sender = self._sender
        if sender is None:
            return
        try:
            sender.send_multipart([*envelope, body], zmq.NOBLOCK)
        except zmq.ZMQError:
            # EAGAIN: the client's queue is full; EHOSTUNREACH: it is gone
            if push:
                self.counters["push_dropped"] += 1
            return
        if push:
            self.counters["pushes"] += 1

    async def _read_loop(self) -> None:
        router = self._router
        assert router is not None
        read = 0
        while True:
            frames = await router.recv_multipart()
            try:
                self._on_frames(frames)
            except Exception:  # never let one request stop the endpoint
                self.counters["errors"] += 1
                log.exception("node %s: handling a client frame failed", self.name)
            read += 1
            if read % _READ_BUDGET == 0:
                await asyncio.sleep(0)

    def _on_frames(self, frames: list[bytes]) -> None:
        # [identity, body] from a DEALER, [identity, b"", body] from a REQ
        if len(frames) not in (2, 3) or (len(frames) == 3 and frames[1]):
            self._garbage(f"{len(frames)} frames in one message")
            return
        envelope, body = frames[:-1], frames[-1]
        try:
            request = decode_request(body, self.limits.max_frame_bytes)
        except ProtocolError as exc:
            self._garbage(str(exc))
            if exc.request_id is not None:
                self.counters["errors"] += 1
                extra = (
                    {"versions": [PROTOCOL_VERSION]} if exc.code == "unsupported_version" else {}
                )
                self._send(envelope, encode_error(exc.request_id, exc.code, str(exc), **extra))
            return
        self.counters["requests"] += 1
        try:
            result = self._handle(request, envelope)
        except _Refused as exc:
            self.counters["errors"] += 1
            self._send(envelope, encode_error(request.id, exc.code, str(exc), **exc.extra))
            return
        except TrackerNotRunning as exc:
            self.counters["errors"] += 1
            self._send(envelope, encode_error(request.id, "not_running", str(exc)))
            return
        except Exception as exc:
            self.counters["errors"] += 1
            log.exception("node %s: %s request failed", self.name, request.op)
            self._send(envelope, encode_error(request.id, "internal", repr(exc)))
            return
        try:
            reply = encode_ok(request.id, result)
        except TypeError as exc:  # e.g. an int too large for JSON in a meta
            self.counters["errors"] += 1
            reply = encode_error(request.id, "internal", f"cannot encode the result: {exc}")
        self._send(envelope, reply)

    def _garbage(self, reason: str) -> None:
        self.counters["garbage"] += 1
        now = time.monotonic()
        if now - self._garbage_logged_at >= 10.0:  # at most one line per 10 s
            self._garbage_logged_at = now
            log.warning(
                "node %s: dropped a bad client frame (%d so far): %s",
                self.name,
                self.counters["garbage"],
                reason[:200],
            )

    # ---------------------------------------------------------- requests

    def _handle(self, req: Request, envelope: list[bytes]) -> dict[str, Any]:
        op = req.op
        if op == "hello":
            return self._hello(req, envelope)
        if op == "list":
            assert req.topic is not None
            return {"presences": [[k, m] for k, m in self.tracker.list(req.topic)]}
        if op == "get_by_key":
            assert req.topic is not None
            assert req.key is not None
            found = self.tracker.get_by_key(req.topic, req.key)
            return {"presences": [[o, m] for o, m in found]}
        if op == "status":
            return self.status()
        session = self._sessions.get(req.token or "")
        if session is None:
            raise _Refused(
                "unknown_session",
                "this node holds no such session (it restarted, or the lease ran out): "
                "say hello again and re-track",
                vsn=self.vsn,
            )
        session.last_seen = time.monotonic()
        session.envelope = envelope
        if op == "heartbeat":
            return {"lease": session.lease}
        if op == "bye":
            untracked = len(session.presences)
            self._end(session, "closed")
            return {"untracked": untracked}
        if op == "track":
            return self._track(session, req)
        if op == "update":
            return self._update(session, req)
        if op == "untrack":
            return {"untracked": self._untrack(session, req)}
        assert req.topic is not None
        if op == "subscribe":
            if req.topic not in session.topics:
                if len(session.topics) >= self.limits.max_subscriptions:
                    raise _Refused(
                        "limit_exceeded",
                        f"a session may subscribe to at most {self.limits.max_subscriptions} "
                        "topics",
                        limit=self.limits.max_subscriptions,
                    )
                session.topics.add(req.topic)
                self._subscribers.setdefault(req.topic, set()).add(session)
            return {}
        if op == "unsubscribe":
            self._drop_subscription(session, req.topic)
            return {}
        raise _Refused("unknown_op", f"unknown op {op!r}")  # pragma: no cover

    def _hello(self, req: Request, envelope: list[bytes]) -> dict[str, Any]:
        limits = self.limits
        lease = limits.lease if req.lease is None else req.lease
        if not limits.min_lease <= lease <= limits.max_lease:
            raise _Refused(
                "bad_lease",
                f"lease must lie between {limits.min_lease} and {limits.max_lease} s, not {lease}",
                min_lease=limits.min_lease,
                max_lease=limits.max_lease,
            )
        if len(self._sessions) >= limits.max_sessions:
            raise _Refused(
                "too_many_sessions",
                f"this node serves at most {limits.max_sessions} sessions",
                limit=limits.max_sessions,
            )
        assert req.client is not None
        self._session_counter += 1
        name = f"{req.client}@{self.name}:{self.vsn}:{self._session_counter}"
        token = secrets.token_urlsafe(24)
        session = _Session(name, req.client, token, lease, time.monotonic(), envelope)
        self._sessions[token] = session
        self.counters["sessions_opened"] += 1
        log.log(
            self.log_level, "node %s: client session %s opened (lease %g s)", self.name, name, lease
        )
        return {
            "session": name,
            "token": token,
            "node": self.name,
            "vsn": self.vsn,
            "lease": lease,
            "heartbeat": lease / 3,
            "max_presences": limits.max_presences,
            "max_subscriptions": limits.max_subscriptions,
        }

    def _track(self, session: _Session, req: Request) -> dict[str, Any]:
        assert req.topic is not None
        assert req.key is not None
        assert req.meta is not None
        held = (req.owner, req.topic, req.key)
        if held not in session.presences and len(session.presences) >= self.limits.max_presences:
            raise _Refused(
                "limit_exceeded",
                f"a session may track at most {self.limits.max_presences} presences",
                limit=self.limits.max_presences,
            )
        try:
            ref = self.tracker.track(session.owner_id(req.owner), req.topic, req.key, req.meta)
        except AlreadyTracked as exc:
            raise _Refused("already_tracked", str(exc)) from None
        except TooManyPresences as exc:  # the tracker option max_presences
            raise _Refused("limit_exceeded", str(exc), limit=exc.limit) from None
        except TypeError as exc:
            raise _Refused("bad_request", f"track: {exc}") from None
        session.presences.add(held)
        return {"ref": ref}

    def _update(self, session: _Session, req: Request) -> dict[str, Any]:
        assert req.topic is not None
        assert req.key is not None
        assert req.meta is not None
        if (req.owner, req.topic, req.key) not in session.presences:
            raise _Refused(
                "no_presence", f"this session tracks no {req.key!r} in topic {req.topic!r}"
            )
        try:
            ref = self.tracker.update(session.owner_id(req.owner), req.topic, req.key, req.meta)
        except NoPresence as exc:
            raise _Refused("no_presence", str(exc)) from None
        except TypeError as exc:
            raise _Refused("bad_request", f"update: {exc}") from None
        return {"ref": ref}

    def _untrack(self, session: _Session, req: Request) -> int:
        if req.topic is not None:
            assert req.key is not None
            held = (req.owner, req.topic, req.key)
            if held not in session.presences:
                return 0
            self.tracker.untrack(session.owner_id(req.owner), req.topic, req.key)
            session.presences.discard(held)
            return 1
        gone = {p for p in session.presences if req.owner is None or p[0] == req.owner}
        for owner in {p[0] for p in gone}:
            self.tracker.untrack(session.owner_id(owner))
        session.presences -= gone
        return len(gone)

    def _drop_subscription(self, session: _Session, topic: Topic) -> None:
        session.topics.discard(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subscribers[topic]

    def _end(self, session: _Session, why: str) -> None:
        """End a session: untrack its presences, drop its subscriptions."""
        self._sessions.pop(session.token, None)
        if self.tracker.running:
            for owner in {p[0] for p in session.presences}:
                self.tracker.untrack(session.owner_id(owner))
        count = len(session.presences)
        session.presences.clear()
        for topic in list(session.topics):
            self._drop_subscription(session, topic)
        self.counters["sessions_" + why] += 1
        log.log(
            self.log_level,
            "node %s: client session %s %s (%d presences untracked)",
            self.name,
            session.name,
            why,
            count,
        )

    # ------------------------------------------------------------ leases

    async def _lease_loop(self) -> None:
        interval = self.limits.interval
        due = time.monotonic() + interval
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            late = now - due
            if late > interval:
                # the stall rule: this loop ran late, so the heartbeats of the clients
                # may be sitting unread; read them and judge next round. The time the
                # node was stuck is not counted against any lease either: its clients
                # could not be heard while it was
                self.counters["lease_checks_skipped"] += 1
                for session in self._sessions.values():
                    session.last_seen = min(session.last_seen + late, now)
                await self._drain_input()
                due = time.monotonic() + interval
                continue
            due += interval
            self._expire(now)

    async def _drain_input(self) -> None:
        for round_ in range(_STALL_DRAIN_ROUNDS):
            before = self.counters["requests"] + self.counters["garbage"]
            await asyncio.sleep(_STALL_DRAIN_SLEEP)
            if round_ >= 2 and self.counters["requests"] + self.counters["garbage"] == before:
                return

    def _expire(self, now: float) -> None:
        for session in list(self._sessions.values()):
            if now - session.last_seen > session.lease:
                self._end(session, "expired")


def _describe(joins: list[tuple[Key, Meta]], leaves: list[tuple[Key, Meta]]) -> str:
    parts = []
    for sign, entries in (("joined", joins), ("left", leaves)):
        if entries:
            keys = [str(key) for key, _ in entries[:_LOG_KEYS]]
            more = f" (and {len(entries) - _LOG_KEYS} more)" if len(entries) > _LOG_KEYS else ""
            parts.append(f"{', '.join(keys)}{more} {sign}")
    return "; ".join(parts)
