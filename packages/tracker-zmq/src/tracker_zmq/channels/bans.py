"""The ban table of one endpoint: socket id -> when its ban ends. Pure.

Phoenix has no bans: its ``Endpoint.broadcast(socket_id, "disconnect", %{})`` only closes
the sockets, and the client reconnects at once. Here a backend's
:func:`~tracker_zmq.channels.disconnect` may add ``ban_seconds``; the ban travels on
:data:`~tracker_zmq.channels.BANS_TOPIC` and every :class:`~tracker_zmq.channels.Endpoint`
keeps it in a :class:`BanTable` and refuses that socket id at connect until it ends.

Theory of operation. Time comes in as an argument (the endpoint passes
``time.monotonic()``): a ban ends ``ban_seconds`` after this node *heard* of it, so no
clock is compared across nodes. A second ban of the same id keeps the later end (a ban
is never cut short). Ended bans are swept from a heap of end times as new bans come and
as ids are checked, so the work per ban is O(log n). The table is bounded: at
``max_entries`` the ban that would end soonest is evicted for the new one and counted
(``evicted``), since that one costs the least to forget.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

__all__ = ["BanTable"]


class BanTable:
    """Socket ids banned until a time, bounded.

    Args:
        max_entries: The most bans held at once.

    Attributes:
        max_entries: The bound.
        counters: ``heard`` (bans added), ``invalid`` (ban messages that were not
            ``{"socket_id": str, "ban_seconds": number > 0}``), ``evicted`` (bans
            forgotten early because the table was full) and ``expired`` (bans swept
            after they ended).

    Raises:
        ValueError: ``max_entries`` is not a positive int.
    """

    __slots__ = ("_ends", "_heap", "counters", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, not {max_entries!r}")
        self.max_entries = max_entries
        self._ends: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (end, socket id); stale entries skipped
        self.counters: dict[str, int] = {"heard": 0, "invalid": 0, "evicted": 0, "expired": 0}

    def __len__(self) -> int:
        return len(self._ends)

    def receive(self, message: Any, now: float) -> bool:
        """Add the ban a :data:`~tracker_zmq.channels.BANS_TOPIC` message carries.

        Args:
            message: The message as PubSub delivered it.
            now: The time, in seconds (monotonic).

        Returns:
            Whether it was a ban (an invalid message is counted and dropped).
        """
        if type(message) is not dict:
            self.counters["invalid"] += 1
            return False
        socket_id: Any = message.get("socket_id")
        seconds: Any = message.get("ban_seconds")
        if (
            type(socket_id) is not str
            or not socket_id
            or type(seconds) not in (int, float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            self.counters["invalid"] += 1
            return False
        self.add(socket_id, float(seconds), now)
        return True

    def add(self, socket_id: str, seconds: float, now: float) -> None:
        """Ban ``socket_id`` for ``seconds`` from ``now`` (or longer, if it already is)."""
        self.sweep(now)
        end = now + seconds
        ends = self._ends
        if socket_id in ends:
            if end <= ends[socket_id]:
                self.counters["heard"] += 1
                return
        elif len(ends) >= self.max_entries:
            self._evict_one()
        ends[socket_id] = end
        heapq.heappush(self._heap, (end, socket_id))
        self.counters["heard"] += 1
        if len(self._heap) > 2 * self.max_entries + 16:
            self._compact()

    def banned(self, socket_id: str, now: float) -> bool:
        """Whether ``socket_id`` is banned at ``now``."""
        end = self._ends.get(socket_id)
        if end is None:
            return False
        if end > now:
            return True
        self.sweep(now)
        return False

    def remaining(self, socket_id: str, now: float) -> float:
        """Seconds left of ``socket_id``'s ban (0 when it is not banned)."""
        end = self._ends.get(socket_id)
        return max(0.0, end - now) if end is not None else 0.0

    def sweep(self, now: float) -> None:
        """Forget every ban that ended at or before ``now``."""
        heap, ends = self._heap, self._ends
        while heap and heap[0][0] <= now:
            end, socket_id = heapq.heappop(heap)
            if ends.get(socket_id) == end:
                del ends[socket_id]
                self.counters["expired"] += 1

    def _evict_one(self) -> None:
        heap, ends = self._heap, self._ends
        while heap:
            end, socket_id = heapq.heappop(heap)
            if ends.get(socket_id) == end:
                del ends[socket_id]
                self.counters["evicted"] += 1
                return

    def _compact(self) -> None:
        # renewed bans leave their old (end, id) behind: rebuild from the live ones
        self._heap = [(end, socket_id) for socket_id, end in self._ends.items()]
        heapq.heapify(self._heap)
