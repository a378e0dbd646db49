"""The client protocol of a standalone node: its messages and their codec. Pure.

There is no Phoenix module to port here: in Phoenix the tracked processes live on the
node. A standalone node (:mod:`tracker_zmq.node`) serves a ZeroMQ ROUTER so that other
processes, in any language, can track presences through it; this module is the wire
format both ends speak (the node through :mod:`tracker_zmq.sessions`, the Python client
through :mod:`tracker_zmq.client`). It does no I/O, reads no clock and draws no
randomness. ``docs/reference/protocol.md`` specifies the protocol for writers of other
clients.

Wire format. Each ZeroMQ message is one frame holding one JSON object (UTF-8, orjson).
Every frame carries ``"v": 1`` (:data:`PROTOCOL_VERSION`). Client to node:

==========  ==============================================  ============================
op          fields (besides ``v``, ``id``, ``op``)           result
==========  ==============================================  ============================
hello       ``client``, ``lease`` (optional, seconds)        ``session``, ``token``,
                                                            ``ops``, ...
heartbeat   ``token``                                        ``lease``
bye         ``token``                                        ``untracked``
track       ``token``, ``topic``, ``key``, ``meta``,         ``ref``
            ``owner`` (optional)
update      same as track                                    ``ref``
untrack     ``token``, ``topic`` + ``key`` (optional),       ``untracked``
            ``owner`` (optional)
subscribe   ``token``, ``topic``                             ``{}``
unsubscribe ``token``, ``topic``                             ``{}``
list        ``topic``                                        ``presences``: [[key, meta]]
get_by_key  ``topic``, ``key``                               ``presences``: [[owner, meta]]
status      (none)                                           node, replicas, stats
track_many  ``token``, ``presences``: [{topic, key, meta,      ``refs``, ``errors``
            owner?}, ...]
untrack_    ``token``, ``presences``: [{topic, key,            ``untracked``
many        owner?}, ...]
broadcast   ``topic``, ``event``, ``payload``                ``{}``
disconnect  ``socket_id``, ``ban_seconds`` (optional)        ``{}``
==========  ==============================================  ============================

The node answers each request with ``{"v": 1, "id": id, "ok": true, "result": {...}}``
or ``{"v": 1, "id": id, "ok": false, "error": {"code": ..., "message": ...}}``, and
pushes ``{"v": 1, "event": "diff", "topic": t, "joins": [[key, meta], ...], "leaves":
[...]}`` for subscribed topics. Decoding never raises anything but
:class:`~tracker_zmq.errors.ProtocolError`.

The endpoint grows additively: the hello result lists the ``ops`` the node serves
(:data:`OPS`; a node of the first release lists none and serves :data:`V1_OPS`, see
:func:`served_ops`), and a client sends no op the node does not list.

Each op decodes to its own frozen dataclass (:class:`HelloRequest` ...
:class:`StatusRequest`; their union is :data:`ClientRequest`), so a handler matches on
the type and finds every field it needs set. :class:`Request` is the generic form (any
op, every field optional) that the Python client builds and :func:`encode_request`
writes; :func:`to_request` turns a typed request into it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final, TypeAlias, cast

import orjson

from crdt_state import Key, Meta, Topic
from tracker_zmq.errors import ProtocolError

__all__ = [
    "BULK_OPS",
    "CONTROL_OPS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_FRAME_BYTES",
    "ERROR_CODES",
    "MAX_BAN_SECONDS",
    "MAX_ID_CHARS",
    "OPS",
    "PROTOCOL_VERSION",
    "SESSION_OPS",
    "V1_OPS",
    "BroadcastRequest",
    "ByeRequest",
    "ClientRequest",
    "DisconnectRequest",
    "Event",
    "GetByKeyRequest",
    "HeartbeatRequest",
    "HelloRequest",
    "ListRequest",
    "ProtocolError",
    "Reply",
    "Request",
    "SessionRequest",
    "StatusRequest",
    "SubscribeRequest",
    "TrackItem",
    "TrackManyRequest",
    "TrackRequest",
    "UnsubscribeRequest",
    "UntrackItem",
    "UntrackManyRequest",
    "UntrackRequest",
    "UpdateRequest",
    "decode_message",
    "decode_request",
    "encode_diff",
    "encode_error",
    "encode_ok",
    "encode_request",
    "served_ops",
    "to_request",
]

PROTOCOL_VERSION: Final = 1
"""The version every frame carries as ``"v"``; a node answers other versions with
``unsupported_version``."""

DEFAULT_MAX_FRAME_BYTES: Final = 1024 * 1024
"""The largest frame a node accepts by default (and a client accepts), in bytes."""

V1_OPS: Final = frozenset(
    {
        "hello",
        "heartbeat",
        "bye",
        "track",
        "update",
        "untrack",
        "subscribe",
        "unsubscribe",
        "list",
        "get_by_key",
        "status",
    }
)
"""The ops of the first release of protocol version 1: what a node serves whose hello
reply lists no ``ops`` (:func:`served_ops`)."""

BULK_OPS: Final = frozenset({"track_many", "untrack_many"})
"""The bulk ops (this release): many presences in one request, one result per presence
(``track_many``) or one count (``untrack_many``)."""

CONTROL_OPS: Final = frozenset({"broadcast", "disconnect"})
"""A backend's acts on the websockets of every node (this release): a broadcast to a
topic's channel subscribers, a disconnect (and ban) of a socket id."""

OPS: Final[frozenset[str]] = V1_OPS | BULK_OPS | CONTROL_OPS
"""Every request op this release serves; its hello reply lists them as ``ops``.

The endpoint grows additively: a release may add ops within version 1, never remove or
change one, so a client checks an op against the node's list before sending it."""

SESSION_OPS: Final = frozenset(
    {
        "heartbeat",
        "bye",
        "track",
        "update",
        "untrack",
        "subscribe",
        "unsubscribe",
        "track_many",
        "untrack_many",
    }
)
"""The ops that need a session ``token``."""

ERROR_CODES: Final = frozenset(
    {
        "bad_request",
        "unsupported_version",
        "unknown_op",
        "unknown_session",
        "bad_lease",
        "already_tracked",
        "no_presence",
        "limit_exceeded",
        "too_many_sessions",
        "not_running",
        "internal",
    }
)
"""Every error code a node of protocol version 1 replies with."""

DEFAULT_MAX_BATCH: Final = 1000
"""The most presences one ``track_many`` or ``untrack_many`` carries, by default (a node
announces its own as ``max_batch`` in the hello reply)."""

MAX_BAN_SECONDS: Final = 30 * 24 * 3600.0
"""The longest ``ban_seconds`` of a ``disconnect``: 30 days."""

MAX_ID_CHARS: Final = 256
"""The longest client id, owner, token or string topic or key, in characters."""

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_REQUEST_ID_MAX = 2**53  # exact in every JSON implementation (JavaScript included)


# ------------------------------------------------------------------- the requests


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """``hello``: open a session.

    Attributes:
        id: The request id, an int in ``[0, 2**53]``; the reply carries it back.
        client: The client's id, a label of 1 to 256 characters.
        lease: The lease the client asks for, in seconds (None: the node's default).
    """

    op: ClassVar[str] = "hello"
    id: int
    client: str
    lease: float | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """``heartbeat``: renew the session's lease.

    Attributes:
        id: The request id.
        token: The session token hello returned.
    """

    op: ClassVar[str] = "heartbeat"
    id: int
    token: str


@dataclass(frozen=True, slots=True)
class ByeRequest:
    """``bye``: end the session now, untracking its presences.

    Attributes:
        id: The request id.
        token: The session token.
    """

    op: ClassVar[str] = "bye"
    id: int
    token: str


@dataclass(frozen=True, slots=True)
class TrackRequest:
    """``track``: track a presence of the session.

    Attributes:
        id: The request id.
        token: The session token.
        topic: The topic (str or int).
        key: The key (str or int).
        meta: The meta, a JSON object.
        owner: A sub-owner inside the session (e.g. a connection id); None: the
            session itself.
    """

    op: ClassVar[str] = "track"
    id: int
    token: str
    topic: Topic
    key: Key
    meta: Meta
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """``update``: replace the meta of a presence the session tracks.

    Attributes:
        id: The request id.
        token: The session token.
        topic: The topic.
        key: The key.
        meta: The new meta, a JSON object.
        owner: The sub-owner, as in :class:`TrackRequest`.
    """

    op: ClassVar[str] = "update"
    id: int
    token: str
    topic: Topic
    key: Key
    meta: Meta
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class UntrackRequest:
    """``untrack``: one presence (``topic`` and ``key``), or every presence of ``owner``
    (of the whole session when ``owner`` is None too).

    Attributes:
        id: The request id.
        token: The session token.
        topic: The topic, or None (then ``key`` is None too).
        key: The key, or None (then ``topic`` is None too).
        owner: The sub-owner, as in :class:`TrackRequest`.
    """

    op: ClassVar[str] = "untrack"
    id: int
    token: str
    topic: Topic | None = None
    key: Key | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``subscribe``: have the node push the diffs of ``topic`` to this session.

    Attributes:
        id: The request id.
        token: The session token.
        topic: The topic.
    """

    op: ClassVar[str] = "subscribe"
    id: int
    token: str
    topic: Topic


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """``unsubscribe``: stop the pushes of ``topic``.

    Attributes:
        id: The request id.
        token: The session token.
        topic: The topic.
    """

    op: ClassVar[str] = "unsubscribe"
    id: int
    token: str
    topic: Topic


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``list``: every visible presence of ``topic``, cluster-wide (no session needed).

    Attributes:
        id: The request id.
        topic: The topic.
    """

    op: ClassVar[str] = "list"
    id: int
    topic: Topic


@dataclass(frozen=True, slots=True)
class GetByKeyRequest:
    """``get_by_key``: every visible presence of ``key`` in ``topic`` (no session needed).

    Attributes:
        id: The request id.
        topic: The topic.
        key: The key.
    """

    op: ClassVar[str] = "get_by_key"
    id: int
    topic: Topic
    key: Key


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """``status``: the node's status (no session needed).

    Attributes:
        id: The request id.
    """

    op: ClassVar[str] = "status"
    id: int


@dataclass(frozen=True, slots=True)
class TrackItem:
    """One presence of a ``track_many``: the fields of a ``track``.

    Attributes:
        topic: The topic (str or int).
        key: The key (str or int).
        meta: The meta, a JSON object.
        owner: The sub-owner, as in :class:`TrackRequest`.
    """

    topic: Topic
    key: Key
    meta: Meta
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class UntrackItem:
    """One presence of an ``untrack_many``.

    Attributes:
        topic: The topic.
        key: The key.
        owner: The sub-owner, as in :class:`TrackRequest`.
    """

    topic: Topic
    key: Key
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class TrackManyRequest:
    """``track_many``: track many presences of the session in one request.

    The batch is checked whole first (every item well formed, at most the node's
    ``max_batch`` items, room in the session for the new ones): a failure there tracks
    nothing. Then each item is tracked on its own, and the result says which failed
    (``already_tracked``, ``limit_exceeded`` of the node, ``bad_request``).

    Attributes:
        id: The request id.
        token: The session token.
        presences: The presences, in order.
    """

    op: ClassVar[str] = "track_many"
    id: int
    token: str
    presences: tuple[TrackItem, ...]


@dataclass(frozen=True, slots=True)
class UntrackManyRequest:
    """``untrack_many``: untrack many presences of the session in one request.

    Attributes:
        id: The request id.
        token: The session token.
        presences: The presences; those the session does not track are skipped.
    """

    op: ClassVar[str] = "untrack_many"
    id: int
    token: str
    presences: tuple[UntrackItem, ...]


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    """``broadcast``: send ``event`` to every websocket subscriber of ``topic`` on every
    node (``tracker_zmq.channels.broadcast``; no session needed).

    Attributes:
        id: The request id.
        topic: The channel topic, a string of 1 to 256 characters (not reserved).
        event: The event name, a string of 1 to 256 characters.
        payload: The payload, a JSON object.
    """

    op: ClassVar[str] = "broadcast"
    id: int
    topic: str
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DisconnectRequest:
    """``disconnect``: close every websocket of ``socket_id`` on every node, and with
    ``ban_seconds`` refuse its connects there that long (``tracker_zmq.channels.
    disconnect``; no session needed).

    Attributes:
        id: The request id.
        socket_id: The socket id (``Socket.id()``), a string of 1 to 256 characters.
        ban_seconds: Seconds every node refuses the socket id afterwards, 0 to
            :data:`MAX_BAN_SECONDS`; 0 refuses nothing.
    """

    op: ClassVar[str] = "disconnect"
    id: int
    socket_id: str
    ban_seconds: float = 0.0


SessionRequest: TypeAlias = (
    HeartbeatRequest
    | ByeRequest
    | TrackRequest
    | UpdateRequest
    | UntrackRequest
    | SubscribeRequest
    | UnsubscribeRequest
    | TrackManyRequest
    | UntrackManyRequest
)
"""A request of one of :data:`SESSION_OPS`: it carries a ``token``."""

ClientRequest: TypeAlias = (
    HelloRequest
    | SessionRequest
    | ListRequest
    | GetByKeyRequest
    | StatusRequest
    | BroadcastRequest
    | DisconnectRequest
)
"""Any request, as :func:`decode_request` returns it: one dataclass per op."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a client in its generic form: any op, every field optional.

    What :class:`~tracker_zmq.Client` builds and :func:`encode_request` writes (the
    typed requests encode too); :func:`to_request` makes one from a typed request.

    Attributes:
        id: The request id, an int in ``[0, 2**53]``; the reply carries it back.
        op: One of :data:`OPS`.
        token: The session token (the ops of ``SESSION_OPS`` need it).
        client: ``hello``: the client's id, a label of 1 to 256 characters.
        lease: ``hello``: the lease the client asks for, in seconds (None: the node's
            default).
        topic: The topic (str or int) of the ops that take one.
        key: The key (str or int) of the ops that take one.
        meta: ``track`` and ``update``: the meta, a JSON object.
        owner: ``track``, ``update``, ``untrack``: a sub-owner inside the session (a
            str, e.g. a connection id); None: the session itself.
        presences: ``track_many`` and ``untrack_many``: the presences, as
            :class:`TrackItem` or :class:`UntrackItem` (or their JSON objects).
        event: ``broadcast``: the event name.
        payload: ``broadcast``: the payload, a JSON object.
        socket_id: ``disconnect``: the socket id.
        ban_seconds: ``disconnect``: the ban, in seconds.
    """

    id: int
    op: str
    token: str | None = None
    client: str | None = None
    lease: float | None = None
    topic: Topic | None = None
    key: Key | None = None
    meta: Meta | None = None
    owner: str | None = None
    presences: Sequence[Any] | None = None
    event: str | None = None
    payload: dict[str, Any] | None = None
    socket_id: str | None = None
    ban_seconds: float | None = None


def to_request(request: ClientRequest) -> Request:
    """The generic :class:`Request` holding the same op and fields as ``request``."""
    values = {f.name: getattr(request, f.name) for f in fields(request) if f.name != "id"}
    return Request(request.id, request.op, **values)


def served_ops(hello_result: Mapping[str, Any]) -> frozenset[str]:
    """The ops a node serves, read from the result of its ``hello``.

    Args:
        hello_result: The ``result`` object of a successful hello reply.

    Returns:
        The ops it lists as ``ops``; :data:`V1_OPS` when it lists none (a node of the
        first release, which did not announce them).

    Raises:
        ProtocolError: ``ops`` is there but not a list of strings.
    """
    ops = hello_result.get("ops")
    if ops is None:
        return V1_OPS
    if type(ops) is not list or not all(type(op) is str for op in ops):
        raise ProtocolError(f"hello: ops must be a list of strings, not {ops!r:.100}")
    return frozenset(ops)


# ------------------------------------------------------------------- the node's side


@dataclass(frozen=True, slots=True)
class Reply:
    """The node's answer to one request.

    Attributes:
        id: The request id it answers.
        ok: Whether the request succeeded.
        result: The result fields (empty on error).
        code: The error code (one of :data:`ERROR_CODES`, or a newer one), or None.
        message: The error's human-readable text, or None.
        error: The whole error object (code, message and any extra fields).
    """

    id: int
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None
    error: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """Something the node pushes without a request (protocol version 1: diffs).

    Attributes:
        kind: The event's name (``"diff"``; clients ignore kinds they do not know).
        topic: The topic of a diff.
        joins: ``[(key, meta), ...]`` that joined.
        leaves: ``[(key, meta), ...]`` that left.
    """

    kind: str
    topic: Topic | None = None
    joins: list[tuple[Key, Meta]] = field(default_factory=list)
    leaves: list[tuple[Key, Meta]] = field(default_factory=list)


# ------------------------------------------------------------------- encoding


def encode_request(request: Request | ClientRequest) -> bytes:
    """Encode a request (generic or typed) as one frame; fields that are None are left
    out."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request.id, "op": request.op}
    for f in fields(request):
        if f.name not in ("id", "op"):
            value = getattr(request, f.name)
            if value is not None:
                body[f.name] = value
    presences = body.get("presences")
    if presences is not None:
        body["presences"] = [_item_json(item) for item in presences]
    return orjson.dumps(body)


def _item_json(item: Any) -> Any:
    # a TrackItem or UntrackItem without its None owner; anything else as it is
    if isinstance(item, TrackItem):
        out: dict[str, Any] = {"topic": item.topic, "key": item.key, "meta": item.meta}
    elif isinstance(item, UntrackItem):
        out = {"topic": item.topic, "key": item.key}
    else:
        return item
    if item.owner is not None:
        out["owner"] = item.owner
    return out


def encode_ok(request_id: int, result: Mapping[str, Any] | None = None) -> bytes:
    """Encode a successful reply to request ``request_id``.

    Raises:
        TypeError: A value of ``result`` has no JSON form (e.g. an int over 64 bits).
    """
    return orjson.dumps(
        {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result or {}}
    )


def encode_error(request_id: int, code: str, message: str, **extra: Any) -> bytes:
    """Encode an error reply; ``extra`` adds fields to the error object."""
    error = {"code": code, "message": message, **extra}
    return orjson.dumps({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error})


def encode_diff(
    topic: Topic, joins: list[tuple[Key, Meta]], leaves: list[tuple[Key, Meta]]
) -> bytes:
    """Encode the push of one topic's diff."""
    return orjson.dumps(
        {"v": PROTOCOL_VERSION, "event": "diff", "topic": topic, "joins": joins, "leaves": leaves}
    )


# ------------------------------------------------------------------- decoding


def _load_object(frame: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError(f"a frame is bytes, not {type(frame).__name__}")
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the {max_bytes} byte limit")
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if type(data) is not dict:
        raise ProtocolError(f"a frame is a JSON object, not {type(data).__name__}")
    return data


def _is_id(value: object) -> bool:
    if type(value) is str:
        return 0 < len(value) <= MAX_ID_CHARS
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _is_label(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS


class _Fields:
    """Reads and checks the fields of one request frame, in the order the ops list them."""

    __slots__ = ("data", "op", "rid")

    def __init__(self, data: dict[str, Any], op: str, rid: int) -> None:
        self.data = data
        self.op = op
        self.rid = rid

    def bad(self, text: str) -> ProtocolError:
        return ProtocolError(f"{self.op}: {text}", "bad_request", self.rid)

    def token(self) -> str:
        token = self.data.get("token")
        if not _is_label(token):
            raise self.bad("needs a session token (a string)")
        return str(token)

    def client(self) -> str:
        client = self.data.get("client")
        if not _is_label(client):
            raise self.bad(f"client must be a string of 1 to {MAX_ID_CHARS} characters")
        return str(client)

    def lease(self) -> float | None:
        lease = self.data.get("lease")
        if lease is None:
            return None
        if type(lease) not in (int, float) or not math.isfinite(lease) or lease <= 0:
            raise self.bad("lease must be a positive number of seconds")
        return float(lease)

    def topic(self) -> Topic:
        topic = self.data.get("topic")
        if not _is_id(topic):
            raise self.bad("topic must be a string (1 to 256 characters) or a 64-bit int")
        return cast(Topic, topic)

    def key(self) -> Key:
        key = self.data.get("key")
        if not _is_id(key):
            raise self.bad("key must be a string (1 to 256 characters) or a 64-bit int")
        return cast(Key, key)

    def meta(self) -> Meta:
        meta = self.data.get("meta")
        if type(meta) is not dict:
            raise self.bad("meta must be a JSON object")
        return meta

    def owner(self) -> str | None:
        owner = self.data.get("owner")
        if owner is not None and not _is_label(owner):
            raise self.bad(f"owner must be a string of 1 to {MAX_ID_CHARS} characters")
        return cast(str | None, owner)

    def label(self, name: str) -> str:
        """A string field of 1 to 256 characters (broadcast's topic and event, a socket id)."""
        value = self.data.get(name)
        if not _is_label(value):
            raise self.bad(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
        return str(value)

    def payload(self) -> dict[str, Any]:
        payload = self.data.get("payload")
        if type(payload) is not dict:
            raise self.bad("payload must be a JSON object")
        return payload

    def ban_seconds(self) -> float:
        ban = self.data.get("ban_seconds", 0)
        if (
            type(ban) not in (int, float)
            or not math.isfinite(ban)
            or not 0 <= ban <= MAX_BAN_SECONDS
        ):
            raise self.bad(f"ban_seconds must be a number of seconds from 0 to {MAX_BAN_SECONDS:g}")
        return float(ban)

    def items(self) -> list[dict[str, Any]]:
        """``presences``: a list of JSON objects (its length is the node's to limit)."""
        items = self.data.get("presences")
        if type(items) is not list:
            raise self.bad("presences must be a list of objects")
        for index, item in enumerate(items):
            if type(item) is not dict:
                raise self.bad(f"presences[{index}] must be an object")
        return items

    def track_items(self) -> tuple[TrackItem, ...]:
        out = []
        for index, item in enumerate(self.items()):
            f = _Fields(item, f"{self.op}: presences[{index}]", self.rid)
            out.append(TrackItem(f.topic(), f.key(), f.meta(), f.owner()))
        return tuple(out)

    def untrack_items(self) -> tuple[UntrackItem, ...]:
        out = []
        for index, item in enumerate(self.items()):
            f = _Fields(item, f"{self.op}: presences[{index}]", self.rid)
            out.append(UntrackItem(f.topic(), f.key(), f.owner()))
        return tuple(out)

    def untrack_target(self) -> tuple[Topic | None, Key | None]:
        """``topic`` and ``key``, both or neither (untrack)."""
        if self.data.get("topic") is None:
            if self.data.get("key") is not None:
                raise self.bad("key without topic")
            return None, None
        topic = self.topic()
        if self.data.get("key") is None:
            raise self.bad("topic without key")
        return topic, self.key()


def decode_request(frame: bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> ClientRequest:
    """Decode and check one request frame (what a node does with each frame).

    Unknown fields are ignored, so that a version can grow optional fields.

    Args:
        frame: The frame's bytes.
        max_bytes: The largest frame accepted; a larger one is refused before parsing.

    Returns:
        The request, as the dataclass of its op.

    Raises:
        ProtocolError: For anything but a well-formed request of version 1: its
            ``request_id`` is set when the frame had a usable id (so the node can
            answer), and its ``code`` says what to answer.
    """
    data = _load_object(frame, max_bytes)
    rid = data.get("id")
    request_id = rid if type(rid) is int and 0 <= rid <= _REQUEST_ID_MAX else None
    if data.get("v") != PROTOCOL_VERSION or type(data.get("v")) is not int:
        raise ProtocolError(
            f"unsupported protocol version {data.get('v')!r}; this node speaks {PROTOCOL_VERSION}",
            "unsupported_version",
            request_id,
        )
    if request_id is None:
        raise ProtocolError("a request needs an int id from 0 to 2**53")
    op = data.get("op")
    if type(op) is not str:
        raise ProtocolError("a request needs an op (a string)", "bad_request", request_id)
    if op not in OPS:
        raise ProtocolError(f"unknown op {op[:64]!r}", "unknown_op", request_id)
    f = _Fields(data, op, request_id)
    # every field is read left to right, so the first bad one is the one reported
    match op:
        case "hello":
            return HelloRequest(request_id, f.client(), f.lease())
        case "heartbeat":
            return HeartbeatRequest(request_id, f.token())
        case "bye":
            return ByeRequest(request_id, f.token())
        case "track":
            return TrackRequest(request_id, f.token(), f.topic(), f.key(), f.meta(), f.owner())
        case "update":
            return UpdateRequest(request_id, f.token(), f.topic(), f.key(), f.meta(), f.owner())
        case "untrack":
            token = f.token()
            topic, key = f.untrack_target()
            return UntrackRequest(request_id, token, topic, key, f.owner())
        case "subscribe":
            return SubscribeRequest(request_id, f.token(), f.topic())
        case "unsubscribe":
            return UnsubscribeRequest(request_id, f.token(), f.topic())
        case "list":
            return ListRequest(request_id, f.topic())
        case "get_by_key":
            return GetByKeyRequest(request_id, f.topic(), f.key())
        case "track_many":
            return TrackManyRequest(request_id, f.token(), f.track_items())
        case "untrack_many":
            return UntrackManyRequest(request_id, f.token(), f.untrack_items())
        case "broadcast":
            return BroadcastRequest(request_id, f.label("topic"), f.label("event"), f.payload())
        case "disconnect":
            return DisconnectRequest(request_id, f.label("socket_id"), f.ban_seconds())
        case _:
            return StatusRequest(request_id)


def decode_message(frame: bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Reply | Event:
    """Decode one frame from a node: a reply or a pushed event (what a client does).

    Raises:
        ProtocolError: The frame is not a reply or event of version 1.
    """
    data = _load_object(frame, max_bytes)
    if data.get("v") != PROTOCOL_VERSION or type(data.get("v")) is not int:
        raise ProtocolError(f"unsupported protocol version {data.get('v')!r}")
    kind = data.get("event")
    if kind is not None:
        if type(kind) is not str:
            raise ProtocolError("event must be a string")
        if kind != "diff":
            return Event(kind)
        topic = data.get("topic")
        if not _is_id(topic):
            raise ProtocolError("a diff needs a topic")
        return Event(kind, topic, _pairs(data.get("joins")), _pairs(data.get("leaves")))
    rid = data.get("id")
    if type(rid) is not int or not 0 <= rid <= _REQUEST_ID_MAX:
        raise ProtocolError("a reply needs an int id")
    ok = data.get("ok")
    if type(ok) is not bool:
        raise ProtocolError("a reply needs ok (true or false)")
    if ok:
        result = data.get("result", {})
        if type(result) is not dict:
            raise ProtocolError("result must be an object")
        return Reply(rid, True, result)
    error = data.get("error")
    if type(error) is not dict or type(error.get("code")) is not str:
        raise ProtocolError("an error reply needs an error object with a code")
    message = error.get("message")
    return Reply(rid, False, {}, error["code"], str(message), error)


def _pairs(value: object) -> list[tuple[Any, Any]]:
    if type(value) is not list:
        raise ProtocolError("joins and leaves must be lists")
    out: list[tuple[Any, Any]] = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("joins and leaves hold [key, meta] pairs")
        key, meta = item
        if not _is_id(key) or type(meta) is not dict:
            raise ProtocolError("joins and leaves hold [key, meta] pairs")
        out.append((key, meta))
    return out
