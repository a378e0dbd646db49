"""The standalone node's web app: the token socket, the built-in channel and the HTTP API.

Not pure (an ASGI app on the event loop). ``tracker-zmq node --websocket-bind ...
--token-secret-file FILE`` serves :class:`StandaloneApp`: Phoenix's socket protocol at
``/socket/websocket`` (a :class:`~tracker_zmq.channels.Endpoint` with
:class:`TokenSocket` and :class:`BuiltinChannel` on every topic), the backend's HTTP API
under ``/api`` and, on request, a demo page at ``/``. The rules of the tokens live in
:mod:`~tracker_zmq.standalone.tokens` (pure).

Theory of operation. A websocket connect is verified (:func:`~tracker_zmq.standalone.
tokens.verify_token`; refused: HTTP 403) and the socket is named ``user_socket:<sub>``,
so the backend's ``disconnect`` reaches it, and its ``expires_at`` is the token's ``exp``
plus the leeway: the endpoint closes it then (code 1008). Each join runs
:class:`BuiltinChannel`, which applies the claims: ``channels`` to join, ``track`` to be
present (key ``sub``, meta the join payload's ``meta`` under the token's), ``follow`` for
a payload ``{"follow": [topics]}``, ``publish`` for pushes (``broadcast_from``: every
other subscriber of the topic, on every node). The HTTP API calls
:func:`~tracker_zmq.channels.broadcast`, :func:`~tracker_zmq.channels.disconnect` and
``Presence.list`` on this node; PubSub carries the first two to every node.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pubsub_zmq import PubSubError
from tracker_zmq.channels import Channel, Endpoint, JoinError, Socket
from tracker_zmq.channels import broadcast as broadcast_to
from tracker_zmq.channels import disconnect as disconnect_id
from tracker_zmq.channels.connection import CLOSE_EXPIRED
from tracker_zmq.errors import ConfigError, TooManyPresences

from .tokens import (
    Claims,
    TokenConfig,
    join_meta,
    matches,
    reserved_topic,
    socket_id,
    verify_token,
)

if TYPE_CHECKING:
    from tracker_zmq.presence import Presence

__all__ = [
    "CLOSE_EXPIRED",
    "MAX_API_BODY_BYTES",
    "MAX_FOLLOW",
    "BuiltinChannel",
    "StandaloneApp",
    "TokenSocket",
]

log = logging.getLogger("tracker_zmq.standalone")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_API_BODY_BYTES = 1 << 20
"""The largest HTTP API request body (a larger one gets 413)."""

MAX_FOLLOW = 100
"""Most topics one join may follow."""

_UNAUTHORIZED = {"reason": "unauthorized"}
_FORBIDDEN = {"reason": "forbidden"}


class TokenSocket(Socket):
    """A socket let in by a signed token (the connect param ``token`` or ``authToken``).

    Made per connection by the endpoint; :meth:`with_config` binds the configuration.
    Its ``assigns["claims"]`` holds the token's :class:`~tracker_zmq.standalone.tokens.
    Claims`, and its ``expires_at`` the token's ``exp`` plus the leeway: the endpoint
    closes the socket then with :data:`CLOSE_EXPIRED` (phoenix.js reconnects, and its
    ``params`` function can hand it a fresh token).

    Attributes:
        config: The token rules (a class attribute, set by :meth:`with_config`).
    """

    config: ClassVar[TokenConfig | None] = None

    @classmethod
    def with_config(cls, config: TokenConfig) -> type[TokenSocket]:
        """A subclass that verifies tokens with ``config``."""
        return type("TokenSocket", (cls,), {"config": config})

    async def connect(self, params: Mapping[str, str], info: Mapping[str, Any]) -> None:
        """Verify the token; refuse (HTTP 403) a missing, forged or expired one.

        Raises:
            TokenError: The token does not verify.
        """
        config = self.config
        if config is None:
            raise ConfigError("TokenSocket needs a TokenConfig: use TokenSocket.with_config")
        token = params.get("token") or info.get("auth_token")
        claims = self.assigns["claims"] = verify_token(token, config)
        if claims.exp is not None:
            self.expires_at = claims.exp + config.leeway

    def id(self) -> str:
        """``user_socket:<sub>``: the backend's ``disconnect`` names it so."""
        return socket_id(self.claims)

    @property
    def claims(self) -> Claims:
        """The verified token's claims."""
        claims: Claims = self.assigns["claims"]
        return claims


class BuiltinChannel(Channel):
    """The standalone node's channel on every topic: the token's claims decide.

    * join: refused with ``{"reason": "unauthorized"}`` outside ``channels``, for a
      reserved topic, or for a ``follow`` topic outside the ``follow`` patterns; tracked
      (key ``sub``) where ``track`` allows; ``presence_state`` of the topic (or of the
      followed topics) pushed after the ok reply.
    * push of an event not starting with ``phx_``: broadcast to the topic's other
      subscribers on every node, payload unchanged (reply ``ok {}``) where ``publish``
      allows, otherwise ``{"reason": "forbidden"}``.
    """

    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Apply the token's ``channels``, ``track`` and ``follow`` claims."""
        claims = _claims(self)
        if not matches(claims.channels, topic):
            raise JoinError(_UNAUTHORIZED)
        follow = payload.get("follow")
        if follow is not None:
            if (
                type(follow) is not list
                or not 0 < len(follow) <= MAX_FOLLOW
                or not all(type(t) is str and t for t in follow)
            ):
                raise JoinError({"reason": f"follow takes a list of 1 to {MAX_FOLLOW} topics"})
            if not all(matches(claims.follow, t) for t in follow):
                raise JoinError(_UNAUTHORIZED)
        if matches(claims.track, topic):
            try:
                meta = join_meta(claims, payload.get("meta"))
            except ValueError as exc:
                raise JoinError({"reason": f"invalid meta: {exc}"}) from None
            try:
                self.track(claims.sub, meta)
            except TooManyPresences:  # the node's --max-presences
                raise JoinError({"reason": "too many presences on this node"}) from None
            except TypeError:  # a claim meta that is not JSON-like
                raise JoinError({"reason": "invalid meta"}) from None
        if follow is not None:
            self.follow(follow)  # pushes presence_state of the followed topics
        else:
            self.push("presence_state", self.presence.list(topic))
        return None

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        """Broadcast the push to the others where ``publish`` allows."""
        if event.startswith("phx_") or not matches(_claims(self).publish, self.topic):
            return ("error", _FORBIDDEN)
        try:
            self.broadcast_from(event, payload)
        except PubSubError as exc:  # larger than a cluster frame, and the like
            self._conn.endpoint.log_limited("publish", "a push was not broadcast: %s", exc)
            return ("error", {"reason": "not broadcast"})
        return None


def _claims(channel: Channel) -> Claims:
    claims: Claims = channel.socket.assigns["claims"]
    return claims


# ---------------------------------------------------------------------- HTTP


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


_DEMO_FILES = {"/": ("index.html", b"text/html; charset=utf-8")}
_DEMO_FILES["/index.html"] = _DEMO_FILES["/"]
_DEMO_FILES["/phoenix.mjs"] = ("phoenix.mjs", b"text/javascript; charset=utf-8")


class StandaloneApp:
    """The ASGI app of ``tracker-zmq node --websocket-bind``.

    ``/socket/websocket``: the endpoint. ``/api/broadcast`` (POST ``{"topic", "event",
    "payload"}``), ``/api/disconnect`` (POST ``{"socket_id", "ban_seconds"}``) and
    ``/api/presence/{topic}`` (GET: the topic's presences as phoenix.js's
    ``Presence.syncState`` reads them), with ``Authorization: Bearer KEY``. ``/`` and
    ``/phoenix.mjs``: the demo page, when asked for.

    Args:
        endpoint: The websocket endpoint (mounted at ``/socket``).
        presence: The node's Presence.
        api_keys: The API's bearer keys; empty: the API answers 404.
        demo_page: Whether ``/`` serves the demo page (a bundled phoenix.js client).

    Attributes:
        endpoint: The endpoint.
        counters: ``api_requests``, ``api_refused`` (401), ``api_errors`` (400, 413).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        presence: Presence,
        api_keys: Sequence[str] = (),
        *,
        demo_page: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.presence = presence
        self._keys = tuple(key.encode() for key in api_keys)
        self.demo_page = demo_page
        self.counters: dict[str, int] = {"api_requests": 0, "api_refused": 0, "api_errors": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        path: str = scope.get("path", "")
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif path == "/socket" or path.startswith("/socket/"):
            await self.endpoint({**scope, "root_path": "/socket"}, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        elif kind == "http":
            await self._http(scope, receive, send, path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        method = scope.get("method", "GET")
        try:
            if path.startswith("/api/"):
                status, body = await self._api(scope, receive, method, path)
                await _respond(send, status, orjson.dumps(body), b"application/json")
            elif self.demo_page and path in _DEMO_FILES:
                if method not in ("GET", "HEAD"):
                    raise _HttpError(405, "GET only", [(b"allow", b"GET, HEAD")])
                name, kind = _DEMO_FILES[path]
                data = resources.files(__package__).joinpath("static", name).read_bytes()
                await _respond(send, 200, data if method == "GET" else b"", kind)
            else:
                raise _HttpError(404, "not found")
        except _HttpError as exc:
            body = orjson.dumps({"error": str(exc)})
            await _respond(send, exc.status, body, b"application/json", exc.headers)

    async def _api(self, scope: Scope, receive: Receive, method: str, path: str) -> tuple[int, Any]:
        if not self._keys:
            raise _HttpError(404, "the HTTP API is off: start the node with --api-key-file")
        self.counters["api_requests"] += 1
        if not self._authorized(scope):
            self.counters["api_refused"] += 1
            peer = scope.get("client")
            self.endpoint.log_limited(
                "api_key", "refused an API request without a valid key from %s", peer
            )
            raise _HttpError(
                401, "a valid bearer key is needed", [(b"www-authenticate", b"Bearer")]
            )
        try:
            if path.startswith("/api/presence/"):
                if method != "GET":
                    raise _HttpError(405, "GET only", [(b"allow", b"GET")])
                topic = path[len("/api/presence/") :]
                if not topic:
                    raise _HttpError(400, "the path is /api/presence/{topic}")
                return 200, self.presence.list(topic)
            if path not in ("/api/broadcast", "/api/disconnect"):
                raise _HttpError(404, "not found")
            if method != "POST":
                raise _HttpError(405, "POST only", [(b"allow", b"POST")])
            body = await _read_json(scope, receive)
            if path == "/api/broadcast":
                return 200, self._broadcast(body)
            return 200, self._disconnect(body)
        except _HttpError as exc:
            if exc.status in (400, 413):
                self.counters["api_errors"] += 1
            raise

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, key = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                key = key.strip()
                # compare with every key (no early exit), in constant time each
                found = False
                for known in self._keys:
                    found |= hmac.compare_digest(key, known)
                return found
        return False

    def _broadcast(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, {"topic", "event", "payload"})
        topic, event, payload = body.get("topic"), body.get("event"), body.get("payload", {})
        if type(topic) is not str or not topic:
            raise _HttpError(400, "topic must be a non-empty str")
        if reserved_topic(topic):
            raise _HttpError(
                400,
                f"topic {topic!r} is reserved (socket ids user_socket:*, phx_bans, phoenix):"
                ' to close a user\'s sockets, POST /api/disconnect {"socket_id": ...}',
            )
        if type(event) is not str or not event or event.startswith("phx_"):
            raise _HttpError(400, "event must be a non-empty str not starting with phx_")
        if type(payload) is not dict:
            raise _HttpError(400, "payload must be a JSON object")
        try:
            broadcast_to(self.endpoint.pubsub, topic, event, payload)
        except (TypeError, ValueError, PubSubError) as exc:
            raise _HttpError(400, str(exc)) from None
        return {"ok": True}

    def _disconnect(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, {"socket_id", "ban_seconds"})
        try:
            disconnect_id(self.endpoint.pubsub, body.get("socket_id"), body.get("ban_seconds", 0))  # type: ignore[arg-type]
        except (TypeError, ValueError, PubSubError) as exc:
            raise _HttpError(400, str(exc)) from None
        return {"ok": True}


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _HttpError(400, f"unknown field(s): {', '.join(unknown)}")


async def _read_json(scope: Scope, receive: Receive) -> dict[str, Any]:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise _HttpError(400, "bad Content-Length") from None
            if declared > MAX_API_BODY_BYTES:
                raise _HttpError(413, f"the body may hold at most {MAX_API_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise _HttpError(400, "the client went away")
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_API_BODY_BYTES:
            raise _HttpError(413, f"the body may hold at most {MAX_API_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not event.get("more_body", False):
            break
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise _HttpError(400, f"the body is not JSON: {exc}") from None
    if type(body) is not dict:
        raise _HttpError(400, "the body must be a JSON object")
    return body


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
