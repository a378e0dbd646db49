"""Presence on top of the Tracker: a port of ``Phoenix.Presence``. Not pure: it runs a
:class:`~tracker_zmq.Tracker` and publishes on its :class:`~pubsub_zmq.PubSub`.

Theory of operation
-------------------
A :class:`Presence` owns one Tracker (it builds it from the PubSub and the tracker
options, as ``use Phoenix.Presence`` starts its own tracker) and is that tracker's diff
handler (:meth:`Presence.handle_diff`). It may instead run over a tracker built elsewhere
(``tracker=``, as a :class:`~tracker_zmq.Node` made with ``presence=True`` does), whose
handler then passes every diff to ``handle_diff``. It adds three things to the Tracker:

* **Grouping.** ``list(topic)`` turns the Tracker's ``[(key, meta)]`` into Phoenix's
  ``{"<key>": {"metas": [meta, ...]}}`` with every key as a string, then passes it
  through the :meth:`Presence.fetch` hook. An int key ``1`` and a str key ``"1"`` would
  merge into one entry, so ``list`` raises :class:`KeyCollision` instead, and ``track``
  refuses to add the second one when it can see the first.
* **presence_diff broadcasts.** Each Tracker diff (they reach the handler in order, one
  queue per shard) becomes, per topic, ``joins`` and ``leaves`` grouped the same way and
  fetched, and is published with ``pubsub.local_broadcast(topic, message)`` as
  ``{"event": "presence_diff", "payload": {"joins": {...}, "leaves": {...}}}``. Every
  node computes its own diffs from its own replica, so the broadcast is local, as in
  Phoenix: the subscribers of each node hear it from their own node. An update is one
  diff with the key in both ``joins`` (the new meta, with ``phx_ref_prev``) and
  ``leaves`` (the old meta). The payloads of ``list`` (``presence_state``) and of the
  broadcast (``presence_diff``) are what the ``phoenix`` npm client's
  ``Presence.syncState`` and ``Presence.syncDiff`` take.
* **Client state** (Phoenix 1.7's optional ``init/1`` and ``handle_metas/4``). A subclass
  that overrides :meth:`Presence.handle_metas` gets a per-node view of every topic,
  ``{key: (meta, ...)}``, kept from the diffs (joins added, then leaves removed, by
  ``phx_ref``), and is called after each topic's broadcast with the diff, that view and
  its own state, which :meth:`Presence.init` made at start.

Hooks never break the tracker: an exception in ``fetch`` while a diff is published is
logged and counted and the diff goes out without the fetched extras (so clients stay in
step); one in ``handle_metas`` is logged and counted and the state is kept. ``list`` and
``get_by_key`` call ``fetch`` in the caller's frame, so there its exceptions reach the
caller.

Where this differs from Phoenix: ``fetch`` is not called for an empty ``joins`` or
``leaves``; metas are copies (the tracker's own are shared and must stay unchanged);
topics are PubSub topics, so they must be strings; client-state views match metas by
``phx_ref`` (as phoenix.js does) rather than by whole-value equality; ``init`` is optional
(it defaults to the empty state).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Self, TypeAlias, TypedDict

from crdt_state import Key, Meta
from pubsub_zmq import PubSub, PubSubError
from pubsub_zmq.wire import topic_prefix
from tracker_zmq.errors import ConfigError, KeyCollision
from tracker_zmq.shard import Diff
from tracker_zmq.tracker import OwnerArg, Tracker

__all__ = ["KeyCollision", "Presence", "PresenceDiff", "Presences", "TopicPresences"]

log = logging.getLogger("tracker_zmq.presence")

Presences: TypeAlias = dict[str, dict[str, Any]]
"""Presences grouped by key, Phoenix's shape: ``{"<key>": {"metas": [meta, ...]}}``.

Keys are strings; ``fetch`` may add fields beside ``"metas"`` (``{"metas": [...],
"user": {...}}``). Every meta carries ``phx_ref``, and ``phx_ref_prev`` after an update.
"""

TopicPresences: TypeAlias = Mapping[str, Sequence[Meta]]
"""The client-state view of one topic given to ``handle_metas``: ``{key: (meta, ...)}``."""


class PresenceDiff(TypedDict):
    """The payload of a ``presence_diff`` broadcast, and the diff ``handle_metas`` gets."""

    joins: Presences
    """Presences that joined, or the new metas of updated ones."""
    leaves: Presences
    """Presences that left, or the old metas of updated ones."""


def _twin(key: Key) -> Key | None:
    """The key of the other type that prints the same, or None when there is none."""
    if type(key) is int:
        return str(key)
    assert isinstance(key, str)
    try:
        number = int(key)
    except ValueError:  # not a number, or more digits than int() accepts
        return None
    return number if str(number) == key else None


def _group(entries: Iterable[tuple[Key, Meta]]) -> tuple[Presences, builtins.list[str]]:
    """Phoenix's ``group/1``: ``{str(key): {"metas": [meta copies, ...]}}``, in order.

    Returns:
        The grouped presences, and the keys under which an int and a str key met.
    """
    grouped: Presences = {}
    originals: dict[str, Key] = {}
    collisions: builtins.list[str] = []
    for key, meta in entries:
        name = str(key)
        entry = grouped.get(name)
        if entry is None:
            grouped[name] = {"metas": [dict(meta)]}
            originals[name] = key
            continue
        entry["metas"].append(dict(meta))
        if type(originals[name]) is not type(key) and name not in collisions:
            collisions.append(name)
    return grouped, collisions


def _collision_message(topic: str, names: Sequence[str]) -> str:
    shown = ", ".join(f"{int(name)} and {name!r}" for name in names)
    return (
        f"topic {topic!r} has presences under both an int and a str key ({shown}); "
        "Presence keys are strings, so these would merge: use one type of key per topic"
    )


def _ref(meta: Any) -> Any:
    return meta.get("phx_ref") if isinstance(meta, dict) else None


def _refs(metas: Iterable[Any]) -> set[Any]:
    return {_ref(meta) for meta in metas}


def _metas(presence: Any) -> builtins.list[Any]:
    metas = presence.get("metas") if isinstance(presence, dict) else None
    return metas if isinstance(metas, builtins.list) else []


class Presence:
    """Phoenix.Presence: grouped presences, ``presence_diff`` broadcasts and hooks.

    A Presence builds and owns its ``Tracker`` (available as ``tracker``, for
    ``stats()`` or ``graceful_permdown()``) and is its diff handler. Start it with
    ``async with presence`` on the PubSub's event loop, like a Tracker; its methods are
    plain methods, called on that loop's thread while it runs.

    Customise it by subclassing, as ``use Phoenix.Presence`` does with callbacks:
    override ``fetch`` to add data to every presence listed or broadcast, and
    ``handle_metas`` (with ``init``) to keep and react to a per-node view of each
    topic's presences.

    ```python
    async with PubSub("web-1", bind="tcp://127.0.0.1:5550") as pubsub:
        async with Presence(pubsub, broadcast_period=1.0) as presence:
            sub = pubsub.subscribe("room:42")
            presence.track(asyncio.current_task(), "room:42", "alice", {"status": "online"})
            print(presence.list("room:42"))
            # {"alice": {"metas": [{"status": "online", "phx_ref": "..."}]}}
            print(await sub.get())
            # {"event": "presence_diff",
            #  "payload": {"joins": {"alice": {"metas": [...]}}, "leaves": {}}}
    ```

    Args:
        pubsub: The node's PubSub (started before the presence, stopped after it).
            Diffs are published on it with ``local_broadcast``.
        name: The tracker's name (default ``"presence"``): presences of the same name
            on different nodes replicate with each other.
        tracker: A Tracker built elsewhere on ``pubsub``, instead of one of the
            Presence's own: its handler must pass every diff to :meth:`handle_diff`
            (``Node(..., presence=True)`` builds such a pair). Its owner starts and
            stops it: this Presence's ``start`` then only calls ``init`` (call it
            before the tracker starts), and its ``stop`` does nothing.
        **tracker_options: Any other ``Tracker`` option (``pool_size``,
            ``broadcast_period``, ``down_period`` ...), except ``handler``: the
            Presence is the handler. None with ``tracker``.

    Attributes:
        tracker: The Tracker this Presence runs.
        pubsub: The PubSub the diffs are published on.
        counters: ``fetch_errors``, ``handle_metas_errors``, ``key_collisions`` (diffs
            in which an int and a str key met) and ``diffs_published`` (broadcasts).

    Raises:
        ConfigError: A ``handler`` was given, a tracker option is invalid, or a
            ``tracker`` came with a ``name`` of its own, tracker options, or another
            PubSub.
    """

    def __init__(
        self,
        pubsub: PubSub,
        name: str | None = None,
        *,
        tracker: Tracker | None = None,
        **tracker_options: Any,
    ) -> None:
        if "handler" in tracker_options:
            raise ConfigError(
                "a Presence is its tracker's handler: override Presence.handle_metas, or "
                "subscribe to the topic's presence_diff broadcasts, instead of a handler"
            )
        self.pubsub = pubsub
        self._owns_tracker = tracker is None
        if tracker is None:
            tracker = Tracker(pubsub, name or "presence", handler=self, **tracker_options)
        elif not isinstance(tracker, Tracker):
            raise ConfigError(f"tracker must be a Tracker, not {type(tracker).__name__}")
        elif tracker_options or (name is not None and name != tracker.name):
            raise ConfigError(
                "a Presence over a given tracker takes its name and options from it: "
                "pass neither a name nor tracker options"
            )
        elif tracker.pubsub is not pubsub:
            raise ConfigError("the tracker given runs on another PubSub than the Presence's")
        self.tracker = tracker
        self.counters: dict[str, int] = {
            "fetch_errors": 0,
            "handle_metas_errors": 0,
            "key_collisions": 0,
            "diffs_published": 0,
        }
        self._client = type(self).handle_metas is not Presence.handle_metas
        self._client_state: Any = None
        self._topics: dict[str, dict[str, tuple[Meta, ...]]] = {}
        self._lock = asyncio.Lock()
        self._started = False

    # ------------------------------------------------------------ life cycle

    @property
    def name(self) -> str:
        """The tracker's name."""
        return self.tracker.name

    @property
    def running(self) -> bool:
        """Whether the presence's tracker is started and not stopping or stopped."""
        return self.tracker.running

    @property
    def client_state(self) -> Any:
        """The state ``init`` made and ``handle_metas`` last returned.

        None unless a subclass overrides ``handle_metas``.
        """
        return self._client_state

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Call ``init`` (with client state on) and start the tracker (unless it was
        given: see ``tracker``).

        Raises:
            TrackerNotRunning: Already started, or the PubSub is not running.
        """
        if self._client and not self._started:
            state = self.init({})
            if inspect.isawaitable(state):
                state = await state
            self._client_state = state
        if self._owns_tracker:
            await self.tracker.start()
        self._started = True

    async def stop(self) -> None:
        """Stop the tracker (idempotent); diffs already queued are published first.

        A tracker given to the constructor is left to its owner.
        """
        if self._owns_tracker:
            await self.tracker.stop()

    # -------------------------------------------------------------- the API

    def track(self, owner: OwnerArg, topic: str, key: Key, meta: Meta) -> str:
        """Track a presence of ``owner`` under ``key`` in ``topic``.

        ``topic`` is also the PubSub topic its diffs are published on. A ``presence_diff``
        with the join follows on every node: on this one soon after this returns, on the
        others after a heartbeat. An asyncio Task as ``owner`` is untracked when it
        finishes.

        Args:
            owner: What holds the presence: a str or int id, or an asyncio Task.
            topic: The topic, a PubSub topic.
            key: The presence's key (str or int; listed as a string).
            meta: A JSON-able dict; it gets ``phx_ref``.

        Returns:
            The new ``phx_ref``.

        Raises:
            AlreadyTracked: This node already tracks (owner, topic, key).
            KeyCollision: ``topic`` already lists the other type of the same key
                (``1`` against ``"1"``).
            TypeError: ``topic`` is not a str, an id is not a str or an int, or the meta
                does not encode.
            InvalidTopic: ``topic`` is not a valid PubSub topic (empty, NUL, too long).
            TrackerNotRunning: The tracker is not running.
        """
        topic_prefix(topic)
        twin = _twin(key) if type(key) in (str, int) else None
        if twin is not None and self.tracker.get_by_key(topic, twin):
            raise KeyCollision(_collision_message(topic, [str(key)]))
        return self.tracker.track(owner, topic, key, meta)

    def untrack(self, owner: OwnerArg, topic: str | None = None, key: Key | None = None) -> None:
        """Stop tracking one presence, or with only ``owner`` every presence of it.

        Nothing happens for a presence that is not tracked.

        Args:
            owner: The owner as given to ``track`` (a Task or its id).
            topic: The topic, or None with ``key`` None for all of the owner's.
            key: The key, or None.

        Raises:
            TypeError: ``topic`` given without ``key`` (or the reverse), or a bad id.
            TrackerNotRunning: The tracker is not running.
        """
        self.tracker.untrack(owner, topic, key)

    def update(
        self,
        owner: OwnerArg,
        topic: str,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
    ) -> str:
        """Replace a presence's meta, or pass a function that gets a copy of the old one.

        The new meta gets a new ``phx_ref`` and the old one's as ``phx_ref_prev``; the
        ``presence_diff`` has the key in both ``joins`` (new) and ``leaves`` (old).

        Args:
            owner: The owner as given to ``track``.
            topic: The topic.
            key: The key.
            meta: The new meta, or a function from (a copy of) the old meta to it.

        Returns:
            The new ``phx_ref``.

        Raises:
            NoPresence: This node does not track (owner, topic, key).
            TypeError: A bad id, or a new meta that does not encode.
            TrackerNotRunning: The tracker is not running.
        """
        return self.tracker.update(owner, topic, key, meta)

    @contextlib.asynccontextmanager
    async def tracking(
        self, owner: OwnerArg, topic: str, key: Key, meta: Meta
    ) -> AsyncIterator[str]:
        """Track a presence for the duration of an ``async with`` block.

        Args:
            owner: As for ``track``.
            topic: As for ``track``.
            key: As for ``track``.
            meta: As for ``track``.

        Yields:
            The presence's ``phx_ref``.
        """
        ref = self.track(owner, topic, key, meta)
        try:
            yield ref
        finally:
            if self.tracker.running:
                self.untrack(owner, topic, key)

    def list(self, topic: str) -> Presences:
        """Every visible presence of ``topic``, cluster-wide, grouped by key and fetched.

        The shape of Phoenix's ``presence_state``: ``{"<key>": {"metas": [meta, ...]}}``,
        with keys as strings and the metas of a key in no specified order; an empty
        topic gives ``{}``. The metas are copies.

        Args:
            topic: The topic.

        Returns:
            The presences of the topic, as ``fetch`` returned them.

        Raises:
            KeyCollision: The topic holds an int and a str key that print the same.
            TrackerNotRunning: The tracker is not running.
            Exception: Whatever ``fetch`` raises.
        """
        grouped, collisions = _group(self.tracker.list(topic))
        if collisions:
            raise KeyCollision(_collision_message(topic, collisions))
        if not grouped:
            return grouped
        return self.fetch(topic, grouped)

    def get_by_key(self, topic: str, key: Key) -> dict[str, Any] | builtins.list[Any]:
        """The presence of ``key`` in ``topic``: ``{"metas": [meta, ...]}``, fetched.

        Like Phoenix, this looks up the key as given (``1`` does not find ``"1"``) and
        returns ``[]`` when nothing is tracked under it (or ``fetch`` drops it).

        Args:
            topic: The topic.
            key: The key, of the type it was tracked with.

        Returns:
            The key's presence, as ``fetch`` returned it, or ``[]``.

        Raises:
            TrackerNotRunning: The tracker is not running.
            Exception: Whatever ``fetch`` raises.
        """
        entries = self.tracker.get_by_key(topic, key)
        if not entries:
            return []
        name = str(key)
        fetched = self.fetch(topic, {name: {"metas": [dict(meta) for _, meta in entries]}})
        presence = fetched.get(name)
        return presence if presence is not None else []

    # ----------------------------------------------------------------- hooks

    def fetch(self, topic: str, presences: Presences) -> Presences:
        """Hook: add data to presences before they are listed or broadcast.

        Called by ``list`` and ``get_by_key``, and for each topic of each diff, once for
        its ``joins`` and once for its ``leaves`` (not when empty). Return the presences,
        usually the same keys with extra fields beside ``"metas"``: one query for all the
        keys, rather than one per presence. It runs on the event loop, so keep it quick
        (a cache, not a network call). The default returns ``presences`` unchanged.

        ```python
        class UserPresence(Presence):
            def fetch(self, topic, presences):
                users = load_users(presences.keys())   # {id: {...}} in one query
                return {key: {**p, "user": users[key]} for key, p in presences.items()}
        ```

        Args:
            topic: The topic.
            presences: ``{"<key>": {"metas": [meta, ...]}}``: copies, free to change.

        Returns:
            The presences to list or broadcast.
        """
        return presences

    def init(self, state: dict[str, Any]) -> Any:
        """Hook: make the client state at start (Phoenix's ``init/1``); sync or async.

        Called once by ``start``, only when a subclass overrides
        ``handle_metas``. The default returns ``state`` (an empty dict).

        Args:
            state: An empty dict.

        Returns:
            The first client state, later given to ``handle_metas``.
        """
        return state

    def handle_metas(
        self, topic: str, diff: PresenceDiff, presences: TopicPresences, state: Any
    ) -> Any:
        """Hook: react to a change of ``topic``'s presences (Phoenix's ``handle_metas/4``).

        Override it to turn on the client state: this node then keeps, per topic, every
        visible presence as ``{key: (meta, ...)}`` (joins appended, then leaves removed,
        by ``phx_ref``; a key without metas and a topic without keys are dropped), and
        calls this after each topic's ``presence_diff`` broadcast, in diff order, one call
        at a time. It may be async: diffs wait for it. An exception is logged and the
        state kept.

        Args:
            topic: The topic that changed.
            diff: The ``joins`` and ``leaves`` just broadcast (fetched).
            presences: The topic's presences after the diff: a read-only live view.
            state: The client state (from ``init`` or the previous call).

        Returns:
            The new client state.
        """
        return state

    # -------------------------------------------------------------- diffs

    async def handle_diff(self, diff: Diff) -> None:
        """Publish a tracker diff as ``presence_diff`` broadcasts, then run ``handle_metas``.

        The Presence's own tracker calls it, for each diff in order. Over a tracker
        given to the constructor, that tracker's handler calls it (and awaits it) with
        each diff it gets; nothing else should.

        Args:
            diff: ``{topic: (joins, leaves)}``, as the Tracker hands its handler.
        """
        published: builtins.list[tuple[str, PresenceDiff]] = []
        for topic, (joins, leaves) in diff.items():
            if type(topic) is not str:
                continue  # tracked through .tracker: not a PubSub topic, nothing to publish
            payload = PresenceDiff(
                joins=self._fetch_diff(topic, joins), leaves=self._fetch_diff(topic, leaves)
            )
            if not payload["joins"] and not payload["leaves"]:
                continue
            try:
                self.pubsub.local_broadcast(topic, {"event": "presence_diff", "payload": payload})
            except (PubSubError, TypeError) as exc:
                log.warning("presence %r: cannot publish on %r: %s", self.name, topic, exc)
            else:
                self.counters["diffs_published"] += 1
            published.append((topic, payload))
        if self._client:
            async with self._lock:  # one call at a time, whichever shard the diff is from
                for topic, payload in published:
                    await self._call_handle_metas(topic, payload)

    def _fetch_diff(self, topic: str, entries: builtins.list[tuple[Key, Meta]]) -> Presences:
        grouped, collisions = _group(entries)
        if collisions:
            self.counters["key_collisions"] += 1
            log.error("presence %r: %s", self.name, _collision_message(topic, collisions))
        if not grouped:
            return grouped
        try:
            fetched = self.fetch(topic, grouped)
            if not isinstance(fetched, dict):
                raise TypeError(f"fetch must return a dict, not {type(fetched).__name__}")
        except Exception:
            self.counters["fetch_errors"] += 1
            log.exception(
                "presence %r: fetch raised for topic %r; publishing without it", self.name, topic
            )
            return _group(entries)[0]  # fresh copies: fetch may have changed the first ones
        return fetched

    async def _call_handle_metas(self, topic: str, payload: PresenceDiff) -> None:
        view = self._merge(topic, payload)
        try:
            state = self.handle_metas(topic, payload, view, self._client_state)
            if inspect.isawaitable(state):
                state = await state
        except Exception:
            self.counters["handle_metas_errors"] += 1
            log.exception("presence %r: handle_metas raised for topic %r", self.name, topic)
            return
        self._client_state = state

    def _merge(self, topic: str, payload: PresenceDiff) -> TopicPresences:
        """Apply a diff to the client state's view of ``topic`` (Phoenix's merge_diff)."""
        presences = self._topics.setdefault(topic, {})
        for key, presence in payload["joins"].items():
            joined = _metas(presence)
            current = presences.get(key)
            if current is None:
                presences[key] = tuple(joined)
                continue
            known = _refs(current)
            presences[key] = (*current, *(m for m in joined if _ref(m) not in known))
        for key, presence in payload["leaves"].items():
            current = presences.get(key)
            if current is None:
                continue
            gone = _refs(_metas(presence))
            remaining = tuple(m for m in current if _ref(m) not in gone)
            if remaining:
                presences[key] = remaining
            else:
                del presences[key]
        if not presences:
            del self._topics[topic]
        return MappingProxyType(presences)
