"""The client sessions of a standalone node: leases, limits, subscriptions. Pure.

Phoenix has no counterpart: there the tracked processes live on the node and a monitor
untracks a pid that dies. Here a client in another process holds a *session* with the
node (:mod:`tracker_zmq.node` owns the socket), and a session that falls silent is
untracked as Phoenix untracks a dead pid. This module decides everything about those
sessions and does no I/O, reads no clock and draws no randomness, in the manner of h11:
frames and the time come in as arguments, and what to send or log comes back as a list
of actions (:class:`SendFrame`, :class:`SessionOpened`, ...). The tracker is reached
through :class:`TrackerLike`, so tests drive a :class:`Sessions` with a fake clock and
an in-memory tracker, without sockets.

Theory of operation
-------------------
``hello`` opens a session: the pair (client id, node incarnation), named
``"<client>@<node>:<vsn>:<n>"``, with a secret token (from the injected ``tokens``
factory) that its later requests carry. Every presence a session tracks is owned, in
the tracker, by the session's name (or ``"<session>/<owner>"`` for a sub-owner), so one
client can never untrack another's. The hello reply also lists the ops the endpoint
serves (the protocol grows additively: a client of a newer release checks it before
sending an op an older node lacks). A token the table does not hold (the node
restarted, or the lease ran out) gets ``unknown_session``: the client says hello again
and re-tracks what it holds.

``track_many`` is checked whole (size, room in the session) and then tracked item by
item, with a result per presence; ``broadcast`` and ``disconnect`` need no session and
go to the injected :class:`Broadcaster` (the node's sends them on its PubSub).

Each request with a session's token renews its lease and records the envelope (the
ROUTER's routing frames) that diffs of its subscribed topics are pushed to.
:meth:`Sessions.expire` ends the sessions silent for longer than their lease: their
presences are untracked and their subscriptions dropped.

The stall rule is the tracker's (Phoenix judges a replica down only on a timely tick,
and so do we): when the lease check runs more than a check interval late (a GC pause,
SIGSTOP, a long merge), :meth:`Sessions.stalled` says so, the caller reads the requests
that piled up and judges nothing that round, and the time the node was stuck is not
counted against any lease, so a node that stalled does not expire the clients that kept
heartbeating while it could not hear them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from crdt_state import Key, Meta, Topic
from tracker_zmq.errors import (
    AlreadyTracked,
    ConfigError,
    NoPresence,
    ProtocolError,
    TooManyPresences,
    TrackerNotRunning,
)
from tracker_zmq.options import check_positive
from tracker_zmq.protocol import (
    CONTROL_OPS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_FRAME_BYTES,
    OPS,
    PROTOCOL_VERSION,
    BroadcastRequest,
    ByeRequest,
    ClientRequest,
    DisconnectRequest,
    GetByKeyRequest,
    HeartbeatRequest,
    HelloRequest,
    ListRequest,
    SessionRequest,
    StatusRequest,
    SubscribeRequest,
    TrackManyRequest,
    TrackRequest,
    UnsubscribeRequest,
    UntrackManyRequest,
    UntrackRequest,
    UpdateRequest,
    decode_request,
    encode_diff,
    encode_error,
    encode_ok,
)

__all__ = [
    "DEFAULT_MAX_PRESENCES",
    "Action",
    "Broadcaster",
    "ClientLimits",
    "Envelope",
    "FrameDropped",
    "RequestFailed",
    "SendFrame",
    "SessionEnded",
    "SessionOpened",
    "Sessions",
    "TrackerLike",
]

DEFAULT_MAX_PRESENCES = 100_000
"""The presences one session may track, by default.

Sized for a web server: one session is typically one web worker, which tracks a presence
per websocket and topic. An asyncio worker serves some 10k to 20k websockets (see the
channels benchmarks), each in one to a few tracked topics, so 100,000 leaves room for a
busy worker while still stopping a runaway client (100,000 presences take about 60 MB on
every node). The node-wide bound over all sessions is the Tracker's ``max_presences``
(``--max-presences``)."""

Envelope: TypeAlias = tuple[bytes, ...]
"""The routing frames a ROUTER socket read before a request's body (the client's
identity, and an empty delimiter from a REQ socket); a reply goes back with them."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The client endpoint's options and limits, checked at construction.

    Attributes:
        lease: Seconds a session lives without a word from its client, when the client
            asks for none in hello.
        min_lease: The shortest lease a client may ask for, in seconds.
        max_lease: The longest lease a client may ask for, in seconds.
        max_presences: Most presences one session may track (``limit_exceeded``);
            :data:`DEFAULT_MAX_PRESENCES` by default, sized for a web worker.
        max_subscriptions: Most topics one session may subscribe to.
        max_sessions: Most sessions at once (``too_many_sessions``).
        max_frame_bytes: The largest request frame; a larger one is dropped.
        max_batch: Most presences in one ``track_many`` or ``untrack_many``
            (``limit_exceeded``).
        check_interval: Seconds between lease checks; None: a quarter of
            ``min_lease``, at most 1 s.
    """

    lease: float = 15.0
    min_lease: float = 1.0
    max_lease: float = 300.0
    max_presences: int = DEFAULT_MAX_PRESENCES
    max_subscriptions: int = 1000
    max_sessions: int = 10_000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    check_interval: float | None = None
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        for name in ("lease", "min_lease", "max_lease"):
            check_positive(name, getattr(self, name))
        if not self.min_lease <= self.lease <= self.max_lease:
            raise ConfigError(
                f"lease ({self.lease} s) must lie between min_lease ({self.min_lease} s) "
                f"and max_lease ({self.max_lease} s)"
            )
        for name in ("max_presences", "max_subscriptions", "max_sessions", "max_batch"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, not {value!r}")
        if type(self.max_frame_bytes) is not int or self.max_frame_bytes < 1024:
            raise ConfigError(
                f"max_frame_bytes must be an int >= 1024, not {self.max_frame_bytes!r}"
            )
        if self.check_interval is None:
            object.__setattr__(self, "check_interval", min(self.min_lease / 4, 1.0))
        else:
            check_positive("check_interval", self.check_interval)

    @property
    def interval(self) -> float:
        """``check_interval`` once resolved."""
        assert self.check_interval is not None
        return self.check_interval

    def as_dict(self) -> dict[str, float | int]:
        """The limits a node reports in ``status`` (every field but ``check_interval``)."""
        return {
            "lease": self.lease,
            "min_lease": self.min_lease,
            "max_lease": self.max_lease,
            "max_presences": self.max_presences,
            "max_subscriptions": self.max_subscriptions,
            "max_sessions": self.max_sessions,
            "max_frame_bytes": self.max_frame_bytes,
            "max_batch": self.max_batch,
        }


class TrackerLike(Protocol):
    """What the sessions need of a tracker (:class:`~tracker_zmq.Tracker` has it).

    Owners are the sessions' owner ids (strings); the methods raise as the Tracker's
    do (:class:`~tracker_zmq.errors.AlreadyTracked`, ``NoPresence``,
    ``TooManyPresences``, ``TrackerNotRunning``, ``TypeError`` for a bad meta).
    """

    @property
    def running(self) -> bool:
        """Whether the tracker takes calls (the sessions untrack only then)."""
        ...

    @property
    def vsn(self) -> int:
        """The node's incarnation (part of every session name)."""
        ...

    def track(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
        """Track a presence; returns its ``phx_ref``."""
        ...

    def update(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
        """Replace a presence's meta; returns the new ``phx_ref``."""
        ...

    def untrack(self, owner: str, topic: Topic | None = None, key: Key | None = None) -> None:
        """Untrack one presence, or with only ``owner`` every presence of it."""
        ...

    def list(self, topic: Topic) -> Sequence[tuple[Key, Meta]]:
        """Every visible presence of ``topic`` as ``(key, meta)``."""
        ...

    def get_by_key(self, topic: Topic, key: Key) -> Sequence[tuple[str | int, Meta]]:
        """Every visible presence of ``key`` in ``topic`` as ``(owner, meta)``."""
        ...


class Broadcaster(Protocol):
    """What the ``broadcast`` and ``disconnect`` ops need: a backend's acts on the
    websockets of every node (the node's is :mod:`tracker_zmq.channels.control` over its
    PubSub).

    Both raise ``TypeError`` or ``ValueError`` for a value they refuse (answered
    ``bad_request``) and :class:`~tracker_zmq.errors.TrackerNotRunning` when they
    cannot send (``not_running``).
    """

    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Send ``{"event": event, "payload": payload}`` to ``topic`` on every node."""
        ...

    def disconnect(self, socket_id: str, ban_seconds: float) -> None:
        """Close the sockets of ``socket_id`` on every node, and ban it that long."""
        ...


# ------------------------------------------------------------------- the actions


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``frame`` to the client at ``envelope`` (without blocking: a full or gone
    client misses it).

    Attributes:
        envelope: The routing frames.
        frame: The encoded reply or event.
        push: Whether it is a pushed diff (the node counts those sent and dropped).
    """

    envelope: Envelope
    frame: bytes
    push: bool = False


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A session was opened (for the log).

    Attributes:
        session: Its name.
        lease: Its lease, in seconds.
    """

    session: str
    lease: float


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A session ended and its presences were untracked (for the log).

    Attributes:
        session: Its name.
        why: ``"closed"`` (the client said bye) or ``"expired"`` (its lease ran out).
        untracked: How many presences it held.
    """

    session: str
    why: str
    untracked: int


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame that is no request was dropped (for the log).

    Attributes:
        reason: Why.
        total: Frames dropped so far.
    """

    reason: str
    total: int


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request failed on an unexpected error (a bug): it was answered ``internal``.

    Attributes:
        op: The request's op.
        error: The exception (to log with its traceback).
    """

    op: str
    error: Exception


Action: TypeAlias = SendFrame | SessionOpened | SessionEnded | FrameDropped | RequestFailed
"""What :class:`Sessions` asks its caller to do."""


# ------------------------------------------------------------------- the table


@dataclass(slots=True, eq=False)
class _Session:
    name: str
    token: str
    lease: float
    last_seen: float
    envelope: Envelope
    presences: set[tuple[str | None, Topic, Key]] = field(default_factory=set)
    topics: set[Topic] = field(default_factory=set)

    def owner_id(self, owner: str | None) -> str:
        return self.name if owner is None else f"{self.name}/{owner}"


class _Refused(Exception):
    """A request answered with an error code."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class Sessions:
    """The session table of one node's client endpoint: a pure protocol machine.

    Feed it what the socket reads (:meth:`receive`, or :meth:`handle` for a decoded
    request), the tracker's diffs (:meth:`on_diff`) and the lease timer's ticks
    (:meth:`stalled`, :meth:`expire`); each returns the actions to carry out, in order.

    Args:
        node: The node's name (part of every session name).
        tracker: The tracker the sessions track through.
        limits: The leases and limits (default: :class:`ClientLimits`'s defaults).
        tokens: Makes a new secret session token (the node passes
            ``secrets.token_urlsafe``; tests a seeded ``random.Random``).
        status: Makes the ``status`` result; None: ``{"node", "vsn", "protocol", "ops",
            "clients"}`` alone.
        ops: The ops this endpoint serves, listed in every hello reply (default: all of
            :data:`~tracker_zmq.protocol.OPS`); any other op is answered
            ``unknown_op``. ``hello`` is always served; ``broadcast`` and ``disconnect``
            only with a ``broadcaster``.
        broadcaster: Carries out ``broadcast`` and ``disconnect``; None: those ops are
            not served.

    Raises:
        ConfigError: ``ops`` names an op that is not in ``OPS``.

    Attributes:
        counters: ``requests`` (decoded and handled), ``errors`` (error replies),
            ``garbage`` (frames dropped), ``sessions_opened``, ``sessions_closed``
            (bye), ``sessions_expired`` (lease ran out) and ``lease_checks_skipped``
            (the stall rule).
    """

    def __init__(
        self,
        node: str,
        tracker: TrackerLike,
        limits: ClientLimits | None = None,
        *,
        tokens: Callable[[], str],
        status: Callable[[], Mapping[str, Any]] | None = None,
        ops: Iterable[str] = OPS,
        broadcaster: Broadcaster | None = None,
    ) -> None:
        served = frozenset(ops) | {"hello"}
        if not served <= OPS:
            raise ConfigError(f"ops: no such ops {sorted(served - OPS)!r}")
        if broadcaster is None:
            served -= CONTROL_OPS
        self.broadcaster = broadcaster
        self.ops: frozenset[str] = served
        """The ops this endpoint serves."""
        self.node = node
        self.tracker = tracker
        self.limits = limits if limits is not None else ClientLimits()
        self._tokens = tokens
        self._status = status
        self._sessions: dict[str, _Session] = {}  # by token
        self._subscribers: dict[Topic, set[_Session]] = {}
        self._opened = 0
        self.counters: dict[str, int] = {
            "requests": 0,
            "errors": 0,
            "garbage": 0,
            "sessions_opened": 0,
            "sessions_closed": 0,
            "sessions_expired": 0,
            "lease_checks_skipped": 0,
        }

    def stats(self) -> dict[str, int]:
        """``sessions``, ``presences`` (tracked by sessions), ``subscriptions`` (topics
        subscribed, summed over sessions) and the :attr:`counters`."""
        return {
            "sessions": len(self._sessions),
            "presences": sum(len(s.presences) for s in self._sessions.values()),
            "subscriptions": sum(len(s.topics) for s in self._sessions.values()),
            **self.counters,
        }

    def clear(self) -> None:
        """Forget every session without untracking anything (the tracker stopped)."""
        self._sessions.clear()
        self._subscribers.clear()

    # ------------------------------------------------------------ input

    def receive(self, frames: Sequence[bytes], now: float) -> list[Action]:
        """Handle one message read from the ROUTER: routing frames, then the body.

        A message that is not a request is dropped and counted (and answered, when it
        had a usable request id); nothing a client sends raises.

        Args:
            frames: ``[identity, body]`` from a DEALER, ``[identity, b"", body]`` from
                a REQ.
            now: The time, in seconds (monotonic).
        """
        if len(frames) not in (2, 3) or (len(frames) == 3 and frames[1]):
            return [self._garbage(f"{len(frames)} frames in one message")]
        envelope, body = tuple(frames[:-1]), frames[-1]
        try:
            request = decode_request(body, self.limits.max_frame_bytes)
        except ProtocolError as exc:
            actions: list[Action] = [self._garbage(str(exc))]
            if exc.request_id is not None:
                self.counters["errors"] += 1
                extra = (
                    {"versions": [PROTOCOL_VERSION]} if exc.code == "unsupported_version" else {}
                )
                frame = encode_error(exc.request_id, exc.code, str(exc), **extra)
                actions.append(SendFrame(envelope, frame))
            return actions
        return self.handle(request, envelope, now)

    def handle(self, request: ClientRequest, envelope: Envelope, now: float) -> list[Action]:
        """Handle one decoded request from the client at ``envelope``.

        Returns:
            The actions: the reply last, after what it caused (a session opened or
            ended). Never raises: a failure is answered with its error code.
        """
        self.counters["requests"] += 1
        actions: list[Action] = []
        try:
            result = self._dispatch(request, envelope, now, actions)
        except _Refused as exc:
            reply = encode_error(request.id, exc.code, str(exc), **exc.extra)
        except TrackerNotRunning as exc:
            reply = encode_error(request.id, "not_running", str(exc))
        except Exception as exc:
            actions.append(RequestFailed(request.op, exc))
            reply = encode_error(request.id, "internal", repr(exc))
        else:
            try:
                actions.append(SendFrame(envelope, encode_ok(request.id, result)))
                return actions
            except TypeError as exc:  # e.g. an int too large for JSON in a meta
                reply = encode_error(request.id, "internal", f"cannot encode the result: {exc}")
        self.counters["errors"] += 1
        actions.append(SendFrame(envelope, reply))
        return actions

    def on_diff(
        self, topic: Topic, joins: list[tuple[Key, Meta]], leaves: list[tuple[Key, Meta]]
    ) -> list[SendFrame]:
        """The pushes of one topic's diff: one per session subscribed to it."""
        sessions = self._subscribers.get(topic)
        if not sessions:
            return []
        frame = encode_diff(topic, joins, leaves)
        return [SendFrame(session.envelope, frame, push=True) for session in sessions]

    def stalled(self, late: float, now: float) -> bool:
        """The stall rule, for a lease check that runs ``late`` seconds after it was due.

        Args:
            late: Seconds between when the check was due and ``now``.
            now: The time, in seconds.

        Returns:
            True when the check is more than a check interval late: then the time the
            node was stuck is not counted against any lease, and the caller should read
            its pending input and judge no lease this round (call :meth:`expire` at the
            next check). False: judge now.
        """
        if late <= self.limits.interval:
            return False
        self.counters["lease_checks_skipped"] += 1
        for session in self._sessions.values():
            session.last_seen = min(session.last_seen + late, now)
        return True

    def expire(self, now: float) -> list[Action]:
        """End every session not heard from for longer than its lease.

        Returns:
            One :class:`SessionEnded` per session ended.
        """
        return [
            self._end(session, "expired")
            for session in list(self._sessions.values())
            if now - session.last_seen > session.lease
        ]

    # ------------------------------------------------------------ requests

    def _dispatch(
        self, request: ClientRequest, envelope: Envelope, now: float, actions: list[Action]
    ) -> Mapping[str, Any]:
        tracker = self.tracker
        if request.op not in self.ops:
            raise _Refused("unknown_op", f"this node does not serve the op {request.op!r}")
        match request:
            case HelloRequest():
                return self._hello(request, envelope, now, actions)
            case ListRequest(topic=topic):
                return {"presences": [[k, m] for k, m in tracker.list(topic)]}
            case GetByKeyRequest(topic=topic, key=key):
                return {"presences": [[o, m] for o, m in tracker.get_by_key(topic, key)]}
            case StatusRequest():
                return self._status() if self._status is not None else self._own_status()
            case BroadcastRequest() | DisconnectRequest():
                return self._control(request)
            case _:
                session = self._sessions.get(request.token)
                if session is None:
                    raise _Refused(
                        "unknown_session",
                        "this node holds no such session (it restarted, or the lease ran "
                        "out): say hello again and re-track",
                        vsn=tracker.vsn,
                    )
                session.last_seen = now
                session.envelope = envelope
                return self._in_session(session, request, actions)

    def _in_session(
        self, session: _Session, request: SessionRequest, actions: list[Action]
    ) -> Mapping[str, Any]:
        match request:
            case HeartbeatRequest():
                return {"lease": session.lease}
            case ByeRequest():
                untracked = len(session.presences)
                actions.append(self._end(session, "closed"))
                return {"untracked": untracked}
            case TrackRequest():
                return {"ref": self._track(session, request)}
            case UpdateRequest():
                return {"ref": self._update(session, request)}
            case UntrackRequest():
                return {"untracked": self._untrack(session, request)}
            case SubscribeRequest(topic=topic):
                self._subscribe(session, topic)
                return {}
            case UnsubscribeRequest(topic=topic):
                self._drop_subscription(session, topic)
                return {}
            case TrackManyRequest():
                return self._track_many(session, request)
            case UntrackManyRequest():
                return {"untracked": self._untrack_many(session, request)}

    def _own_status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "vsn": self.tracker.vsn,
            "protocol": PROTOCOL_VERSION,
            "ops": sorted(self.ops),
            "clients": self.stats(),
        }

    def _hello(
        self, req: HelloRequest, envelope: Envelope, now: float, actions: list[Action]
    ) -> dict[str, Any]:
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
        self._opened += 1
        vsn = self.tracker.vsn
        name = f"{req.client}@{self.node}:{vsn}:{self._opened}"
        token = self._tokens()
        self._sessions[token] = _Session(name, token, lease, now, envelope)
        self.counters["sessions_opened"] += 1
        actions.append(SessionOpened(name, lease))
        return {
            "session": name,
            "token": token,
            "node": self.node,
            "vsn": vsn,
            "lease": lease,
            "heartbeat": lease / 3,
            "max_presences": limits.max_presences,
            "max_subscriptions": limits.max_subscriptions,
            "ops": sorted(self.ops),
        }

    def _track(self, session: _Session, req: TrackRequest) -> str:
        held = (req.owner, req.topic, req.key)
        limit = self.limits.max_presences
        if held not in session.presences and len(session.presences) >= limit:
            raise _Refused(
                "limit_exceeded", f"a session may track at most {limit} presences", limit=limit
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
        return ref

    def _track_many(self, session: _Session, req: TrackManyRequest) -> dict[str, Any]:
        # Checked whole first (size, room in the session: nothing tracked on a refusal),
        # then per item: a retried batch whose reply was lost meets already_tracked for
        # what went through, and undoing tracks the cluster has already seen would show
        # as joins then leaves everywhere, so there is no all-or-nothing here.
        items = req.presences
        limits = self.limits
        if len(items) > limits.max_batch:
            raise _Refused(
                "limit_exceeded",
                f"track_many: at most {limits.max_batch} presences per request, "
                f"not {len(items)}: split the batch",
                limit=limits.max_batch,
                max_batch=limits.max_batch,
            )
        held = session.presences
        new = {(item.owner, item.topic, item.key) for item in items} - held
        if len(held) + len(new) > limits.max_presences:
            raise _Refused(
                "limit_exceeded",
                f"a session may track at most {limits.max_presences} presences "
                f"({len(held)} held, {len(new)} new in this batch)",
                limit=limits.max_presences,
            )
        track = self.tracker.track
        owners: dict[str | None, str] = {}
        refs: list[str | None] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            owner = item.owner
            owner_id = owners.get(owner)
            if owner_id is None:
                owner_id = owners[owner] = session.owner_id(owner)
            try:
                ref = track(owner_id, item.topic, item.key, item.meta)
            except AlreadyTracked as exc:
                errors.append({"index": index, "code": "already_tracked", "message": str(exc)})
            except TooManyPresences as exc:
                errors.append(
                    {
                        "index": index,
                        "code": "limit_exceeded",
                        "message": str(exc),
                        "limit": exc.limit,
                    }
                )
            except TypeError as exc:
                errors.append({"index": index, "code": "bad_request", "message": str(exc)})
            else:
                held.add((owner, item.topic, item.key))
                refs.append(ref)
                continue
            refs.append(None)
        return {"refs": refs, "errors": errors}

    def _untrack_many(self, session: _Session, req: UntrackManyRequest) -> int:
        items = req.presences
        if len(items) > self.limits.max_batch:
            raise _Refused(
                "limit_exceeded",
                f"untrack_many: at most {self.limits.max_batch} presences per request, "
                f"not {len(items)}: split the batch",
                limit=self.limits.max_batch,
                max_batch=self.limits.max_batch,
            )
        held = session.presences
        untrack = self.tracker.untrack
        count = 0
        for item in items:
            target = (item.owner, item.topic, item.key)
            if target in held:
                untrack(session.owner_id(item.owner), item.topic, item.key)
                held.discard(target)
                count += 1
        return count

    def _control(self, req: BroadcastRequest | DisconnectRequest) -> dict[str, Any]:
        broadcaster = self.broadcaster
        assert broadcaster is not None  # the ops are served only with one
        try:
            if isinstance(req, BroadcastRequest):
                broadcaster.broadcast(req.topic, req.event, req.payload)
            else:
                broadcaster.disconnect(req.socket_id, req.ban_seconds)
        except (TypeError, ValueError) as exc:
            raise _Refused("bad_request", f"{req.op}: {exc}") from None
        return {}

    def _update(self, session: _Session, req: UpdateRequest) -> str:
        if (req.owner, req.topic, req.key) not in session.presences:
            raise _Refused(
                "no_presence", f"this session tracks no {req.key!r} in topic {req.topic!r}"
            )
        try:
            return self.tracker.update(session.owner_id(req.owner), req.topic, req.key, req.meta)
        except NoPresence as exc:
            raise _Refused("no_presence", str(exc)) from None
        except TypeError as exc:
            raise _Refused("bad_request", f"update: {exc}") from None

    def _untrack(self, session: _Session, req: UntrackRequest) -> int:
        if req.topic is not None and req.key is not None:
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

    def _subscribe(self, session: _Session, topic: Topic) -> None:
        if topic in session.topics:
            return
        limit = self.limits.max_subscriptions
        if len(session.topics) >= limit:
            raise _Refused(
                "limit_exceeded", f"a session may subscribe to at most {limit} topics", limit=limit
            )
        session.topics.add(topic)
        self._subscribers.setdefault(topic, set()).add(session)

    def _drop_subscription(self, session: _Session, topic: Topic) -> None:
        session.topics.discard(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subscribers[topic]

    def _end(self, session: _Session, why: str) -> SessionEnded:
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
        return SessionEnded(session.name, why, count)

    def _garbage(self, reason: str) -> FrameDropped:
        self.counters["garbage"] += 1
        return FrameDropped(reason, self.counters["garbage"])
