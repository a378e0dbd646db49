"""Cluster membership: who is in the mesh, who went silent, whom to greet or forget.

Pure: no I/O, no asyncio; time comes in as ``now`` (seconds, monotonic) and randomness as
an injected :class:`random.Random`. Phoenix.PubSub leans on Erlang distribution and ``:pg``
for membership; over ZeroMQ we keep it ourselves, in the style of a gossip protocol.

Theory of operation. A node knows a list of seed endpoints and a table of members (by
name), each a :class:`~pubsub_zmq.wire.NodeRecord` plus when it was last heard from first
hand. The asyncio layer feeds every record it receives into :meth:`Membership.observe`,
which classifies it (:class:`Verdict`): new, known, updated (the same incarnation
announcing other versions), restarted (a higher incarnation that may replace the old
one), stale, a name conflict, not allowed, or incompatible (its ``pubsub`` versions
share none with ours: :func:`pubsub_zmq.versions.direct`). :meth:`Membership.tick`
says what to do next: whom to greet with a hello (seeds that have not answered, members
not yet heard from or gone silent; with exponential backoff), whom to gossip to (live
members, every ``gossip_interval`` with jitter), who went silent (no word for
``peer_timeout``) and whom to forget (silent for ``forget_after``). Seeds are never
forgotten, so a healed partition rejoins by itself. Gossip carries only members heard
first hand recently, so a dead member's record stops spreading.

DNS seeds. The asyncio layer looks the ``peer_dns`` names up every gossip round and
hands the endpoints they resolve to :meth:`Membership.resolved`. Each new one becomes a
seed, greeted like a configured one; one that the answers stop naming is kept (and
greeted with backoff) until ``forget_after`` has passed since an answer last named it,
so a name server that drops a silent pod for a moment does not split the cluster.
Endpoints that are this node's own (given by the caller, or found when a hello came
back to this node) are never added again.

Names are unique: a record for a known name with a different incarnation replaces the
member only if it is newer and either comes from the same control endpoint (the old
process cannot still hold that port) or the old incarnation is silent; otherwise it is a
conflict, logged and refused by the caller.

Versions: a record's ``versions`` may change within an incarnation (a layer above
announces its protocol after the node started); only the member's own word counts (a
first-hand record), since a relayed copy may be older. :attr:`Membership.generation`
grows whenever the live set or a live record changes, so the caller recomputes the
versions it sends in (:func:`pubsub_zmq.versions.broadcast`) only then.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from .versions import direct
from .wire import NodeRecord

__all__ = ["Member", "Membership", "Seed", "Tick", "Verdict"]


class Verdict(Enum):
    """How :meth:`Membership.observe` classified a record."""

    SELF = "self"
    NEW = "new"
    KNOWN = "known"
    UPDATED = "updated"
    RECOVERED = "recovered"
    RESTARTED = "restarted"
    STALE = "stale"
    CONFLICT = "conflict"
    NOT_ALLOWED = "not allowed"
    INCOMPATIBLE = "no common pubsub version"


@dataclass(slots=True)
class Member:
    """A member of the mesh as this node sees it.

    Attributes:
        record: what the member announced.
        last_heard: when a frame from it last arrived (monotonic seconds).
        heard: whether it ever spoke to this node first hand (this incarnation).
        alive: heard within ``peer_timeout``.
        next_hello: when to greet it next while it is not alive.
        backoff: the current retry delay.
    """

    record: NodeRecord
    last_heard: float
    heard: bool = False
    alive: bool = False
    next_hello: float = 0.0
    backoff: float = 0.0


@dataclass(slots=True)
class Seed:
    """A configured seed endpoint.

    Attributes:
        endpoint: the control endpoint as configured.
        key: the seed's CURVE public key, or None.
        name: the name of the node that answered there, once one did.
        next_hello: when to greet it next.
        backoff: the current retry delay.
        resolved: for a seed found by a DNS lookup, when an answer last named it
            (monotonic seconds); None for a configured seed, which is never forgotten.
    """

    endpoint: str
    key: str | None = None
    name: str | None = None
    next_hello: float = 0.0
    backoff: float = 0.0
    resolved: float | None = None


@dataclass(slots=True)
class Tick:
    """What :meth:`Membership.tick` asks the caller to do.

    Attributes:
        hello_seeds: seeds to greet now.
        hello_members: members to greet now (not yet heard or silent).
        gossip: live members to send gossip to now.
        silent: members that just went silent.
        forget: members forgotten now (close their connections).
        forget_seeds: DNS seeds no answer named for ``forget_after`` (close their
            connections unless a member uses the endpoint).
    """

    hello_seeds: list[Seed] = field(default_factory=list)
    hello_members: list[Member] = field(default_factory=list)
    gossip: list[Member] = field(default_factory=list)
    silent: list[Member] = field(default_factory=list)
    forget: list[Member] = field(default_factory=list)
    forget_seeds: list[Seed] = field(default_factory=list)


class Membership:
    """The member table of one node.

    Args:
        me: this node's record.
        seeds: the seed endpoints with their keys (own endpoint excluded by the caller).
        allowed: whether a record may join (CURVE allow-list); everything by default.
        gossip_interval: seconds between gossip rounds.
        peer_timeout: seconds without a word before a member counts as silent.
        forget_after: seconds of silence before a (non-seed) member is forgotten.
        min_backoff: the first retry delay for hellos, in seconds.
        max_backoff: the longest retry delay, in seconds.
        rng: randomness for jitter.
        own: this node's own endpoints: never a seed, whatever a DNS answer says.

    Attributes:
        generation: grows each time a member joins, restarts, updates its record, goes
            silent, comes back or is forgotten.
    """

    def __init__(
        self,
        me: NodeRecord,
        seeds: Iterable[tuple[str, str | None]],
        *,
        allowed: Callable[[NodeRecord], bool] | None = None,
        gossip_interval: float = 1.0,
        peer_timeout: float = 5.0,
        forget_after: float = 1200.0,
        min_backoff: float = 0.05,
        max_backoff: float = 10.0,
        rng: random.Random | None = None,
        own: Iterable[str] = (),
    ) -> None:
        self.me = me
        self.seeds: dict[str, Seed] = {ep: Seed(ep, key, backoff=min_backoff) for ep, key in seeds}
        self._own = set(own)
        self.members: dict[str, Member] = {}
        self._allowed = allowed
        self.gossip_interval = gossip_interval
        self.peer_timeout = peer_timeout
        self.forget_after = forget_after
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._next_gossip = 0.0
        self.generation = 0

    # -- records -------------------------------------------------------------------

    def observe(self, record: NodeRecord, now: float, *, first_hand: bool) -> Verdict:
        """Classify a record and update the table.

        Args:
            record: a record from a hello, welcome or gossip frame.
            now: the current time.
            first_hand: the record is its sender's own (the node is talking to us), not
                one relayed in a member list.

        Returns:
            The verdict; for NEW and RESTARTED the caller connects to the member
            (RESTARTED: after dropping the old incarnation's connections). UPDATED: the
            member's own record announces other versions (only ``versions`` is taken
            from it). INCOMPATIBLE: the record's ``pubsub`` versions share none with
            ours; it is not a member, and a member of that name and incarnation (known
            from a relayed record that said otherwise) is removed: the caller drops its
            connections.
        """
        if record.name == self.me.name:
            if record.incarnation == self.me.incarnation:
                return Verdict.SELF
            return Verdict.CONFLICT if first_hand else Verdict.STALE
        if self._allowed is not None and not self._allowed(record):
            return Verdict.NOT_ALLOWED
        member = self.members.get(record.name)
        if not self.compatible(record):
            if member is not None and member.record.incarnation == record.incarnation:
                del self.members[record.name]
                self.generation += 1
            return Verdict.INCOMPATIBLE
        if member is None:
            self.members[record.name] = self._new_member(record, now, first_hand)
            self.generation += 1
            return Verdict.NEW
        current = member.record
        if record.incarnation == current.incarnation:
            if not first_hand:
                return Verdict.KNOWN
            was_alive, was_heard = member.alive, member.heard
            self._heard(member, now)
            if record.versions != current.versions:
                member.record = replace(current, versions=record.versions)
                self.generation += 1
                if not was_heard or was_alive:
                    return Verdict.UPDATED
            return Verdict.RECOVERED if was_heard and not was_alive else Verdict.KNOWN
        if record.incarnation < current.incarnation:
            return Verdict.STALE
        silent = not member.heard or now - member.last_heard > self.peer_timeout
        if silent or record.control == current.control:
            self.members[record.name] = self._new_member(record, now, first_hand)
            self.generation += 1
            return Verdict.RESTARTED
        return Verdict.CONFLICT

    def compatible(self, record: NodeRecord) -> bool:
        """Whether ``record``'s ``pubsub`` versions share one with this node's."""
        mine = self.me.speaks("pubsub")
        theirs = record.speaks("pubsub")
        return mine is not None and theirs is not None and direct(mine, theirs) is not None

    def _new_member(self, record: NodeRecord, now: float, first_hand: bool) -> Member:
        member = Member(record, last_heard=now, next_hello=now, backoff=self.min_backoff)
        if first_hand:
            self._heard(member, now)
        else:
            # greeted at once, then retried with backoff until it answers
            member.next_hello = now + self.min_backoff
        return member

    def _heard(self, member: Member, now: float) -> None:
        member.last_heard = now
        member.heard = True
        if not member.alive:
            member.alive = True
            self.generation += 1
        member.backoff = self.min_backoff

    def heard(self, name: str, incarnation: int, now: float) -> bool:
        """Note a data frame from ``name``; False when it is not a known member's.

        Args:
            name: the sender named in the frame.
            incarnation: the sender's incarnation in the frame.
            now: the current time.
        """
        member = self.members.get(name)
        if member is None or member.record.incarnation != incarnation:
            return False
        member.last_heard = now
        if not member.alive:
            self._heard(member, now)
        return True

    def seed_answered(self, endpoint: str, name: str) -> bool:
        """Record that the node ``name`` answered the hello sent to seed ``endpoint``.

        Returns:
            True when ``endpoint`` is a seed.
        """
        seed = self.seeds.get(endpoint)
        if seed is None:
            return False
        seed.name = name
        seed.backoff = self.min_backoff
        return True

    def drop_seed(self, endpoint: str) -> None:
        """Forget a seed that turned out to be this node itself (never added again)."""
        self.seeds.pop(endpoint, None)
        self._own.add(endpoint)

    def resolved(self, endpoints: Iterable[tuple[str, str | None]], now: float) -> list[Seed]:
        """Take the endpoints a round of DNS lookups named: new ones become seeds.

        Args:
            endpoints: ``(control endpoint, CURVE public key or None)`` pairs, every
                address the ``peer_dns`` names resolved to this round.
            now: the current time.

        Returns:
            The seeds added (greeted at the next tick). A DNS seed named again is kept
            for another ``forget_after``; a configured seed stays what it is.
        """
        added: list[Seed] = []
        for endpoint, key in endpoints:
            if endpoint in self._own:
                continue
            seed = self.seeds.get(endpoint)
            if seed is None:
                seed = Seed(endpoint, key, next_hello=now, backoff=self.min_backoff, resolved=now)
                self.seeds[endpoint] = seed
                added.append(seed)
            elif seed.resolved is not None:
                seed.resolved = now
        return added

    def forget(self, name: str) -> Member | None:
        """Remove a member at once (it said goodbye); returns it, or None."""
        member = self.members.pop(name, None)
        if member is not None:
            self.generation += 1
        return member

    # -- queries -------------------------------------------------------------------

    def pending_seeds(self) -> list[str]:
        """Configured seed endpoints that have not answered yet (not the DNS seeds)."""
        return [s.endpoint for s in self.seeds.values() if s.name is None and s.resolved is None]

    def dns_seeds(self) -> list[Seed]:
        """The seeds found by DNS lookups (this node's own endpoints excluded)."""
        return [s for s in self.seeds.values() if s.resolved is not None]

    def live(self) -> list[Member]:
        """Members heard from first hand within ``peer_timeout``."""
        return [m for m in self.members.values() if m.alive]

    def live_records(self) -> tuple[NodeRecord, ...]:
        """Records of the live members (what gossip and welcomes carry)."""
        return tuple(m.record for m in self.members.values() if m.alive)

    # -- time ----------------------------------------------------------------------

    def tick(self, now: float) -> Tick:
        """Advance to ``now`` and return what to do.

        Args:
            now: the current time (monotonic seconds).
        """
        out = Tick()
        for name, member in list(self.members.items()):
            quiet = now - member.last_heard
            if member.alive and quiet > self.peer_timeout:
                member.alive = False
                member.backoff = self.min_backoff
                member.next_hello = now
                out.silent.append(member)
                self.generation += 1
            if not member.alive and quiet > self.forget_after:
                del self.members[name]
                out.forget.append(member)
                self.generation += 1
                continue
            if not member.alive and now >= member.next_hello:
                out.hello_members.append(member)
                member.next_hello = now + self._jitter(member.backoff)
                member.backoff = min(member.backoff * 2, self.max_backoff)
        for endpoint, seed in list(self.seeds.items()):
            if seed.resolved is not None and now - seed.resolved > self.forget_after:
                del self.seeds[endpoint]
                out.forget_seeds.append(seed)
                continue
            answered = self.members.get(seed.name) if seed.name is not None else None
            if answered is not None and answered.alive:
                seed.backoff = self.min_backoff
                continue
            if now >= seed.next_hello:
                out.hello_seeds.append(seed)
                seed.next_hello = now + self._jitter(seed.backoff)
                seed.backoff = min(seed.backoff * 2, self.max_backoff)
        if now >= self._next_gossip:
            out.gossip = self.live()
            self._next_gossip = now + self._jitter(self.gossip_interval)
        return out

    def _jitter(self, delay: float) -> float:
        # +-20 %, so that nodes started together do not greet and gossip in lockstep
        return delay * (0.8 + 0.4 * self._rng.random())
