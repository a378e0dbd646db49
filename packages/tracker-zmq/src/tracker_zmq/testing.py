"""A deterministic simulator of a tracker cluster: Shards on a virtual clock, a faulty network.

This module runs the pure protocol core, :class:`~tracker_zmq.Shard`, exactly as the
asyncio layer does (tick when each Output's ``next_tick`` says, deliver what peers
send), but in virtual time and over an in-memory :class:`Network` that can lose,
delay, duplicate, reorder and partition messages. Nodes can crash, restart with a new
incarnation, pause (as if sent SIGSTOP) and leave gracefully. Everything random (the
network's fates, the shards' jitter, the incarnations) comes from one seeded
:class:`random.Random`: the same seed and the same calls give the same run, event for
event.

It does no I/O, reads no clock and does not import Hypothesis: it is plain code, for
any test framework. :func:`network_configs` is the one Hypothesis helper; it imports
Hypothesis when called.

Driving it from a test::

    from tracker_zmq import Options
    from tracker_zmq.shard import Versions
    from tracker_zmq.testing import Cluster, Network

    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)
    cluster = Cluster(options, seed=7, nodes=["a", "b", "c"],
                      network=Network(loss=0.05, duplicate=0.05, reorder=0.1))
    cluster.track("a", "user:1", "room", "alice", {"status": "online"})
    assert cluster.settle()                        # every live node sees the same
    assert cluster.list("c", "room") == cluster.list("a", "room")

    cluster.network.partition({"a"}, {"b", "c"})   # a netsplit...
    cluster.run_for(options.down + 0.5)            # ...outlasting down_period
    assert cluster.list("b", "room") == []         # alice's presence left on b
    cluster.network.heal()
    assert cluster.settle()                        # and rejoined after the heal

    cluster.crash("a"); cluster.restart("a")       # a new incarnation, empty state
    cluster.node("b").diffs                        # every diff b reported, in order

    cluster.set_versions("b", Versions(refused={"c": "no common tracker version"}))

Nodes may run different shardings (a cluster changing its pool size, see
:mod:`tracker_zmq.sharding`): ``add_node(name, sharding)`` and ``restart(name,
sharding)`` take a :class:`~tracker_zmq.sharding.Sharding`; every node's shards run in a
:class:`~tracker_zmq.sharding.ShardSets`, which routes what arrives by its pool size and
merges the view of a node between shardings (``list`` and ``presences`` show it).

Versions are an input of each Shard (:class:`~tracker_zmq.shard.Versions`), which the
real Tracker computes from the ranges the nodes announce; :meth:`Cluster.set_versions`
gives a node's shards the ones a test chooses (mixed or refused peers), and keeps them
across its restarts.

Time only moves in :meth:`Cluster.run_until`, :meth:`Cluster.run_for` and
:meth:`Cluster.settle`; local writes (``track``, ``untrack``, ``update``) happen at the
current virtual time and report their diff at once, like the real tracker. Every diff,
replica event and message sent is recorded (:attr:`SimNode.diffs`,
:attr:`SimNode.events`, :attr:`Cluster.sent`) for assertions.

Measuring a large cluster: every node counts the bytes and messages it puts on the
network and takes off it, by message kind (:attr:`SimNode.traffic`, a :class:`Traffic`);
:attr:`Cluster.on_diff` sees each diff as it is reported, and ``record_messages`` and
``record_diffs`` set to False keep the run's memory flat (``bench/bench_scale.py`` runs
100 nodes this way)::

    cluster.record_messages = cluster.record_diffs = False
    cluster.on_diff = lambda node, record: seen.append((node.name, record.time))
    cluster.run_for(60.0)
    cluster.node("a").traffic.bytes_sent["hb"]     # heartbeat bytes a sent, per receiver
"""

from __future__ import annotations

import builtins
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from crdt_state import Entry, Key, Meta, Owner, Topic
from tracker_zmq.options import Options
from tracker_zmq.replica import Ref, Status
from tracker_zmq.shard import Diff, Output, ReplicaEvent, Shard, Versions
from tracker_zmq.sharding import Sharding, ShardSets

__all__ = [
    "Cluster",
    "DiffRecord",
    "EventRecord",
    "Network",
    "Presence",
    "SentRecord",
    "SimNode",
    "Traffic",
    "network_configs",
]

Presence = tuple[Topic, Owner, Key, str]
"""A presence as the simulator compares them: ``(topic, owner, key, phx_ref)``."""


@dataclass(frozen=True, slots=True)
class DiffRecord:
    """A diff a node reported.

    Attributes:
        time: Virtual time, in seconds.
        vsn: The incarnation of the node that reported it.
        shard: The shard's index.
        diff: ``{topic: (joins, leaves)}``, as a handler would get it.
    """

    time: float
    vsn: int
    shard: int
    diff: Diff


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A replica event (up, down, permdown) a node reported.

    Attributes:
        time: Virtual time, in seconds.
        vsn: The incarnation of the node that reported it.
        shard: The shard's index.
        event: The event; ``event.ref`` is the remote replica's ``(name, vsn)``.
    """

    time: float
    vsn: int
    shard: int
    event: ReplicaEvent


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A message a shard sent (once, whatever became of it on the network).

    Attributes:
        time: Virtual time, in seconds.
        sender: The sending shard's ref ``(node name, vsn)``.
        shard: The shard's index.
        to: None for a broadcast, else the addressed node's name.
        message: The message's wire form; ``message["t"]`` is its kind (``hb``,
            ``treq``, ``tack``, ``perm``).
    """

    time: float
    sender: Ref
    shard: int
    to: str | None
    message: dict[str, Any]


class Network:
    """A faulty in-memory network: the fate of every message, and partitions.

    Each message (one per receiver) is lost with probability ``loss``, else delivered
    after a delay drawn uniformly from ``delay``, and delivered a second time with
    probability ``duplicate``. Between one sender and one receiver, messages arrive in
    the order sent (as over pubsub-zmq) unless ``reorder`` picks them to be held back by
    up to ``reorder_delay`` more seconds, letting later ones overtake them.

    Blocked links lose everything on them, also messages already in flight when the
    link is cut. Attributes may be changed between steps of a run (for example, set
    ``loss`` to 0 before checking convergence).

    Args:
        rng: The randomness of fates; None: the :class:`Cluster` gives it one drawn from
            its seed.
        delay: ``(min, max)`` seconds of a delivery's latency.
        loss: Probability that a message is lost.
        duplicate: Probability that a delivered message is delivered twice.
        reorder: Probability that a message is held back and may be overtaken.
        reorder_delay: Most extra seconds a held-back message waits.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        delay: tuple[float, float] = (0.001, 0.005),
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.05,
    ) -> None:
        if not 0 <= delay[0] <= delay[1]:
            raise ValueError(f"delay must be (min, max) with 0 <= min <= max, not {delay!r}")
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability, not {p!r}")
        self.rng = rng
        self.delay = delay
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.blocked: set[tuple[str, str]] = set()
        self._last: dict[tuple[str, str], float] = {}
        self.lost = 0

    def _rng(self) -> random.Random:
        if self.rng is None:
            self.rng = random.Random(0)
        return self.rng

    def block(self, sender: str, receiver: str) -> None:
        """Cut the one-way link from ``sender`` to ``receiver``."""
        self.blocked.add((sender, receiver))

    def unblock(self, sender: str, receiver: str) -> None:
        """Restore the one-way link from ``sender`` to ``receiver``."""
        self.blocked.discard((sender, receiver))

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: no node of one group reaches a node of another, either way.

        Nodes not named keep their links. Partitions add up until :meth:`heal`.
        """
        sets = [set(group) for group in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        if x != y:
                            self.blocked.add((x, y))
                            self.blocked.add((y, x))

    def isolate(self, node: str, others: Iterable[str]) -> None:
        """Cut ``node`` off from every one of ``others``, both ways."""
        self.partition({node}, set(others) - {node})

    def heal(self) -> None:
        """Restore every link."""
        self.blocked.clear()

    def reachable(self, sender: str, receiver: str) -> bool:
        """Whether a message from ``sender`` to ``receiver`` can get through now."""
        return (sender, receiver) not in self.blocked

    def fates(self, sender: str, receiver: str, now: float) -> list[float]:
        """When a message sent now arrives: no time if lost, two if duplicated.

        Args:
            sender: The sending node's name.
            receiver: The receiving node's name.
            now: The virtual time of the send.
        """
        rng = self._rng()
        if not self.reachable(sender, receiver) or rng.random() < self.loss:
            self.lost += 1
            return []
        link = (sender, receiver)
        copies = 2 if rng.random() < self.duplicate else 1
        times = []
        for _ in range(copies):
            at = now + rng.uniform(*self.delay)
            if rng.random() < self.reorder:
                at += rng.uniform(0, self.reorder_delay)
            else:
                # FIFO per link, as pubsub-zmq delivers: never before an earlier message.
                at = max(at, self._last.get(link, at))
                self._last[link] = at
            times.append(at)
        return times


@dataclass(slots=True)
class Traffic:
    """What one node put on the network and took off it, by message kind.

    Kinds are the messages' ``t`` (``hb``, ``treq``, ``tack``, ``perm``). Bytes are the
    messages' encoded length (the JSON the Shard encoded), without the PubSub's frame
    header and the transport's framing. A broadcast counts once per receiver, as a
    PUB socket writes it once on each subscriber's connection; a message the network
    loses still counts as sent, and a duplicated one is received twice.

    Attributes:
        bytes_sent: Bytes sent, by kind.
        messages_sent: Messages sent (one per receiver), by kind.
        bytes_received: Bytes delivered to a live node (paused included), by kind.
        messages_received: Messages delivered to a live node, by kind.
    """

    bytes_sent: Counter[str] = field(default_factory=Counter)
    messages_sent: Counter[str] = field(default_factory=Counter)
    bytes_received: Counter[str] = field(default_factory=Counter)
    messages_received: Counter[str] = field(default_factory=Counter)

    def total_sent(self) -> int:
        """Bytes sent, all kinds."""
        return sum(self.bytes_sent.values())

    def total_received(self) -> int:
        """Bytes received, all kinds."""
        return sum(self.bytes_received.values())


@dataclass(slots=True)
class SimNode:
    """One node of a simulated cluster: its shards (one per pool slot) and its records.

    Attributes:
        name: The node's name (kept across restarts).
        vsn: The current incarnation; every restart gets a larger one.
        sets: The shard sets of the current incarnation (one, unless the node runs
            between two shardings: :mod:`tracker_zmq.sharding`).
        alive: False once crashed or gracefully left, until restarted.
        paused: True between :meth:`Cluster.pause` and :meth:`Cluster.resume`.
        diffs: Every diff the node reported, across incarnations.
        events: Every replica event the node reported, across incarnations.
        died_at: Virtual time of the last crash or leave, else None.
        traffic: Bytes and messages sent and received, by kind, across incarnations.
    """

    name: str
    vsn: int
    sets: ShardSets
    alive: bool = True
    paused: bool = False
    diffs: list[DiffRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    died_at: float | None = None
    inbox: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    missed_ticks: set[int] = field(default_factory=set)
    incarnation: int = 0
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def ref(self) -> Ref:
        """``(name, vsn)``: the ref of every shard of the current incarnation."""
        return (self.name, self.vsn)

    @property
    def shards(self) -> list[Shard]:
        """The Shards of the current incarnation: by index (with two shard sets, the
        primary set's, then the other's)."""
        return self.sets.shards

    @property
    def sharding(self) -> Sharding:
        """The pool sizes the current incarnation runs."""
        return self.sets.sharding

    def joins(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every ``(key, meta)`` reported as joining ``topic``, in order."""
        return [j for r in self.diffs if topic in r.diff for j in r.diff[topic][0]]

    def leaves(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every ``(key, meta)`` reported as leaving ``topic``, in order."""
        return [j for r in self.diffs if topic in r.diff for j in r.diff[topic][1]]

    def events_of(self, kind: str) -> list[Ref]:
        """The refs of every replica event of that kind (``up``, ``down``, ``permdown``)."""
        return [r.event.ref for r in self.events if r.event.kind == kind]


class Cluster:
    """Nodes running Shards over a :class:`Network`, in virtual time.

    Args:
        options: Every node's options (``pool_size`` shards per node).
        seed: The seed of all randomness.
        nodes: Names of nodes to start at time 0.
        network: The network; None: a reliable one with small delays.
        start_time: The virtual time to start at, in seconds.

    Attributes:
        record_messages: Whether :attr:`sent` records every message (default True).
        record_diffs: Whether each node's :attr:`SimNode.diffs` records every diff
            (default True); :attr:`on_diff` is called either way.
        on_diff: None, or called with the node and the record of each diff as it is
            reported (a large run measures visibility with it instead of keeping every
            diff).
    """

    def __init__(
        self,
        options: Options,
        *,
        seed: int = 0,
        nodes: Iterable[str] = (),
        network: Network | None = None,
        start_time: float = 0.0,
    ) -> None:
        self.options = options
        self.rng = random.Random(seed)
        self.network = network if network is not None else Network()
        if self.network.rng is None:
            self.network.rng = random.Random(self.rng.getrandbits(64))
        self.now = start_time
        self.nodes: dict[str, SimNode] = {}
        self.sent: list[SentRecord] = []
        self.record_messages = True
        self.record_diffs = True
        self.on_diff: Callable[[SimNode, DiffRecord], None] | None = None
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._last_vsn: dict[str, int] = {}
        self._versions: dict[str, Versions] = {}
        for name in nodes:
            self.add_node(name)

    # ------------------------------------------------------------- membership

    def _new_vsn(self, name: str) -> int:
        # Not the real minter (pubsub_zmq.new_incarnation reads the wall clock): a vsn
        # here only has to grow per name, on virtual time, and these draws are what every
        # seeded run replays (changing them changes each recorded seed's history).
        vsn = self._last_vsn.get(name, 0) + 1 + self.rng.randrange(1 << 16)
        self._last_vsn[name] = vsn
        return vsn

    def _new_shards(self, name: str, vsn: int, sharding: Sharding | None) -> ShardSets:
        if sharding is None:
            sharding = Sharding(self.options.pool_size)
        sets = ShardSets(name, vsn, self.options, sharding, self.rng)
        versions = self._versions.get(name)
        if versions is not None:
            for shard in sets.shards:
                shard.set_versions(versions)
        return sets

    def set_versions(self, name: str, versions: Versions) -> None:
        """Give node ``name``'s shards the versions negotiated with its peers, now and
        after each restart (in a real node, the Tracker's job).

        Raises:
            ValueError: A version a Shard cannot write (see :meth:`Shard.set_versions`).
        """
        node = self.nodes.get(name)
        for shard in node.shards if node is not None else ():
            shard.set_versions(versions)
        self._versions[name] = versions

    def add_node(self, name: str, sharding: Sharding | None = None) -> SimNode:
        """Start a new node now; its first ticks are jittered as in the real tracker.

        Args:
            name: Its name.
            sharding: The pool sizes it runs; None: ``options.pool_size`` alone.
        """
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists; use restart")
        vsn = self._new_vsn(name)
        node = SimNode(name, vsn, self._new_shards(name, vsn, sharding))
        self.nodes[name] = node
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        for position, shard in enumerate(node.shards):
            self._schedule_tick(node, position, shard.start(self.now))

    def node(self, name: str) -> SimNode:
        """The node of that name."""
        return self.nodes[name]

    def shard(self, name: str, topic: Topic) -> Shard:
        """The shard of node ``name`` that holds ``topic`` (of its primary set)."""
        return self.nodes[name].sets.shard(topic)

    def live(self) -> list[str]:
        """Names of the nodes that are running (paused ones included)."""
        return [name for name, node in self.nodes.items() if node.alive]

    def crash(self, name: str) -> None:
        """Stop a node at once, as a SIGKILL would: no goodbye, messages to it are lost."""
        node = self.nodes[name]
        if not node.alive:
            return
        node.alive = False
        node.paused = False
        node.inbox.clear()
        node.missed_ticks.clear()
        node.died_at = self.now
        node.incarnation += 1

    def restart(self, name: str, sharding: Sharding | None = None) -> SimNode:
        """Start a crashed or departed node again: same name, larger vsn, empty state.

        Args:
            name: The node.
            sharding: The pool sizes the new incarnation runs (a rolling deployment
                changes them); None: the same as before.
        """
        node = self.nodes[name]
        if node.alive:
            self.crash(name)
        node.vsn = self._new_vsn(name)
        node.sets = self._new_shards(name, node.vsn, sharding or node.sharding)
        node.alive = True
        node.incarnation += 1
        self._start(node)
        return node

    def pause(self, name: str) -> None:
        """Freeze a node, as SIGSTOP would: no ticks, and its input waits in a queue."""
        node = self.nodes[name]
        if node.alive:
            node.paused = True

    def resume(self, name: str) -> None:
        """Unfreeze a node: it reads its queued input, then runs its late ticks.

        A tick more than a period late skips its down judgements (the stall rule).
        """
        node = self.nodes[name]
        if not node.alive or not node.paused:
            return
        node.paused = False
        inbox, node.inbox = node.inbox, []
        for slot, message in inbox:
            self._receive(node, slot, message)
        missed, node.missed_ticks = sorted(node.missed_ticks), set()
        for index in missed:
            self._tick(node, node.incarnation, index)

    def graceful_permdown(self, name: str, repeats: int = 3) -> None:
        """Leave for good: tell every peer to forget this node now, then stop.

        The message is sent ``repeats`` times, a broadcast period apart, as the asyncio
        layer does; the node stops at once (it ticks and receives no more).
        """
        node = self.nodes[name]
        if not node.alive:
            return
        outputs = [shard.graceful_permdown() for shard in node.shards]
        ref, shards = node.ref, list(node.shards)
        self.crash(name)
        for i in range(repeats):
            at = self.now + i * self.options.broadcast_period
            for shard, out in zip(shards, outputs, strict=True):
                for send in out.sends:
                    self._at(at, self._sender(ref, name, shard.index, send.data, send.node))

    # ------------------------------------------------------------ local API

    def track(self, name: str, owner: Owner, topic: Topic, key: Key, meta: Meta) -> str:
        """Track a presence on node ``name``; returns its ``phx_ref``."""
        node = self._running(name)
        ref, outs = node.sets.track(owner, topic, key, meta)
        for shard, out in outs:
            self._apply(node, shard, out)
        return ref

    def untrack(
        self, name: str, owner: Owner, topic: Topic | None = None, key: Key | None = None
    ) -> None:
        """Untrack one presence, or with only ``owner``, all of that owner's."""
        node = self._running(name)
        if topic is None or key is None:
            outs = node.sets.untrack_owner(owner)
        else:
            outs = node.sets.untrack(owner, topic, key)
        for shard, out in outs:
            self._apply(node, shard, out)

    def update(
        self,
        name: str,
        owner: Owner,
        topic: Topic,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
    ) -> str:
        """Update a presence's meta on node ``name``; returns the new ``phx_ref``."""
        node = self._running(name)
        ref, outs = node.sets.update(owner, topic, key, meta)
        for shard, out in outs:
            self._apply(node, shard, out)
        return ref

    def list(self, name: str, topic: Topic) -> list[tuple[Key, Meta]]:
        """``list(topic)`` on node ``name``, sorted by key and ``phx_ref``."""
        entries = self.nodes[name].sets.list(topic)
        return sorted(entries, key=lambda e: (str(e[0]), str(e[1].get("phx_ref"))))

    def online(self, name: str) -> builtins.list[Entry]:
        """Every presence node ``name``'s shards show, of every shard (of both shard
        sets of a node between shardings: see :meth:`presences` for what it lists)."""
        return [e for shard in self.nodes[name].shards for e in shard.state.online_list()]

    def presences(self, name: str) -> set[Presence]:
        """What node ``name`` shows, as ``(topic, owner, key, phx_ref)`` (a node between
        shardings: its merged view)."""
        view = self.nodes[name].sets.view
        if view is not None:
            return {(t, o, k, m["phx_ref"]) for _, t, o, k, m in view.presences()}
        return {(e.topic, e.owner, e.key, e.meta["phx_ref"]) for e in self.online(name)}

    def _running(self, name: str) -> SimNode:
        node = self.nodes[name]
        if not node.alive:
            raise RuntimeError(f"node {name!r} is not running")
        return node

    # ------------------------------------------------------------- running

    def run_until(self, t: float) -> None:
        """Run every event due up to virtual time ``t``, then set the clock to ``t``."""
        queue = self._queue
        while queue and queue[0][0] <= t:
            at, _, action = heapq.heappop(queue)
            self.now = max(self.now, at)
            action()
        self.now = max(self.now, t)

    def run_for(self, seconds: float) -> None:
        """Run ``seconds`` of virtual time."""
        self.run_until(self.now + seconds)

    def converged(self) -> bool:
        """Whether the running nodes agree.

        True when no link between live nodes is blocked, and every live node that is
        not paused shows the same presences, sees every other such node up at its
        current vsn, and has no unsent delta.
        """
        names = [n for n in self.live() if not self.nodes[n].paused]
        if not names:
            return True
        if any(a in names and b in names for a, b in self.network.blocked):
            return False
        first = self.presences(names[0])
        for name in names:
            node = self.nodes[name]
            for shard in node.shards:
                if shard.state.has_delta():
                    return False
                for other in names:
                    if (
                        other == name
                        or shard.options.pool_size not in self.nodes[other].sharding.sizes
                    ):
                        continue
                    replica = shard.replicas.get(other)
                    if (
                        replica is None
                        or replica.vsn != self.nodes[other].vsn
                        or replica.status is not Status.UP
                    ):
                        return False
            if name != names[0] and self.presences(name) != first:
                return False
        return True

    def settle(self, timeout: float | None = None) -> bool:
        """Run until :meth:`converged` holds, checked every broadcast period.

        Args:
            timeout: Most virtual seconds to run; None: twice ``down_period`` plus ten
                broadcast periods.

        Returns:
            Whether the cluster converged in time (it cannot across a partition).
        """
        period = self.options.broadcast_period
        if timeout is None:
            timeout = 2 * self.options.down + 10 * period
        deadline = self.now + timeout
        while True:
            self.run_for(min(period, max(deadline - self.now, 0)))
            if self.converged():
                return True
            if self.now >= deadline:
                return False

    # ------------------------------------------------------------ internals

    def _at(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, action))

    def _schedule_tick(self, node: SimNode, index: int, at: float) -> None:
        incarnation = node.incarnation
        self._at(at, lambda: self._tick(node, incarnation, index))

    def _tick(self, node: SimNode, incarnation: int, index: int) -> None:
        if not node.alive or node.incarnation != incarnation:
            return
        if node.paused:
            node.missed_ticks.add(index)
            return
        shard = node.shards[index]
        out = shard.tick(self.now)
        next_tick = out.next_tick
        self._apply(node, shard, out)
        assert next_tick is not None
        self._schedule_tick(node, index, next_tick)

    def _receive(self, node: SimNode, slot: int, message: Any) -> None:
        shard = node.sets.reader(slot, message, self.now)
        if shard is not None:
            self._apply(node, shard, shard.receive(message, self.now))

    def _apply(self, node: SimNode, shard: Shard, out: Output) -> None:
        for current, settled in node.sets.settle(shard, out, self.now):
            self._carry_out(node, current, settled)

    def _carry_out(self, node: SimNode, shard: Shard, out: Output) -> None:
        index = shard.index
        if out.diff:
            record = DiffRecord(self.now, node.vsn, index, out.diff)
            if self.record_diffs:
                node.diffs.append(record)
            if self.on_diff is not None:
                self.on_diff(node, record)
        for event in out.events:
            node.events.append(EventRecord(self.now, node.vsn, index, event))
        for send in [*out.sends, *(send for parts in out.later for send in parts)]:
            self._sender(node.ref, node.name, index, send.data, send.node)()

    def _sender(
        self, ref: Ref, name: str, index: int, data: bytes, to: str | None
    ) -> Callable[[], None]:
        def send() -> None:
            if self.record_messages:
                self.sent.append(SentRecord(self.now, ref, index, to, json.loads(data)))
            kind = _kind(data)
            traffic = self.nodes[name].traffic
            # Sent as the shard encoded it, decoded per delivery: as on the wire, no
            # receiver shares a mutable object with the sender or another one.
            receivers = [to] if to is not None else [n for n in self.nodes if n != name]
            for receiver in receivers:
                if receiver not in self.nodes:
                    continue
                traffic.bytes_sent[kind] += len(data)
                traffic.messages_sent[kind] += 1
                for at in self.network.fates(name, receiver, self.now):
                    self._at(at, self._deliverer(name, receiver, index, data, kind))

        return send

    def _deliverer(
        self, sender: str, receiver: str, index: int, data: bytes, kind: str
    ) -> Callable[[], None]:
        def deliver() -> None:
            node = self.nodes[receiver]
            if not node.alive or not self.network.reachable(sender, receiver):
                self.network.lost += 1
                return
            node.traffic.bytes_received[kind] += len(data)
            node.traffic.messages_received[kind] += 1
            message = json.loads(data)
            if node.paused:
                node.inbox.append((index, message))
                return
            self._receive(node, index, message)

        return deliver


_KIND_FIELD = b'"t":"'


def _kind(data: bytes) -> str:
    """A message's kind (its ``t``), read from the bytes without decoding all of them."""
    at = data.find(_KIND_FIELD, 0, 64)
    if at >= 0:
        start = at + len(_KIND_FIELD)
        end = data.find(b'"', start, start + 8)
        if end > start:
            return data[start:end].decode("ascii", "replace")
    try:  # another encoder's spacing: decode it all
        message = json.loads(data)
    except ValueError:
        return "?"
    kind = message.get("t") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else "?"


def network_configs(max_loss: float = 0.3) -> Any:
    """A Hypothesis strategy of :class:`Network` keyword arguments (imports Hypothesis).

    Draws delays, loss, duplication and reordering; use as
    ``Network(**data.draw(network_configs()))``.

    Args:
        max_loss: The largest loss probability drawn.
    """
    from hypothesis import strategies as st

    probability = st.floats(0, 1, allow_nan=False)
    return st.fixed_dictionaries(
        {
            "delay": st.tuples(st.floats(0, 0.01), st.floats(0, 0.05)).map(
                lambda d: (min(d), max(d))
            ),
            "loss": st.floats(0, max_loss),
            "duplicate": probability.map(lambda p: p / 4),
            "reorder": probability.map(lambda p: p / 4),
            "reorder_delay": st.floats(0, 0.2),
        }
    )
