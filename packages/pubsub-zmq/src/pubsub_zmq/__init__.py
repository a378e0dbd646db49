"""Cluster-wide pub/sub over a ZeroMQ mesh: a port of Phoenix.PubSub.

Not pure as a whole; the pure parts are :mod:`pubsub_zmq.registry` (local dispatch),
:mod:`pubsub_zmq.wire` (the codec), :mod:`pubsub_zmq.membership` (the member table),
:mod:`pubsub_zmq.outbox` (outgoing batches), :mod:`pubsub_zmq.options` and
:mod:`pubsub_zmq.versions` (version negotiation).

Example::

    async with PubSub("web-1", bind="tcp://127.0.0.1:5550",
                      peers=["tcp://127.0.0.1:5551"]) as pubsub:
        sub = pubsub.subscribe("room:42")
        pubsub.broadcast("room:42", {"body": "hi"})
        async for message in sub:
            ...
"""

from .curve import KeyPair, generate_keypair, load_keypair
from .errors import (
    ConfigError,
    FrameTooLarge,
    InvalidTopic,
    MessageTooLarge,
    NotRunning,
    PubSubError,
    UnknownVersion,
    WireError,
)
from .incarnation import new_incarnation
from .options import Options, Resolver
from .pubsub import Peer, PubSub, auto_node_name
from .registry import Dispatcher, Fastlane, Overflow, default_dispatch
from .subscription import Callback, Subscription
from .versions import Range
from .wire import Encoded

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "ConfigError",
    "Dispatcher",
    "Encoded",
    "Fastlane",
    "FrameTooLarge",
    "InvalidTopic",
    "KeyPair",
    "MessageTooLarge",
    "NotRunning",
    "Options",
    "Overflow",
    "Peer",
    "PubSub",
    "PubSubError",
    "Range",
    "Resolver",
    "Subscription",
    "UnknownVersion",
    "WireError",
    "__version__",
    "auto_node_name",
    "default_dispatch",
    "generate_keypair",
    "load_keypair",
    "new_incarnation",
]
