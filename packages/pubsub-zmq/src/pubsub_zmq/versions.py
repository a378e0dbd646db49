"""Version negotiation: which version of a protocol to speak to whom. Pure.

Phoenix has no counterpart (an Erlang cluster upgrades through hot code loading or a full
restart); a cluster of this port is upgraded one node at a time, so every node announces,
for each protocol it speaks (``"pubsub"`` frames, ``"tracker"`` messages, the
``"transfer"`` format, and any a layer above registers), the lowest and highest version
it can read and write (a :class:`Range`), and picks what it sends from what the receivers
announced:

* **Direct** messages (one receiver) use :func:`direct`: the highest version both ends
  know. Both ends compute the same number from the same two ranges. ``None``, no common
  version, means the peer is refused (logged with the reason, counted), never sent to.
* **Broadcasts** (one frame, read by every subscriber: pubsub broadcast batches, gossip,
  tracker heartbeats and graceful permdowns) use :func:`broadcast`. DESIGN.md words it
  "the lowest version any live member speaks"; taken literally that can be a version
  some member no longer reads (members ``[1, 3]`` and ``[2, 3]``: 1), so the rule is the
  **highest version within the range of every live member and our own** (there: 3). A
  rolling upgrade moves one release at a time and each release keeps reading its
  predecessor's versions, so such a version exists: while a node of the previous release
  is up it is that release's version (the lowest any live member speaks), and it rises
  by itself once the last old node is gone.

  When no single version fits everyone (a node was upgraded two releases at once, or
  dropped a version its peers still need), the rule falls back to the **lowest** version
  any live member speaks that we speak too. Reason: the members a rolling upgrade leaves
  behind are the old ones, still serving until their turn comes; the members that cannot
  read the lowest version are the ones out of step with the upgrade order. Those are
  reported by :func:`left_out`, so that the caller counts and logs them instead of
  losing their messages silently (direct messages still reach them, in the version each
  shares with us).

A record that announces no versions at all comes from the release before negotiation
existed: it speaks version 1 of every protocol that release had (:data:`LEGACY`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

__all__ = ["LEGACY", "MAX_VERSION", "Range", "broadcast", "direct", "left_out"]

MAX_VERSION = 2**31 - 1
"""The largest version number a range may hold."""

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Range:
    """The versions of one protocol a node speaks: every version from ``low`` to ``high``.

    Attributes:
        low: the oldest version it still reads and writes (at least 1).
        high: the newest version it knows (at least ``low``).

    Raises:
        TypeError: ``low`` or ``high`` is not an int (bool is not one here).
        ValueError: they are not ``1 <= low <= high <= MAX_VERSION``.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        if type(self.low) is not int or type(self.high) is not int:
            raise TypeError(f"a version range takes ints, got {self.low!r} and {self.high!r}")
        if not 1 <= self.low <= self.high <= MAX_VERSION:
            raise ValueError(
                f"a version range needs 1 <= low <= high <= {MAX_VERSION}, "
                f"got [{self.low}, {self.high}]"
            )

    def __contains__(self, version: object) -> bool:
        return type(version) is int and self.low <= version <= self.high

    def __str__(self) -> str:
        return f"[{self.low}, {self.high}]"

    def to_json(self) -> list[int]:
        """The range as its wire form, ``[low, high]``."""
        return [self.low, self.high]


LEGACY: Mapping[str, Range] = MappingProxyType(
    {"pubsub": Range(1, 1), "tracker": Range(1, 1), "transfer": Range(1, 1)}
)
"""What a node record without ``versions`` speaks: the release before negotiation
(version 1 of its three protocols, and nothing else)."""


def direct(mine: Range, theirs: Range) -> int | None:
    """The version of a message to one peer: the highest version both ends know.

    Args:
        mine: the versions this node speaks.
        theirs: the versions the peer announced.

    Returns:
        The version, or None when the ranges share no version (the peer is refused).
    """
    high = min(mine.high, theirs.high)
    return high if high >= max(mine.low, theirs.low) else None


def broadcast(mine: Range, members: Iterable[Range]) -> int | None:
    """The version of one frame read by every live member (see the module's rule).

    Args:
        mine: the versions this node speaks.
        members: the ranges of the live members that read the frame.

    Returns:
        The highest version within every member's range and ours; when there is none,
        the lowest version any member speaks that we speak too (then :func:`left_out`
        names the members that cannot read it); ``mine.high`` with no members; None
        when no member shares any version with us.
    """
    low, high = mine.low, mine.high
    lowest: int | None = None
    some = False
    for theirs in members:
        some = True
        low = max(low, theirs.low)
        high = min(high, theirs.high)
        common = direct(mine, theirs)
        if common is not None:
            start = max(mine.low, theirs.low)  # the lowest version we both speak
            lowest = start if lowest is None else min(lowest, start)
    if not some:
        return mine.high
    if low <= high:
        return high
    return lowest


def left_out(version: int | None, members: Mapping[K, Range]) -> list[K]:
    """The members that cannot read a frame of ``version``.

    Args:
        version: what :func:`broadcast` chose (None: nobody can read it).
        members: the live members' ranges, by name.

    Returns:
        Their names, in the mapping's order.
    """
    return [name for name, theirs in members.items() if version not in theirs]
