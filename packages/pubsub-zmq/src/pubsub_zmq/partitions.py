"""Partitions of the mesh: Phoenix.PubSub's ``pool_size`` and ``broadcast_pool_size``. Pure.

Phoenix.PubSub.PG2 runs ``pool_size`` listener groups per node and sends each
broadcast to one of the first ``broadcast_pool_size`` groups of every other node; a
cluster changes ``pool_size`` in two deployments through ``broadcast_pool_size``.
Here a **partition** is a PUB socket with its own ZeroMQ context (one I/O thread), and
the SUB sockets that read the same-numbered partition of every member:

* a node with ``pool_size`` P binds P PUB sockets (partition 0 is the PUB its record
  has always announced as ``pub``; the others are announced as ``pubs``) and reads
  partitions ``0 .. P-1`` of every member that has them;
* it publishes a topic on partition :func:`partition_for` ``(topic, B)``, where B is its
  ``broadcast_pool_size`` (``pool_size`` when not given; at most ``pool_size``), so
  per-topic order holds: a topic always travels through one socket of a sender;
* a member that reads fewer partitions than the one a broadcast goes out on does not
  get it: the sender counts each such (broadcast, member) in ``dropped.unread_partition``
  and logs each such member once per incarnation (Combo loses these silently). A record
  without ``pool`` (the release before partitions, or a node of one partition) reads
  partition 0 only.

Changing P to Q takes two deployments, as in Phoenix, each restarting every node in
turn. Growing (Q > P): step 1 ``pool_size=Q, broadcast_pool_size=P`` (read Q, still
publish on the P that the old nodes read), step 2 ``pool_size=Q``. Shrinking (Q < P):
step 1 ``pool_size=P, broadcast_pool_size=Q`` (keep reading P, publish on Q), step 2
``pool_size=Q``. At every moment every node reads every partition the others publish
on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["MAX_PARTITIONS", "Partitions", "partition_for", "unread_by"]

MAX_PARTITIONS = 64
"""The most partitions a node runs (each is a socket and a thread per member)."""


def partition_for(topic: str, size: int) -> int:
    """A topic's partition: ``zlib.crc32`` of its UTF-8 bytes, modulo ``size``."""
    return zlib.crc32(topic.encode("utf-8")) % size


@dataclass(frozen=True, slots=True)
class Partitions:
    """How a node partitions its mesh.

    Attributes:
        pool_size: Partitions this node runs and reads (PUB sockets, I/O threads).
        broadcast_pool_size: Partitions it publishes on (the first ones); None: all
            ``pool_size``. At most ``pool_size``.

    Raises:
        ConfigError: A size is not a positive int up to MAX_PARTITIONS, or
            ``broadcast_pool_size`` exceeds ``pool_size`` (Phoenix's rule).
    """

    pool_size: int = 1
    broadcast_pool_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("pool_size", "broadcast_pool_size"):
            value = getattr(self, name)
            if value is None and name == "broadcast_pool_size":
                continue
            if type(value) is not int or not 1 <= value <= MAX_PARTITIONS:
                raise ConfigError(
                    f"{name} must be an int from 1 to {MAX_PARTITIONS}, got {value!r}"
                )
        if self.broadcast_pool_size is not None and self.broadcast_pool_size > self.pool_size:
            raise ConfigError(
                f"pool_size ({self.pool_size}) must be at least broadcast_pool_size "
                f"({self.broadcast_pool_size}): a node reads every partition it publishes on"
            )

    @property
    def publish_size(self) -> int:
        """How many partitions broadcasts go out on."""
        return self.pool_size if self.broadcast_pool_size is None else self.broadcast_pool_size

    def partition(self, topic: str) -> int:
        """The partition a broadcast on ``topic`` goes out on."""
        size = self.publish_size
        return 0 if size == 1 else partition_for(topic, size)


def unread_by(partition: int, readers: Iterable[tuple[str, int]]) -> list[str]:
    """The members that do not read ``partition``.

    Args:
        partition: A partition broadcasts go out on.
        readers: ``(member name, partitions it reads)`` pairs.

    Returns:
        The names of those that read fewer partitions than ``partition + 1``.
    """
    return [name for name, size in readers if size <= partition]
