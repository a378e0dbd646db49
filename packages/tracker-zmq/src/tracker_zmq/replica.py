"""Remote replicas as one shard sees them: a port of ``Phoenix.Tracker.Replica``. Pure.

Theory of operation
-------------------
A replica is a shard of another node, named by its ref ``(node name, vsn)``: the vsn is
the node's incarnation, so a restarted node is a new replica. One shard keeps one
:class:`Replicas` table, by node name, and feeds it three inputs; each returns the
:class:`ReplicaEvent` values of the statuses the replica entered, in order, for the
Shard to apply to its State (``up``: ``replica_up``, ``down``: ``replica_down``,
``permdown``: ``remove_down_replicas``) and to report:

* **a heartbeat** (:meth:`Replicas.put_heartbeat`) from a ref: an unknown name is a new
  replica, up; the same vsn is heard again (up again if it was down); an older vsn is
  dropped; a newer vsn is a restart, the old replica is gone at once and the new one up;
* **silence** (:meth:`Replicas.detect_down`, at every tick): silent for ``down_period``
  is down, silent for ``permdown_period`` is gone;
* **a graceful permdown** (:meth:`Replicas.permdown`): gone at once.

A gone replica is forgotten, and the table remembers the highest vsn it permdowned per
name for ``permdown_period``: :meth:`Replicas.admit` refuses every message from a ref at
or below it, so a late message never brings a forgotten replica back as ghosts; but a
heartbeat of that very vsn, more than ``down_period`` after the permdown, is a live node
that was cut off for longer than ``permdown_period``, and is taken back.

:data:`TRANSITIONS` is the whole life cycle as data: (status, input) to the statuses
entered. A replica already down is not reported down again; a replica gone while up is
reported down first, so its presences leave once. Time is passed in, in seconds of a
monotonic clock. (A node's vsn is minted by the asyncio layer, with
:func:`pubsub_zmq.new_incarnation`, and passed in to its shards.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "TRANSITIONS",
    "Drop",
    "Input",
    "Ref",
    "Replica",
    "ReplicaEvent",
    "Replicas",
    "Status",
]

Ref = tuple[str, int]
"""A replica's ref: ``(node name, vsn)``."""


class Status(StrEnum):
    """Where a replica is in its life; also the kind of a :class:`ReplicaEvent`."""

    UP = "up"
    DOWN = "down"
    PERMDOWN = "permdown"


class Input(StrEnum):
    """What happens to a known replica, as :data:`TRANSITIONS` reads it."""

    HEARTBEAT = "heartbeat"
    """A heartbeat of its vsn (for an unknown name: of a new replica)."""
    SILENT_DOWN = "silent for down_period"
    """No heartbeat for ``down_period``."""
    GONE = "gone"
    """Silent for ``permdown_period``, a graceful permdown, or a heartbeat of a newer vsn."""


TRANSITIONS: Final[Mapping[tuple[Status | None, Input], tuple[Status, ...]]] = {
    # (status before, input): statuses entered, each reported as one event; the last is
    # the status after (none entered: unchanged). None is a replica not yet known.
    (None, Input.HEARTBEAT): (Status.UP,),
    (Status.UP, Input.HEARTBEAT): (),
    (Status.DOWN, Input.HEARTBEAT): (Status.UP,),
    (Status.UP, Input.SILENT_DOWN): (Status.DOWN,),
    (Status.DOWN, Input.SILENT_DOWN): (),
    (Status.UP, Input.GONE): (Status.DOWN, Status.PERMDOWN),
    (Status.DOWN, Input.GONE): (Status.PERMDOWN,),
}
"""The replica life cycle: ``(status, input) -> statuses entered``, in order."""


class Drop(StrEnum):
    """Why a message was refused; the value is the reason the Shard counts."""

    TOO_MANY_REPLICAS = "too_many_replicas"
    OLDER_INCARNATION = "from_older_incarnation"


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    """A remote replica came up, went down or was permanently forgotten.

    Attributes:
        kind: The status the replica entered (a :class:`Status`, equal to its string
            ``"up"``, ``"down"`` or ``"permdown"``).
        ref: The replica's ``(name, vsn)``.
    """

    kind: Status
    ref: Ref


@dataclass(slots=True)
class Replica:
    """A remote replica: its current ref, status and when it was last heard from.

    Attributes:
        name: The node name.
        vsn: The incarnation currently known for that name.
        last_heartbeat_at: Monotonic seconds of its last heartbeat.
        status: Up or down (a replica permanently down is no longer held).
    """

    name: str
    vsn: int
    last_heartbeat_at: float
    status: Status = Status.UP

    @property
    def ref(self) -> Ref:
        """``(name, vsn)``."""
        return (self.name, self.vsn)


class Replicas(Mapping[str, Replica]):
    """The remote replicas one shard knows, by node name, and the vsns it permdowned.

    A read-only mapping ``name -> Replica``; its life cycle changes only through
    :meth:`put_heartbeat`, :meth:`detect_down` and :meth:`permdown`, which return the
    events the Shard applies. Pure: time is passed in.

    Args:
        down_period: Seconds of silence before a replica is down.
        permdown_period: Seconds of silence before a replica is forgotten, and how long
            a permdowned vsn is remembered.
        max_replicas: Most replicas held; a heartbeat of a new name beyond it is dropped.
    """

    __slots__ = ("_down_period", "_max_replicas", "_permdown_period", "_permdowned", "_replicas")

    def __init__(self, down_period: float, permdown_period: float, max_replicas: int) -> None:
        self._down_period = down_period
        self._permdown_period = permdown_period
        self._max_replicas = max_replicas
        self._replicas: dict[str, Replica] = {}
        self._permdowned: dict[str, tuple[int, float]] = {}

    def __getitem__(self, name: str) -> Replica:
        return self._replicas[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __repr__(self) -> str:
        return f"Replicas({self._replicas!r})"

    def fetch_by_ref(self, ref: Ref) -> Replica | None:
        """The replica of that name if it has that very vsn, else None."""
        replica = self._replicas.get(ref[0])
        return replica if replica is not None and replica.vsn == ref[1] else None

    def admit(self, ref: Ref, now: float, *, heartbeat: bool) -> bool:
        """Whether a message from ``ref`` may be handled, given the vsns permdowned.

        False for a ref at or below the highest vsn permdowned for its name (a late
        message of a forgotten replica), unless the message is a heartbeat of that very
        vsn more than ``down_period`` after the permdown: that node was cut off longer
        than ``permdown_period`` and is alive, so the memory of it is cleared.

        Args:
            ref: The message's sender.
            now: Monotonic seconds.
            heartbeat: Whether the message is a heartbeat.
        """
        gone = self._permdowned.get(ref[0])
        if gone is None or ref[1] > gone[0]:
            return True
        if heartbeat and ref[1] == gone[0] and now - gone[1] > self._down_period:
            del self._permdowned[ref[0]]
            return True
        return False

    def put_heartbeat(self, ref: Ref, now: float) -> list[ReplicaEvent] | Drop:
        """A heartbeat from ``ref``: a new replica, the same vsn, an older one or a restart.

        Returns:
            The events (``up`` for a new replica or one that was down; for a newer vsn,
            the old replica's ``down`` if it was up and ``permdown``, then the new one's
            ``up``), or why the heartbeat must be dropped: an older vsn, or a new name
            beyond ``max_replicas``.
        """
        name, vsn = ref
        replica = self._replicas.get(name)
        if replica is None:
            if len(self._replicas) >= self._max_replicas:
                return Drop.TOO_MANY_REPLICAS
            return self._add(ref, now)
        if vsn == replica.vsn:
            replica.last_heartbeat_at = now
            return self._enter(replica, Input.HEARTBEAT, now)
        if vsn < replica.vsn:
            return Drop.OLDER_INCARNATION
        # A restart: the old incarnation is gone for good.
        return self._enter(replica, Input.GONE, now) + self._add(ref, now)

    def detect_down(self, now: float) -> list[ReplicaEvent]:
        """Judge every replica's silence at ``now``, as Phoenix's ``detect_down``.

        Returns:
            A replica silent for more than ``permdown_period`` is gone (``down`` if it
            was up, then ``permdown``); one silent for more than ``down_period`` and up
            goes ``down``.
        """
        events: list[ReplicaEvent] = []
        for replica in list(self._replicas.values()):
            silent = now - replica.last_heartbeat_at
            if silent > self._permdown_period:
                events += self._enter(replica, Input.GONE, now)
            elif silent > self._down_period:
                events += self._enter(replica, Input.SILENT_DOWN, now)
        return events

    def permdown(self, ref: Ref, now: float) -> list[ReplicaEvent]:
        """Forget the replica ``ref`` now (a graceful permdown); nothing if not current.

        Returns:
            Its ``down`` if it was up, then its ``permdown``.
        """
        replica = self.fetch_by_ref(ref)
        return [] if replica is None else self._enter(replica, Input.GONE, now)

    def expire(self, now: float) -> None:
        """Forget the permdowned vsns remembered for longer than ``permdown_period``."""
        for name, (_, at) in list(self._permdowned.items()):
            if now - at > self._permdown_period:
                del self._permdowned[name]

    def _add(self, ref: Ref, now: float) -> list[ReplicaEvent]:
        events = [ReplicaEvent(status, ref) for status in TRANSITIONS[None, Input.HEARTBEAT]]
        self._replicas[ref[0]] = Replica(ref[0], ref[1], now, events[-1].kind)
        return events

    def _enter(self, replica: Replica, what: Input, now: float) -> list[ReplicaEvent]:
        entered = TRANSITIONS[replica.status, what]
        if not entered:
            return []
        status = entered[-1]
        if status is Status.PERMDOWN:
            name, vsn = replica.ref
            del self._replicas[name]
            known = self._permdowned.get(name)
            if known is None or known[0] < vsn:
                self._permdowned[name] = (vsn, now)
        else:
            replica.status = status
        return [ReplicaEvent(s, replica.ref) for s in entered]
