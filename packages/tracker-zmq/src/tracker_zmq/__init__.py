"""Replicated presence tracker over ZeroMQ (a port of Phoenix.Tracker).

:class:`Tracker` runs a pool of :class:`Shard` protocol machines (pure: no I/O, no clock)
over pubsub-zmq with real timers; :mod:`tracker_zmq.testing` runs the same shards in a
deterministic simulator. :class:`Presence` (a port of Phoenix.Presence) runs a Tracker and
publishes its changes as ``presence_diff`` broadcasts in the phoenix.js client's shape.
"""

from tracker_zmq.client import Client, ClientDiff, DiffSubscription
from tracker_zmq.errors import (
    AlreadyTracked,
    ClientClosed,
    ClientError,
    ConfigError,
    KeyCollision,
    LimitExceeded,
    MessageError,
    NoPresence,
    ProtocolError,
    RequestError,
    RequestTimeout,
    TooManyPresences,
    TrackerError,
    TrackerNotRunning,
    UnsupportedOp,
)
from tracker_zmq.node import Node
from tracker_zmq.options import Options
from tracker_zmq.presence import Presence, PresenceDiff, Presences, TopicPresences
from tracker_zmq.replica import Ref, Replica, Status
from tracker_zmq.sessions import ClientLimits
from tracker_zmq.shard import Diff, Output, ReplicaEvent, Send, Shard
from tracker_zmq.tracker import Tracker

__version__ = "0.1.0"

__all__ = [
    "AlreadyTracked",
    "Client",
    "ClientClosed",
    "ClientDiff",
    "ClientError",
    "ClientLimits",
    "ConfigError",
    "Diff",
    "DiffSubscription",
    "KeyCollision",
    "LimitExceeded",
    "MessageError",
    "NoPresence",
    "Node",
    "Options",
    "Output",
    "Presence",
    "PresenceDiff",
    "Presences",
    "ProtocolError",
    "Ref",
    "Replica",
    "ReplicaEvent",
    "RequestError",
    "RequestTimeout",
    "Send",
    "Shard",
    "Status",
    "TooManyPresences",
    "TopicPresences",
    "Tracker",
    "TrackerError",
    "TrackerNotRunning",
    "UnsupportedOp",
    "__version__",
]
