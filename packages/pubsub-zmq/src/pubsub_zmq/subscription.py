"""Subscription: one subscriber's bounded mailbox, as an async iterator or a callback.

Not pure: it wakes asyncio waiters and runs callbacks on the event loop. In Phoenix a
subscriber is a process and its mailbox the process's; here it is a
:class:`~pubsub_zmq.registry.Mailbox` that drops the oldest message when full, drained
by ``async for`` or by a callback that the owning :class:`~pubsub_zmq.PubSub` runs once
per event-loop turn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

from .errors import PubSubError
from .registry import Mailbox, lane_of

if TYPE_CHECKING:
    from .pubsub import PubSub

__all__ = ["Callback", "Subscription"]

log = logging.getLogger("pubsub_zmq")

CALLBACK_STEP = 0.005
"""Seconds of one subscription's callbacks per event-loop step: past them, the messages
left wait for a later step (a node catching up on a million presences merges its
transfer's parts through a callback, and must still heartbeat and answer meanwhile)."""

Callback = Callable[[Any], Awaitable[object] | object]
"""A subscription callback: called with each message (or Overflow marker); may be async."""


class Subscription(Mailbox):
    """One subscription to a topic: an async iterator of messages, or a callback.

    Made by :meth:`PubSub.subscribe`. Messages are the decoded objects that were
    broadcast (local subscribers get the very object: do not mutate it). The queue is
    bounded (a subscription is a :class:`~pubsub_zmq.registry.Mailbox`): on overflow the
    oldest messages are dropped and one :class:`~pubsub_zmq.Overflow` marker comes next.
    Iteration ends when the subscription is removed (``unsubscribe``, the linked task
    finished, or the PubSub stopped). Also a context manager that unsubscribes on exit.

    Attributes:
        topic: the subscribed topic.
        metadata: the metadata given to subscribe (used by ``unsubscribe_match`` and
            custom dispatchers).
        fastlane: ``metadata.fastlane`` when the metadata is a
            :class:`~pubsub_zmq.registry.Fastlane` (the default dispatch then hands it
            the messages instead of queueing them), else None.
        local: whether the subscription is node-local (``subscribe(local=True)``).
    """

    __slots__ = (
        "_active",
        "_callback",
        "_owner",
        "_pubsub",
        "_scheduled",
        "_waiter",
        "fastlane",
        "local",
        "metadata",
        "topic",
    )

    def __init__(
        self,
        pubsub: PubSub,
        topic: str,
        metadata: Any,
        queue_size: int,
        callback: Callback | None,
        local: bool = False,
    ) -> None:
        super().__init__(queue_size, pubsub._overflow)
        self.topic = topic
        self.metadata = metadata
        self.fastlane = lane_of(metadata)
        self.local = local
        self._pubsub = pubsub
        self._callback = callback
        self._waiter: asyncio.Future[None] | None = None
        self._scheduled = False
        self._active = True
        self._owner: asyncio.Task[Any] | None = None

    @property
    def active(self) -> bool:
        """Whether the subscription still receives messages."""
        return self._active

    @property
    def dropped(self) -> int:
        """Messages dropped from this subscription's queue because it was full."""
        return self.dropped_total

    def deliver(self, message: Any) -> None:
        """Queue ``message`` for this subscriber (what a custom dispatcher calls).

        Never blocks; when the queue is full the oldest message is dropped.
        """
        if self._active:
            self.push(message)
            self._wake()

    def _deliver_many(self, messages: Sequence[Any]) -> None:
        if self._active:
            self.extend(messages)
            self._wake()

    def _wake(self) -> None:
        if self._callback is not None:
            if not self._scheduled:
                self._scheduled = True
                self._pubsub._schedule_callbacks(self)
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _run_callbacks(self) -> None:
        self._scheduled = False
        callback = self._callback
        assert callback is not None
        deadline = time.monotonic() + CALLBACK_STEP
        while self._active and (self._items or self._pending_drops):
            item = self.pop()
            try:
                result = callback(item)
            except Exception:
                log.exception("subscription callback for %r raised", self.topic)
                result = None
            if inspect.isawaitable(result):
                self._scheduled = True
                self._pubsub._spawn(self._await_callback(result))
                return
            if (self._items or self._pending_drops) and time.monotonic() >= deadline:
                self._wake()  # the rest in a later step
                return

    async def _await_callback(self, awaitable: Awaitable[object]) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("subscription callback for %r raised", self.topic)
        finally:
            self._scheduled = False
        if self._active and (self._items or self._pending_drops):
            self._run_callbacks()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        # the fast path stays inline: one message costs about 0.3 us here
        if not self._pending_drops:
            items = self._items
            if items:
                return items.popleft()
        return await self._next_slow()

    async def _next_slow(self) -> Any:
        while not (self._items or self._pending_drops):
            if not self._active:
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self.pop()

    async def get(self) -> Any:
        """Wait for and return the next message (or Overflow marker).

        Raises:
            PubSubError: the subscription was removed and nothing is queued.
        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise PubSubError(f"subscription to {self.topic!r} is closed") from None

    def drain(self) -> list[Any]:
        """Return every queued message (and marker) without waiting."""
        out = []
        while self._items or self._pending_drops:
            out.append(self.pop())
        return out

    def unsubscribe(self) -> None:
        """Remove this subscription (the same as ``pubsub.unsubscribe(self)``)."""
        self._pubsub.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "active" if self._active else "closed"
        return f"<Subscription {self.topic!r} {state} queued={len(self)}>"

    def __bool__(self) -> bool:
        return True  # a subscription is truthy even with an empty queue

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def _close(self) -> None:
        self._active = False
        self.clear()
        if self._owner is not None:
            self._owner.remove_done_callback(self._owner_done)
            self._owner = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _link(self, task: asyncio.Task[Any]) -> None:
        self._owner = task
        task.add_done_callback(self._owner_done)

    def _owner_done(self, task: asyncio.Task[Any]) -> None:
        self._owner = None
        self._pubsub.unsubscribe(self)
