"""Local subscriptions and dispatch: a port of Phoenix.PubSub's use of ``Registry``.

Pure: no I/O, no asyncio, no clock. Phoenix keeps ``topic -> [{pid, metadata}]`` in a
duplicate-key Registry and calls ``dispatcher.dispatch(entries, from, message)``; here the
entries are subscription objects and "sending to a pid" is putting the message in the
subscription's bounded :class:`Mailbox`.

Theory of operation. A :class:`Registry` maps each topic to an insertion-ordered set of
subscriptions; duplicates are allowed (two subscriptions to one topic each get a copy, as
in Phoenix). ``add`` and ``remove`` report when a topic gains its first or loses its last
subscription, which is when the transport adds or drops the ZeroMQ prefix filter, so a
broadcast only travels to nodes that have a subscriber. A :class:`Mailbox` is a bounded
FIFO: when full, the oldest message is dropped and the next read returns one
:class:`Overflow` marker (counting the messages lost) before the surviving ones, so the
consumer learns where the gap is and can resync.

Fastlane (Phoenix.Channel.Server's dispatcher). A subscription whose metadata implements
:class:`Fastlane` is not queued: the dispatcher calls ``metadata.fastlane(message, cache)``
with one ``cache`` dict shared by every subscriber of that one dispatch, so N websocket
channels of a topic encode a broadcast once per serializer and write the same bytes. A
node-local subscription (``local``) never asks the transport for the topic's broadcasts
from other nodes (presence diffs are computed on every node): ``add`` and ``remove``
report only the topic's non-local subscriptions.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Dispatcher",
    "Fastlane",
    "Mailbox",
    "Overflow",
    "Registry",
    "Subscriber",
    "default_dispatch",
    "lane_of",
    "run_lane",
]

log = logging.getLogger("pubsub_zmq")


@dataclass(frozen=True, slots=True)
class Overflow:
    """Marker delivered to a subscriber after its queue overflowed.

    The oldest messages were dropped to make room for newer ones; this marker stands where
    they were, so everything received after it is newer than the gap.

    Attributes:
        dropped: how many messages were dropped since the previous marker.
    """

    dropped: int


class DropTally:
    """The messages dropped by many mailboxes together (a PubSub's subscriptions), kept
    as they drop, so the total is read without walking the mailboxes.

    Attributes:
        dropped: messages dropped so far, by every mailbox that shares this tally,
            removed ones included.
    """

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


class Mailbox:
    """A bounded FIFO of messages that drops the oldest on overflow.

    Args:
        capacity: the most messages held at once (at least 1).
        tally: a :class:`DropTally` shared with other mailboxes, counting their drops
            too (default: one of its own).

    Attributes:
        capacity: the bound given at construction.
        dropped_total: messages dropped over the mailbox's lifetime.
    """

    __slots__ = ("_items", "_pending_drops", "_tally", "capacity", "dropped_total")

    def __init__(self, capacity: int, tally: DropTally | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Any] = deque(maxlen=capacity)
        self._pending_drops = 0
        self.dropped_total = 0
        self._tally = tally if tally is not None else DropTally()

    def push(self, item: Any) -> None:
        """Append ``item``, dropping the oldest message when the mailbox is full."""
        items = self._items
        if len(items) == self.capacity:
            self._pending_drops += 1
            self.dropped_total += 1
            self._tally.dropped += 1
        items.append(item)  # deque(maxlen) discards from the left: the oldest

    def extend(self, batch: Sequence[Any]) -> None:
        """Append every item of ``batch`` in order (the oldest dropped on overflow)."""
        excess = len(self._items) + len(batch) - self.capacity
        if excess > 0:
            self._pending_drops += excess
            self.dropped_total += excess
            self._tally.dropped += excess
        self._items.extend(batch)

    def pop(self) -> Any:
        """Return the next item: an :class:`Overflow` marker first if messages were lost.

        Raises:
            IndexError: the mailbox is empty.
        """
        if self._pending_drops:
            marker = Overflow(self._pending_drops)
            self._pending_drops = 0
            return marker
        return self._items.popleft()

    def clear(self) -> None:
        """Forget every queued message and any pending overflow."""
        self._items.clear()
        self._pending_drops = 0

    def __len__(self) -> int:
        """Queued messages, counting a pending :class:`Overflow` marker as one."""
        return len(self._items) + (1 if self._pending_drops else 0)

    def __bool__(self) -> bool:
        return bool(self._items) or bool(self._pending_drops)


class Subscriber(Protocol):
    """What the registry and the dispatchers need from a subscription."""

    @property
    def topic(self) -> str:
        """The subscribed topic."""
        ...

    @property
    def metadata(self) -> Any:
        """The metadata given at subscribe time (Phoenix's ``metadata:`` option)."""
        ...

    def deliver(self, message: Any) -> None:
        """Queue ``message`` for this subscriber; never blocks."""
        ...


@runtime_checkable
class Fastlane(Protocol):
    """Subscription metadata that takes its messages itself (Phoenix's fastlane).

    The default dispatch calls :meth:`fastlane` instead of queueing the message in the
    subscription's mailbox: the hook for writing an encoded frame straight to a socket.
    A fastlane runs inside the dispatch loop: it must not subscribe or unsubscribe in the
    call (defer that with ``loop.call_soon``).
    """

    def fastlane(self, message: Any, cache: dict[Any, Any]) -> bool:
        """Take ``message``; return False to have it queued in the mailbox instead.

        Args:
            message: the message (the very object: do not mutate it).
            cache: a dict shared by every subscriber of this one dispatch (one message
                to one topic's local subscribers), for encoding once per format.

        Returns:
            True when the message was taken, False to deliver it normally.
        """
        ...


def lane_of(metadata: Any) -> Callable[[Any, dict[Any, Any]], bool] | None:
    """The bound ``fastlane`` method of ``metadata``, or None when it is not a Fastlane."""
    return metadata.fastlane if isinstance(metadata, Fastlane) else None


def run_lane(
    lane: Callable[[Any, dict[Any, Any]], bool],
    sub: Subscriber,
    message: Any,
    cache: dict[Any, Any],
) -> None:
    """Give ``message`` to a fastlane; queue it for ``sub`` when the lane declines it.

    A lane that raises is logged and the message queued instead, so it is not lost and
    the topic's other subscribers still get theirs.
    """
    try:
        taken = lane(message, cache)
    except Exception:
        log.exception("fastlane of a subscription to %r raised", sub.topic)
        taken = False
    if not taken:
        sub.deliver(message)


S = TypeVar("S", bound=Subscriber)

Dispatcher = Callable[[Sequence[Any], Any, Any], None]
"""A local delivery function ``(subscriptions, sender, message) -> None``.

``subscriptions`` are the topic's subscriptions, ``sender`` is the subscription that
broadcast (``broadcast_from``) or ``None``, and ``message`` is the decoded message. The
default, :func:`default_dispatch`, delivers to every subscription but the sender. A custom
dispatcher must be installed on every node, as in Phoenix.
"""


def default_dispatch(subscriptions: Iterable[Subscriber], sender: Any, message: Any) -> None:
    """Deliver ``message`` to every subscription except ``sender`` (Phoenix.PubSub.dispatch).

    A subscription whose metadata is a :class:`Fastlane` gets ``metadata.fastlane(message,
    cache)`` instead, with one ``cache`` for the whole dispatch.

    Args:
        subscriptions: the subscriptions of the message's topic.
        sender: the subscription to skip, or ``None``.
        message: the message, delivered as is (not copied).
    """
    cache: dict[Any, Any] | None = None
    for sub in subscriptions:
        if sub is not sender:
            lane = getattr(sub, "fastlane", None)
            if lane is None:
                sub.deliver(message)
            else:
                if cache is None:
                    cache = {}
                run_lane(lane, sub, message, cache)


class Registry(Generic[S]):
    """Subscriptions by topic, duplicates allowed, in subscription order.

    Attributes:
        lookup: ``lookup(topic)`` returns the topic's subscriptions as a live view, or
            None when it has none. Cheaper than :meth:`subscribers` (no copy, and a
            C-level call, for the hot path of every broadcast); the view must not be
            kept, nor iterated while subscriptions are added or removed.
    """

    __slots__ = ("_count", "_laned", "_remote", "_topics", "lookup")

    def __init__(self) -> None:
        self._topics: dict[str, dict[S, None]] = {}
        self._remote: dict[str, int] = {}  # non-local subscriptions per topic
        self._laned: dict[str, int] = {}  # subscriptions with a fastlane per topic
        self._count = 0
        self.lookup: Callable[[str], Collection[S] | None] = self._topics.get

    def add(self, sub: S) -> bool:
        """Register ``sub`` under ``sub.topic``.

        A subscription with a true ``local`` attribute is node-local: it does not count
        towards the return value.

        Returns:
            True when this is the topic's first non-local subscription.
        """
        topic = sub.topic
        subs = self._topics.get(topic)
        if subs is None:
            subs = self._topics[topic] = {}
        if sub in subs:
            return False
        subs[sub] = None
        self._count += 1
        if getattr(sub, "fastlane", None) is not None:
            self._laned[topic] = self._laned.get(topic, 0) + 1
        if getattr(sub, "local", False):
            return False
        remote = self._remote.get(topic, 0)
        self._remote[topic] = remote + 1
        return remote == 0

    def remove(self, sub: S) -> bool:
        """Unregister ``sub``; a no-op when it is not registered.

        Returns:
            True when the topic had this non-local subscription and now has none.
        """
        topic = sub.topic
        subs = self._topics.get(topic)
        if subs is None or sub not in subs:
            return False
        del subs[sub]
        self._count -= 1
        if not subs:
            del self._topics[topic]
        if getattr(sub, "fastlane", None) is not None:
            laned = self._laned[topic] - 1
            if laned:
                self._laned[topic] = laned
            else:
                del self._laned[topic]
        if getattr(sub, "local", False):
            return False
        remote = self._remote[topic] - 1
        if remote:
            self._remote[topic] = remote
            return False
        del self._remote[topic]
        return True

    def laned(self, topic: str) -> bool:
        """Whether a subscription of ``topic`` has a fastlane (else plain delivery will do)."""
        return topic in self._laned

    def subscribers(self, topic: str) -> list[S]:
        """The topic's subscriptions, oldest first (a new list; empty when none)."""
        subs = self._topics.get(topic)
        return list(subs) if subs else []

    def match(self, topic: str, metadata: Any) -> list[S]:
        """The topic's subscriptions whose metadata equals ``metadata``."""
        subs = self._topics.get(topic)
        if not subs:
            return []
        return [sub for sub in subs if sub.metadata == metadata]

    def topics(self) -> list[str]:
        """Every topic with at least one subscription."""
        return list(self._topics)

    def topic_count(self) -> int:
        """How many topics have at least one subscription (without listing them)."""
        return len(self._topics)

    def remote_topics(self) -> list[str]:
        """Every topic with at least one non-local subscription (the transport's filters)."""
        return list(self._remote)

    def count(self, topic: str) -> int:
        """How many subscriptions ``topic`` has."""
        subs = self._topics.get(topic)
        return len(subs) if subs else 0

    def all(self) -> Iterable[S]:
        """Every subscription, topic by topic (a new list)."""
        return [sub for subs in self._topics.values() for sub in subs]

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    def __len__(self) -> int:
        """The number of subscriptions (not topics)."""
        return self._count
