"""Remote replicas as one shard sees them: a port of ``Phoenix.Tracker.Replica``. Pure.

A replica is a shard of another node, named by its ref ``(node name, vsn)``: the vsn is
the node's incarnation, so a restarted node is a new replica. Its status follows its
heartbeats: up while heard from, down after ``down_period`` of silence, permanently down
(forgotten) after ``permdown_period``. Time is passed in, in seconds of a monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Ref", "Replica", "Status"]

Ref = tuple[str, int]
"""A replica's ref: ``(node name, vsn)``."""


class Status(StrEnum):
    """Where a replica is in its life."""

    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class Replica:
    """A remote replica: its current ref, status and when it was last heard from.

    Attributes:
        name: The node name.
        vsn: The incarnation currently known for that name.
        last_heartbeat_at: Monotonic seconds of its last heartbeat.
        status: Up or down.
    """

    name: str
    vsn: int
    last_heartbeat_at: float
    status: Status = Status.UP

    @property
    def ref(self) -> Ref:
        """``(name, vsn)``."""
        return (self.name, self.vsn)
