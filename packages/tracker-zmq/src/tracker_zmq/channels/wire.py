"""Phoenix's socket protocol on the wire: serializers, routing, handshake rules. Pure.

A port of ``Phoenix.Socket.V1.JSONSerializer`` and ``V2.JSONSerializer``, plus the
pieces of ``Phoenix.Transports.WebSocket`` and ``Phoenix.Socket.Transport`` that are
decisions rather than I/O: which serializer a ``vsn`` picks, the ``authToken``
subprotocol, the origin check, topic patterns. No I/O, no clock, no event loop.

The frames (text websocket frames, JSON)::

    vsn 2.0.0   [join_ref, ref, topic, event, payload]
    vsn 1.0.0   {"topic": ..., "event": ..., "payload": ..., "ref": ..., "join_ref": ...}

    client -> server   phx_join, phx_leave, heartbeat (topic "phoenix"), any event
    server -> client   phx_reply  payload {"status": "ok" | "error", "response": {...}}
                       phx_close, phx_error (join_ref and ref: the join's ref)
                       a push     [join_ref, null, topic, event, payload]
                       a broadcast (fastlane) [null, null, topic, event, payload]

vsn 1.0.0 replies and pushes carry ``topic``, ``event``, ``payload`` and ``ref`` only, as
Phoenix's V1 serializer writes them. Refs are echoed as the client sent them (phoenix.js
sends strings). Payloads are JSON objects. Binary (opcode 2) frames of vsn 2.0.0 are not
supported: the endpoint counts and drops them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson

from .errors import FrameError

__all__ = [
    "AUTH_TOKEN_PREFIX",
    "DEFAULT_VSN",
    "V1",
    "V2",
    "Message",
    "OriginCheck",
    "Ref",
    "Reply",
    "Serializer",
    "auth_token",
    "origin_allowed",
    "parse_query",
    "route",
    "serializer_for",
]

AUTH_TOKEN_PREFIX = "base64url.bearer.phx."
"""The subprotocol prefix phoenix.js puts before its ``authToken`` (base64, unpadded)."""

DEFAULT_VSN = "1.0.0"
"""The protocol version of a client that names none (Phoenix's default)."""

Ref = str | int | None
"""A join_ref or ref as the client sent it."""

OriginCheck = bool | Sequence[str] | Callable[[str], bool]
"""``Endpoint(check_origin=...)``: True (the request's own host), False (any origin), a
list of allowed origins (``"https://example.com"``, ``"//example.com"`` for any scheme,
``"//*.example.com"`` for its subdomains too), or a function of the Origin header."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message on a topic: what a client sends, and what the server pushes.

    Attributes:
        topic: The channel's topic (``"phoenix"`` for heartbeats).
        event: The event name (``"phx_join"``, ``"new_msg"`` ...).
        payload: The JSON object carried.
        ref: The client's message ref (None on pushes and broadcasts).
        join_ref: The ref of the join this message belongs to (None on broadcasts).
    """

    topic: str
    event: str
    payload: dict[str, Any]
    ref: Ref = None
    join_ref: Ref = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A ``phx_reply`` to the message of ``ref``.

    Attributes:
        topic: The topic of the message answered.
        status: ``"ok"`` or ``"error"``.
        response: The reply's response (``{}`` when there is nothing to say).
        ref: The ref of the message answered.
        join_ref: Its join_ref.
    """

    topic: str
    status: Literal["ok", "error"]
    response: dict[str, Any]
    ref: Ref = None
    join_ref: Ref = None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _check_ref(value: Any, what: str) -> Ref:
    if value is None or type(value) in (str, int):
        return value  # type: ignore[no-any-return]
    raise FrameError(f"{what} must be a string, an integer or null")


def _message(topic: Any, event: Any, payload: Any, ref: Any, join_ref: Any) -> Message:
    if type(topic) is not str or not topic:
        raise FrameError("topic must be a non-empty string")
    if type(event) is not str or not event:
        raise FrameError("event must be a non-empty string")
    if type(payload) is not dict:
        raise FrameError("payload must be a JSON object")
    return Message(topic, event, payload, _check_ref(ref, "ref"), _check_ref(join_ref, "join_ref"))


def _loads(data: str | bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise FrameError(f"frame of {len(data)} bytes over the limit of {max_bytes}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc}") from None


class Serializer:
    """One protocol version's frames. Use the instances :data:`V1` and :data:`V2`.

    Attributes:
        vsn: The version's major number as a string: ``"1"`` or ``"2"``.
    """

    __slots__ = ("vsn",)

    def __init__(self, vsn: str) -> None:
        self.vsn = vsn

    def decode(self, data: str | bytes, max_bytes: int = 1 << 20) -> Message:
        """Decode a client's frame.

        Args:
            data: The text frame.
            max_bytes: The largest frame accepted (its length in characters or bytes).

        Raises:
            FrameError: It is too large, not JSON, or not of this version's shape.
        """
        raise NotImplementedError

    def encode(self, message: Message | Reply) -> str:
        """Encode a push or a reply for one socket.

        Raises:
            TypeError: The payload does not encode as JSON.
        """
        raise NotImplementedError

    def fastlane(self, topic: str, event: str, payload: Any) -> str:
        """Encode a broadcast once for every socket of this version (no refs).

        Raises:
            TypeError: The payload does not encode as JSON.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Serializer vsn {self.vsn}>"


class _V2(Serializer):
    __slots__ = ()

    def decode(self, data: str | bytes, max_bytes: int = 1 << 20) -> Message:
        value = _loads(data, max_bytes)
        if type(value) is not list or len(value) != 5:
            raise FrameError("a vsn 2 frame is [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = value
        return _message(topic, event, payload, ref, join_ref)

    def encode(self, message: Message | Reply) -> str:
        if isinstance(message, Reply):
            body = {"status": message.status, "response": message.response}
            return _dumps([message.join_ref, message.ref, message.topic, "phx_reply", body])
        m = message
        return _dumps([m.join_ref, m.ref, m.topic, m.event, m.payload])

    def fastlane(self, topic: str, event: str, payload: Any) -> str:
        return _dumps([None, None, topic, event, payload])


class _V1(Serializer):
    __slots__ = ()

    def decode(self, data: str | bytes, max_bytes: int = 1 << 20) -> Message:
        value = _loads(data, max_bytes)
        if type(value) is not dict:
            raise FrameError("a vsn 1 frame is a JSON object")
        missing = {"topic", "event", "payload", "ref"} - value.keys()
        if missing:
            raise FrameError(f"a vsn 1 frame lacks {sorted(missing)}")
        return _message(
            value["topic"], value["event"], value["payload"], value["ref"], value.get("join_ref")
        )

    def encode(self, message: Message | Reply) -> str:
        if isinstance(message, Reply):
            body = {"status": message.status, "response": message.response}
            return _dumps(
                {"topic": message.topic, "event": "phx_reply", "payload": body, "ref": message.ref}
            )
        m = message
        return _dumps({"topic": m.topic, "event": m.event, "payload": m.payload, "ref": m.ref})

    def fastlane(self, topic: str, event: str, payload: Any) -> str:
        return _dumps({"topic": topic, "event": event, "payload": payload, "ref": None})


V1: Serializer = _V1("1")
"""The vsn 1.0.0 serializer (JSON objects)."""

V2: Serializer = _V2("2")
"""The vsn 2.0.0 serializer (JSON arrays), phoenix.js's default."""


def serializer_for(vsn: str | None) -> Serializer | None:
    """The serializer of a client's ``vsn`` query parameter, or None when unsupported.

    ``1.x`` picks :data:`V1`, ``2.x`` :data:`V2` (Phoenix's ``~> 1.0.0``/``~> 2.0.0``
    requirements, by major version); no ``vsn`` means 1.0.0.
    """
    vsn = DEFAULT_VSN if vsn is None else vsn
    major, _, rest = vsn.partition(".")
    if not rest or not all(part.isdigit() for part in rest.split(".")):
        return None
    return {"1": V1, "2": V2}.get(major)


def parse_query(query_string: bytes | str) -> dict[str, str]:
    """The query string's parameters (the last of a repeated name wins).

    Raises:
        FrameError: The query string is not valid UTF-8.
    """
    if isinstance(query_string, bytes):
        try:
            query_string = query_string.decode()
        except UnicodeDecodeError:
            raise FrameError("the query string is not UTF-8") from None
    return dict(parse_qsl(query_string, keep_blank_values=True))


def auth_token(protocols: Iterable[str]) -> tuple[str | None, list[str]]:
    """Split phoenix.js's ``authToken`` subprotocol from the others.

    phoenix.js sends ``["phoenix", "base64url.bearer.phx." + btoa(token) without "="]``;
    Phoenix decodes it as base64 without padding. Both alphabets are accepted here.

    Args:
        protocols: The ``Sec-WebSocket-Protocol`` values, in order.

    Returns:
        The token (None when there is none) and the other subprotocols.

    Raises:
        FrameError: More than one token, or one that is not base64 of UTF-8.
    """
    tokens: list[str] = []
    rest: list[str] = []
    for proto in protocols:
        (tokens if proto.startswith(AUTH_TOKEN_PREFIX) else rest).append(proto)
    if not tokens:
        return None, rest
    if len(tokens) > 1:
        raise FrameError("more than one auth token subprotocol")
    encoded = tokens[0][len(AUTH_TOKEN_PREFIX) :].replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        return raw.decode(), rest
    except (binascii.Error, UnicodeDecodeError):
        raise FrameError("the auth token subprotocol is not base64 of UTF-8") from None


def _host_of(origin: str) -> tuple[str, str]:
    parts = urlsplit(origin if "//" in origin else "//" + origin)
    return parts.scheme, (parts.hostname or "")


def origin_allowed(origin: str | None, host: str | None, check: OriginCheck) -> bool:
    """Whether a websocket request from ``origin`` may connect (Phoenix's check_origin).

    A request without an Origin header (not a browser) always passes, as in Phoenix.

    Args:
        origin: The Origin header, or None.
        host: The Host header of the request (for ``check=True``).
        check: The rule (see :data:`OriginCheck`).
    """
    if origin is None or check is False:
        return True
    if callable(check):
        return bool(check(origin))
    scheme, origin_host = _host_of(origin)
    if not origin_host:
        return False
    if check is True:
        return host is not None and origin_host == _host_of(host)[1]
    for allowed in check:
        want_scheme, want_host = _host_of(allowed)
        if want_scheme and want_scheme != scheme:
            continue
        if want_host.startswith("*."):
            if origin_host == want_host[2:] or origin_host.endswith(want_host[1:]):
                return True
        elif origin_host == want_host:
            return True
    return False


T = TypeVar("T")


def route(patterns: Mapping[str, T], topic: str) -> T | None:
    """What a topic routes to: an exact pattern, else the longest ``prefix*`` it matches.

    Phoenix's ``channel "room:*", RoomChannel``: a pattern ending in ``*`` matches every
    topic that starts with what precedes the star.
    """
    exact = patterns.get(topic)
    if exact is not None:
        return exact
    best: tuple[int, T] | None = None
    for pattern, target in patterns.items():
        if (
            pattern.endswith("*")
            and topic.startswith(pattern[:-1])
            and (best is None or len(pattern) > best[0])
        ):
            best = (len(pattern), target)
    return None if best is None else best[1]
