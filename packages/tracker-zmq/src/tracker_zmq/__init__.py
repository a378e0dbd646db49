"""Replicated presence tracker over ZeroMQ (a port of Phoenix.Tracker).

:class:`Tracker` runs a pool of :class:`Shard` protocol machines (pure: no I/O, no clock)
over pubsub-zmq with real timers; :mod:`tracker_zmq.testing` runs the same shards in a
deterministic simulator.
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
from tracker_zmq.tracker import Tracker

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
    "Tracker",
    "TrackerError",
    "TrackerNotRunning",
    "__version__",
]
