"""The standalone node's tokens: secrets, JWT claims and topic patterns. Pure.

The standalone node (``tracker-zmq node --websocket-bind ... --token-secret-file FILE``)
lets browsers in with a JWT the backend signs, Centrifugo's model: the token says who the
user is (``sub``) and what it may do (``channels``, ``track``, ``publish``, ``follow``).
This module holds every rule about it and no I/O: the caller reads the secret file and
hands its text and permission bits to :func:`parse_secret_file`, and PyJWT checks the
signature and the times (HS256 only, never ``none``).

Claims (DESIGN, "Standalone"):

============  ===============================================================
``sub``       str: the user id, the presence key, the socket id
              ``user_socket:<sub>``
``exp``       the expiry (required unless ``require_exp`` is off); the socket
              closes when it passes
``meta``      object: the presence meta; its fields win over the join's
``channels``  patterns of the topics it may join
``track``     patterns on which a join makes it present
``publish``   patterns on which its pushes are broadcast to the others
``follow``    patterns of the topics it may follow (join payload ``{"follow"}``)
``aud/iss``   checked only when configured
============  ===============================================================

A pattern is an exact topic, or a prefix ending in ``*`` (``"room:*"``; ``"*"`` is every
topic). Reserved topics (socket ids, ``phx_bans``, ``phoenix``) match no pattern.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from tracker_zmq.channels.errors import Reject
from tracker_zmq.errors import ConfigError

__all__ = [
    "ALGORITHM",
    "MAX_JOIN_META_BYTES",
    "MAX_JOIN_META_FIELDS",
    "MAX_PATTERNS",
    "MIN_SECRET_LENGTH",
    "SOCKET_ID_PREFIX",
    "Claims",
    "SecretFileError",
    "TokenConfig",
    "TokenError",
    "join_meta",
    "matches",
    "parse_secret_file",
    "reserved_topic",
    "socket_id",
    "verify_token",
]

ALGORITHM = "HS256"
"""The one algorithm accepted (PyJWT is told so: ``none`` and RS/ES tokens fail)."""

SOCKET_ID_PREFIX = "user_socket:"
"""A standalone socket's id is this prefix and the token's ``sub``."""

MIN_SECRET_LENGTH = 32
"""Shortest secret accepted (HS256 wants a key as long as its hash, RFC 7518 3.2)."""

MAX_PATTERNS = 256
"""Most patterns one claim may list (a longer list is a refused token)."""

MAX_JOIN_META_FIELDS = 16
"""Most fields a join payload's ``meta`` may add to the presence meta."""

MAX_JOIN_META_BYTES = 1024
"""Longest JSON text of a join payload's ``meta`` (as counted by ``repr`` of its keys and
values, an upper bound of their JSON size for the strings, numbers, booleans and nulls it
may hold)."""

_RESERVED = ("phx_bans", "phoenix")


class TokenError(Reject):
    """A token that does not verify: missing, forged, expired, malformed claims.

    A :class:`~tracker_zmq.channels.Reject`, so ``Socket.connect`` refuses with HTTP 403;
    the message is logged, never sent to the client.
    """


class SecretFileError(ConfigError):
    """A secret or API key file that the node refuses to start with (the message says
    how to fix it)."""


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """How tokens are verified.

    Attributes:
        secrets: The HS256 secrets, each of which verifies (rotation: add the new one,
            then remove the old).
        require_exp: Whether a token without ``exp`` is refused (``--token-optional-exp``
            turns it off).
        audience: The required ``aud``, or None to accept any (and none).
        issuer: The required ``iss``, or None.
        leeway: Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    """

    secrets: tuple[str, ...]
    require_exp: bool = True
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 5.0

    def __post_init__(self) -> None:
        if not self.secrets or not all(type(s) is str and s for s in self.secrets):
            raise ConfigError("TokenConfig needs at least one non-empty secret")
        if type(self.leeway) not in (int, float) or not 0 <= self.leeway <= 3600:
            raise ConfigError(f"leeway must be 0 to 3600 seconds, got {self.leeway!r}")
        for name in ("audience", "issuer"):
            value = getattr(self, name)
            if value is not None and (type(value) is not str or not value):
                raise ConfigError(f"{name} must be a non-empty str or None, got {value!r}")


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token allows.

    Attributes:
        sub: The user id: the presence key and the socket id's suffix.
        exp: The expiry (seconds since the epoch), or None when the token has none.
        meta: The presence meta the token sets (its fields win over the join's).
        channels: Patterns of the topics it may join.
        track: Patterns of the topics where a join makes it present.
        publish: Patterns of the topics where its pushes are broadcast.
        follow: Patterns of the topics it may follow.
    """

    sub: str
    exp: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    track: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    follow: tuple[str, ...] = ()


def parse_secret_file(
    text: str, mode: int, path: str, what: str = "secret file", *, owner: int | None = None
) -> tuple[str, ...]:
    """The secrets of a secret (or API key) file, after its checks.

    The file must be closed to group and others (``chmod 600``), with one exception,
    PostgreSQL's rule for its key file: a file owned by root may also be readable by
    its group (mode 640 or 440), which is how a Kubernetes Secret volume with
    ``fsGroup`` and ``defaultMode: 0440`` gives a non-root pod its files.

    Args:
        text: The file's text.
        mode: Its ``st_mode`` (only the permission bits are read).
        path: Its path, for the messages.
        what: What the file is, for the messages (``"--api-key-file"``).
        owner: Its owner's uid (``st_uid``), or None when unknown (no exception).

    Returns:
        One secret per non-blank line, surrounding whitespace stripped, in order.

    Raises:
        SecretFileError: Any group or other permission bit is set, but for the group
            read bit of a file owned by root (the message names ``chmod 600``), the
            file holds no secret, or a secret is shorter than
            :data:`MIN_SECRET_LENGTH`.
    """
    bits = stat.S_IMODE(mode)
    root_group_read = owner == 0 and bits & 0o077 == 0o040
    if bits & 0o077 and not root_group_read:
        raise SecretFileError(
            f"{what} {path} is readable or writable by others (mode {bits:04o}): "
            f"run `chmod 600 {path}` and start again"
        )
    secrets = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not secrets:
        raise SecretFileError(f"{what} {path} holds no secret: write one per line")
    for number, secret in enumerate(secrets, 1):
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretFileError(
                f"{what} {path}: secret {number} is shorter than {MIN_SECRET_LENGTH} characters: "
                "make one with `openssl rand -hex 32`"
            )
    return secrets


def reserved_topic(topic: str) -> bool:
    """Whether ``topic`` is reserved: a socket id, ``phx_bans`` or ``phoenix``."""
    return topic.startswith(SOCKET_ID_PREFIX) or topic in _RESERVED


def matches(patterns: Sequence[str], topic: str) -> bool:
    """Whether ``topic`` is within ``patterns`` (exact, or a prefix ending in ``*``).

    A reserved topic (:func:`reserved_topic`) matches nothing.
    """
    if reserved_topic(topic):
        return False
    for pattern in patterns:
        if pattern.endswith("*"):
            if topic.startswith(pattern[:-1]):
                return True
        elif pattern == topic:
            return True
    return False


def socket_id(claims: Claims) -> str:
    """The socket id of a token's sockets: ``user_socket:<sub>``."""
    return SOCKET_ID_PREFIX + claims.sub


def _patterns(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if type(value) is not list or len(value) > MAX_PATTERNS:
        raise TokenError(f"claim {name!r} must be a list of at most {MAX_PATTERNS} patterns")
    for pattern in value:
        if type(pattern) is not str or not pattern or "*" in pattern[:-1]:
            raise TokenError(f"claim {name!r} holds a bad pattern {pattern!r}")
    return tuple(value)


def verify_token(token: Any, config: TokenConfig) -> Claims:
    """Verify a JWT against every secret and read its claims.

    Args:
        token: The token (the connect param ``token`` or phoenix.js's ``authToken``).
        config: The secrets and rules.

    Returns:
        The token's claims.

    Raises:
        TokenError: No token, a signature no secret verifies, an algorithm other than
            HS256, an expired token (past the leeway), a missing ``exp`` (when
            required), a wrong ``aud`` or ``iss``, or malformed claims.
    """
    if type(token) is not str or not token:
        raise TokenError("no token")
    options: dict[str, Any] = {
        "require": ["sub", "exp"] if config.require_exp else ["sub"],
        "verify_aud": config.audience is not None,
        "verify_iss": config.issuer is not None,
    }
    payload: dict[str, Any] | None = None
    for secret in config.secrets:
        try:
            payload = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options=options,  # type: ignore[arg-type]
            )
            break
        except jwt.InvalidSignatureError:
            continue  # the next secret may verify it
        except jwt.PyJWTError as exc:  # verified but expired, malformed, wrong aud ...
            raise TokenError(f"token refused: {exc}") from None
    if payload is None:
        raise TokenError("token refused: no secret verifies its signature")
    sub = payload.get("sub")
    if type(sub) is not str or not sub or len(sub) > 256:
        raise TokenError("claim 'sub' must be a non-empty str of at most 256 characters")
    meta = payload.get("meta", {})
    if type(meta) is not dict:
        raise TokenError("claim 'meta' must be an object")
    exp = payload.get("exp")
    return Claims(
        sub=sub,
        exp=float(exp) if isinstance(exp, (int, float)) else None,
        meta=meta,
        channels=_patterns(payload, "channels"),
        track=_patterns(payload, "track"),
        publish=_patterns(payload, "publish"),
        follow=_patterns(payload, "follow"),
    )


def join_meta(claims: Claims, payload_meta: Any) -> dict[str, Any]:
    """The presence meta of a join: the join payload's ``meta``, then the token's.

    The token's fields win. The join's ``meta`` may add at most
    :data:`MAX_JOIN_META_FIELDS` fields of strings, numbers, booleans or nulls, no key
    starting with ``phx_``, at most :data:`MAX_JOIN_META_BYTES` in all.

    Args:
        claims: The socket's claims.
        payload_meta: The join payload's ``meta`` (None when absent).

    Returns:
        The merged meta.

    Raises:
        ValueError: The join's ``meta`` breaks a bound (the join gets an error reply).
    """
    if payload_meta is None:
        return dict(claims.meta)
    if type(payload_meta) is not dict:
        raise ValueError("meta must be an object")
    if len(payload_meta) > MAX_JOIN_META_FIELDS:
        raise ValueError(f"meta may hold at most {MAX_JOIN_META_FIELDS} fields")
    size = 0
    for key, value in payload_meta.items():
        if key.startswith("phx_"):
            raise ValueError(f"meta field {key!r}: phx_ fields are the server's")
        if value is not None and type(value) not in (str, int, float, bool):
            raise ValueError(f"meta field {key!r} must be a string, number, boolean or null")
        size += len(key) + len(repr(value)) + 4
    if size > MAX_JOIN_META_BYTES:
        raise ValueError(f"meta may hold at most {MAX_JOIN_META_BYTES} bytes")
    return {**payload_meta, **claims.meta}
