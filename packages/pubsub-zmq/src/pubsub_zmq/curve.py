"""CURVE security: key pairs, the allow-list and the ZAP authenticator.

Not pure (imports zmq). Phoenix.PubSub trusts Erlang distribution's cookie; ZeroMQ gives
us CURVE instead (CurveZMQ: Curve25519 keys, every frame encrypted and authenticated).
With keys configured, every server socket of a node (its ROUTER and PUB) accepts only
clients whose public key is on the allow-list (ZAP, through :mod:`zmq.auth`), and every
client socket (DEALER, SUB) connects only to a server whose key it was told. Without keys
nothing is encrypted or authenticated: anyone who can reach the ports can read and send.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from .errors import ConfigError

__all__ = ["CurveConfig", "KeyPair", "generate_keypair", "load_keypair", "normalize_key"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both halves as 40-character Z85 text.

    Attributes:
        public: the public key: share it, put it on the peers' allow-lists.
        secret: the secret key: keep it on this node only.
    """

    public: str
    secret: str


def generate_keypair() -> KeyPair:
    """Generate a new CURVE key pair (libsodium, through :func:`zmq.curve_keypair`)."""
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def normalize_key(key: str | bytes, what: str = "key") -> str:
    """Check a Z85 CURVE key and return it as text.

    Raises:
        ConfigError: ``key`` is not 40 characters of valid Z85.
    """
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    if not isinstance(text, str) or len(text) != 40:
        raise ConfigError(f"{what} must be a 40-character Z85 CURVE key")
    try:
        z85.decode(text.encode("ascii"))
    except (ValueError, KeyError, UnicodeEncodeError, binascii.Error) as exc:
        raise ConfigError(f"{what} is not valid Z85") from exc
    return text


def load_keypair(path: str | Path) -> KeyPair:
    """Read a key pair written by ``pubsub-zmq keygen --out`` (or zmq.auth certificates).

    Args:
        path: a secret certificate file (``name.key_secret``).

    Raises:
        ConfigError: the file holds no secret key.
    """
    public, secret = zmq.auth.load_certificate(str(path))
    if not secret:
        raise ConfigError(f"{path} holds no secret key")
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


@dataclass(frozen=True, slots=True)
class CurveConfig:
    """A node's CURVE settings.

    Attributes:
        public: this node's public key (Z85 text).
        secret: this node's secret key (Z85 text).
        allowed: public keys allowed to connect, this node's own included.
        names: when the allow-list was a mapping, the only key each name may use.
    """

    public: str
    secret: str
    allowed: frozenset[str]
    names: Mapping[str, str] | None = None

    @classmethod
    def build(
        cls,
        secret: str | bytes,
        allow: Iterable[str | bytes] | Mapping[str, str | bytes] | None,
    ) -> CurveConfig:
        """Make a config from a secret key and an allow-list.

        Args:
            secret: this node's secret key; the public key is derived from it.
            allow: the peers' public keys, or a mapping node name -> public key (then a
                node may only use its own name).

        Raises:
            ConfigError: a key is malformed or the allow-list is missing.
        """
        secret_text = normalize_key(secret, "curve_secret_key")
        public = zmq.curve_public(secret_text.encode("ascii")).decode("ascii")
        if allow is None:
            raise ConfigError("curve_allow (the peers' public keys) is required with CURVE")
        names: dict[str, str] | None = None
        if isinstance(allow, Mapping):
            names = {str(n): normalize_key(k, f"curve_allow[{n!r}]") for n, k in allow.items()}
            keys = set(names.values())
        else:
            if isinstance(allow, str | bytes):
                raise ConfigError("curve_allow must be a collection of keys, not one key")
            keys = {normalize_key(k, "curve_allow entry") for k in allow}
        keys.add(public)
        return cls(public, secret_text, frozenset(keys), names)

    def permits(self, name: str, key: str | None) -> bool:
        """Whether node ``name`` may use public key ``key``."""
        if key is None or key not in self.allowed:
            return False
        if self.names is None:
            return True
        return self.names.get(name) == key or (key == self.public)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials callback: allow a client whose Z85 key is on the allow-list."""
        return key.decode("ascii", "replace") in self.allowed

    def server(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server with this node's keys (before bind)."""
        sock.curve_secretkey = self.secret.encode("ascii")
        sock.curve_publickey = self.public.encode("ascii")
        sock.curve_server = True

    def client(self, sock: zmq.Socket[Any], server_key: str) -> None:
        """Make ``sock`` a CURVE client of the server with ``server_key`` (before connect)."""
        sock.curve_secretkey = self.secret.encode("ascii")
        sock.curve_publickey = self.public.encode("ascii")
        sock.curve_serverkey = server_key.encode("ascii")

    def authenticator(self, context: zmq.asyncio.Context) -> AsyncioAuthenticator:
        """Start a ZAP authenticator on ``context`` that checks clients against the list.

        Raises:
            ConfigError: ``context`` already has an authenticator (another CURVE node
                shares it); ZeroMQ allows one ZAP handler per context.
        """
        auth = AsyncioAuthenticator(context)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            raise ConfigError(
                "this zmq context already serves another CURVE node's authenticator: "
                "give each node with CURVE keys its own context (the default)"
            ) from exc
        auth.configure_curve_callback(domain="*", credentials_provider=self)
        return auth
