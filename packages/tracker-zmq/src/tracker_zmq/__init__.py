"""Replicated presence tracker over ZeroMQ (a port of Phoenix.Tracker).

The protocol core is :class:`Shard` (pure: no I/O, no clock); the asyncio layer that runs
shards over pubsub-zmq is being built on top of it.
"""

from tracker_zmq.errors import (
    AlreadyTracked,
    ConfigError,
    NoPresence,
    TrackerError,
    TrackerNotRunning,
)
from tracker_zmq.options import Options
from tracker_zmq.replica import Ref, Replica, Status
from tracker_zmq.shard import Diff, Output, ReplicaEvent, Send, Shard

__version__ = "0.1.0"

__all__ = [
    "AlreadyTracked",
    "ConfigError",
    "Diff",
    "NoPresence",
    "Options",
    "Output",
    "Ref",
    "Replica",
    "ReplicaEvent",
    "Send",
    "Shard",
    "Status",
    "TrackerError",
    "TrackerNotRunning",
    "__version__",
]
