"""The tracker's asyncio layer: a port of ``Phoenix.Tracker`` (the pool) and the I/O half
of ``Phoenix.Tracker.Shard``. Not pure: it owns the timers, the clock and the PubSub.

Theory of operation
-------------------
A :class:`Tracker` runs ``pool_size`` pure :class:`~tracker_zmq.shard.Shard` machines on
the running event loop. Shard ``i`` subscribes (unlinked) to the PubSub topic
``"phx_presence:<name>_shard<i>"``, which the same-numbered shard of every other node
also subscribes to. Everything a shard does comes back as an
:class:`~tracker_zmq.shard.Output`; this layer only carries it out:

* **sends** go out with ``broadcast_from`` (to the same shard of every other node) or
  ``direct_broadcast`` (to one node), as the bytes the shard encoded them to
  (:class:`pubsub_zmq.Encoded`: a message is encoded once, with orjson, as PubSub would);
* **diffs** go into one ``asyncio.Queue`` per shard, whose consumer task calls the
  handler in order; a handler's exception is logged, never raised into the shard;
* **events** (replica up, down, permdown) are logged at ``log_level``.

Incoming messages are handed to ``Shard.receive`` in the subscription callback, as they
arrive. One timer task per shard calls ``Shard.tick`` when the last Output's
``next_tick`` (at first, what ``Shard.start`` returned) says; when it
wakes up more than a period late (a GC pause, a long merge, SIGSTOP) it first lets the
event loop read the input that piled up (the stall rule: the shard then skips its down
judgements for that tick), so a stalled node does not declare its peers dead.

Versions: at start the tracker announces on its PubSub the ranges it speaks of the
``"tracker"`` messages and the ``"transfer"`` format (:meth:`pubsub_zmq.PubSub.announce`);
before each tick it reads the live members' ranges
(:meth:`pubsub_zmq.PubSub.member_versions`), chooses with :mod:`pubsub_zmq.versions` the
version of heartbeats (every member reads it) and of each peer's requests and answers
(the highest both know), and hands the result to the shards
(:meth:`~tracker_zmq.shard.Shard.set_versions`) when it changed. A peer sharing no
version with us is refused: the shards drop its messages (``no_common_version``) and
this layer logs it once per peer incarnation. A member whose record announces no
versions is of the release before negotiation: version 1 of both.

A node has one incarnation (``vsn``) for all its shards, minted as the PubSub's own
incarnation is (:func:`pubsub_zmq.new_incarnation`: ``time.time_ns()`` with random low
bits), above the PubSub's incarnation and above any vsn this process used before for the
same node name, so it only grows across restarts.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from enum import StrEnum
from typing import Any, Protocol, TypeAlias, runtime_checkable

import orjson

from crdt_state import Key, Meta, Topic, check_id
from pubsub_zmq import (
    Encoded,
    Overflow,
    PubSub,
    PubSubError,
    Range,
    Subscription,
    new_incarnation,
)
from pubsub_zmq import versions as negotiation
from tracker_zmq.errors import ConfigError, NoPresence, TooManyPresences, TrackerNotRunning
from tracker_zmq.options import Options
from tracker_zmq.replica import Ref
from tracker_zmq.shard import Diff, Output, Send, Shard, Versions
from tracker_zmq.sharding import Sharding, ShardSets
from tracker_zmq.wire import (
    LOWEST_PROTOCOL,
    LOWEST_TRANSFER_FORMAT,
    PROTOCOL,
    TRANSFER_FORMAT,
    shard_for,
)

__all__ = ["DiffHandler", "Handler", "Tracker"]

log = logging.getLogger("tracker_zmq")


@runtime_checkable
class DiffHandler(Protocol):
    """An object that receives diffs through a ``handle_diff`` method (sync or async)."""

    def handle_diff(self, diff: Diff) -> Awaitable[object] | object:
        """Called with ``{topic: (joins, leaves)}`` after each change."""


Handler: TypeAlias = Callable[[Diff], Awaitable[object] | object] | DiffHandler
"""A diff handler: a (sync or async) callable, or an object with ``handle_diff``."""

OwnerArg: TypeAlias = str | int | asyncio.Task[Any]
"""An owner as given to the Tracker: a str or int id, or an asyncio Task."""


class _Phase(StrEnum):
    """Where a Tracker is in its life: new, running, stopping, stopped (in that order)."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


_PERMDOWN_SENDS = 3
_STALL_DRAIN_ROUNDS = 10
_STALL_DRAIN_SLEEP = 0.002
_HANDLER_DRAIN_TIMEOUT = 5.0
_TRACKER = Range(LOWEST_PROTOCOL, PROTOCOL)
_TRANSFER = Range(LOWEST_TRANSFER_FORMAT, TRANSFER_FORMAT)
_MAX_LOGGED = 4096  # refusals remembered, so that each is logged once per incarnation

# the highest vsn this process gave each node name, so a tracker restarted in the same
# process (and the same nanosecond) still gets a larger one
_last_vsn: dict[str, int] = {}


def _new_vsn(node: str, floor: int, rng: random.Random) -> int:
    vsn = new_incarnation(max(floor, _last_vsn.get(node, 0)), rng)
    _last_vsn[node] = vsn
    return vsn


HANDLER_STEP = 0.005
"""Seconds of handler calls per event-loop step while diffs are queued."""

_OneJoin: TypeAlias = tuple[Topic, Key, Meta]
"""A queued diff of one join, ``(topic, key, meta)``: what Tracker.track queues."""


class _DiffQueue:
    """A shard's diffs on their way to the handler: one consumer, unbounded.

    What the Tracker used of ``asyncio.Queue`` (``put_nowait``, ``get``, ``task_done``,
    ``join``) for its single handler task, at a third of the cost per put: every
    ``Tracker.track`` queues one diff. Such a diff waits as one ``(topic, key, meta)``
    tuple rather than the five objects of ``{topic: ([(key, meta)], [])}``: a burst of
    tracks leaves fewer objects for the cyclic collector to walk while they wait. A
    backlog is handed out :data:`HANDLER_STEP` seconds per event-loop step (a million
    tracks in one burst would otherwise hold the loop while the handler sees them all).
    """

    __slots__ = ("_items", "_joiners", "_step_end", "_unfinished", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Diff | _OneJoin] = deque()
        self._unfinished = 0  # queued, or taken and not yet task_done
        self._waiter: asyncio.Future[None] | None = None
        self._joiners: list[asyncio.Future[None]] = []
        self._step_end = 0.0  # when the consumer's current loop step has had its share

    def put_nowait(self, diff: Diff | _OneJoin) -> None:
        self._items.append(diff)
        self._unfinished += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Diff | _OneJoin:
        items = self._items
        if items:
            if time.monotonic() < self._step_end:
                return items.popleft()
            await asyncio.sleep(0)  # a backlog: the rest of the loop runs first
        while not items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        self._step_end = time.monotonic() + HANDLER_STEP
        return items.popleft()

    def task_done(self) -> None:
        self._unfinished -= 1
        if not self._unfinished:
            joiners, self._joiners = self._joiners, []
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        """Wait until every diff queued so far was handled."""
        if self._unfinished:
            joiner = asyncio.get_running_loop().create_future()
            self._joiners.append(joiner)
            await joiner


class _Runner:
    """One shard with its subscription, timer task and diff queue."""

    __slots__ = ("index", "queue", "shard", "sub", "tasks", "ticks", "topic", "up_tick")

    def __init__(self, shard: Shard, topic: str) -> None:
        self.shard = shard
        self.index = shard.index
        self.topic = topic
        self.sub: Subscription | None = None
        self.queue = _DiffQueue()
        self.tasks: list[asyncio.Task[None]] = []
        # readiness (Tracker.synced): ticks so far, and the tick of the last replica up
        self.ticks = 0
        self.up_tick = 0


class Tracker:
    """A replicated presence tracker on a running :class:`~pubsub_zmq.PubSub`.

    Start it with ``async with tracker`` (or ``await tracker.start()``) on the PubSub's
    event loop; its methods are plain methods, called on that loop's thread while it
    runs. Periods are in seconds.

    Args:
        pubsub: The node's PubSub (started before the tracker, stopped after it).
        name: The tracker's name; trackers of the same name on different nodes
            replicate with each other.
        handler: Called with ``{topic: (joins, leaves)}`` after each change, in order,
            from one queue per shard: a sync or async callable, or an object with such
            a ``handle_diff`` method. Its exceptions are logged, never raised.
        pool_size: Number of shards; every node of a cluster must use the same, except
            while it changes over with ``broadcast_pool_size``.
        broadcast_period: Seconds between ticks (heartbeats, sampling, down detection).
        max_silent_periods: Quiet ticks before an empty heartbeat is sent anyway.
        down_period: Seconds of silence before a replica is down; None:
            ``broadcast_period * max_silent_periods * 2``. Must exceed
            ``(max_silent_periods + 1) * broadcast_period``.
        permdown_period: Seconds of silence before a replica is forgotten; must exceed
            ``down_period``.
        clock_sample_periods: Ticks between clock comparisons (transfer requests).
        max_delta_sizes: Caps of the delta generations kept to answer transfers.
        permdown_on_shutdown: Whether :meth:`stop` runs :meth:`graceful_permdown`, so
            peers drop this node's presences at once instead of after ``down_period``.
            None (the default): yes on an automatically named node (``PubSub(None)``,
            a web worker whose name never comes back, so it leaves no ghost), no
            otherwise.
        log_level: Level of the replica up / down / permdown log lines.
        transfer_timeout: Seconds a transfer request waits for the next part of its
            answer before it is dropped; None: ``5 * down_period``.
        transfer_part_values: Most values in one part of a transfer answer.
        transfer_part_bytes: Most encoded bytes in one part, and in one heartbeat (a
            larger delta is fetched by transfer instead); None: half the PubSub's
            ``max_frame_bytes``.
        max_presences: Most presences this node may track at once (over all shards;
            presences of other nodes do not count); None: no limit. A ``track`` beyond
            it raises :class:`TooManyPresences`.
        broadcast_pool_size: The pool size the rest of the cluster still runs, while
            the cluster changes ``pool_size`` in two deployments (the first with
            ``pool_size=new, broadcast_pool_size=old``, the second with
            ``pool_size=new`` alone): the node then runs both shard sets, writes each
            presence into both and lists it once (:mod:`tracker_zmq.sharding`). None
            (or equal to ``pool_size``): one shard set.

    Raises:
        ConfigError: An option is invalid or inconsistent (also a ValueError), or the
            handler is neither callable nor has a callable ``handle_diff``.
    """

    def __init__(
        self,
        pubsub: PubSub,
        name: str = "presence",
        handler: Handler | None = None,
        pool_size: int = 1,
        broadcast_period: float = 1.5,
        max_silent_periods: int = 10,
        down_period: float | None = None,
        permdown_period: float = 1200,
        clock_sample_periods: int = 2,
        max_delta_sizes: tuple[int, ...] = (100, 1000, 10000),
        permdown_on_shutdown: bool | None = None,
        log_level: int = logging.DEBUG,
        *,
        transfer_timeout: float | None = None,
        transfer_part_values: int = 20_000,
        transfer_part_bytes: int | None = None,
        max_presences: int | None = None,
        broadcast_pool_size: int | None = None,
    ) -> None:
        if not isinstance(pubsub, PubSub):
            raise ConfigError(f"pubsub must be a PubSub, not {type(pubsub).__name__}")
        if type(name) is not str or not name or "\0" in name:
            raise ConfigError(f"name must be a non-empty str, not {name!r}")
        if permdown_on_shutdown is None:
            permdown_on_shutdown = pubsub.auto_named
        if type(permdown_on_shutdown) is not bool:
            raise ConfigError(f"permdown_on_shutdown must be a bool, not {permdown_on_shutdown!r}")
        if type(log_level) is not int:
            raise ConfigError(f"log_level must be an int logging level, not {log_level!r}")
        self._handle = self._resolve_handler(handler)
        self.options = Options(
            broadcast_period=broadcast_period,
            max_silent_periods=max_silent_periods,
            down_period=down_period,
            permdown_period=permdown_period,
            clock_sample_periods=clock_sample_periods,
            max_delta_sizes=max_delta_sizes,
            pool_size=pool_size,
            transfer_timeout=transfer_timeout,
            transfer_part_values=transfer_part_values,
            max_presences=max_presences,
            transfer_part_bytes=(
                pubsub.max_frame_bytes // 2 if transfer_part_bytes is None else transfer_part_bytes
            ),
        )
        if self.options.transfer_part_bytes > pubsub.max_frame_bytes // 2:
            raise ConfigError(
                f"transfer_part_bytes ({transfer_part_bytes}) must be at most half the "
                f"PubSub's max_frame_bytes ({pubsub.max_frame_bytes}): parts must fit a frame"
            )
        self.sharding = Sharding(pool_size, broadcast_pool_size)
        self._migrating = self.sharding.migrating  # read on every call: a frozen Sharding
        self._sets: ShardSets | None = None
        self._runner_of: dict[int, _Runner] = {}  # id(shard) -> its runner
        self.name = name
        self.pubsub = pubsub
        self.permdown_on_shutdown = permdown_on_shutdown
        self.log_level = log_level
        self._rng = random.Random()
        self._state = _Phase.NEW
        self._runners: list[_Runner] = []
        self.vsn = 0
        self._task_ids: dict[asyncio.Task[Any], str] = {}
        self._streams: set[asyncio.Task[None]] = set()
        self._owner_counter = 0
        self._negotiated = Versions()
        self._members_seen = -2  # the PubSub members_generation of that choice
        self._left_out: list[str] = []
        self._logged: set[tuple[str, object]] = set()
        self._synced = asyncio.Event()
        self._sync_watch = True  # False once synced: the hot path then checks one bool
        self._started_mono = 0.0
        self.counters: dict[str, int] = {
            "handler_errors": 0,
            "receive_errors": 0,
            "send_errors": 0,
            "overflows": 0,
            "diffs_reported": 0,
            "unreadable": 0,
        }

    @staticmethod
    def _resolve_handler(
        handler: Handler | None,
    ) -> Callable[[Diff], Awaitable[object] | object] | None:
        if handler is None:
            return None
        method = getattr(handler, "handle_diff", None)
        if callable(method):
            return method  # type: ignore[no-any-return]
        if callable(handler):
            return handler
        raise ConfigError(
            "handler must be a callable or an object with a handle_diff method, "
            f"not {type(handler).__name__}"
        )

    # ------------------------------------------------------------ life cycle

    @property
    def running(self) -> bool:
        """Whether the tracker is started and not stopping or stopped."""
        return self._state is _Phase.RUNNING

    @property
    def node(self) -> str:
        """This node's name (the PubSub's)."""
        return self.pubsub.node_name

    @property
    def synced(self) -> bool:
        """Whether the first sync with the cluster is done (a node's readiness).

        True once the tracker runs and, in every shard, every live node with a tracker
        (a PubSub member that announces one and shares a version with us) is an up
        replica, a clock comparison (every ``clock_sample_periods`` ticks) ran after the
        last replica came up, and no transfer is outstanding: this node holds what its
        up peers held when it met them. A member not heard within ``down_period`` of the
        start is not waited for (it would be down by then); with no peers it is True
        after the first ticks. Once True it stays True: later replicas coming and going
        are the cluster's life, not start-up.
        """
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait until :attr:`synced` is True (returns at once when it already is).

        A tracker stopped before its first sync never gets there: bound the wait
        (``asyncio.timeout``) when that can happen.
        """
        await self._synced.wait()

    def _watch_sync(self, runner: _Runner, out: Output) -> None:
        """Before the first sync: count a shard's ticks and replicas up, then judge."""
        if any(event.kind == "up" for event in out.events):
            runner.up_tick = runner.ticks
        if out.next_tick is None:  # judged after ticks only: they sample the clocks
            return
        runner.ticks += 1
        samples = self.options.clock_sample_periods
        if self._state is not _Phase.RUNNING:
            return
        for each in self._runners:
            shard = each.shard
            if shard.transfers_outstanding or (
                len(shard.replicas) and each.ticks - each.up_tick < samples
            ):
                return
        down_period = self.options.down_period
        assert down_period is not None  # Options computes it
        if time.monotonic() - self._started_mono < down_period:
            refused = self._negotiated.refused
            for name, ranges in self.pubsub.member_versions().items():
                if "tracker" not in ranges or name in refused:
                    continue
                for each in self._runners:
                    replica = each.shard.replicas.get(name)
                    if replica is None or replica.status != "up":
                        return
        self._synced.set()
        self._sync_watch = False
        log.log(
            self.log_level,
            "tracker %r on %s: first sync done",
            self.name,
            self.node,
            extra={"tracker": self.name, "replicas": len(self._runners[0].shard.replicas)},
        )

    async def __aenter__(self) -> Tracker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Make the shards, subscribe them and start their timers.

        Raises:
            TrackerNotRunning: The tracker was already started, or the PubSub is not
                running.
        """
        if self._state is not _Phase.NEW:
            raise TrackerNotRunning(f"tracker {self.name!r} can start only once")
        if not self.pubsub.running:
            raise TrackerNotRunning("start the PubSub before the tracker")
        node = self.pubsub.node_name
        self.pubsub.announce("tracker", _TRACKER.low, _TRACKER.high)
        self.pubsub.announce("transfer", _TRANSFER.low, _TRANSFER.high)
        self.vsn = _new_vsn(node, self.pubsub.incarnation, self._rng)
        now = self._started_mono = time.monotonic()
        firsts: list[float] = []
        # one set of shards per pool size (two while re-sharding: tracker_zmq.sharding);
        # shard i of each set shares topic i, and a message's pool field says which reads it
        self._sets = ShardSets(
            node, self.vsn, self.options, self.sharding, self._rng, encoder=_encode
        )
        subs: list[Subscription] = []
        for i in range(self.sharding.slots):
            topic = f"phx_presence:{self.name}_shard{i}"
            subs.append(self.pubsub.subscribe(topic, callback=self._receiver(i), link=False))
        for shard in self._sets.shards:
            runner = _Runner(shard, f"phx_presence:{self.name}_shard{shard.index}")
            runner.sub = subs[shard.index]
            self._runners.append(runner)
            self._runner_of[id(shard)] = runner
            firsts.append(shard.start(now))
        self._negotiate(force=True)
        self._state = _Phase.RUNNING
        for runner, first in zip(self._runners, firsts, strict=True):
            runner.tasks.append(asyncio.create_task(self._tick_loop(runner, first)))
            runner.tasks.append(asyncio.create_task(self._handler_loop(runner)))

    async def stop(self) -> None:
        """Stop the tracker: its timers, subscriptions and handler tasks. Idempotent.

        With ``permdown_on_shutdown`` this is :meth:`graceful_permdown`. Otherwise peers
        see this node go silent: its presences leave after ``down_period``. Diffs already
        queued are delivered to the handler first (for at most a few seconds).
        """
        if self._state is _Phase.RUNNING and self.permdown_on_shutdown:
            await self.graceful_permdown()
            return
        if self._state in (_Phase.STOPPING, _Phase.STOPPED):
            return
        await self._shutdown()

    async def graceful_permdown(self) -> None:
        """Tell every peer to forget this node now, then stop the tracker.

        Each shard broadcasts its graceful-permdown message a few times, one
        ``broadcast_period`` apart, so one lost message does not leave its presences
        hanging until ``down_period``. Peers report the leaves at once.

        Raises:
            TrackerNotRunning: The tracker is not running.
        """
        self._check_running()
        self._state = _Phase.STOPPING
        for runner in self._runners:
            self._cancel_tick(runner)
        outputs = [runner.shard.graceful_permdown() for runner in self._runners]
        try:
            for round_ in range(_PERMDOWN_SENDS):
                if round_:
                    await asyncio.sleep(self.options.broadcast_period)
                for runner, out in zip(self._runners, outputs, strict=True):
                    self._send(runner, out)
                with contextlib.suppress(PubSubError):
                    await self.pubsub.flush()
        finally:
            await self._shutdown()

    def _cancel_tick(self, runner: _Runner) -> None:
        if runner.tasks:
            runner.tasks[0].cancel()

    async def _shutdown(self) -> None:
        self._state = _Phase.STOPPING
        ticks = [runner.tasks[0] for runner in self._runners if runner.tasks]
        ticks += self._streams
        for task in ticks:
            task.cancel()
        await asyncio.gather(*ticks, return_exceptions=True)
        for runner in self._runners:
            runner.shard.close()  # outstanding transfers: a paused collector resumes
            if runner.sub is not None:
                with contextlib.suppress(PubSubError):
                    self.pubsub.unsubscribe(runner.sub)  # shared by two sets: idempotent
                runner.sub = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HANDLER_DRAIN_TIMEOUT):
                for runner in self._runners:
                    await runner.queue.join()
        handlers = [task for runner in self._runners for task in runner.tasks[1:]]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for runner in self._runners:
            runner.tasks.clear()
        for task, _ in list(self._task_ids.items()):
            task.remove_done_callback(self._owner_done)
        self._task_ids.clear()
        self._state = _Phase.STOPPED

    def _check_running(self) -> None:
        if self._state is not _Phase.RUNNING:
            raise TrackerNotRunning(f"tracker {self.name!r} is {self._state}, not running")

    # -------------------------------------------------------------- the API

    def track(self, owner: OwnerArg, topic: Topic, key: Key, meta: Meta) -> str:
        """Track a presence of ``owner`` under ``key`` in ``topic``.

        The meta gets a ``phx_ref`` (unique across nodes and restarts). Local handlers
        see the join soon after (not before this returns); peers see it with the next
        heartbeat. An asyncio Task as ``owner`` is untracked when it finishes.

        Returns:
            The new ``phx_ref``.

        Raises:
            AlreadyTracked: This node already tracks (owner, topic, key).
            TooManyPresences: This node already tracks ``max_presences``.
            TypeError: An id is not a str or an int, or the meta does not encode.
            TrackerNotRunning: The tracker is not running.
        """
        if self._state is not _Phase.RUNNING:
            self._check_running()
        # The ids are checked here, once (the owner in _owner_id): not again below.
        if not (type(topic) is str or type(topic) is int):
            check_id("topic", topic)
        if not (type(key) is str or type(key) is int):
            check_id("key", key)
        limit = self.options.max_presences
        if limit is not None and self.local_presences() >= limit:
            raise TooManyPresences(
                f"node {self.node!r} already tracks {limit} presences (max_presences)", limit
            )
        if type(owner) is str or type(owner) is int:
            owner_id: str | int = owner
        else:
            task_id = self._owner_id(owner, create=True)
            assert task_id is not None
            owner_id = task_id
        if self._migrating:
            return self._migrating_write(
                self._sets_().track(owner_id, topic, key, meta, checked=True)
            )
        runners = self._runners
        runner = runners[0] if len(runners) == 1 else self._runner(topic)
        # The hot path: the shard's join, and its one-presence diff queued as _apply would
        # (as one tuple: the handler loop builds the diff just before the handler)
        ref, entry = runner.shard.track_unreported(owner_id, topic, key, meta)
        self.counters["diffs_reported"] += 1
        runner.queue.put_nowait((topic, key, entry[3]))
        return ref

    def untrack(self, owner: OwnerArg, topic: Topic | None = None, key: Key | None = None) -> None:
        """Stop tracking one presence, or with only ``owner`` every presence of it.

        Nothing happens for a presence that is not tracked.

        Raises:
            TypeError: ``topic`` given without ``key`` (or the reverse), or a bad id.
            TrackerNotRunning: The tracker is not running.
        """
        self._check_running()
        if (topic is None) != (key is None):
            raise TypeError("untrack takes owner, or owner, topic and key")
        if topic is None:
            owner_id = self._owner_id(owner, create=False)
            if isinstance(owner, asyncio.Task):
                self._forget_task(owner)
            if owner_id is not None:
                self._untrack_owner(owner_id)
            return
        assert key is not None
        check_id("topic", topic)
        owner_id = self._owner_id(owner, create=False)
        if owner_id is None:
            return
        if self._migrating:
            self._migrating_write(("", self._sets_().untrack(owner_id, topic, key)))
            return
        runner = self._runner(topic)
        self._apply(runner, runner.shard.untrack(owner_id, topic, key))

    def update(
        self,
        owner: OwnerArg,
        topic: Topic,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
    ) -> str:
        """Replace a presence's meta, or pass a function that gets a copy of the old one.

        The new meta gets a new ``phx_ref`` and the old one's as ``phx_ref_prev``.

        Returns:
            The new ``phx_ref``.

        Raises:
            NoPresence: This node does not track (owner, topic, key).
            TypeError: A bad id, or a new meta that does not encode.
            TrackerNotRunning: The tracker is not running.
        """
        self._check_running()
        # The ids are checked here, once (the owner in _owner_id): not again below.
        check_id("topic", topic)
        check_id("key", key)
        owner_id = self._owner_id(owner, create=False)
        if owner_id is None:
            raise NoPresence(f"owner {owner!r} tracks no {key!r} in topic {topic!r}")
        if self._migrating:
            return self._migrating_write(
                self._sets_().update(owner_id, topic, key, meta, checked=True)
            )
        runner = self._runner(topic)
        ref, out = runner.shard.update(owner_id, topic, key, meta, checked=True)
        self._apply(runner, out)
        return ref

    def local_presences(self) -> int:
        """How many presences this node tracks (over all shards; remote ones excluded)."""
        if self._migrating:
            return self._sets_().local_count()
        return sum(runner.shard.state.local_count() for runner in self._runners)

    def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every visible presence of ``topic``, cluster-wide, as ``(key, meta)``.

        Raises:
            TrackerNotRunning: The tracker is not running.
        """
        self._check_running()
        check_id("topic", topic)
        if self._migrating:
            return self._sets_().list(topic)
        return self._runner(topic).shard.list(topic)

    def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[str | int, Meta]]:
        """Every visible presence of ``key`` in ``topic`` as ``(owner, meta)``.

        Owners that were Tasks appear as the string ids that stood in for them.

        Raises:
            TrackerNotRunning: The tracker is not running.
        """
        self._check_running()
        check_id("topic", topic)
        if self._migrating:
            return self._sets_().get_by_key(topic, key)
        return self._runner(topic).shard.get_by_key(topic, key)

    @contextlib.asynccontextmanager
    async def tracking(
        self, owner: OwnerArg, topic: Topic, key: Key, meta: Meta
    ) -> AsyncIterator[str]:
        """Track a presence for the duration of an ``async with`` block.

        Yields:
            The presence's ``phx_ref``.
        """
        ref = self.track(owner, topic, key, meta)
        try:
            yield ref
        finally:
            if self._state is _Phase.RUNNING:
                self.untrack(owner, topic, key)

    def owner_id(self, owner: OwnerArg) -> str | int | None:
        """The id that stands for ``owner`` in results: itself, or a Task's string id.

        None for a Task that tracks nothing here.
        """
        return self._owner_id(owner, create=False)

    def stats(self) -> dict[str, Any]:
        """Counters of the tracker and of each shard, and their totals.

        Returns:
            A dict with ``name``, ``node``, ``vsn``, ``pool_size``, ``sharding``
            (``broadcast_pool_size``; the shard sets run, ``sets``; the
            nodes heard only in a sharding this node does not run, ``mismatched``, by
            name, with their pool size; and ``merged_presences``, what a node between
            shardings lists), ``running``, the
            tracker's own counters (handler errors and so on; ``unreadable``: heartbeats
            and permdowns sent in a version some live node cannot read, one per such
            node and message), ``replicas`` (each remote
            node's vsn and status, merged over the shards: ``"mixed"`` when the shards
            disagree), ``versions`` (``tracker`` and ``transfer``: the ranges this node
            speaks, ``[low, high]``; ``broadcast``: the version of heartbeats now;
            ``peers``: per live node with a tracker, the ``tracker`` version and the
            ``transfer`` format of requests and answers to it; ``refused``: per refused
            node, the reason; ``left_out``: nodes that cannot read the heartbeats),
            ``totals`` (the shards' counters summed, with ``presences`` (each once,
            also between shardings) and ``drops``, where ``no_common_version`` counts
            the messages of refused nodes and ``other_sharding`` the messages of a pool
            size this node does not run) and
            ``shards`` (each shard's own stats).
        """
        shards = [runner.shard.stats() for runner in self._runners]
        totals: dict[str, Any] = {}
        drops: dict[str, int] = {}
        replicas: dict[str, dict[str, Any]] = {}
        for stats in shards:
            for field, value in stats.items():
                if type(value) is int:
                    totals[field] = totals.get(field, 0) + value
            for reason, count in stats["drops"].items():
                drops[reason] = drops.get(reason, 0) + count
            for node, info in stats["replicas"].items():
                seen = replicas.get(node)
                if seen is None:
                    replicas[node] = dict(info)
                    continue
                if info["vsn"] > seen["vsn"]:
                    seen["vsn"] = info["vsn"]
                if info["status"] != seen["status"]:
                    seen["status"] = "mixed"
        totals["drops"] = drops
        sharding = self._sharding_stats(totals)
        return {
            "name": self.name,
            "node": self.pubsub.node_name,
            "vsn": self.vsn,
            "pool_size": self.options.pool_size,
            "sharding": sharding,
            "running": self.running,
            **self.counters,
            "replicas": dict(sorted(replicas.items())),
            "versions": {
                "tracker": _TRACKER.to_json(),
                "transfer": _TRANSFER.to_json(),
                "broadcast": self._negotiated.broadcast,
                "peers": {
                    name: {"tracker": version, "transfer": self._negotiated.transfer[name]}
                    for name, version in sorted(self._negotiated.direct.items())
                },
                "refused": dict(sorted(self._negotiated.refused.items())),
                "left_out": list(self._left_out),
            },
            "totals": totals,
            "shards": shards,
        }

    # -------------------------------------------------------------- owners

    def _owner_id(self, owner: OwnerArg, *, create: bool) -> str | int | None:
        if not isinstance(owner, asyncio.Task):
            check_id("owner", owner)
            return owner
        owner_id = self._task_ids.get(owner)
        if owner_id is None and create:
            self._owner_counter += 1
            owner_id = f"{self.pubsub.node_name}:{self.vsn}:{self._owner_counter}"
            self._task_ids[owner] = owner_id
            owner.add_done_callback(self._owner_done)
        return owner_id

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        if self._task_ids.pop(task, None) is not None:
            task.remove_done_callback(self._owner_done)

    def _owner_done(self, task: asyncio.Task[Any]) -> None:
        # Phoenix links the tracked pid: its death untracks all of its presences
        owner_id = self._task_ids.pop(task, None)
        if owner_id is not None and self._state is _Phase.RUNNING:
            self._untrack_owner(owner_id)

    def _untrack_owner(self, owner_id: str | int) -> None:
        for runner in self._runners:
            self._apply(runner, runner.shard.untrack_owner(owner_id))

    # ---------------------------------------------------------------- I/O

    def _runner(self, topic: Topic) -> _Runner:
        return self._runners[shard_for(topic, self.options.pool_size)]

    def _receiver(self, slot: int) -> Callable[[Any], None]:
        def receive(message: Any) -> None:
            if self._state is not _Phase.RUNNING:
                return
            if isinstance(message, Overflow):
                self.counters["overflows"] += 1
                log.warning(
                    "tracker %r shard %d: %d messages dropped (subscription overflow)",
                    self.name,
                    slot,
                    message.dropped,
                )
                return
            shard = self._sets_().reader(slot, message, time.monotonic())
            if shard is None:
                return  # another sharding's: counted in drops.other_sharding
            runner = self._runner_of[id(shard)]
            try:
                out = runner.shard.receive(message, time.monotonic())
            except Exception:
                self.counters["receive_errors"] += 1
                log.exception("tracker %r shard %d: receive failed", self.name, runner.index)
                return
            self._apply(runner, out)

        return receive

    async def _tick_loop(self, runner: _Runner, due: float) -> None:
        shard = runner.shard
        period = self.options.broadcast_period
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() - due > period:
                await self._drain_input(runner)
            try:
                self._negotiate()
                self._judge_sharding()
                out = shard.tick(time.monotonic())
            except Exception:
                # never let a bug kill the heartbeat: log, count, try again next period
                self.counters["receive_errors"] += 1
                log.exception("tracker %r shard %d: tick failed", self.name, runner.index)
                due = time.monotonic() + period
                continue
            if out.next_tick is not None:
                due = out.next_tick
            self._apply(runner, out)

    async def _drain_input(self, runner: _Runner) -> None:
        """After a stall, let the loop read what piled up before the shard judges."""
        # a few short real sleeps, not bare yields: after a SIGSTOP the frames sit in the
        # kernel until ZeroMQ's I/O thread reads them, and the PubSub then needs loop
        # turns to decode and dispatch them
        shard = runner.shard
        for round_ in range(_STALL_DRAIN_ROUNDS):
            before = shard.counters["messages_in"]
            await asyncio.sleep(_STALL_DRAIN_SLEEP)
            if round_ >= 2 and shard.counters["messages_in"] == before:
                return

    def _negotiate(self, *, force: bool = False) -> None:
        """Choose the versions to speak from the members' ranges; tell the shards."""
        generation = self.pubsub.members_generation
        if generation == self._members_seen and not force:
            return  # nobody came, went or announced anything since the last choice
        self._members_seen = generation
        direct: dict[str, int] = {}
        formats: dict[str, int] = {}
        refused: dict[str, str] = {}
        readers: dict[str, Range] = {}
        for name, ranges in self.pubsub.member_versions().items():
            theirs = ranges.get("tracker")
            if theirs is None:
                continue  # no tracker there (or its announcement is still on its way)
            version = negotiation.direct(_TRACKER, theirs)
            their_formats = ranges.get("transfer")
            fmt = None if their_formats is None else negotiation.direct(_TRANSFER, their_formats)
            if version is None:
                refused[name] = (
                    f"no common tracker version: it speaks {theirs}, we speak {_TRACKER}"
                )
            elif fmt is None:
                refused[name] = (
                    f"no common transfer format: it speaks {their_formats or 'none'}, "
                    f"we speak {_TRANSFER}"
                )
            else:
                direct[name] = version
                formats[name] = fmt
                readers[name] = theirs
        chosen = negotiation.broadcast(_TRACKER, readers.values())
        versions = Versions(_TRACKER.high if chosen is None else chosen, direct, formats, refused)
        if versions == self._negotiated and not force:
            return
        self._negotiated = versions
        for runner in self._runners:
            runner.shard.set_versions(versions)
        self._left_out = negotiation.left_out(chosen, readers)
        for name in self._left_out:
            if self._log_once((name, readers[name])):
                log.warning(
                    "tracker %r on %s: node %s cannot read heartbeats: they go in tracker "
                    "version %d, the lowest the live nodes speak; it speaks %s, we speak %s",
                    self.name,
                    self.node,
                    name,
                    versions.broadcast,
                    readers[name],
                    _TRACKER,
                )

    def _log_once(self, key: tuple[str, object]) -> bool:
        if key in self._logged:
            return False
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        return True

    def _log_refusals(self, refusals: builtins.list[tuple[Ref, str]]) -> None:
        for ref, reason in refusals:
            if self._log_once(ref):
                log.warning(
                    "tracker %r on %s: refused the messages of %s (vsn %d): %s "
                    "(counted in drops.no_common_version)",
                    self.name,
                    self.node,
                    ref[0],
                    ref[1],
                    reason,
                    extra={
                        "tracker": self.name,
                        "replica": ref[0],
                        "vsn": ref[1],
                        "reason": reason,
                    },
                )

    def _apply(self, runner: _Runner, out: Output) -> None:
        if self._sync_watch:
            self._watch_sync(runner, out)
        if self._migrating:
            for shard, settled in self._sets_().settle(runner.shard, out, time.monotonic()):
                self._carry_out(self._runner_of[id(shard)], settled)
            return
        self._carry_out(runner, out)

    def _carry_out(self, runner: _Runner, out: Output) -> None:
        if out.refusals:
            self._log_refusals(out.refusals)
        if out.sends:
            self._send(runner, out)
        for parts in out.later:
            task = asyncio.create_task(self._stream(runner, parts))
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)
        if out.diff:
            self.counters["diffs_reported"] += 1
            runner.queue.put_nowait(out.diff)
        for event in out.events:
            log.log(
                self.log_level,
                "tracker %r shard %d on %s: replica %s:%d %s",
                self.name,
                runner.index,
                self.pubsub.node_name,
                event.ref[0],
                event.ref[1],
                event.kind,
                extra={
                    "tracker": self.name,
                    "shard": runner.index,
                    "replica": event.ref[0],
                    "vsn": event.ref[1],
                    "status": str(event.kind),
                },
            )

    # ------------------------------------------------------------ re-sharding

    def _sets_(self) -> ShardSets:
        assert self._sets is not None, "the shard sets are made at start"
        return self._sets

    def _migrating_write(self, result: tuple[str, builtins.list[tuple[Shard, Output]]]) -> str:
        """Carry out a local write made in both shard sets (see tracker_zmq.sharding)."""
        ref, outs = result
        for shard, out in outs:
            self._apply(self._runner_of[id(shard)], out)
        return ref

    def _judge_sharding(self) -> None:
        """Log the nodes heard only in a sharding this node does not run (a skipped step)."""
        sets = self._sets_()
        if not sets.drops:
            return
        for ref, pool in sets.judge(time.monotonic()):
            log.warning(
                "tracker %r on %s: node %s (vsn %d) runs pool_size %d and this node runs %s: "
                "they do not see each other's presences (counted in drops.other_sharding). "
                "Change pool_size in two deployments, through broadcast_pool_size "
                "(see the operating guide, Re-sharding)",
                self.name,
                self.node,
                ref[0],
                ref[1],
                pool,
                " and ".join(str(size) for size in self.sharding.sizes),
            )

    def _sharding_stats(self, totals: dict[str, Any]) -> dict[str, Any]:
        if self._sets is None:
            return {
                "broadcast_pool_size": self.sharding.broadcast_pool_size,
                "sets": list(self.sharding.sizes),
                "mismatched": {},
                "merged_presences": None,
            }
        stats = self._sets.stats()
        drops: dict[str, int] = totals["drops"]
        for reason, count in stats["drops"].items():
            drops[reason] = drops.get(reason, 0) + count
        if self._sets.view is not None:
            totals["presences"] = len(self._sets.view)
        return {
            "broadcast_pool_size": stats["broadcast_pool_size"],
            "sets": stats["sets"],
            "mismatched": stats["mismatched"],
            "merged_presences": stats["merged_presences"],
        }

    def _send(self, runner: _Runner, out: Output) -> None:
        sub = runner.sub
        for send in out.sends:
            try:
                if send.node is None:
                    if sub is not None:
                        self.pubsub.broadcast_from(sub, runner.topic, Encoded(send.data))
                        if self._left_out:
                            self.counters["unreadable"] += len(self._left_out)
                else:
                    self.pubsub.direct_broadcast(send.node, runner.topic, Encoded(send.data))
            except (PubSubError, TypeError, ValueError) as exc:
                self.counters["send_errors"] += 1
                log.warning("tracker %r shard %d: send failed: %s", self.name, runner.index, exc)

    async def _stream(self, runner: _Runner, parts: Iterator[Send]) -> None:
        """Send a large answer part by part, letting the loop run (and tick) in between."""
        try:
            for send in parts:  # each part is built as it is pulled
                self._send(runner, Output(sends=[send]))
                await asyncio.sleep(0)
        except Exception:
            self.counters["send_errors"] += 1
            log.exception(
                "tracker %r shard %d: answering a transfer failed", self.name, runner.index
            )

    async def _handler_loop(self, runner: _Runner) -> None:
        queue = runner.queue
        while True:
            item = await queue.get()
            try:
                if self._handle is not None:
                    if isinstance(item, tuple):
                        item = {item[0]: ([(item[1], item[2])], [])}
                    result = self._handle(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("tracker %r shard %d: handler raised", self.name, runner.index)
            finally:
                queue.task_done()


def _encode(data: object) -> bytes:
    """The Shards' encoder: orjson, as the PubSub encodes, so the bytes go out as they are."""
    return orjson.dumps(data)
