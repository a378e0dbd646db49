"""The standalone node serves browsers: signed tokens, a built-in channel, an HTTP API.

``tracker-zmq node --websocket-bind HOST:PORT --token-secret-file FILE`` serves Phoenix's
socket protocol to phoenix.js (and the Swift, Kotlin and Dart clients) with no Python
code of yours: a JWT the backend signs says who the user is and what it may join, track,
publish and follow (Centrifugo's model, Phoenix's protocol); the backend, in any
language, broadcasts and disconnects through the HTTP API or the client endpoint.
``docs/node.md`` describes it.

Modules: :mod:`~tracker_zmq.standalone.tokens` (pure: secrets, claims, patterns),
:mod:`~tracker_zmq.standalone.app` (the token socket, the built-in channel, the HTTP API)
and :mod:`~tracker_zmq.standalone.server` (the node and its uvicorn server). It needs
the ``tracker-zmq[web]`` extra.
"""

from __future__ import annotations

from .app import BuiltinChannel, StandaloneApp, TokenSocket
from .server import WebNode, WebOptions, WebServer, parse_bind, read_secret_file
from .tokens import (
    Claims,
    SecretFileError,
    TokenConfig,
    TokenError,
    matches,
    parse_secret_file,
    verify_token,
)

__all__ = [
    "BuiltinChannel",
    "Claims",
    "SecretFileError",
    "StandaloneApp",
    "TokenConfig",
    "TokenError",
    "TokenSocket",
    "WebNode",
    "WebOptions",
    "WebServer",
    "matches",
    "parse_bind",
    "parse_secret_file",
    "read_secret_file",
    "verify_token",
]
