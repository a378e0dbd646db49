"""PubSub: the asyncio node, a port of Phoenix.PubSub (with its PG2 adapter) over ZeroMQ.

Not pure: this is the layer that owns the event-loop tasks, the clock and the sockets
(through :mod:`pubsub_zmq.transport`); the decisions live in the pure modules
(:mod:`~pubsub_zmq.registry` for local dispatch, :mod:`~pubsub_zmq.outbox` for batching,
:mod:`~pubsub_zmq.wire` for frames, :mod:`~pubsub_zmq.membership` for the member table,
:mod:`~pubsub_zmq.options` for the options); subscribers are
:class:`~pubsub_zmq.subscription.Subscription` objects.

Theory of operation. ``broadcast`` encodes the message once (orjson), delivers it to
local subscribers at once, and appends the encoded bytes to a per-topic batch; the batch
goes out as one PUB frame at the end of the current event-loop turn (or as soon as it
holds ``max_batch`` messages or ``batch_bytes`` bytes), so a burst costs one frame per
topic and a lone message goes out within one turn. ZeroMQ filters by topic prefix on the
publishing side, so only nodes with a subscriber receive it. A receiving node decodes the
batch once, counts lost messages from the sequence numbers, and hands the messages to the
topic's subscriptions. Direct messages travel the same way over the DEALER to the target
node's ROUTER. Nothing ever blocks: full ZeroMQ queues and full subscriber mailboxes drop
(and count) instead. Delivery is therefore at most once, FIFO per sender and topic.

Versions. Each node record announces the versions the node speaks of each protocol:
``pubsub`` (these frames) and whatever a layer above adds with :meth:`PubSub.announce`.
A node whose ``pubsub`` range shares none with ours is refused at hello (logged once per
incarnation with both ranges, counted). Batches and gossip (one frame for every member)
go in :func:`pubsub_zmq.versions.broadcast` of the live members' ranges, recomputed when
the membership changes; direct batches, hellos and welcomes to a member in
:func:`pubsub_zmq.versions.direct` of its range; hellos to a seed not yet heard from in
the lowest version we speak.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Self

import orjson
import zmq.asyncio

from . import versions as negotiation
from .curve import CurveConfig, normalize_key
from .dns import DnsSeed, endpoint_for, parse_dns_seed, resolve
from .errors import (
    ConfigError,
    FrameTooLarge,
    NotRunning,
    PubSubError,
    UnknownVersion,
    WireError,
)
from .incarnation import new_incarnation
from .membership import Membership, Verdict
from .options import Options, Resolver, check_option
from .outbox import MAX_CACHED_TOPICS, Batch, Outbox
from .partitions import Partitions, unread_by
from .registry import Dispatcher, DropTally, Registry, default_dispatch
from .subscription import Callback, Subscription
from .transport import Tasks, Transport, pub_endpoint_for
from .versions import Range
from .wire import (
    DEFAULT_MAX_FRAME_BYTES,
    LOWEST,
    VERSION,
    VERSIONS,
    Control,
    Encoded,
    Frame,
    Kind,
    NodeRecord,
    check_protocol,
    decode,
    encode_control,
    sender_field,
    topic_prefix,
)

__all__ = ["Callback", "Peer", "PubSub", "Subscription", "auto_node_name"]

log = logging.getLogger("pubsub_zmq")

Peer = str | tuple[str, str | bytes]
"""A seed: a control endpoint, or (endpoint, CURVE public key) when CURVE is on."""

_LOOPBACK_HOSTS = ("127.", "localhost", "[::1]", "::1")
_DNS_TIMEOUT = 10.0  # seconds one round of peer_dns lookups may take


def auto_node_name() -> str:
    """A node name unique in any cluster: ``<hostname>-<pid>-<random>``.

    What ``PubSub(None, ...)`` names itself: a web worker started by uvicorn or gunicorn
    has no name of its own, and a recycled worker comes back under another one. The
    host name (cut to 200 bytes) and process id say where the node runs; 8 random hex
    digits keep two runs apart when a pid is reused.
    """
    host = socket.gethostname().encode()[:200].decode(errors="ignore") or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class _State(Enum):
    """A node's life cycle: NEW -> STARTING -> RUNNING -> STOPPED (once each)."""

    NEW = "new"
    STARTING = "starting"  # binding and opening sockets; STOPPED if that fails
    RUNNING = "running"
    STOPPED = "stopped"  # also from NEW: stop() before start() makes a PubSub unusable


# the send paths compare against RUNNING on every call: a module global is the cheapest
_RUNNING = _State.RUNNING


class _PeerState:
    """What the data plane keeps per member incarnation (sequence tracking, counters)."""

    __slots__ = ("direct_next", "lost", "received", "record", "topic_next", "version")

    def __init__(self, record: NodeRecord) -> None:
        self.record = record
        self.version = _direct_version(record)  # of direct frames to it
        self.topic_next: dict[str, int] = {}
        self.direct_next: int | None = None
        self.received = 0
        self.lost = 0


@dataclass(slots=True)
class _Counters:
    """What stats() reports besides the per-peer figures (see its docstring)."""

    broadcast_frames: int = 0
    broadcasts: int = 0
    control_in: int = 0
    control_out: int = 0
    direct_frames: int = 0
    directs: int = 0
    invalid: int = 0
    oversize: int = 0
    received: int = 0
    received_frames: int = 0
    refused: int = 0
    refused_version: int = 0
    rejected: int = 0
    send_dropped: int = 0
    unknown_node: int = 0
    unknown_version: int = 0
    unreadable: int = 0
    unread_partition: int = 0


class PubSub:
    """A node of a cluster-wide pub/sub over a ZeroMQ mesh (Phoenix.PubSub).

    Args:
        node_name: this node's name, unique in the cluster; None: an automatic one,
            ``<hostname>-<pid>-<random>`` (:func:`auto_node_name`), for web workers.
            A tracker on an automatically named node runs ``graceful_permdown`` when
            it stops (unless told otherwise), so a recycled worker leaves no ghost.
        bind: the control endpoint to bind (what other nodes list as peers). Defaults to
            an ephemeral port on loopback; read the bound address from ``endpoint``.
        peers: seed endpoints; with CURVE, ``(endpoint, public_key)`` pairs. Knowing
            one member is enough: gossip finds the rest. Seeds are never forgotten.
        pub_bind: the PUB endpoint to bind (default: the bind interface, port 0).
        advertise_host: the host other nodes should use to reach this one, when
            ``bind`` is a wildcard such as ``tcp://0.0.0.0:5550``. Default for a
            wildcard bind: the IPv4 address this host's name resolves to (in a
            container or a pod, its own address), with a warning when that is loopback.
        peer_dns: names that stand for seeds, ``"HOST:PORT"`` (with CURVE,
            ``("HOST:PORT", public_key)``, the key the nodes behind the name share):
            every address HOST resolves to, other than this node's own endpoint, is a
            seed ``tcp://ADDRESS:PORT``. Looked up at start and again every gossip
            round, off the event loop; an address the answers stop naming stays a
            seed for ``forget_after``. A Kubernetes headless service or a scaled
            compose service is such a name.
        resolver: how ``peer_dns`` names are looked up (see
            :data:`~pubsub_zmq.options.Resolver`); default
            :func:`pubsub_zmq.dns.resolve`, the system resolver's IPv4 addresses.
        bind_fallback: when ``bind``'s port is taken, bind port 0 on the same interface
            instead of failing. Web workers on one host all ask for the same port: the
            first one gets it and becomes the host's seed, the others list that port
            in ``peers`` and find it there. Needs a ``tcp://HOST:PORT`` bind.
        dispatcher: a local delivery function ``(subscriptions, sender, message)``;
            default :func:`~pubsub_zmq.default_dispatch`. Install the same on every node.
        queue_size: see :class:`~pubsub_zmq.Options`, which documents, defaults and
            checks this and the tuning options that follow, up to ``max_backoff``.
        max_frame_bytes: see Options.
        max_batch: see Options.
        batch_bytes: see Options.
        send_hwm: see Options.
        recv_hwm: see Options.
        control_hwm: see Options.
        start_timeout: see Options.
        gossip_interval: see Options.
        peer_timeout: see Options.
        forget_after: see Options.
        max_backoff: see Options.
        curve_secret_key: this node's CURVE secret key (Z85): turns CURVE on.
        curve_allow: with CURVE, the public keys allowed to connect, or a mapping node
            name -> public key that also binds each name to its key.
        context: a ``zmq.asyncio.Context`` to share (default: one per node; with CURVE
            each node needs its own, since the authenticator is per context).
        pool_size: partitions of the mesh this node runs and reads: a PUB socket and a
            ZeroMQ I/O thread each (:mod:`pubsub_zmq.partitions`); 1 to 64.
        broadcast_pool_size: partitions broadcasts go out on (a topic's by crc32),
            while the cluster changes ``pool_size`` in two deployments; None: all
            ``pool_size``. At most ``pool_size``.

    Raises:
        ConfigError: an option is invalid.

    A PubSub belongs to the event loop that started it: call its methods from that
    loop's thread only (as with any asyncio object).
    """

    def __init__(
        self,
        node_name: str | None,
        bind: str = "tcp://127.0.0.1:0",
        peers: Iterable[Peer] = (),
        *,
        pub_bind: str | None = None,
        advertise_host: str | None = None,
        peer_dns: Iterable[Peer] = (),
        resolver: Resolver | None = None,
        bind_fallback: bool = False,
        dispatcher: Dispatcher | None = None,
        queue_size: int = 10_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_batch: int = 256,
        batch_bytes: int = 64 * 1024,
        send_hwm: int = 10_000,
        recv_hwm: int = 10_000,
        control_hwm: int = 10_000,
        start_timeout: float = 5.0,
        gossip_interval: float = 1.0,
        peer_timeout: float = 5.0,
        forget_after: float = 1200.0,
        max_backoff: float = 10.0,
        curve_secret_key: str | bytes | None = None,
        curve_allow: Iterable[str | bytes] | Mapping[str, str | bytes] | None = None,
        context: zmq.asyncio.Context | None = None,
        pool_size: int = 1,
        broadcast_pool_size: int | None = None,
    ) -> None:
        self._auto_named = node_name is None
        if node_name is None:
            node_name = auto_node_name()
        self.partitions = Partitions(pool_size, broadcast_pool_size)
        # per partition published on: the live members that do not read it
        self._unread: list[list[str]] = [[] for _ in range(self.partitions.publish_size)]
        self._unread_logged: set[tuple[str, int]] = set()
        try:
            self._sender = sender_field(node_name)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
        self._name = node_name
        if not isinstance(bind, str):
            raise ConfigError("bind must be an endpoint string")
        self._bind = bind
        self._bound = bind  # what was bound: bind, or its port-0 fallback
        if type(bind_fallback) is not bool:
            raise ConfigError(f"bind_fallback must be a bool, not {bind_fallback!r}")
        self._bind_fallback = _fallback_endpoint(bind) if bind_fallback else None
        try:
            self._pub_bind = pub_bind if pub_bind is not None else pub_endpoint_for(bind)
        except PubSubError as exc:
            raise ConfigError(str(exc)) from exc
        self._advertise_host = advertise_host
        self._options = Options(
            queue_size=queue_size,
            max_frame_bytes=max_frame_bytes,
            max_batch=max_batch,
            batch_bytes=batch_bytes,
            send_hwm=send_hwm,
            recv_hwm=recv_hwm,
            control_hwm=control_hwm,
            start_timeout=start_timeout,
            gossip_interval=gossip_interval,
            peer_timeout=peer_timeout,
            forget_after=forget_after,
            max_backoff=max_backoff,
        )
        self._curve: CurveConfig | None = None
        if curve_secret_key is not None:
            self._curve = CurveConfig.build(curve_secret_key, curve_allow)
        elif curve_allow is not None:
            raise ConfigError("curve_allow needs curve_secret_key")
        self._seeds = [self._parse_peer(p) for p in peers]
        self._dns = list(dict.fromkeys(self._parse_dns(p) for p in _entries(peer_dns, "peer_dns")))
        if resolver is not None and not callable(resolver):
            raise ConfigError(f"resolver must be an async callable, not {resolver!r}")
        self._resolver: Resolver = resolver or resolve
        self._dns_answers: dict[DnsSeed, list[tuple[str, str | None]]] = {}
        self._dns_lookups = 0
        self._dns_failures = 0
        self._dispatcher: Dispatcher = dispatcher or default_dispatch
        self._context = context
        self._rng = random.Random()
        self._incarnation = new_incarnation(rng=self._rng)
        self._state = _State.NEW
        self._registry: Registry[Subscription] = Registry()
        self._lookup = self._registry.lookup
        self._outbox = Outbox(
            self._sender,
            self._incarnation,
            max_frame_bytes=max_frame_bytes,
            max_batch=max_batch,
            batch_bytes=batch_bytes,
        )
        self._prefix = self._outbox.prefix
        self._add = self._outbox.add
        self._open = self._outbox.broadcasts  # the same dict for the node's life
        self._max_batch = max_batch  # a batch that holds this many goes out at once
        self._flush_scheduled = False
        self._ctl_seq = 0
        self._peers: dict[str, _PeerState] = {}
        self._remote_subs: dict[bytes, int] = {}
        # partitions 1 and up: their own counts (pubsub_zmq.partitions)
        self._partition_subs: list[dict[bytes, int]] = [
            {} for _ in range(1, self.partitions.pool_size)
        ]
        self._counters = _Counters()
        self._tasks = Tasks()
        self._ready: list[Subscription] = []
        self._lost_retired = 0
        # the subscriptions' drops, removed ones' too: dropped.overflow never falls, and
        # stats() reads it without walking the subscriptions
        self._overflow: DropTally = DropTally()
        self._transport: Transport | None = None
        self._membership: Membership | None = None
        self._me: NodeRecord | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seed_event = asyncio.Event()
        self._log_times: dict[str, tuple[float, int]] = {}
        self._versions: dict[str, Range] = {"pubsub": VERSIONS}
        self._frame_version = VERSION  # of broadcast batches and gossip
        self._left_out: list[str] = []  # live members that cannot read it
        self._versions_seen = -1  # the membership generation they were chosen at
        self._refused_versions: dict[str, dict[str, Any]] = {}
        self._left_out_logged: set[tuple[str, int]] = set()

    def _parse_dns(self, entry: Peer) -> DnsSeed:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            seed = parse_dns_seed(entry[0], normalize_key(entry[1], f"key of {entry[0]!r}"))
        else:
            seed = parse_dns_seed(entry)
        if self._curve is not None and seed.key is None:
            raise ConfigError(f"with CURVE, peer_dns {str(seed)!r} needs the nodes' public key")
        return seed

    def _parse_peer(self, peer: Peer) -> tuple[str, str | None]:
        if isinstance(peer, str):
            endpoint, key = peer, None
        elif isinstance(peer, tuple) and len(peer) == 2 and isinstance(peer[0], str):
            endpoint, key = peer[0], normalize_key(peer[1], f"key of peer {peer[0]!r}")
        else:
            raise ConfigError(f"a peer is an endpoint or (endpoint, public_key), got {peer!r}")
        if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"peer endpoint {endpoint!r} must start with tcp://, ipc://")
        if self._curve is not None and key is None:
            raise ConfigError(f"with CURVE, peer {endpoint!r} needs its public key")
        return endpoint, key

    # -- properties ----------------------------------------------------------------

    @property
    def node_name(self) -> str:
        """This node's name."""
        return self._name

    @property
    def auto_named(self) -> bool:
        """Whether the name was made up (``PubSub(None, ...)``): a web worker's node."""
        return self._auto_named

    @property
    def incarnation(self) -> int:
        """This run's incarnation: grows each time a node starts."""
        return self._incarnation

    @property
    def endpoint(self) -> str:
        """The control endpoint other nodes use as a seed (the bound one after start)."""
        return self._me.control if self._me is not None else self._bind

    @property
    def pub_endpoint(self) -> str:
        """The PUB endpoint announced to peers (known after start)."""
        return self._me.pub if self._me is not None else self._pub_bind

    @property
    def public_key(self) -> str | None:
        """This node's CURVE public key (Z85), or None without CURVE."""
        return self._curve.public if self._curve is not None else None

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame this node sends or accepts, in bytes."""
        return self._options.max_frame_bytes

    @property
    def options(self) -> Options:
        """The tuning options this node was built with."""
        return self._options

    @property
    def running(self) -> bool:
        """Whether the node is started and not stopped."""
        return self._state is _RUNNING

    def peers(self) -> list[str]:
        """Names of the live members (heard within ``peer_timeout``), sorted."""
        if self._membership is None:
            return []
        return sorted(m.record.name for m in self._membership.live())

    def remote_subscribers(self, topic: str) -> int:
        """How many members currently subscribe to ``topic`` at this node's PUB (the PUB
        of the partition ``topic`` goes out on)."""
        partition = self.partitions.partition(topic)
        counts = self._remote_subs if partition == 0 else self._partition_subs[partition - 1]
        return counts.get(topic_prefix(topic), 0)

    # -- versions ------------------------------------------------------------------

    def announce(self, protocol: str, low: int, high: int) -> None:
        """Announce that this node speaks versions ``low`` to ``high`` of ``protocol``.

        For the layers above (the tracker announces ``"tracker"`` and ``"transfer"``):
        the range goes into this node's record, which every hello, welcome and gossip
        carries, so peers read it with :meth:`versions`. Callable before or after
        :meth:`start`; after it, peers see the new range with the next gossip round
        (within ``gossip_interval``). Announcing a protocol again replaces its range.

        Args:
            protocol: 1 to 64 ASCII letters, digits, ``-``, ``_`` or ``.``.
            low: the oldest version this node reads and writes (at least 1).
            high: the newest (at least ``low``).

        Raises:
            ConfigError: a bad protocol name or range, or ``"pubsub"``, whose range is
                the frame codec's (:data:`pubsub_zmq.wire.VERSIONS`).
        """
        try:
            check_protocol(protocol)
            versions = Range(low, high)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
        if protocol == "pubsub":
            raise ConfigError("the pubsub range is the frame codec's; it is not announced")
        self._versions[protocol] = versions
        if self._me is not None:
            self._me = self._me.with_versions(self._versions)
            if self._membership is not None:
                self._membership.me = self._me

    def versions(self, node_name: str) -> dict[str, Range]:
        """The versions node ``node_name`` announced, ``{protocol: Range}``.

        This node's own for its own name; a member's as its latest record says (a
        record without versions, from the release before negotiation, reads as
        :data:`pubsub_zmq.versions.LEGACY`); an empty dict for a node that is not a
        member (every member speaks ``pubsub``).
        """
        if node_name == self._name:
            return dict(self._versions)
        member = self._membership.members.get(node_name) if self._membership else None
        return dict(member.record.versions) if member is not None else {}

    @property
    def members_generation(self) -> int:
        """A number that changes whenever the live members or their records (versions
        included) change: :meth:`member_versions` is the same while it is."""
        return -1 if self._membership is None else self._membership.generation

    def member_versions(self) -> dict[str, dict[str, Range]]:
        """The versions of every live member (the names :meth:`peers` lists), by name."""
        if self._membership is None:
            return {}
        return {m.record.name: dict(m.record.versions) for m in self._membership.live()}

    def _choose_versions(self) -> None:
        # broadcasts and gossip: one frame every live member reads (versions.py's rule)
        membership = self._membership
        assert membership is not None
        self._versions_seen = membership.generation
        ranges = {m.record.name: _pubsub_range(m.record) for m in membership.live()}
        version = negotiation.broadcast(VERSIONS, ranges.values())
        self._frame_version = VERSIONS.high if version is None else version
        self._left_out = negotiation.left_out(version, ranges)
        for name in self._left_out:
            incarnation = membership.members[name].record.incarnation
            if (name, incarnation) in self._left_out_logged:
                continue
            if len(self._left_out_logged) >= MAX_CACHED_TOPICS:
                self._left_out_logged.clear()
            self._left_out_logged.add((name, incarnation))
            log.warning(
                "node %s: member %s (incarnation %d) cannot read broadcasts: they go in "
                "pubsub version %d, the lowest the live members speak; it speaks %s, we "
                "speak %s (counted in dropped.unreadable)",
                self._name,
                name,
                incarnation,
                self._frame_version,
                ranges[name],
                VERSIONS,
            )
        if self.partitions.publish_size > 1:
            self._choose_partitions()

    def _choose_partitions(self) -> None:
        # who cannot read each partition this node publishes on (pubsub_zmq.partitions)
        membership = self._membership
        assert membership is not None
        readers = [(m.record.name, m.record.pool_size) for m in membership.live()]
        self._unread = [unread_by(p, readers) for p in range(self.partitions.publish_size)]
        sizes = dict(readers)
        for name in sorted(set().union(*self._unread)):
            incarnation = membership.members[name].record.incarnation
            if (name, incarnation) in self._unread_logged:
                continue
            if len(self._unread_logged) >= MAX_CACHED_TOPICS:
                self._unread_logged.clear()
            self._unread_logged.add((name, incarnation))
            log.warning(
                "node %s: member %s (incarnation %d) reads %d partition(s) and this node "
                "broadcasts on %d: the topics of partitions %d and up do not reach it "
                "(counted in dropped.unread_partition). Change pool_size in two "
                "deployments, through broadcast_pool_size",
                self._name,
                name,
                incarnation,
                sizes[name],
                self.partitions.publish_size,
                sizes[name],
            )

    # -- life cycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind, connect to the seeds and wait for their answers.

        Returns once every seed has answered hello, or after ``start_timeout`` with the
        missing seeds logged (they are still retried with backoff).

        Raises:
            PubSubError: already started, or an endpoint cannot be bound.
        """
        if self._state is not _State.NEW:
            raise PubSubError(f"PubSub {self._name!r} was already started")
        self._state = _State.STARTING
        self._loop = asyncio.get_running_loop()
        options = self._options
        transport = Transport(
            on_control=self._on_control,
            on_data=self._on_data,
            on_subscription=self._on_subscription,
            context=self._context,
            curve=self._curve,
            max_frame_bytes=options.max_frame_bytes,
            send_hwm=options.send_hwm,
            recv_hwm=options.recv_hwm,
            control_hwm=options.control_hwm,
            partitions=self.partitions.pool_size,
        )
        try:
            await self._open_transport(transport)
        except BaseException:
            self._state = _State.STOPPED
            raise
        self._transport = transport
        if self._advertise_host is None and _is_wildcard(transport.control_endpoint):
            self._advertise_host = await self._own_address()
        me = self._me = NodeRecord(
            self._name,
            self._incarnation,
            self._advertise(transport.control_endpoint),
            self._advertise(transport.pub_endpoint),
            self.public_key,
            tuple(sorted(self._versions.items())),
            tuple(self._advertise(e) for e in transport.pub_endpoints[1:]),
            self.partitions.pool_size,
        )
        own = {self._bound, transport.control_endpoint, me.control}
        curve = self._curve
        self._membership = Membership(
            me,
            [(ep, key) for ep, key in self._seeds if ep not in own],
            own=own,
            allowed=(lambda r: curve.permits(r.name, r.key)) if curve is not None else None,
            gossip_interval=options.gossip_interval,
            peer_timeout=options.peer_timeout,
            forget_after=options.forget_after,
            min_backoff=min(0.05, options.gossip_interval),
            max_backoff=options.max_backoff,
            rng=self._rng,
        )
        self._state = _State.RUNNING
        listens = (me.control, transport.control_endpoint)  # a wildcard may announce 127.x
        if curve is None and not all(_is_loopback(endpoint) for endpoint in listens):
            log.warning(
                "node %s listens on %s without CURVE: traffic is NOT encrypted or "
                "authenticated; anyone who reaches the port can read and inject messages",
                self._name,
                me.control,
            )
        self._spawn(self._maintain_loop())
        if self._dns:
            self._spawn(self._resolve_loop())
        await self._wait_for_seeds()

    async def _own_address(self) -> str | None:
        # a wildcard bind announces the address this host's name resolves to (a
        # container's or a pod's own address, from /etc/hosts), so that other nodes can
        # reach it and a DNS answer naming it is known as this node's own
        host = socket.gethostname()
        try:
            address = (await resolve(host, 0))[0]
        except (OSError, IndexError) as exc:
            log.warning(
                "node %s: bound to a wildcard address and host name %r does not resolve "
                "(%s): give advertise_host, or peers cannot reach this node",
                self._name,
                host,
                exc,
            )
            return None
        if address.startswith("127."):
            log.warning(
                "node %s: bound to a wildcard address; host name %r resolves to %s, so "
                "only this host can reach it: give advertise_host",
                self._name,
                host,
                address,
            )
        return address

    async def _open_transport(self, transport: Transport) -> None:
        # bind_fallback: a port another process holds (EADDRINUSE) is retried as port 0
        try:
            await transport.open(self._bind, self._pub_bind)
        except PubSubError as exc:
            cause = exc.__cause__
            taken = isinstance(cause, zmq.ZMQError) and cause.errno == errno.EADDRINUSE
            if self._bind_fallback is None or not taken:
                raise
            log.info(
                "node %s: %s is taken (the host's seed?): binding %s instead",
                self._name,
                self._bind,
                self._bind_fallback,
            )
            self._bound = self._bind_fallback
            await transport.open(self._bound, self._pub_bind)

    async def _wait_for_seeds(self) -> None:
        assert self._membership is not None
        timeout = self._options.start_timeout
        deadline = time.monotonic() + timeout
        while self._state is _RUNNING:
            pending = self._membership.pending_seeds()
            if self._dns and not self._dns_settled():
                pending.append("one of " + ", ".join(str(d) for d in self._dns))
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "node %s: seeds did not answer within %.1f s (retrying): %s",
                    self._name,
                    timeout,
                    ", ".join(pending),
                )
                return
            self._seed_event.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._seed_event.wait()
            except TimeoutError:
                pass

    def _dns_settled(self) -> bool:
        # start-up needs one answering DNS seed, not all: or an answer naming no other node
        seeds = self._membership.dns_seeds() if self._membership is not None else []
        if any(seed.name is not None for seed in seeds):
            return True
        return not seeds and len(self._dns_answers) == len(self._dns)

    async def _resolve_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_DNS_TIMEOUT):
                    await self._resolve_all()
            except TimeoutError:
                self._dns_failures += 1
                self._log_limited("dns", "peer_dns lookups took over %.0f s", _DNS_TIMEOUT)
            await asyncio.sleep(self._options.gossip_interval)

    async def _resolve_all(self) -> None:
        # every name in turn; a failed lookup keeps the previous answer's seeds
        membership = self._membership
        assert membership is not None
        for dns in self._dns:
            try:
                addresses = await self._resolver(dns.host, dns.port)
                if isinstance(addresses, str):
                    raise TypeError("a resolver returns a collection of addresses, not a str")
                answer = [(_seed_endpoint(item, dns.port), dns.key) for item in addresses]
            except (OSError, TypeError, ValueError) as exc:
                self._dns_failures += 1
                self._log_limited("dns", "peer_dns lookup of %s failed: %s", dns, exc)
                continue
            except Exception:
                self._dns_failures += 1
                log.exception("node %s: the peer_dns resolver failed on %s", self._name, dns)
                continue
            self._dns_lookups += 1
            self._dns_answers[dns] = answer
        now = time.monotonic()
        for answer in list(self._dns_answers.values()):
            for seed in membership.resolved(answer, now):
                log.info("node %s: seed %s found by DNS", self._name, seed.endpoint)
        self._seed_event.set()

    async def stop(self) -> None:
        """Send what is queued, then close every socket and task. Idempotent.

        Subscriptions end: iterators stop, callbacks are no longer called.
        """
        if self._state is _State.STOPPED:
            return
        was_running = self._state is _RUNNING
        self._state = _State.STOPPED
        if was_running:
            self._flush_pending()
        await self._tasks.cancel()
        for sub in list(self._registry.all()):
            self._registry.remove(sub)
            sub._close()
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _schedule_callbacks(self, sub: Subscription) -> None:
        # one event-loop callback runs every callback subscription that has messages:
        # a broadcast to 10,000 of them schedules one handle, not 10,000
        self._ready.append(sub)
        if len(self._ready) == 1:
            asyncio.get_running_loop().call_soon(self._run_ready)

    def _run_ready(self) -> None:
        ready, self._ready = self._ready, []
        for sub in ready:
            sub._run_callbacks()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def _advertise(self, endpoint: str) -> str:
        host = self._advertise_host
        if host is None or not endpoint.startswith("tcp://"):
            return endpoint
        port = endpoint.rsplit(":", 1)[1]
        return f"tcp://{host}:{port}"

    # -- subscriptions -------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        metadata: Any = None,
        *,
        callback: Callback | None = None,
        queue_size: int | None = None,
        link: bool = True,
        local: bool = False,
    ) -> Subscription:
        """Subscribe to ``topic`` on every node (or on this one: ``local=True``).

        Args:
            topic: a non-empty str without NUL.
            metadata: any value, kept with the subscription (Phoenix's ``metadata:``).
            callback: if given, called with each message (sync, or async: awaited before
                the next message) instead of iterating the subscription.
            queue_size: this subscription's bound (default: the node's ``queue_size``).
            link: like a Phoenix subscription dies with its process, remove it when the
                asyncio task that subscribed finishes; False keeps it until unsubscribed.
            local: a node-local subscription: it gets this node's broadcasts and local
                broadcasts of the topic but asks no other node for theirs (no ZeroMQ
                filter), as for presence diffs, which every node computes itself.

        Returns:
            The subscription: ``async for message in subscription``.

        Raises:
            InvalidTopic: the topic is empty, too long or contains NUL.
            NotRunning: the PubSub was stopped.
        """
        if self._state is _State.STOPPED:
            raise NotRunning(f"PubSub {self._name!r} is stopped")
        prefix = self._prefix(topic)
        size = self._options.queue_size if queue_size is None else queue_size
        check_option("queue_size", size)
        sub = Subscription(self, topic, metadata, size, callback, local)
        if self._registry.add(sub) and self._transport is not None:
            self._transport.subscribe(prefix)
        if link:
            try:
                task = asyncio.current_task()
            except RuntimeError:
                task = None
            if task is not None:
                sub._link(task)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription; a no-op when it is already gone.

        Raises:
            PubSubError: the subscription belongs to another PubSub.
        """
        if subscription._pubsub is not self:
            raise PubSubError("that subscription belongs to another PubSub")
        if self._registry.remove(subscription):
            topic = subscription.topic
            if self._transport is not None:
                self._transport.unsubscribe(self._prefix(topic))
            for peer in self._peers.values():
                peer.topic_next.pop(topic, None)
        subscription._close()

    def unsubscribe_match(self, topic: str, metadata: Any) -> int:
        """Remove the topic's subscriptions whose metadata equals ``metadata``.

        Returns:
            How many were removed.
        """
        matches = self._registry.match(topic, metadata)
        for sub in matches:
            self.unsubscribe(sub)
        return len(matches)

    # -- sending -------------------------------------------------------------------

    def broadcast(self, topic: str, message: Any) -> None:
        """Send ``message`` to every subscriber of ``topic`` on every node, this one too.

        Never blocks: the message is queued and goes out by the end of this event-loop
        turn (``await flush()`` to push it now).

        Args:
            topic: the topic.
            message: any value orjson encodes, or an :class:`~pubsub_zmq.Encoded` one
                (sent as it is; local subscribers receive its decoded value).

        Raises:
            NotRunning: the node is not running.
            TypeError: the message cannot be encoded as JSON.
            InvalidTopic: the topic is empty, too long or contains NUL.
            MessageTooLarge: the encoded message exceeds ``max_frame_bytes``.
        """
        if self._state is not _RUNNING:
            raise NotRunning(f"PubSub {self._name!r} is not running")
        try:
            data = orjson.dumps(message)
        except TypeError:
            # an Encoded message lands here (orjson cannot encode its bytes field): the
            # check costs nothing on the hot path, where a type test cost 6% of a
            # broadcast
            if type(message) is not Encoded:
                raise
            self._broadcast_encoded(topic, message)
            return
        # Outbox.add's common case, inline (the call would cost a fifth of a broadcast):
        # the topic's open batch takes the message
        batch = self._open.get(topic)
        if batch is not None and len(data) < batch.room:
            body = batch.body
            body += data
            body += b","
            batch.room -= len(data) + 1
            batch.count += 1
            if batch.count >= self._max_batch or batch.room <= 0:
                del self._open[topic]
                self._send((batch,))
        else:
            self._enqueue(None, topic, data)
        subs = self._lookup(topic)
        if subs:
            self._dispatch_local(topic, subs, None, message)

    def _broadcast_encoded(self, topic: str, message: Encoded) -> None:
        data = message.data
        self._enqueue(None, topic, data)
        subs = self._lookup(topic)
        if subs:
            self._dispatch_local(topic, subs, None, orjson.loads(data))

    def broadcast_from(self, sender: Subscription, topic: str, message: Any) -> None:
        """Like :meth:`broadcast`, but not delivered to the ``sender`` subscription.

        An :class:`~pubsub_zmq.Encoded` message is decoded only when a local subscriber
        other than ``sender`` is there to receive it.
        """
        data, encoded = self._encode(message)
        self._enqueue(None, topic, data)
        subs = self._registry.lookup(topic)
        if subs:
            if encoded:
                if not self._reaches_beyond(subs, sender):
                    return
                message = orjson.loads(data)
            self._dispatch_local(topic, subs, sender, message)

    def local_broadcast(self, topic: str, message: Any) -> None:
        """Deliver ``message`` to this node's subscribers of ``topic`` only."""
        self._prefix(topic)
        subs = self._registry.lookup(topic)
        if subs:
            self._dispatch_local(topic, subs, None, message)

    def local_broadcast_from(self, sender: Subscription, topic: str, message: Any) -> None:
        """Like :meth:`local_broadcast`, but not delivered to ``sender``."""
        self._prefix(topic)
        subs = self._registry.lookup(topic)
        if subs:
            self._dispatch_local(topic, subs, sender, message)

    def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        """Send ``message`` to the subscribers of ``topic`` on node ``node_name`` only.

        To this node itself it is delivered locally (a decoded copy, as another node
        would receive); to an unknown node it is dropped (and counted), as in Phoenix.
        ``message`` may be :class:`~pubsub_zmq.Encoded`, and the errors raised are
        those of :meth:`broadcast`.
        """
        data, _ = self._encode(message)
        if node_name == self._name:
            self._prefix(topic)
            subs = self._registry.lookup(topic)
            if subs:  # a copy, as a remote node gets
                self._dispatch_local(topic, subs, None, orjson.loads(data))
            return
        self._enqueue(node_name, topic, data)

    async def flush(self) -> None:
        """Hand every queued batch to ZeroMQ now.

        ZeroMQ then writes it to the network in its I/O thread; a frame that meets a
        full queue is dropped (and counted), never waited for.
        """
        self._flush_pending()
        await asyncio.sleep(0)

    def _encode(self, message: Any) -> tuple[bytes, bool]:
        # the encoding of a message to send, and whether it came encoded
        if self._state is not _RUNNING:
            raise NotRunning(f"PubSub {self._name!r} is not running")
        if isinstance(message, Encoded):
            return message.data, True
        return orjson.dumps(message), False

    def _enqueue(self, dest: str | None, topic: str, data: bytes) -> None:
        full = self._add(dest, topic, data)
        if full:
            self._send(full)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        # what is still open goes out at the end of this event-loop turn
        self._flush_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._flush_pending)

    def _flush_pending(self) -> None:
        self._flush_scheduled = False
        if self._transport is None:
            return
        self._send(self._outbox.take())

    def _send(self, batches: Iterable[Batch]) -> None:
        transport = self._transport
        if transport is None:
            return
        counters = self._counters
        for batch in batches:
            count = batch.count
            dest = batch.dest
            membership = self._membership
            if dest is None:
                if membership is not None and membership.generation != self._versions_seen:
                    self._choose_versions()
                partition = self.partitions.partition(batch.topic)
                frame = self._outbox.frame(batch, self._frame_version)
                if transport.publish(frame, partition):
                    counters.broadcasts += count
                    counters.broadcast_frames += 1
                    if self._left_out:
                        counters.unreadable += len(self._left_out)
                    unread = self._unread[partition]
                    if unread:
                        counters.unread_partition += count * len(unread)
                else:
                    counters.send_dropped += count
                continue
            member = membership.members.get(dest) if membership is not None else None
            if member is None:
                counters.unknown_node += count
                self._log_limited(
                    "unknown_node", "direct_broadcast to unknown node %r dropped", dest
                )
                continue
            record = member.record
            peer = self._peers.get(dest)
            version = peer.version if peer is not None else _direct_version(record)
            frame = self._outbox.frame(batch, version)
            if transport.send_control(record.control, record.key, frame):
                counters.directs += count
                counters.direct_frames += 1
            else:
                counters.send_dropped += count

    # -- local delivery ------------------------------------------------------------

    def _dispatch_local(
        self,
        topic: str,
        subs: Collection[Subscription],
        sender: Subscription | None,
        message: Any,
    ) -> None:
        dispatcher = self._dispatcher
        if dispatcher is default_dispatch:
            # deliveries only queue (callbacks run later) and fastlanes never subscribe
            # or unsubscribe in the call, so the live view is safe here
            if self._registry.laned(topic):
                default_dispatch(subs, sender, message)
            else:  # the common case, without the fastlane test per subscription
                for sub in subs:
                    if sub is not sender:
                        sub.deliver(message)
            return
        try:
            dispatcher(list(subs), sender, message)
        except Exception:
            log.exception("dispatcher raised for topic %r", topic)

    def _reaches_beyond(self, subs: Collection[Subscription], sender: Subscription) -> bool:
        # whether a local delivery from ``sender`` has anyone to reach: the default
        # dispatcher skips the sender, a custom one decides for itself
        if self._dispatcher is not default_dispatch:
            return True
        return len(subs) > 1 or sender not in subs

    def _dispatch_batch(self, topic: str, messages: list[Any]) -> None:
        subs = self._registry.lookup(topic)
        if not subs:
            return
        dispatcher = self._dispatcher
        if dispatcher is default_dispatch:
            if not self._registry.laned(topic):
                for sub in subs:
                    sub._deliver_many(messages)
                return
            lanes = [sub for sub in subs if sub.fastlane is not None]
            for sub in subs:
                if sub.fastlane is None:
                    sub._deliver_many(messages)
            for message in messages:  # one cache per message: each encoded once
                default_dispatch(lanes, None, message)
            return
        subs = list(subs)
        for message in messages:
            try:
                dispatcher(subs, None, message)
            except Exception:
                log.exception("dispatcher raised for topic %r", topic)

    # -- receiving -----------------------------------------------------------------

    def _decode(self, data: bytes, source: str) -> Frame | None:
        try:
            return decode(data, self._options.max_frame_bytes)
        except FrameTooLarge as exc:
            self._counters.oversize += 1
            self._log_limited("oversize", "dropped a frame from %s: %s", source, exc)
        except UnknownVersion as exc:
            self._counters.unknown_version += 1
            self._log_limited("version", "dropped a frame from %s: %s", source, exc)
        except WireError as exc:
            self._counters.invalid += 1
            self._log_limited("invalid", "dropped an invalid frame from %s: %s", source, exc)
        return None

    def _reject(self, reason: str, *args: object) -> None:
        self._counters.rejected += 1
        self._log_limited("rejected", "dropped a frame: " + reason, *args)

    def _on_data(self, name: str, data: bytes) -> None:
        peer = self._peers.get(name)
        if peer is None or self._state is not _RUNNING:
            return
        frame = self._decode(data, f"member {name!r}")
        if frame is None:
            return
        if frame.kind is not Kind.BROADCAST or frame.sender != name:
            self._reject("%r's PUB sent a %s frame as %r", name, frame.kind.name, frame.sender)
            return
        if frame.incarnation != peer.record.incarnation:
            self._reject("broadcast from %r of another incarnation", name)
            return
        assert self._membership is not None
        self._membership.heard(name, frame.incarnation, time.monotonic())
        messages = frame.messages
        count = len(messages)
        counters = self._counters
        counters.received += count
        counters.received_frames += 1
        peer.received += count
        topic = frame.topic
        if topic in self._registry:
            expected = peer.topic_next.get(topic)
            if expected is not None and frame.seq > expected:
                peer.lost += frame.seq - expected
            peer.topic_next[topic] = frame.seq + count
            self._dispatch_batch(topic, messages)

    def _on_subscription(self, prefix: bytes, subscribed: bool, partition: int = 0) -> None:
        counts = self._remote_subs if partition == 0 else self._partition_subs[partition - 1]
        if subscribed:
            if prefix in counts or len(counts) < MAX_CACHED_TOPICS:
                counts[prefix] = counts.get(prefix, 0) + 1
        else:
            left = counts.get(prefix, 0) - 1
            if left > 0:
                counts[prefix] = left
            else:
                counts.pop(prefix, None)

    def _on_control(self, data: bytes, user_id: str | None) -> None:
        if self._state is not _RUNNING:
            return
        self._counters.control_in += 1
        frame = self._decode(data, "the control endpoint")
        if frame is None:
            return
        curve = self._curve
        membership = self._membership
        assert membership is not None
        if frame.kind is Kind.DIRECT:
            member = membership.members.get(frame.sender)
            if member is None or member.record.incarnation != frame.incarnation:
                self._reject("direct frame from unknown node %r", frame.sender)
                return
            if curve is not None and member.record.key != user_id:
                self._reject("direct frame as %r from another key", frame.sender)
                return
            self._on_direct(frame)
            return
        if frame.control is None:
            self._reject("broadcast frame on the control endpoint from %r", frame.sender)
            return
        if curve is not None and frame.control.node.key != user_id:
            self._reject("%r announced a key it does not hold", frame.sender)
            return
        if frame.version not in VERSIONS and membership.compatible(frame.control.node):
            # it speaks a version we speak, yet wrote in one we do not read
            self._counters.unknown_version += 1
            self._log_limited(
                "version",
                "dropped a %s frame from %r: version %d, outside our %s",
                frame.kind.name.lower(),
                frame.sender,
                frame.version,
                VERSIONS,
            )
            return
        self._on_membership(frame.kind, frame.control)

    def _on_direct(self, frame: Frame) -> None:
        assert self._membership is not None
        self._membership.heard(frame.sender, frame.incarnation, time.monotonic())
        peer = self._peers.get(frame.sender)
        if peer is None:
            return
        count = len(frame.messages)
        self._counters.received += count
        self._counters.received_frames += 1
        peer.received += count
        expected = peer.direct_next
        if expected is not None and frame.seq > expected:
            peer.lost += frame.seq - expected
        peer.direct_next = frame.seq + count
        self._dispatch_batch(frame.topic, frame.messages)

    def _on_membership(self, kind: Kind, control: Control) -> None:
        membership = self._membership
        assert membership is not None
        now = time.monotonic()
        node = control.node
        verdict = membership.observe(node, now, first_hand=True)
        if verdict is Verdict.SELF:
            if control.via is not None:  # a seed address that turned out to be this node
                membership.drop_seed(control.via)
                self._seed_event.set()
            return
        if verdict is Verdict.INCOMPATIBLE:
            self._refuse_version(kind, node)
            return
        if verdict in (Verdict.CONFLICT, Verdict.STALE, Verdict.NOT_ALLOWED):
            self._counters.refused += 1
            self._log_limited(
                "refused",
                "refused %s from %r (incarnation %d at %s): %s",
                kind.name.lower(),
                node.name,
                node.incarnation,
                node.control,
                "name held by a live node" if verdict is Verdict.CONFLICT else verdict.value,
                level=logging.ERROR if verdict is Verdict.CONFLICT else logging.WARNING,
            )
            return
        self._apply(verdict, node)
        if kind is Kind.HELLO:
            self._send_control_frame(
                node.control, node.key, Kind.WELCOME, via=control.via, version=_direct_version(node)
            )
        elif (
            kind is Kind.WELCOME
            and control.via is not None
            and membership.seed_answered(control.via, node.name)
        ):
            self._seed_event.set()
        refused = self._refused_versions
        for record in control.members:
            seen = refused.get(record.name) if refused else None
            if seen is not None and seen["incarnation"] == record.incarnation:
                continue  # its own word refused it: a relayed copy does not bring it back
            verdict = membership.observe(record, now, first_hand=False)
            if verdict in (Verdict.NEW, Verdict.RESTARTED):
                self._apply(verdict, record)
                self._send_control_frame(
                    record.control, record.key, Kind.HELLO, version=_direct_version(record)
                )
            elif verdict is Verdict.INCOMPATIBLE:
                self._refuse_version(None, record)

    def _refuse_version(self, kind: Kind | None, record: NodeRecord) -> None:
        # kind None: a record relayed in someone's member list (counted once per
        # incarnation); else the node's own hello, welcome or gossip (each one counted)
        old = self._peers.get(record.name)
        if old is not None and old.record.incarnation == record.incarnation:
            self._disconnect(old.record)  # known from a relayed record that said otherwise
        seen = self._refused_versions.get(record.name)
        if seen is not None and seen["incarnation"] == record.incarnation:
            if kind is not None:
                self._counters.refused_version += 1
            return
        self._counters.refused_version += 1
        theirs = record.speaks("pubsub")
        reason = (
            f"no common pubsub version: it speaks {theirs if theirs else 'none'}, "
            f"we speak {VERSIONS}"
        )
        if len(self._refused_versions) >= MAX_CACHED_TOPICS:
            del self._refused_versions[next(iter(self._refused_versions))]
        self._refused_versions[record.name] = {
            "incarnation": record.incarnation,
            "control": record.control,
            "versions": {name: v.to_json() for name, v in record.versions},
            "reason": reason,
        }
        log.warning(
            "node %s: refused %s %r (incarnation %d at %s): %s; not connected",
            self._name,
            "a record relayed for" if kind is None else f"{kind.name.lower()} from",
            record.name,
            record.incarnation,
            record.control,
            reason,
            extra={"peer": record.name, "incarnation": record.incarnation, "reason": reason},
        )

    def _apply(self, verdict: Verdict, record: NodeRecord) -> None:
        if verdict is Verdict.NEW:
            log.info(
                "node %s: member %s joined (%s)",
                self._name,
                record.name,
                record.control,
                extra={"peer": record.name, "member": "joined"},
            )
            self._connect(record)
        elif verdict is Verdict.RESTARTED:
            log.info(
                "node %s: member %s restarted",
                self._name,
                record.name,
                extra={"peer": record.name, "member": "restarted"},
            )
            old = self._peers.get(record.name)
            if old is not None:
                self._disconnect(old.record)
            self._connect(record)
        elif verdict is Verdict.RECOVERED:
            log.info(
                "node %s: member %s is back",
                self._name,
                record.name,
                extra={"peer": record.name, "member": "back"},
            )
        if verdict in (Verdict.UPDATED, Verdict.RECOVERED):
            peer = self._peers.get(record.name)
            assert self._membership is not None
            member = self._membership.members.get(record.name)
            if peer is not None and member is not None:
                peer.record = member.record
                peer.version = _direct_version(member.record)

    def _connect(self, record: NodeRecord) -> None:
        assert self._transport is not None
        self._peers[record.name] = _PeerState(record)
        prefixes = [self._prefix(t) for t in self._registry.remote_topics()]
        self._transport.connect_member(record.name, record.pub, record.key, prefixes, record.pubs)

    def _disconnect(self, record: NodeRecord) -> None:
        old = self._peers.pop(record.name, None)
        if old is not None:
            self._lost_retired += old.lost  # keeps dropped.lost monotonic
        if self._transport is None:
            return
        self._transport.disconnect_member(record.name)
        assert self._membership is not None
        seed = self._membership.seeds.get(record.control)
        if seed is None or seed.key != record.key:
            self._transport.close_dealer(record.control, record.key)

    def _control_frame(self, kind: Kind, via: str | None = None, version: int = LOWEST) -> bytes:
        assert self._me is not None
        assert self._membership is not None
        body = Control(self._me, self._membership.live_records(), via)
        self._ctl_seq += 1
        return encode_control(kind, self._incarnation, self._ctl_seq, self._sender, body, version)

    def _send_frame(self, endpoint: str, key: str | None, frame: bytes) -> bool:
        if self._transport is None:
            return False
        self._counters.control_out += 1
        if self._transport.send_control(endpoint, key, frame):
            return True
        self._counters.send_dropped += 1
        return False

    def _send_control_frame(
        self,
        endpoint: str,
        key: str | None,
        kind: Kind,
        via: str | None = None,
        version: int = LOWEST,
    ) -> bool:
        return self._send_frame(endpoint, key, self._control_frame(kind, via, version))

    # -- maintenance ---------------------------------------------------------------

    async def _maintain_loop(self) -> None:
        interval = min(0.05, self._options.gossip_interval / 4)
        while True:
            try:
                self._maintain(time.monotonic())
            except Exception:
                log.exception("node %s: membership maintenance failed", self._name)
            await asyncio.sleep(interval)

    def _maintain(self, now: float) -> None:
        membership = self._membership
        assert membership is not None
        tick = membership.tick(now)
        for member in tick.silent:
            log.warning(
                "node %s: member %s went silent",
                self._name,
                member.record.name,
                extra={"peer": member.record.name, "member": "silent"},
            )
        for member in tick.forget:
            log.warning(
                "node %s: member %s forgotten",
                self._name,
                member.record.name,
                extra={"peer": member.record.name, "member": "forgotten"},
            )
            self._disconnect(member.record)
        for seed in tick.forget_seeds:
            log.info("node %s: seed %s no longer named by DNS", self._name, seed.endpoint)
            used = any(
                m.record.control == seed.endpoint and m.record.key == seed.key
                for m in membership.members.values()
            )
            if not used and self._transport is not None:
                self._transport.close_dealer(seed.endpoint, seed.key)
        for seed in tick.hello_seeds:  # whoever answers there, it reads our lowest version
            self._send_control_frame(seed.endpoint, seed.key, Kind.HELLO, via=seed.endpoint)
        for member in tick.hello_members:
            record = member.record
            self._send_control_frame(
                record.control, record.key, Kind.HELLO, version=_direct_version(record)
            )
        if tick.gossip:
            if membership.generation != self._versions_seen:
                self._choose_versions()
            # encoded once for every member
            frame = self._control_frame(Kind.GOSSIP, version=self._frame_version)
            for member in tick.gossip:
                self._send_frame(member.record.control, member.record.key, frame)

    # -- observation ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and per-peer figures, as a JSON-able dict.

        Keys: ``node``, ``incarnation``, ``endpoint``, ``pub_endpoint``, ``running``,
        ``subscriptions``, ``topics``; ``sent`` (broadcasts, directs, their frames and
        control frames), ``received`` (messages, frames, control frames), ``dropped``
        (``lost``: gaps in peers' sequence numbers, i.e. messages lost on the way;
        ``overflow``: dropped from full local subscriber queues; ``send``: refused by a
        full ZeroMQ queue here; ``invalid``, ``oversize``, ``unknown_version``: frames
        dropped by the codec; ``rejected``: well-formed frames from a wrong or unknown
        sender; ``refused``: hellos refused (name conflicts, keys not allowed);
        ``refused_version``: hello, welcome and gossip frames refused because their
        sender's ``pubsub`` versions share none with ours (and relayed records of such
        nodes, once per incarnation); ``unreadable``: broadcast frames sent in a version
        some live member cannot read, one per such member and frame (see
        :mod:`pubsub_zmq.versions`); ``unread_partition``: broadcast messages sent on a
        partition some live member does not read, one per such member and message (see
        :mod:`pubsub_zmq.partitions`); ``unknown_node``: direct messages to no known
        node); ``partitions`` (``pool_size``, ``broadcast_pool_size``, every
        partition's ``pub_endpoints``, and ``unread_by``: the live members that do not
        read some partition this node broadcasts on); ``versions`` (this node's
        ranges, ``{protocol: [low, high]}``),
        ``broadcast_version`` (the frame version of broadcasts and gossip now),
        ``refused_versions`` (per refused node name: its ``incarnation``, ``control``
        endpoint, ``versions`` and the ``reason``); and ``peers``: per member name its
        incarnation, endpoints, ``alive``, ``last_heard`` (seconds ago), ``received``
        and ``lost`` messages, its ``versions`` and the ``version`` of direct frames to
        it; ``dns`` (``peer_dns`` lookups that answered, ``failures``: lookups that
        failed or timed out, ``seeds``: the seeds the answers name now).
        """
        c = self._counters
        now = time.monotonic()
        members = self._membership.members if self._membership is not None else {}
        lost = self._lost_retired + sum(p.lost for p in self._peers.values())
        peers: dict[str, Any] = {}
        for name, member in members.items():
            peer = self._peers.get(name)
            peers[name] = {
                "incarnation": member.record.incarnation,
                "control": member.record.control,
                "pub": member.record.pub,
                "alive": member.alive,
                "last_heard": round(now - member.last_heard, 3) if member.heard else None,
                "received": peer.received if peer is not None else 0,
                "lost": peer.lost if peer is not None else 0,
                "versions": {p: v.to_json() for p, v in member.record.versions},
                "version": _direct_version(member.record),
            }
        return {
            "node": self._name,
            "incarnation": self._incarnation,
            "endpoint": self.endpoint,
            "pub_endpoint": self.pub_endpoint,
            "running": self.running,
            "subscriptions": len(self._registry),
            "topics": self._registry.topic_count(),
            "versions": {p: v.to_json() for p, v in sorted(self._versions.items())},
            "broadcast_version": self._frame_version,
            "refused_versions": {name: dict(info) for name, info in self._refused_versions.items()},
            "sent": {
                "broadcasts": c.broadcasts,
                "broadcast_frames": c.broadcast_frames,
                "directs": c.directs,
                "direct_frames": c.direct_frames,
                "control_frames": c.control_out,
            },
            "received": {
                "messages": c.received,
                "frames": c.received_frames,
                "control_frames": c.control_in,
            },
            "dropped": {
                "lost": lost,
                "overflow": self._overflow.dropped,
                "send": c.send_dropped,
                "invalid": c.invalid,
                "oversize": c.oversize,
                "unknown_version": c.unknown_version,
                "rejected": c.rejected,
                "refused": c.refused,
                "refused_version": c.refused_version,
                "unreadable": c.unreadable,
                "unread_partition": c.unread_partition,
                "unknown_node": c.unknown_node,
            },
            "partitions": {
                "pool_size": self.partitions.pool_size,
                "broadcast_pool_size": self.partitions.broadcast_pool_size,
                "pub_endpoints": [self.pub_endpoint, *(self._me.pubs if self._me else ())],
                "unread_by": sorted(set().union(*self._unread)),
            },
            "peers": peers,
            "dns": {
                "lookups": self._dns_lookups,
                "failures": self._dns_failures,
                "seeds": len(self._membership.dns_seeds()) if self._membership else 0,
            },
        }

    def _log_limited(
        self, category: str, message: str, *args: object, level: int = logging.WARNING
    ) -> None:
        # at most one line per category and second, so a flood of garbage cannot flood
        # the log; the number of suppressed lines is reported with the next one
        now = time.monotonic()
        last, suppressed = self._log_times.get(category, (-1e9, 0))
        if now - last < 1.0:
            self._log_times[category] = (last, suppressed + 1)
            return
        self._log_times[category] = (now, 0)
        if suppressed:
            message += f" ({suppressed} similar suppressed)"
        log.log(level, "node %s: " + message, self._name, *args)

    def __repr__(self) -> str:
        return f"<PubSub {self._name!r} {self._state.value} {self.endpoint}>"


def _pubsub_range(record: NodeRecord) -> Range:
    # a live member always speaks pubsub (membership refuses the others); a record
    # without it reads no version of ours, which a range beyond ours says
    return record.speaks("pubsub") or Range(VERSION + 1, VERSION + 1)


def _direct_version(record: NodeRecord) -> int:
    """The frame version of direct frames, hellos and welcomes to ``record``'s node."""
    version = negotiation.direct(VERSIONS, _pubsub_range(record))
    return LOWEST if version is None else version


def _entries(value: Iterable[Peer], what: str) -> list[Peer]:
    if isinstance(value, str | bytes):
        raise ConfigError(f"{what} must be a list of entries, not one {type(value).__name__}")
    return list(value)


def _seed_endpoint(item: str | tuple[str, int], port: int) -> str:
    """The endpoint of one item of a resolver's answer (an address, or (address, port))."""
    if isinstance(item, tuple):
        if len(item) != 2 or type(item[1]) is not int or not 1 <= item[1] <= 65535:
            raise ValueError(f"a resolver returned {item!r}, not (address, port)")
        item, port = item
    return endpoint_for(item, port)


def _fallback_endpoint(bind: str) -> str:
    """``bind`` with port 0, for ``bind_fallback``."""
    host, sep, port = bind.removeprefix("tcp://").rpartition(":")
    if not bind.startswith("tcp://") or not sep or not host or not port.isdigit():
        raise ConfigError(f"bind_fallback needs a tcp://HOST:PORT bind, not {bind!r}")
    return f"tcp://{host}:0"


def _is_wildcard(endpoint: str) -> bool:
    return endpoint.startswith(("tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"))


def _is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return True  # ipc:// and inproc:// do not leave the host
    host = endpoint[len("tcp://") :]
    return host.startswith(_LOOPBACK_HOSTS)
