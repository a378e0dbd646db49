"""The tracker's protocol as a state machine: a port of ``Phoenix.Tracker.Shard``. Pure.

Theory of operation
-------------------
A Shard owns one :class:`crdt_state.State` (its replica ref is ``(node name, vsn)``) and
talks to the same-numbered shard of every other node. It does no I/O and reads no clock:
every input returns an :class:`Output` (messages to send, already encoded; the diff to
report; replica events; after a tick, when to tick next) and time comes in as an
argument, in seconds of a monotonic clock. The asyncio layer (:mod:`tracker_zmq.tracker`)
owns the timer and the PubSub and only carries Outputs out: it never writes to a Shard;
the simulator (:mod:`tracker_zmq.testing`) drives the same class with virtual time.

* **Local writes** (track, untrack, update) change the State at once and report their
  diff at once; peers see them with the next heartbeat.
* **Tick**, every ``broadcast_period``: send the pending delta in a heartbeat (or an empty
  heartbeat after ``max_silent_periods`` quiet ticks); every ``clock_sample_periods``
  ticks, compare the clocks peers sent with our own and ask the replicas we are behind
  for a transfer; mark replicas silent for ``down_period`` down and for
  ``permdown_period`` permanently down. The first tick is jittered.
* **Heartbeats** mark their sender up (a new replica, a healed one, or a restart with a
  new vsn, which permdowns the old one at once), then merge the delta.
* **Replicas**: their life cycle (up, down, permdown, and the vsns permdowned) is decided
  by the :class:`~tracker_zmq.replica.Replicas` table, whose transitions come back as
  :class:`ReplicaEvent` values; the Shard applies each to its State (``replica_up``,
  ``replica_down``, ``remove_down_replicas``) and reports it.
* **Transfers**: a request is answered with the smallest delta generation that brings
  the requester up to date, else the full state, in parts; an answer is merged only if
  it matches an outstanding request to a replica that is up: a delta once all its parts
  came, a full state part by part as they come (each part's values first, then the
  whole payload's context, clouds and removes), so no step costs more than a part.
* **Versions** are an input, like time: the Shard does not negotiate. The caller (the
  Tracker, from the ranges every node announces on its PubSub, through
  :mod:`pubsub_zmq.versions`) hands it a :class:`Versions` with :meth:`Shard.set_versions`
  whenever the members' ranges change: heartbeats and graceful permdowns go in its
  ``broadcast`` version, requests and answers to a peer in that peer's ``direct``
  version (an answer to a peer not listed: the version of its request) and answers in
  its ``transfer`` format. A peer listed in ``refused`` shares no version with us: its
  messages are dropped (drop reason ``no_common_version``), nothing is sent to it, and
  the first refusal of each of its refs comes back in :attr:`Output.refusals` for the
  caller to log. A message whose ``v`` we do not speak is dropped as ``invalid``, as
  any message we cannot read.

Where this differs from Phoenix (DESIGN.md): requests are matched to answers and time
out (counted from the latest part received); an answer from a responder marked down
meanwhile is still merged (building a large answer can delay its heartbeats); a delta
too large for one frame is not sent in the heartbeat: peers see the clock ahead and
fetch it by transfer, in parts; one full snapshot per requester per sampling window; a
heartbeat carrying values of another replica is dropped; messages from a ref at or below
the highest vsn permdowned for its name are dropped, so a late message never brings back a forgotten
replica (but a heartbeat of that very vsn, long after, is a live node cut off for longer
than ``permdown_period``, and is taken back); a tick that runs more than a period late
skips its down judgements, so a stalled node does not declare the world dead; replicas
already down are not reported down again.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crdt_state import (
    Delta,
    DeltaGenerations,
    DuplicatePresence,
    Entry,
    Key,
    Meta,
    Owner,
    Snapshot,
    State,
    Topic,
    check_ids,
)
from crdt_state.bulk import BULK_SIZE, CollectorPause, gc_paused
from crdt_state.clock import Clock, append_clock, clockset_replicas
from tracker_zmq.errors import AlreadyTracked, NoPresence
from tracker_zmq.options import Options
from tracker_zmq.replica import Drop, Ref, ReplicaEvent, Replicas, Status
from tracker_zmq.wire import (
    LOWEST_TRANSFER_FORMAT,
    PROTOCOL,
    TRANSFER_FORMAT,
    Assembly,
    GracefulPermdown,
    Heartbeat,
    MessageError,
    TransferAck,
    TransferRequest,
    check_meta,
    check_version,
    decode,
    encode,
    encode_json,
    encode_transfer_ack,
    iter_parts,
    sender_of,
)

__all__ = ["Diff", "Output", "ReplicaEvent", "Send", "Shard", "Versions"]

Diff = dict[Topic, tuple[list[tuple[Key, Meta]], list[tuple[Key, Meta]]]]
"""``{topic: (joins, leaves)}`` with joins and leaves as lists of ``(key, meta)``."""


@dataclass(frozen=True, slots=True)
class Send:
    """A message to send: to the same shard of every other node, or of one node.

    Attributes:
        data: The message, encoded (by the Shard's encoder: JSON bytes), to go on the
            wire as it is.
        node: None to broadcast; a node name for a direct message.
    """

    data: bytes
    node: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        """The message's wire form (plain data), decoded from :attr:`data` on each read."""
        message: dict[str, Any] = json.loads(self.data)
        return message


@dataclass(slots=True)
class Output:
    """What one input to a Shard produced."""

    sends: list[Send] = field(default_factory=list)
    diff: Diff = field(default_factory=dict)
    events: list[ReplicaEvent] = field(default_factory=list)
    later: list[Iterator[Send]] = field(default_factory=list)
    """Sends to make after ``sends``, each built when pulled (large transfer answers)."""
    next_tick: float | None = None
    """When to call :meth:`Shard.tick` next (set by a tick; None: the schedule stands)."""
    refusals: list[tuple[Ref, str]] = field(default_factory=list)
    """Refs of peers refused for the first time (no common version), with the reason:
    the caller logs them (once per ref: per peer incarnation)."""
    changes: list[tuple[list[Entry], list[Entry]]] = field(default_factory=list)
    """The entries behind :attr:`diff`, ``(joins, leaves)`` per report, in order (a node
    between two shardings merges its shard sets' views with them:
    :mod:`tracker_zmq.sharding`)."""

    def report(self, joins: list[Entry], leaves: list[Entry]) -> None:
        """Fold entries that joined and left into the diff, grouped by topic."""
        self.changes.append((joins, leaves))
        if len(joins) + len(leaves) >= BULK_SIZE:
            with gc_paused():  # a large transfer's joins: see crdt_state._bulk
                self._report(joins, leaves)
        else:
            self._report(joins, leaves)

    def _report(self, joins: list[Entry], leaves: list[Entry]) -> None:
        diff = self.diff
        for side, entries in ((0, joins), (1, leaves)):
            # entries mostly come grouped by topic: look the topic up once per run
            last: object = _NO_TOPIC
            add: Callable[[tuple[Key, Meta]], None] = _no_append
            for topic, _owner, key, meta, _tag in entries:
                if topic != last:  # topics are str or int: 1 never equals "1"
                    pair = diff.get(topic)
                    if pair is None:
                        pair = diff[topic] = ([], [])
                    add = pair[side].append
                    last = topic
                add((key, meta))


_NO_TOPIC = object()

_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_LAST_BYTE = [_B64[b >> 2] + _B64[(b & 3) << 4] for b in range(256)]
"""The two characters of a phx_ref's last byte (URL-safe base64, padding stripped)."""


def _no_append(item: tuple[Key, Meta]) -> None:
    raise AssertionError("unreachable: the first entry always looks its topic up")


@dataclass(frozen=True, slots=True)
class Versions:
    """The versions negotiated with the peers: an input to :meth:`Shard.set_versions`.

    The caller computes them from the ranges the nodes announce (the Tracker does it
    with :mod:`pubsub_zmq.versions`); the defaults are what a Shard uses before it is
    told anything: the newest tracker version, the oldest transfer format.

    Attributes:
        broadcast: The tracker version of heartbeats and graceful permdowns (one message
            read by every peer).
        direct: Per peer node name, the tracker version of transfer requests and
            answers to it. A peer not listed: requests in ``broadcast``, answers in the
            version of the request.
        transfer: Per peer node name, the transfer format of answers to it; a peer not
            listed gets LOWEST_TRANSFER_FORMAT.
        refused: Per peer node name, why it is refused (it shares no tracker version or
            no transfer format with us): its messages are dropped, none are sent to it.
    """

    broadcast: int = PROTOCOL
    direct: Mapping[str, int] = field(default_factory=dict)
    transfer: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Request:
    responder: Ref
    sent_at: float
    parts: set[int] = field(default_factory=set)
    last: int | None = None
    assembly: Assembly | None = None
    collector: CollectorPause | None = None


class Shard:
    """One shard of a tracker on one node: its State and the protocol around it.

    Args:
        node: This node's name (unique in the cluster).
        vsn: This node's incarnation: an int that grows with every restart.
        index: This shard's number in the pool.
        options: The tracker's options.
        rng: Randomness for the first tick's jitter (inject a seeded one in tests).
        encoder: Encodes a message's wire form to the bytes sent (each message and each
            transfer part is encoded once, and measured by its length against
            ``options.transfer_part_bytes``). The asyncio layer passes the PubSub's
            codec (orjson); the default is compact JSON, :func:`~tracker_zmq.wire.encode_json`.
    """

    def __init__(
        self,
        node: str,
        vsn: int,
        index: int,
        options: Options,
        rng: random.Random,
        encoder: Callable[[object], bytes] = encode_json,
    ) -> None:
        if type(node) is not str or not node:
            raise TypeError(f"a node name must be a non-empty str, not {node!r}")
        self.node = node
        self.vsn = vsn
        self.index = index
        self.options = options
        self._rng = rng
        self._encoder = encoder
        self.ref: Ref = (node, vsn)
        self.state = State(self.ref)
        self.generations = DeltaGenerations(options.max_delta_sizes)
        self.replicas = Replicas(options.down, options.permdown_period, options.max_replicas)
        self._clockset: list[Clock] = []
        self._silent_periods = options.max_silent_periods
        self._sample_count = options.clock_sample_periods
        self._requests: dict[tuple[Ref, int], _Request] = {}
        self._asking: dict[str, tuple[Ref, int]] = {}
        self._request_counter = 0
        self._answered_full: dict[str, float] = {}
        # A full-state request refused inside the window: answered when the window ends
        # (the requester would otherwise wait for its request's timeout to ask again)
        self._deferred: dict[str, tuple[TransferRequest, int]] = {}
        self._ref_counter = 0
        fixed = (vsn % 2**64).to_bytes(8, "big") + (index % 2**16).to_bytes(2, "big")
        self._ref_head = base64.urlsafe_b64encode(fixed[:9]).decode("ascii")
        self._ref_low = fixed[9:]
        self._ref_high = -1
        self._ref_prefix = ""
        self._next_tick: float | None = None
        self._versions = Versions()
        self._refused_refs: set[Ref] = set()
        self.counters: dict[str, int] = {
            "messages_in": 0,
            "messages_out": 0,
            "heartbeats_sent": 0,
            "delta_values_sent": 0,
            "transfers_requested": 0,
            "transfers_answered": 0,
            "transfers_answered_full": 0,
            "transfers_merged": 0,
            "deltas_too_large": 0,
            "dropped": 0,
        }
        self.drops: dict[str, int] = {}

    @property
    def next_tick(self) -> float | None:
        """When the Shard asked to be ticked next (None before :meth:`start`).

        Read-only: :meth:`start` returns it and each :meth:`tick`'s Output carries it;
        a tick that runs more than a period after it is a stalled one.
        """
        return self._next_tick

    @property
    def versions(self) -> Versions:
        """The versions the Shard speaks to its peers (see :meth:`set_versions`)."""
        return self._versions

    def set_versions(self, versions: Versions) -> None:
        """Take the versions negotiated with the peers (see :class:`Versions`).

        Raises:
            ValueError: A version this node cannot write (tracker versions from
                LOWEST_PROTOCOL to PROTOCOL, transfer formats from
                LOWEST_TRANSFER_FORMAT to TRANSFER_FORMAT).
        """
        check_version(versions.broadcast)
        for version in versions.direct.values():
            check_version(version)
        for version in versions.transfer.values():
            check_version(version, LOWEST_TRANSFER_FORMAT, TRANSFER_FORMAT)
        self._versions = versions

    # ------------------------------------------------------------ local API

    def start(self, now: float) -> float:
        """Schedule the first tick, jittered by up to a quarter of a period.

        Returns:
            When to call :meth:`tick` first.
        """
        first = now + self._rng.uniform(0, 0.25) * self.options.broadcast_period
        self._next_tick = first
        return first

    def track(
        self,
        owner: Owner,
        topic: Topic,
        key: Key,
        meta: Meta,
        *,
        checked: bool = False,
        phx_ref: str | None = None,
    ) -> tuple[str, Output]:
        """Track a presence of this node; its meta gets a new ``phx_ref``.

        Args:
            owner: What holds the presence (a str or an int).
            topic: Where it is (a str or an int).
            key: Who is present (a str or an int).
            meta: Its metadata: JSON-able plain data.
            checked: The caller (the Tracker) already ran
                :func:`crdt_state.check_ids` on the ids at its public boundary.
            phx_ref: The ``phx_ref`` to give it instead of a new one: the one another
                shard of this node gave the same presence (a node between two
                shardings writes each presence into both: :mod:`tracker_zmq.sharding`).

        Returns:
            The ``phx_ref`` and the Output (the join, reported at once).

        Raises:
            AlreadyTracked: This node already tracks (owner, topic, key).
            TypeError: For ids that are not str or int, or a meta that is not JSON-able.
        """
        if not checked:
            check_ids(owner, topic, key)
        ref, entry = self.track_unreported(owner, topic, key, meta, phx_ref)
        out = Output()
        out.report([entry], [])
        return ref, out

    def track_unreported(
        self, owner: Owner, topic: Topic, key: Key, meta: Meta, phx_ref: str | None = None
    ) -> tuple[str, Entry]:
        """:meth:`track` without the id checks and the Output: the ``phx_ref`` and the
        entry stored (its meta has the ref). The Tracker's hot path calls it and reports
        the join itself.

        Raises:
            AlreadyTracked: This node already tracks (owner, topic, key).
            TypeError: A meta that is not JSON-able.
        """
        check_meta(meta)
        ref = self._new_ref() if phx_ref is None else phx_ref
        stored = {**meta, "phx_ref": ref}
        try:
            entry = self.state.join(owner, topic, key, stored, checked=True)
        except DuplicatePresence as exc:
            raise AlreadyTracked(
                f"owner {owner!r} already tracks {key!r} in topic {topic!r}"
            ) from exc
        return ref, entry

    def untrack(self, owner: Owner, topic: Topic, key: Key) -> Output:
        """Stop tracking one presence; nothing happens when it is not tracked."""
        out = Output()
        entry = self.state.leave(owner, topic, key)
        if entry is not None:
            out.report([], [entry])
        return out

    def untrack_owner(self, owner: Owner) -> Output:
        """Stop tracking every presence of ``owner`` in this shard."""
        out = Output()
        out.report([], self.state.leave_owner(owner))
        return out

    def update(
        self,
        owner: Owner,
        topic: Topic,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
        *,
        checked: bool = False,
        phx_ref: str | None = None,
    ) -> tuple[str, Output]:
        """Replace a presence's meta (or pass a function of a copy of the old one).

        The new meta gets a new ``phx_ref`` and the old one's as ``phx_ref_prev``; the
        diff reports the leave of the old meta and the join of the new one. ``checked``
        and ``phx_ref`` are as for :meth:`track`.

        Raises:
            NoPresence: This node does not track (owner, topic, key).
            TypeError: For ids that are not str or int, or a new meta that is not JSON-able.
        """
        if not checked:
            check_ids(owner, topic, key)
        old = self.state.get(owner, topic, key)
        if old is None or old.tag[0] != self.ref:
            raise NoPresence(f"owner {owner!r} tracks no {key!r} in topic {topic!r}")
        new = meta(dict(old.meta)) if callable(meta) else meta
        check_meta(new)
        ref = self._new_ref() if phx_ref is None else phx_ref
        entry = self.state.leave_join(
            owner,
            topic,
            key,
            {**new, "phx_ref": ref, "phx_ref_prev": old.meta["phx_ref"]},
            checked=True,
        )
        out = Output()
        out.report([entry], [old])
        return ref, out

    def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
        """Every visible presence of a topic, cluster-wide, as ``(key, meta)``."""
        return self.state.get_by_topic(topic)

    def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[Owner, Meta]]:
        """Every visible presence of a key in a topic as ``(owner, meta)``."""
        return self.state.get_by_key(topic, key)

    def permdown_replica(self, ref: Ref, now: float) -> Output:
        """Forget replica ``ref`` now, as a graceful permdown from it would.

        For a node between two shardings (:mod:`tracker_zmq.sharding`): when one shard
        set sees a node come back with a new vsn, the other set forgets the old one too.
        Nothing happens when ``ref`` is not this shard's current replica of that name.
        """
        out = Output()
        self._apply(self.replicas.permdown(ref, now), out)
        return out

    def graceful_permdown(self) -> Output:
        """The message that tells every peer to forget this replica now.

        The caller sends it (a few times, over a few ticks) and then stops the shard.
        """
        out = Output()
        self._send(out, GracefulPermdown(self.ref), version=self._versions.broadcast)
        return out

    # ----------------------------------------------------------------- tick

    def tick(self, now: float) -> Output:
        """Run one tick: heartbeat, clock sampling, down detection.

        Returns:
            The Output; its ``next_tick`` says when to tick again.
        """
        options = self.options
        scheduled = self._next_tick if self._next_tick is not None else now
        stalled = now - scheduled > options.broadcast_period
        self._next_tick = now + options.broadcast_period
        out = Output(next_tick=self._next_tick)
        self._heartbeat(out)
        self._sample_clocks(now, out)
        self._expire(now, out)
        if stalled:
            self._count_drop("down_judgement_skipped_after_stall")
        else:
            self._apply(self.replicas.detect_down(now), out)
        return out

    def _heartbeat(self, out: Output) -> None:
        state = self.state
        if state.has_delta():
            delta = state.take_delta()
            state.compact()
            self.generations.push(state, delta)
            self._silent_periods = 0
            clocks = state.clocks()[1]
            version = self._versions.broadcast
            data = self._encoder(
                encode(Heartbeat(self.ref, clocks, delta), self.options.pool_size, version)
            )
            if len(data) > self.options.transfer_part_bytes:
                # Too big for one frame: peers see our clock ahead and ask for it; the
                # answer (a generation, or the full state) travels in parts.
                self._send(out, Heartbeat(self.ref, clocks, None), version=version)
                self.counters["deltas_too_large"] += 1
            else:
                out.sends.append(Send(data))
                self.counters["messages_out"] += 1
                self.counters["delta_values_sent"] += len(delta)
        elif self._silent_periods >= self.options.max_silent_periods:
            self._silent_periods = 0
            heartbeat = Heartbeat(self.ref, state.clocks()[1], None)
            self._send(out, heartbeat, version=self._versions.broadcast)
        else:
            self._silent_periods += 1
            return
        self.counters["heartbeats_sent"] += 1

    def _sample_clocks(self, now: float, out: Output) -> None:
        if self._sample_count > 1:
            self._sample_count -= 1
            return
        self._sample_count = self.options.clock_sample_periods
        clockset = append_clock(self._clockset, self.state.clocks())
        self._clockset = []
        for clock_ref in clockset_replicas(clockset):
            ref = self._as_ref(clock_ref)
            if ref is None or ref == self.ref:
                continue
            replica = self.replicas.fetch_by_ref(ref)
            if replica is None or replica.status is not Status.UP:
                continue
            name = ref[0]
            if name in self._asking:
                continue
            if name in self._versions.refused:
                self._count_drop("no_common_version")  # the request we cannot send it
                continue
            self._request_counter += 1
            request = (self.ref, self._request_counter)
            self._requests[request] = _Request(replica.ref, now)
            self._asking[name] = request
            self.counters["transfers_requested"] += 1
            clocks = self.state.clocks()[1]
            version = self._versions.direct.get(name, self._versions.broadcast)
            self._send(out, TransferRequest(self.ref, request, clocks), name, version=version)

    @staticmethod
    def _as_ref(replica: object) -> Ref | None:
        if (
            isinstance(replica, tuple)
            and len(replica) == 2
            and type(replica[0]) is str
            and type(replica[1]) is int
        ):
            return (replica[0], replica[1])
        return None

    def _expire(self, now: float, out: Output) -> None:
        timeout = self.options.timeout
        for request, pending in list(self._requests.items()):
            if now - pending.sent_at > timeout:
                self._forget_request(request)
                self._count_drop("transfer_timed_out")
        window = self.options.broadcast_period * self.options.clock_sample_periods
        for name, at in list(self._answered_full.items()):
            if now - at >= window:
                del self._answered_full[name]
                deferred = self._deferred.pop(name, None)
                if deferred is not None:  # answered now, from the state of now
                    self._on_transfer_request(deferred[0], now, out, deferred[1])
        self.replicas.expire(now)

    # -------------------------------------------------------------- receive

    def receive(self, data: object, now: float) -> Output:
        """Handle a message from another node (its wire form, as pubsub delivered it).

        Invalid messages, messages of forgotten or older incarnations and messages of
        refused peers (:class:`Versions`) are dropped and counted in :attr:`drops`;
        nothing a peer sends raises out of this method.
        """
        out = Output()
        self.counters["messages_in"] += 1
        refused = self._versions.refused
        if refused:
            ref = sender_of(data)
            if ref is not None and ref[0] in refused:
                self._refuse(ref, refused[ref[0]], out)
                return out
        options = self.options
        try:
            message = decode(
                data,
                pool_size=options.pool_size,
                max_replicas=options.max_replicas,
                max_entries=options.max_message_entries,
            )
        except MessageError:  # UnknownProtocolVersion too: a ``v`` we do not speak
            self._count_drop("invalid")
            return out
        sender = message.sender
        if sender[0] == self.node:
            self._count_drop("from_own_name")
            return out
        if not self.replicas.admit(sender, now, heartbeat=isinstance(message, Heartbeat)):
            self._count_drop("from_permdowned")
            return out
        if isinstance(message, Heartbeat):
            self._on_heartbeat(message, now, out)
        elif isinstance(message, TransferRequest):
            assert isinstance(data, dict)  # decode took it
            self._on_transfer_request(message, now, out, data["v"])
        elif isinstance(message, TransferAck):
            self._on_transfer_ack(message, now, out)
        else:
            self._on_graceful_permdown(message, now, out)
        return out

    def _on_heartbeat(self, message: Heartbeat, now: float, out: Output) -> None:
        sender = message.sender
        delta = message.delta
        if delta is not None and not delta.value_replicas() <= {sender}:
            self._count_drop("foreign_values_in_heartbeat")
            return
        events = self.replicas.put_heartbeat(sender, now)
        if isinstance(events, Drop):
            self._count_drop(events)
            return
        self._apply(events, out)
        if delta is not None:
            out.report(*self.state.merge(delta))
            self.generations.push(self.state, delta)
        self._clockset = append_clock(self._clockset, (sender, message.clock))

    def _refuse(self, ref: Ref, reason: str, out: Output) -> None:
        self._count_drop("no_common_version")
        if ref in self._refused_refs:
            return
        if len(self._refused_refs) >= self.options.max_replicas:
            self._refused_refs.clear()  # bounded: a ref may then be reported again
        self._refused_refs.add(ref)
        out.refusals.append((ref, reason))

    def _on_transfer_request(
        self, message: TransferRequest, now: float, out: Output, version: int
    ) -> None:
        requester = message.sender
        payload = self.generations.extract(self.state, requester, message.clock)
        if isinstance(payload, Snapshot):
            if requester[0] in self._answered_full:
                # one full snapshot per requester per window; this one comes at its end
                self._count_drop("full_transfer_already_answered")
                self._deferred[requester[0]] = (message, version)
                return
            self._answered_full[requester[0]] = now
            self.counters["transfers_answered_full"] += 1
        self.counters["transfers_answered"] += 1
        # Counted here, where the answer is decided: one message out, whatever the
        # number of parts it travels in (they are built later, as the caller pulls them).
        self.counters["messages_out"] += 1
        name = requester[0]
        versions = self._versions
        out.later.append(
            _answer(
                self.ref,
                payload,
                message.request,
                name,
                self.options,
                self._encoder,
                versions.direct.get(name, version),
                versions.transfer.get(name, LOWEST_TRANSFER_FORMAT),
            )
        )

    def _on_transfer_ack(self, message: TransferAck, now: float, out: Output) -> None:
        # An answer counts only if it matches a request still outstanding to that very
        # incarnation (a permdown forgets the request). The responder may have been
        # marked down meanwhile: building a large answer can keep it from heartbeating,
        # and what it sends is still its state (merged silently while it is down).
        pending = self._requests.get(message.request)
        if (
            pending is None
            or pending.responder != message.sender
            or self.replicas.fetch_by_ref(message.sender) is None
        ):
            self._count_drop("unexpected_transfer")
            return
        pending.sent_at = now  # progress: the timeout counts from the latest part
        if pending.assembly is None:
            pending.assembly = Assembly(
                message.kind, self.options.max_message_entries, self.options.max_replicas
            )
        if (
            pending.assembly.kind != message.kind
            or message.part in pending.parts
            or (message.last and pending.last is not None)
            or (pending.last is not None and message.part > pending.last)
            or (message.last and any(part > message.part for part in pending.parts))
        ):
            self._forget_request(message.request)
            self._count_drop("inconsistent_transfer")
            return
        try:
            pending.assembly.add(message.part, message.data)  # checked as it arrives
        except MessageError:
            self._forget_request(message.request)
            self._count_drop("invalid")
            return
        pending.parts.add(message.part)
        if message.last:
            pending.last = message.part
        if message.kind == "snapshot":
            # A full state's values are merged part by part, as they arrive: each
            # merge costs what its part carries, so the loop keeps heartbeating and
            # answering during a large catch-up (a delta answer is bounded by
            # max_delta_sizes and is merged whole, at the end).
            part = pending.assembly.take_values(message.sender)
            if part is not None:
                if pending.collector is None and pending.assembly.size >= BULK_SIZE:
                    # A large state: the collector waits until the transfer is over
                    # (see crdt_state.bulk.CollectorPause); _forget_request resumes it.
                    pending.collector = CollectorPause()
                    pending.collector.pause()
                with gc_paused():
                    out.report(*self.state.merge(part))
        if pending.last is None or len(pending.parts) != pending.last + 1:
            return
        # The collector resumes once the last merge is done (whatever happens to it).
        collector, pending.collector = pending.collector, None
        self._forget_request(message.request)
        try:
            try:
                payload = pending.assembly.finish()
            except MessageError:
                self._count_drop("invalid")
                return
            with gc_paused():
                out.report(*self.state.merge(payload))
        finally:
            if collector is not None:
                collector.resume()
        if isinstance(payload, Delta):
            self.generations.push(self.state, payload)
        else:
            self.generations.reset()
        self.counters["transfers_merged"] += 1

    def _on_graceful_permdown(self, message: GracefulPermdown, now: float, out: Output) -> None:
        self._apply(self.replicas.permdown(message.sender, now), out)

    # ------------------------------------------------------------ replicas

    def _apply(self, events: builtins.list[ReplicaEvent], out: Output) -> None:
        """Apply what the replicas went through to the State, and report it."""
        for event in events:
            ref = event.ref
            if event.kind is Status.UP:
                out.report(self.state.replica_up(ref), [])
            elif event.kind is Status.DOWN:
                out.report([], self.state.replica_down(ref))
            else:
                out.report([], self.state.remove_down_replicas(ref))
                self.generations.remove_down_replicas(ref)
                request = self._asking.get(ref[0])
                if request is not None:
                    self._forget_request(request)
                self._answered_full.pop(ref[0], None)
                self._deferred.pop(ref[0], None)
            out.events.append(event)

    # -------------------------------------------------------------- helpers

    def _forget_request(self, request: tuple[Ref, int]) -> None:
        pending = self._requests.pop(request, None)
        if pending is None:
            return
        if pending.collector is not None:
            pending.collector.resume()
        if self._asking.get(pending.responder[0]) == request:
            del self._asking[pending.responder[0]]

    def close(self) -> None:
        """Forget every outstanding transfer request (the Tracker calls it as it stops).

        A large transfer being received pauses the garbage collector until it is merged
        or abandoned; closing resumes it.
        """
        for request in list(self._requests):
            self._forget_request(request)

    def _send(self, out: Output, message: Any, node: str | None = None, *, version: int) -> None:
        data = self._encoder(encode(message, self.options.pool_size, version))
        out.sends.append(Send(data, node))
        self.counters["messages_out"] += 1

    def _count_drop(self, reason: str) -> None:
        self.counters["dropped"] += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _new_ref(self) -> str:
        """A ``phx_ref`` unique across nodes and restarts: vsn, shard and a counter.

        The URL-safe base64 of 16 bytes (vsn 8, shard 2, counter 6; the padding
        stripped). Base64 takes 3 bytes at a time: the first 15 bytes change only every
        256 refs (their 20 characters are made then), the last byte is a table lookup.
        """
        self._ref_counter += 1
        counter = self._ref_counter % 2**48
        high = counter >> 8
        if high != self._ref_high:
            self._ref_high = high
            middle = _b2a(self._ref_low + high.to_bytes(5, "big"), newline=False)
            self._ref_prefix = self._ref_head + middle.translate(_URLSAFE).decode()
        return self._ref_prefix + _LAST_BYTE[counter & 255]

    @property
    def transfers_outstanding(self) -> int:
        """Transfer requests sent and not yet answered in full nor timed out."""
        return len(self._requests)

    def stats(self) -> dict[str, Any]:
        """Counters, replicas and their status, presences held, pending delta size.

        ``presences``: the values held, of down replicas too; ``visible``: those of up
        replicas (what :meth:`list` can show). Nothing here walks the presences.

        Counters move where the shard decides: ``messages_out`` counts each message in an
        Output's ``sends`` and each transfer answer once, however many parts it takes.
        """
        return {
            "ref": list(self.ref),
            "replicas": {
                name: {"vsn": r.vsn, "status": r.status.value}
                for name, r in sorted(self.replicas.items())
            },
            "presences": len(self.state),
            "visible": self.state.online_count(),
            "pending_delta": self.state.delta_size() if self.state.has_delta() else 0,
            "generations": self.generations.sizes(),
            "transfers_outstanding": len(self._requests),
            **self.counters,
            "drops": dict(self.drops),
            "versions": {
                "broadcast": self._versions.broadcast,
                "refused": sorted(self._versions.refused),
            },
        }


def _answer(
    sender: Ref,
    payload: Snapshot | Delta,
    request: tuple[Ref, int],
    node: str,
    options: Options,
    encoder: Callable[[object], bytes],
    version: int,
    transfer_format: int,
) -> Iterator[Send]:
    """The parts of a transfer answer, each built and encoded once, only when pulled.

    The payload was extracted when the request came (a consistent cut); encoding it, the
    costly part, happens as the caller pulls the parts, so an event loop can heartbeat in
    between. It touches no Shard: pulling it or not changes nothing but what is sent.
    ``version`` is the answer's tracker version; ``transfer_format`` the form of its
    parts (:func:`~tracker_zmq.wire.iter_parts`: 1, rows; 2, columns).
    """
    kind = "snapshot" if isinstance(payload, Snapshot) else "delta"
    parts = iter_parts(
        payload,
        options.transfer_part_values,
        options.transfer_part_bytes,
        encoder,
        transfer_format,
    )
    for i, (part, data, last) in enumerate(parts):
        ack = TransferAck(sender, request, i, last, kind, part)
        yield Send(encode_transfer_ack(ack, options.pool_size, data, encoder, version), node)
