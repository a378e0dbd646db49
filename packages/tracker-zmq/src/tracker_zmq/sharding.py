"""Re-sharding a running cluster: the shard sets of one node and their merged view. Pure.

Phoenix.PubSub 2.2 changes a cluster's ``pool_size`` in two deployments with
``broadcast_pool_size``; this module does the same for the tracker, whose shards hold
state: ``Tracker(pool_size=N, broadcast_pool_size=M)``.

Theory of operation
-------------------
A shard replicates only with the same-numbered shard of a node with the same pool size
(a message carries ``pool: [size, "crc32"]``; :func:`message_pool`). Changing the pool
size from M to N goes through three kinds of node:

* an **M node** (``pool_size=M``) runs the M shard set: it writes, reads and lists M;
* a **node between shardings** (``pool_size=N, broadcast_pool_size=M``) runs both sets,
  as two independent replicas of the same ref ``(node, vsn)``: every local write goes
  into both (the same presence, the same meta and ``phx_ref``), it reads both, and it
  lists their **merged view** (:class:`MergedView`), where one presence, ``(node,
  owner, topic, key)``, counts once;
* an **N node** (``pool_size=N``) runs the N set only.

Step 1 replaces the M nodes by nodes between shardings, one at a time; step 2 replaces
those by N nodes. At every moment each live node shows every presence exactly once: an
M node reads the M copies that every other node of step 1 writes; an N node reads the N
copies that every node of step 2 writes; a node between shardings reads both and
counts each presence once. An M node and an N node side by side (a skipped step) share
no sharding: each drops the other's messages (``drops.other_sharding``) and, after a
grace period in which a node between shardings would have shown up in a set we read,
lists it in ``mismatched`` and the Tracker logs a warning.

Why the CRDT rules hold: each State is untouched (a tag belongs to one set's State, and
each set runs the unchanged protocol among the nodes that run it), so each set on its
own converges, never resurrects a removed value and never holds one presence twice.
The merged view is a pure function of the two States' visible sets: for each ``(node,
owner, topic, key)`` it shows the copy of the highest vsn, the primary set's (N's) on a
tie, so it holds each presence at most once and holds it while either set does. Its
diffs are the differences of that function before and after each change, so they
never report a presence twice or leave one that is still shown. A node seen with a new
vsn in one set permdowns the old vsn in the other set too (:meth:`ShardSets.settle`), as
a single set does, so a restart from one kind to the next leaves no ghosts; and a
permdown is remembered per set, so a late message of the old vsn is dropped in both.

A removal can lag: after an untrack, a node between shardings keeps showing the
presence from the set whose heartbeat has not arrived yet (at most one heartbeat), as
any peer does before the heartbeat arrives; it never shows it again afterwards.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from crdt_state import Entry, Key, Meta, Owner, Topic, check_ids
from tracker_zmq.errors import ConfigError, NoPresence
from tracker_zmq.options import Options
from tracker_zmq.replica import Ref, Status
from tracker_zmq.shard import Diff, Output, Shard
from tracker_zmq.wire import HASH_NAME, encode_json, sender_of, shard_for

__all__ = ["MergedView", "ShardSets", "Sharding", "message_pool"]

_Ident = tuple[str, Owner, Key]  # (node name, owner, key) within a topic
_Slot = tuple[int, int]  # (vsn, 1 for the primary set, 0 for the other)


@dataclass(frozen=True, slots=True)
class Sharding:
    """How a node shards its tracker: the pool size, and the one it still serves.

    Attributes:
        pool_size: The shard count this node moves to (its primary set).
        broadcast_pool_size: The shard count the rest of the cluster still runs, served
            beside ``pool_size`` while the cluster changes over; None (or equal to
            ``pool_size``): one set, no migration.
    """

    pool_size: int = 1
    broadcast_pool_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("pool_size", "broadcast_pool_size"):
            value = getattr(self, name)
            if value is None and name == "broadcast_pool_size":
                continue
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, not {value!r}")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The pool sizes of the shard sets this node runs, the primary first."""
        other = self.broadcast_pool_size
        if other is None or other == self.pool_size:
            return (self.pool_size,)
        return (self.pool_size, other)

    @property
    def migrating(self) -> bool:
        """Whether this node runs two shard sets (it is between shardings)."""
        return len(self.sizes) == 2

    @property
    def slots(self) -> int:
        """How many shard topics the node subscribes to: the larger pool size."""
        return max(self.sizes)


def message_pool(data: object) -> int | None:
    """The pool size a tracker message was sent in (its ``pool`` field), if it has one."""
    if type(data) is not dict:
        return None
    pool = data.get("pool")
    if (
        type(pool) is list
        and len(pool) == 2
        and type(pool[0]) is int
        and pool[0] >= 1
        and pool[1] == HASH_NAME
    ):
        return pool[0]
    return None


def _replica(entry: Entry) -> Ref:
    # a tracker's replicas are refs, (node name, vsn): the State's type is wider
    return entry.tag[0]  # type: ignore[return-value]


class MergedView:
    """What a node between shardings shows: its shard sets' visible sets, merged.

    One presence, ``(node, owner, topic, key)``, counts once: of its copies (one per set,
    per vsn of the node), the view shows the one of the highest vsn, and of the primary
    set on a tie. :meth:`apply` takes each set's changes as its Shards report them and
    returns the view's own diff.
    """

    __slots__ = ("_size", "_topics")

    def __init__(self) -> None:
        self._topics: dict[Topic, dict[_Ident, dict[_Slot, Meta]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def apply(self, primary: bool, changes: Iterable[tuple[list[Entry], list[Entry]]]) -> Diff:
        """Fold one set's changes (an Output's ``changes``) in; return the view's diff.

        Args:
            primary: Whether they are the primary set's changes.
            changes: ``(joins, leaves)`` lists of entries, in the order reported.

        Returns:
            ``{topic: (joins, leaves)}`` of what the view shows that changed: a presence
            whose shown copy changed meta leaves with the old one and joins with the new.
        """
        preference = 1 if primary else 0
        before: dict[tuple[Topic, _Ident], Meta | None] = {}
        topics = self._topics
        for joins, leaves in changes:
            for entry in leaves:
                copies = self._touch(entry, before)
                slot = (_replica(entry)[1], preference)
                meta = copies.get(slot)
                if meta is not None and meta.get("phx_ref") == entry.meta.get("phx_ref"):
                    del copies[slot]
            for entry in joins:
                copies = self._touch(entry, before)
                copies[(_replica(entry)[1], preference)] = entry.meta
        diff: Diff = {}
        for (topic, ident), old in before.items():
            idents = topics[topic]
            copies = idents[ident]
            new = copies[max(copies)] if copies else None
            if not copies:
                del idents[ident]
                if not idents:
                    del topics[topic]
            if old is new or (
                old is not None and new is not None and old.get("phx_ref") == new.get("phx_ref")
            ):
                continue
            pair = diff.get(topic)
            if pair is None:
                pair = diff[topic] = ([], [])
            key = ident[2]
            if old is not None:
                pair[1].append((key, old))
                self._size -= 1
            if new is not None:
                pair[0].append((key, new))
                self._size += 1
        return diff

    def _touch(
        self, entry: Entry, before: dict[tuple[Topic, _Ident], Meta | None]
    ) -> dict[_Slot, Meta]:
        topic = entry.topic
        ident: _Ident = (_replica(entry)[0], entry.owner, entry.key)
        idents = self._topics.get(topic)
        if idents is None:
            idents = self._topics[topic] = {}
        copies = idents.get(ident)
        if copies is None:
            copies = idents[ident] = {}
        if (topic, ident) not in before:
            before[(topic, ident)] = copies[max(copies)] if copies else None
        return copies

    def list(self, topic: Topic) -> builtins.list[tuple[Key, Meta]]:
        """Every presence the view shows in ``topic``, as ``(key, meta)``."""
        idents = self._topics.get(topic)
        if not idents:
            return []
        return [(ident[2], copies[max(copies)]) for ident, copies in idents.items()]

    def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[Owner, Meta]]:
        """Every presence the view shows of ``key`` in ``topic``, as ``(owner, meta)``.

        Costs time in proportion to the topic's presences (only while migrating).
        """
        idents = self._topics.get(topic)
        if not idents:
            return []
        return [
            (ident[1], copies[max(copies)])
            for ident, copies in idents.items()
            if ident[2] == key and type(ident[2]) is type(key)
        ]

    def presences(self) -> builtins.list[tuple[str, Topic, Owner, Key, Meta]]:
        """Everything the view shows, as ``(node, topic, owner, key, meta)``."""
        return [
            (ident[0], topic, ident[1], ident[2], copies[max(copies)])
            for topic, idents in self._topics.items()
            for ident, copies in idents.items()
        ]


class ShardSets:
    """The Shards of one node: one set per pool size it runs (see the module's theory).

    Pure, like the Shard: the caller (the Tracker, or the simulator) delivers messages to
    :meth:`reader`'s answer, ticks every shard, and passes every Output a shard returns
    through :meth:`settle` before carrying it out. With one set it adds nothing: reads,
    writes and lists go to the topic's shard as they always did.

    Args:
        node: This node's name.
        vsn: This node's incarnation, shared by all its shards.
        options: The tracker's options; each set's shards get them with their own
            ``pool_size``.
        sharding: The pool sizes to run.
        rng: Randomness: each shard gets a ``random.Random`` seeded from it, in order.
        encoder: The shards' encoder (see :class:`~tracker_zmq.shard.Shard`).
    """

    def __init__(
        self,
        node: str,
        vsn: int,
        options: Options,
        sharding: Sharding,
        rng: random.Random,
        encoder: Callable[[object], bytes] = encode_json,
    ) -> None:
        self.node = node
        self.vsn = vsn
        self.sharding = sharding
        self.sets: list[list[Shard]] = []
        for size in sharding.sizes:
            set_options = options if size == options.pool_size else replace(options, pool_size=size)
            self.sets.append(
                [
                    Shard(node, vsn, i, set_options, random.Random(rng.getrandbits(64)), encoder)
                    for i in range(size)
                ]
            )
        self.shards: list[Shard] = [shard for shards in self.sets for shard in shards]
        """Every shard, the primary set's first."""
        self.view: MergedView | None = MergedView() if sharding.migrating else None
        """The merged view, while between shardings; None with one set."""
        self.drops: dict[str, int] = {}
        """Messages no shard here reads: ``other_sharding`` (their pool size is not one
        this node runs; expected from a node between shardings, which sends both)."""
        self.mismatched: dict[str, int] = {}
        """Per node name, the pool size of a node that sends only in a sharding this
        node does not run (a skipped step): found by :meth:`judge`."""
        self._suspects: dict[Ref, tuple[int, float, float]] = {}  # pool, first, last seen
        self._grace = 2 * (options.max_silent_periods + 1) * options.broadcast_period
        self._max_suspects = options.max_replicas

    # ------------------------------------------------------------ routing

    def is_primary(self, shard: Shard) -> bool:
        """Whether ``shard`` belongs to the primary set (``pool_size``)."""
        return shard.options.pool_size == self.sharding.pool_size

    def shard(self, topic: Topic) -> Shard:
        """The primary set's shard of ``topic``."""
        shards = self.sets[0]
        return shards[shard_for(topic, len(shards))]

    def shards_of(self, topic: Topic) -> builtins.list[Shard]:
        """Each set's shard of ``topic``, the primary's first."""
        return [shards[shard_for(topic, len(shards))] for shards in self.sets]

    def reader(self, slot: int, data: object, now: float) -> Shard | None:
        """The shard that reads a message that came on shard topic ``slot``.

        A message of a pool size this node does not run is counted in
        ``drops.other_sharding`` (and its sender watched, see :meth:`judge`); None then.
        A message without a readable ``pool`` goes to the primary set, whose Shard
        drops and counts it as invalid.
        """
        pool = message_pool(data)
        for shards in self.sets:
            if pool is None or pool == len(shards):
                return shards[slot] if slot < len(shards) else None
        self.drops["other_sharding"] = self.drops.get("other_sharding", 0) + 1
        ref = sender_of(data)
        if ref is not None and pool is not None:
            known = self._suspects.get(ref)
            if known is None and len(self._suspects) >= self._max_suspects:
                self._suspects.clear()
            self._suspects[ref] = (pool, now if known is None else known[1], now)
        return None

    def judge(self, now: float) -> builtins.list[tuple[Ref, int]]:
        """Find the nodes that send only in a sharding this node does not run.

        A node between shardings sends in both, so within a grace period (twice an idle
        replica's heartbeat interval) one of our sets hears it; a node still unheard
        after that, and still sending, runs another sharding only: a step of the change
        was skipped. (An incarnation that stopped within the grace period, say one
        between shardings whose last goodbye came in the old sharding, is forgotten.)

        Returns:
            The newly mismatched refs with their pool size (for the caller to log);
            they are also listed in :attr:`mismatched` until a set of ours hears them.
        """
        found: list[tuple[Ref, int]] = []
        grace = self._grace
        for ref, (pool, first, last) in list(self._suspects.items()):
            if self._heard(ref):
                del self._suspects[ref]
                if self.mismatched.get(ref[0]) == pool:
                    del self.mismatched[ref[0]]
            elif now - last > grace:
                del self._suspects[ref]  # silent: gone (a mismatch stays listed)
            elif last - first >= grace and self.mismatched.get(ref[0]) != pool:
                self.mismatched[ref[0]] = pool
                found.append((ref, pool))
        return found

    def _heard(self, ref: Ref) -> bool:
        for shard in self.shards:
            replica = shard.replicas.get(ref[0])
            if replica is not None and replica.vsn >= ref[1]:
                return True
        return False

    # ------------------------------------------------------------ local API

    def track(
        self, owner: Owner, topic: Topic, key: Key, meta: Meta, *, checked: bool = False
    ) -> tuple[str, builtins.list[tuple[Shard, Output]]]:
        """Track a presence in each set (one ``phx_ref``); see :meth:`Shard.track`.

        Returns:
            The ``phx_ref`` and each shard's Output (pass each through :meth:`settle`).
        """
        if not checked:
            check_ids(owner, topic, key)
        first, *others = self.shards_of(topic)
        ref, out = first.track(owner, topic, key, meta, checked=True)
        outs = [(first, out)]
        for shard in others:
            outs.append((shard, shard.track(owner, topic, key, meta, checked=True, phx_ref=ref)[1]))
        return ref, outs

    def update(
        self,
        owner: Owner,
        topic: Topic,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
        *,
        checked: bool = False,
    ) -> tuple[str, builtins.list[tuple[Shard, Output]]]:
        """Update a presence in each set (one new ``phx_ref``); see :meth:`Shard.update`.

        A function is called once, with a copy of the primary set's meta.

        Raises:
            NoPresence: This node does not track (owner, topic, key).
        """
        if not checked:
            check_ids(owner, topic, key)
        first, *others = self.shards_of(topic)
        if others and callable(meta):
            old = first.state.get(owner, topic, key)
            if old is None or old.tag[0] != first.ref:
                raise NoPresence(f"owner {owner!r} tracks no {key!r} in topic {topic!r}")
            meta = meta(dict(old.meta))
        ref, out = first.update(owner, topic, key, meta, checked=True)
        outs = [(first, out)]
        for shard in others:
            outs.append(
                (shard, shard.update(owner, topic, key, meta, checked=True, phx_ref=ref)[1])
            )
        return ref, outs

    def untrack(self, owner: Owner, topic: Topic, key: Key) -> builtins.list[tuple[Shard, Output]]:
        """Untrack one presence in each set."""
        return [(shard, shard.untrack(owner, topic, key)) for shard in self.shards_of(topic)]

    def untrack_owner(self, owner: Owner) -> builtins.list[tuple[Shard, Output]]:
        """Untrack every presence of ``owner`` in every shard."""
        return [(shard, shard.untrack_owner(owner)) for shard in self.shards]

    def list(self, topic: Topic) -> builtins.list[tuple[Key, Meta]]:
        """Every presence this node shows in ``topic``, each once."""
        if self.view is not None:
            return self.view.list(topic)
        return self.shard(topic).list(topic)

    def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[Owner, Meta]]:
        """Every presence this node shows of ``key`` in ``topic``, each once."""
        if self.view is not None:
            return self.view.get_by_key(topic, key)
        return self.shard(topic).get_by_key(topic, key)

    def local_count(self) -> int:
        """How many presences this node tracks (each once: the primary set's)."""
        return sum(shard.state.local_count() for shard in self.sets[0])

    def presences(self) -> int:
        """How many presences this node shows (each once)."""
        if self.view is not None:
            return len(self.view)
        return sum(len(shard.state) for shard in self.shards)

    # ------------------------------------------------------------ outputs

    def settle(self, shard: Shard, out: Output, now: float) -> builtins.list[tuple[Shard, Output]]:
        """Finish a shard's Output before the caller carries it out.

        With one set: the Output as it is. Between shardings: its diff becomes the
        merged view's, and a replica that came up in one set with a new vsn is
        permdowned at its old vsn in the other set (a node restarted from one kind to
        the next sends in one set only), whose Outputs follow, settled too.

        Returns:
            ``(shard, Output)`` pairs to carry out, in order, the given one first.
        """
        view = self.view
        if view is None:
            return [(shard, out)]
        done: list[tuple[Shard, Output]] = []
        pending = [(shard, out)]
        while pending:
            current, output = pending.pop(0)
            output.diff = view.apply(self.is_primary(current), output.changes)
            done.append((current, output))
            primary = self.is_primary(current)
            for event in output.events:
                if event.kind is not Status.UP:
                    continue
                name, vsn = event.ref
                newer = False
                for other in self.shards:
                    if self.is_primary(other) == primary:
                        continue
                    known = other.replicas.get(name)
                    if known is None or known.vsn == vsn:
                        continue
                    if known.vsn < vsn:
                        pending.append((other, other.permdown_replica(known.ref, now)))
                    else:
                        newer = True
                if newer:  # a late message of an incarnation the other set saw replaced
                    pending.append((current, current.permdown_replica(event.ref, now)))
        return done

    def stats(self) -> dict[str, Any]:
        """The sharding, the drops and mismatched nodes, and what the view shows."""
        return {
            "pool_size": self.sharding.pool_size,
            "broadcast_pool_size": self.sharding.broadcast_pool_size,
            "sets": list(self.sharding.sizes),
            "drops": dict(self.drops),
            "mismatched": dict(sorted(self.mismatched.items())),
            "merged_presences": None if self.view is None else len(self.view),
        }
