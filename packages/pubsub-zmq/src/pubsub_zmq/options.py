"""PubSub's tuning options, their defaults and their validation. Pure.

Phoenix.PubSub has few options (its PG2 adapter rides on Erlang distribution); these are
the queues, frame sizes, high-water marks and timers of the ZeroMQ mesh that replaces
it. Durations are in seconds. :class:`~pubsub_zmq.PubSub` takes each of them as a
keyword argument and builds an :class:`Options` from them, so the defaults here are the
defaults there (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields

from .errors import ConfigError
from .wire import DEFAULT_MAX_FRAME_BYTES

__all__ = ["MIN_FRAME_BYTES", "Options", "Resolver", "check_option"]

Resolver = Callable[[str, int], Awaitable[Iterable[str | tuple[str, int]]]]
"""How ``PubSub(peer_dns=...)`` looks a seed name up: ``await resolver(host, port)``.

It returns what ``host`` stands for now: addresses (IP addresses, or host names ZeroMQ
can connect to), each of which becomes the seed ``tcp://ADDRESS:PORT``, or
``(address, port)`` pairs when the nodes listen on ports of their own (a service
registry, DNS SRV records). The default,
:func:`pubsub_zmq.dns.resolve`, asks the system resolver (``getaddrinfo``, in a thread)
for IPv4 addresses. Give your own for tests or for a service registry (Consul, etcd,
an API that lists the pods). It runs on the event loop every gossip round, so it must
not block: run a blocking lookup with :func:`asyncio.to_thread`. An exception counts as
a failed lookup (logged, counted in ``stats()["dns"]["failures"]``); the seeds of the
previous answer are kept.
"""

MIN_FRAME_BYTES = 1024
"""The smallest ``max_frame_bytes`` accepted."""


@dataclass(frozen=True, slots=True)
class Options:
    """The tuning options of a node, checked at construction.

    Attributes:
        queue_size: Messages a subscription holds before dropping the oldest.
        max_frame_bytes: The largest frame sent or accepted, in bytes (at least
            MIN_FRAME_BYTES); a message that does not fit raises MessageTooLarge, a
            larger incoming frame is dropped and counted.
        max_batch: The most messages per frame.
        batch_bytes: A batch is sent as soon as it holds this many bytes (at most
            ``max_frame_bytes`` are used).
        send_hwm: PUB high-water mark per subscriber, in frames (ZeroMQ drops beyond);
            0: unlimited.
        recv_hwm: Receive high-water mark of each socket, in frames; 0: unlimited.
        control_hwm: Send high-water mark of each DEALER, in frames; 0: unlimited.
        start_timeout: Seconds ``start`` waits for the seeds to answer.
        gossip_interval: Seconds between gossip rounds (also the liveness heartbeat);
            positive.
        peer_timeout: Seconds without a word before a member counts as silent; more
            than ``gossip_interval``.
        forget_after: Seconds of silence before a member is forgotten (seeds are still
            greeted with backoff); keep it at least the tracker's permdown_period.
        max_backoff: The longest delay between hellos to a silent peer, in seconds.

    Raises:
        ConfigError: an option is invalid.
    """

    queue_size: int = 10_000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_batch: int = 256
    batch_bytes: int = 64 * 1024
    send_hwm: int = 10_000
    recv_hwm: int = 10_000
    control_hwm: int = 10_000
    start_timeout: float = 5.0
    gossip_interval: float = 1.0
    peer_timeout: float = 5.0
    forget_after: float = 1200.0
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            check_option(field.name, value)
            if not _RULES[field.name][1]:  # seconds are kept as floats, however given
                object.__setattr__(self, field.name, float(value))
        if self.gossip_interval <= 0 or self.peer_timeout <= self.gossip_interval:
            raise ConfigError("peer_timeout must exceed gossip_interval, both positive")
        if self.max_frame_bytes < MIN_FRAME_BYTES:
            raise ConfigError(f"max_frame_bytes must be at least {MIN_FRAME_BYTES}")


# each option's rule: (smallest value, whether it must be an int, what the error says)
_RULES: dict[str, tuple[int, bool, str]] = {
    **dict.fromkeys(
        ("queue_size", "max_frame_bytes", "max_batch", "batch_bytes"), (1, True, "a positive int")
    ),
    **dict.fromkeys(
        ("send_hwm", "recv_hwm", "control_hwm"), (0, True, "an int >= 0 (0: unlimited)")
    ),
    **dict.fromkeys(
        ("start_timeout", "gossip_interval", "peer_timeout", "forget_after", "max_backoff"),
        (0, False, "a number of seconds >= 0"),
    ),
}


def check_option(name: str, value: object) -> None:
    """Check one option's value against its rule (counts are ints, seconds numbers).

    Also what ``subscribe(..., queue_size=)`` uses for its own bound.

    Args:
        name: an :class:`Options` field name.
        value: the value given for it.

    Raises:
        ConfigError: the value breaks the rule.
    """
    minimum, whole, what = _RULES[name]
    if whole:
        valid = type(value) is int and value >= minimum
    else:
        valid = isinstance(value, int | float) and value >= minimum
    if not valid:
        raise ConfigError(f"{name} must be {what}, got {value!r}")
