"""Prometheus metrics read from the ``stats()`` of a node's parts at scrape time.

Not pure: it reads live objects (on the event loop's thread, where a scrape runs). No
counter is kept twice: every figure comes from the ``stats()`` of a
:class:`~pubsub_zmq.PubSub`, a :class:`~tracker_zmq.Tracker` (or a
:class:`~tracker_zmq.Presence`, through its tracker), a :class:`~tracker_zmq.Node` (its
client endpoint) and a :class:`~tracker_zmq.channels.Endpoint` (websockets), read when
Prometheus scrapes; none of those ``stats()`` walks the presences (their cost grows with
the replicas, the shards, the subscriptions, the client sessions or the sockets).

Theory of operation
-------------------
Each source's ``stats()`` dict is read through a table (:data:`TABLES`) that maps each
key to a metric: a name, a type (counters end in ``_total``, levels are gauges), a unit
and a help text; dicts of counts become one metric with a label (``reason``, ``peer``,
``status``...), strings become labels of one ``*_info`` metric. A key the table does not
know (a ``stats()`` that grew) is still exported, as an untyped metric named after its
path with a generic help, so nothing is silently dropped; :func:`unmapped` lists such keys
(a test asserts there are none). The names DESIGN fixes are unlabeled node-wide totals:
``tracker_presences``, ``pubsub_messages_sent_total``, ``pubsub_messages_received_total``,
``pubsub_messages_lost_total``, ``websocket_connections`` and
``tracker_replicas{status="up"|"down"}``.

Use::

    from tracker_zmq import metrics

    metrics.register(pubsub=pubsub, tracker=presence)  # the default registry
    app.mount("/metrics", metrics.asgi_app(pubsub=pubsub, tracker=presence))

``docs/guides/operating.md`` tables every metric.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import REGISTRY
from prometheus_client.registry import Collector as _Collector

__all__ = [
    "TABLES",
    "Collector",
    "Info",
    "Labeled",
    "PerItem",
    "Skip",
    "Spec",
    "asgi_app",
    "register",
    "unmapped",
]

Kind = Literal["counter", "gauge"]


class _HasStats(Protocol):
    def stats(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Spec:
    """A number in ``stats()`` exported as one metric.

    Attributes:
        name: The metric's name (a counter's ends in ``_total``).
        kind: ``"counter"`` (only grows) or ``"gauge"`` (a level).
        unit: What it counts, for the docs (``"messages"``, ``"seconds"``...).
        help: The help text.
    """

    name: str
    kind: Kind
    unit: str
    help: str


@dataclass(frozen=True, slots=True)
class Labeled:
    """A dict of numbers in ``stats()`` (``{reason: count}``) as one labeled metric.

    Attributes:
        name: The metric's name.
        kind: ``"counter"`` or ``"gauge"``.
        unit: What it counts.
        help: The help text.
        label: The label that takes the dict's keys.
        zeros: Label values exported at 0 until ``stats()`` counts them: their series
            exist from the first scrape, so ``rate()`` sees the first count and alerts
            on them have a series to read.
    """

    name: str
    kind: Kind
    unit: str
    help: str
    label: str
    zeros: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PerItem:
    """A dict of dicts (``{peer: {field: value}}``): a table per item, the key a label.

    Attributes:
        label: The label that takes the outer dict's keys.
        fields: The table of each item's fields.
    """

    label: str
    fields: Mapping[str, Entry]


@dataclass(frozen=True, slots=True)
class Info:
    """A string (or a number that names something, as a vsn) put as a label on the
    source's ``<prefix>_info`` metric.

    Attributes:
        label: The label's name.
    """

    label: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A key deliberately not exported, and why (the docs say where to read it).

    Attributes:
        why: The reason.
    """

    why: str


Entry: TypeAlias = "Spec | Labeled | PerItem | Info | Skip | Mapping[str, Entry]"
"""What a key of ``stats()`` maps to; a nested dict maps through a nested table."""


def _c(name: str, unit: str, text: str) -> Spec:
    return Spec(name, "counter", unit, text)


def _g(name: str, unit: str, text: str) -> Spec:
    return Spec(name, "gauge", unit, text)


_VERSIONS_SKIP = Skip("version ranges: `tracker-zmq status` and stats() show them")

_PUBSUB: dict[str, Entry] = {
    "node": Info("node"),
    "incarnation": Info("incarnation"),
    "endpoint": Info("endpoint"),
    "pub_endpoint": Info("pub_endpoint"),
    "running": _g("pubsub_running", "boolean", "1 while the PubSub runs."),
    "subscriptions": _g("pubsub_subscriptions", "subscriptions", "Local subscriptions."),
    "topics": _g("pubsub_topics", "topics", "Topics with at least one local subscription."),
    "versions": _VERSIONS_SKIP,
    "broadcast_version": _g(
        "pubsub_broadcast_version", "version", "Frame version of broadcasts and gossip now."
    ),
    "refused_versions": Skip("counted as pubsub_refused_version_nodes"),
    "partitions": {
        "pool_size": _g(
            "pubsub_partitions", "partitions", "Partitions of the mesh this node reads."
        ),
        "broadcast_pool_size": _g(
            "pubsub_broadcast_partitions",
            "partitions",
            "Partitions this node publishes on (its broadcast_pool_size, or pool_size).",
        ),
        "pub_endpoints": Skip("endpoints: tracker-zmq status shows them"),
        "unread_by": Skip("names: counted as pubsub_unread_partition_nodes"),
    },
    "dns": {
        "lookups": _c("pubsub_dns_lookups_total", "lookups", "peer_dns lookups that answered."),
        "failures": _c(
            "pubsub_dns_failures_total", "lookups", "peer_dns lookups that failed or timed out."
        ),
        "seeds": _g("pubsub_dns_seeds", "seeds", "Seeds the peer_dns answers name now."),
    },
    "sent": {
        "broadcasts": _c("pubsub_broadcasts_sent_total", "messages", "Broadcasts sent."),
        "broadcast_frames": _c(
            "pubsub_broadcast_frames_sent_total", "frames", "Frames of broadcasts sent."
        ),
        "directs": _c("pubsub_directs_sent_total", "messages", "Direct messages sent."),
        "direct_frames": _c(
            "pubsub_direct_frames_sent_total", "frames", "Frames of direct messages sent."
        ),
        "control_frames": _c(
            "pubsub_control_frames_sent_total", "frames", "Control (membership) frames sent."
        ),
    },
    "received": {
        "messages": _c(
            "pubsub_messages_received_total", "messages", "Messages received from peers."
        ),
        "frames": _c("pubsub_frames_received_total", "frames", "Frames received from peers."),
        "control_frames": _c(
            "pubsub_control_frames_received_total",
            "frames",
            "Control (membership) frames received.",
        ),
    },
    "dropped": Labeled(
        "pubsub_dropped_total",
        "counter",
        "messages",
        "Messages and frames dropped, by reason (lost: gaps in peers' sequence numbers; "
        "overflow: full local subscriber queues; send: full ZeroMQ queue here; ...).",
        "reason",
    ),
    "peers": PerItem(
        "peer",
        {
            "incarnation": Skip("identity: tracker-zmq status shows it"),
            "control": Skip("an endpoint: tracker-zmq status shows it"),
            "pub": Skip("an endpoint: tracker-zmq status shows it"),
            "alive": _g("pubsub_peer_alive", "boolean", "1 while the member is alive."),
            "last_heard": _g(
                "pubsub_peer_last_heard_seconds",
                "seconds",
                "Seconds since the member was last heard from.",
            ),
            "received": _c(
                "pubsub_peer_messages_received_total",
                "messages",
                "Messages received from the member's current incarnation.",
            ),
            "lost": _c(
                "pubsub_peer_messages_lost_total",
                "messages",
                "Messages of the member's current incarnation lost on the way.",
            ),
            "versions": _VERSIONS_SKIP,
            "version": _g(
                "pubsub_peer_version", "version", "Frame version of direct frames to the member."
            ),
        },
    ),
}

# The reasons a Shard counts in ``drops`` (tracker_zmq.shard and replica.Drop), each
# exported at 0 from the start: the operating guide's stall alert reads one of them.
_TRACKER_DROP_REASONS: tuple[str, ...] = (
    "down_judgement_skipped_after_stall",
    "foreign_values_in_heartbeat",
    "from_older_incarnation",
    "from_own_name",
    "from_permdowned",
    "full_transfer_already_answered",
    "inconsistent_transfer",
    "invalid",
    "no_common_version",
    "too_many_replicas",
    "transfer_timed_out",
    "unexpected_transfer",
)

_SHARD_TOTALS: dict[str, Entry] = {
    "presences": _g(
        "tracker_presences_held",
        "presences",
        "Presences held, of every replica, down ones included.",
    ),
    "visible": _g(
        "tracker_presences",
        "presences",
        "Presences visible on this node (of this node and of the replicas that are up).",
    ),
    "pending_delta": _g(
        "tracker_pending_delta_size",
        "values and cloud tags",
        "Size of the delta waiting for the next heartbeat.",
    ),
    "transfers_outstanding": _g(
        "tracker_transfers_outstanding", "requests", "Transfer requests awaiting an answer."
    ),
    "messages_in": _c("tracker_messages_received_total", "messages", "Tracker messages received."),
    "messages_out": _c("tracker_messages_sent_total", "messages", "Tracker messages sent."),
    "heartbeats_sent": _c("tracker_heartbeats_sent_total", "messages", "Heartbeats sent."),
    "delta_values_sent": _c(
        "tracker_delta_values_sent_total", "values", "Presence values sent in heartbeats."
    ),
    "transfers_requested": _c(
        "tracker_transfers_requested_total", "requests", "Transfers asked of peers."
    ),
    "transfers_answered": _c(
        "tracker_transfers_answered_total", "requests", "Transfer requests answered."
    ),
    "transfers_answered_full": _c(
        "tracker_transfers_answered_full_total",
        "requests",
        "Transfer requests answered with the full state.",
    ),
    "transfers_merged": _c("tracker_transfers_merged_total", "transfers", "Transfers merged."),
    "deltas_too_large": _c(
        "tracker_deltas_too_large_total",
        "deltas",
        "Deltas too large for a heartbeat (peers fetched them by transfer).",
    ),
    "dropped": _c("tracker_messages_dropped_total", "messages", "Tracker messages dropped."),
    "drops": Labeled(
        "tracker_drops_total",
        "counter",
        "messages",
        "Tracker messages dropped (and judgements skipped), by reason.",
        "reason",
        zeros=_TRACKER_DROP_REASONS,
    ),
}

_ZERO_TOTALS = {key: 0 for key, entry in _SHARD_TOTALS.items() if isinstance(entry, Spec)}

_TRACKER: dict[str, Entry] = {
    "name": Info("tracker"),
    "sharding": {
        "broadcast_pool_size": _g(
            "tracker_broadcast_pool_size",
            "shards",
            "The shard count a node between shardings also runs (absent otherwise).",
        ),
        "sets": Skip("the shard set sizes: pool_size and broadcast_pool_size"),
        "mismatched": Skip("names: counted as tracker_sharding_mismatched_nodes"),
        "merged_presences": _g(
            "tracker_merged_presences",
            "presences",
            "Presences in the merged view of a node between shardings (absent otherwise).",
        ),
    },
    "node": Info("node"),
    "vsn": Info("vsn"),
    "pool_size": _g("tracker_pool_size", "shards", "Shards of the tracker."),
    "running": _g("tracker_running", "boolean", "1 while the tracker runs."),
    "handler_errors": _c(
        "tracker_handler_errors_total", "errors", "Diff handler calls that raised."
    ),
    "receive_errors": _c(
        "tracker_receive_errors_total", "errors", "Messages or ticks whose handling failed."
    ),
    "send_errors": _c("tracker_send_errors_total", "errors", "Sends the PubSub refused."),
    "overflows": _c(
        "tracker_subscription_overflows_total",
        "events",
        "Times the shards' PubSub subscriptions overflowed.",
    ),
    "diffs_reported": _c(
        "tracker_diffs_reported_total", "diffs", "Diffs handed to the diff handler."
    ),
    "unreadable": _c(
        "tracker_unreadable_total",
        "messages",
        "Heartbeats and permdowns sent in a version some live node cannot read "
        "(one per such node and message).",
    ),
    "replicas": Skip("exported as tracker_replicas{status} and tracker_replica_up{peer}"),
    "versions": {
        "tracker": _VERSIONS_SKIP,
        "transfer": _VERSIONS_SKIP,
        "broadcast": _g(
            "tracker_broadcast_version", "version", "Tracker version of heartbeats now."
        ),
        "peers": Skip("per-peer versions: tracker-zmq status shows them"),
        "refused": Skip("counted as tracker_refused_nodes"),
        "left_out": Skip("counted as tracker_left_out_nodes"),
    },
    "totals": _SHARD_TOTALS,
    "shards": Skip("per-shard figures sum to the totals; tracker_shard_presences{shard}"),
}

_NODE: dict[str, Entry] = {
    "sessions": _g("tracker_client_sessions", "sessions", "Client sessions open."),
    "presences": _g(
        "tracker_client_presences", "presences", "Presences tracked by client sessions."
    ),
    "subscriptions": _g(
        "tracker_client_subscriptions",
        "subscriptions",
        "Topics subscribed by client sessions (summed over sessions).",
    ),
    "requests": _c("tracker_client_requests_total", "requests", "Client requests handled."),
    "errors": _c("tracker_client_errors_total", "replies", "Error replies to clients."),
    "garbage": _c(
        "tracker_client_frames_dropped_total", "frames", "Client frames dropped (undecodable)."
    ),
    "pushes": _c("tracker_client_pushes_total", "frames", "Diffs pushed to clients."),
    "push_dropped": _c(
        "tracker_client_pushes_dropped_total",
        "frames",
        "Diffs a full or gone client missed.",
    ),
    "sessions_opened": _c("tracker_client_sessions_opened_total", "sessions", "Sessions opened."),
    "sessions_closed": _c(
        "tracker_client_sessions_closed_total", "sessions", "Sessions closed by their client."
    ),
    "sessions_expired": _c(
        "tracker_client_sessions_expired_total", "sessions", "Sessions whose lease ran out."
    ),
    "lease_checks_skipped": _c(
        "tracker_client_lease_checks_skipped_total",
        "checks",
        "Lease checks skipped after a stall of the node (the stall rule).",
    ),
    "reply_dropped": _c(
        "tracker_client_replies_dropped_total",
        "frames",
        "Replies a client missed (its queue full with requests in flight, or gone).",
    ),
}

_ENDPOINT: dict[str, Entry] = {
    "sockets": _g("websocket_connections", "sockets", "Websockets open."),
    "channels": _g("websocket_channels", "channels", "Channels joined, over all websockets."),
    "connects": _c("websocket_connects_total", "sockets", "Websockets accepted."),
    "rejects": _c("websocket_rejects_total", "requests", "Websocket requests refused (HTTP 403)."),
    "frames_in": _c("websocket_frames_received_total", "frames", "Frames from clients."),
    "frames_out": _c("websocket_frames_sent_total", "frames", "Frames written to clients."),
    "encodes": _c(
        "websocket_broadcast_encodes_total",
        "encodes",
        "Broadcasts encoded by the fastlane (once per serializer per message).",
    ),
    "garbage": _c(
        "websocket_frames_dropped_total", "frames", "Client frames dropped (undecodable)."
    ),
    "oversize": _c(
        "websocket_frames_oversize_total", "frames", "Client frames over max_frame_bytes."
    ),
    "unmatched": _c(
        "websocket_unmatched_total", "messages", "Messages to a topic the socket had not joined."
    ),
    "stale": _c("websocket_stale_total", "messages", "Messages of an earlier join (ignored)."),
    "joins": _c("websocket_joins_total", "joins", "Channel joins accepted."),
    "join_errors": _c("websocket_join_errors_total", "joins", "Channel joins refused."),
    "limited": _c(
        "websocket_limited_total",
        "requests",
        "Joins and pushes refused for a limit (channels, join rate, a full inbox).",
    ),
    "crashes": _c("websocket_channel_crashes_total", "errors", "Channel handlers that raised."),
    "overflow_closes": _c(
        "websocket_overflow_closes_total", "sockets", "Sockets closed: outgoing buffer full."
    ),
    "idle_closes": _c(
        "websocket_idle_closes_total", "sockets", "Sockets closed: silent past idle_timeout."
    ),
    "disconnects": _c(
        "websocket_disconnects_total", "sockets", "Sockets closed by a disconnect broadcast."
    ),
    "drained": _c("websocket_drained_total", "sockets", "Sockets closed by shutdown (drain)."),
    "dropped_messages": _c(
        "websocket_dropped_messages_total",
        "messages",
        "PubSub messages on a channel topic that were not {event, payload} (dropped).",
    ),
    "resyncs": _c(
        "websocket_presence_resyncs_total",
        "pushes",
        "presence_state pushed again after an overflow of a followed topic.",
    ),
    "coalesced_diffs": _c(
        "websocket_coalesced_diffs_total",
        "broadcasts",
        "presence_diff broadcasts merged into another one's frame.",
    ),
    "irregular_diffs": _c(
        "websocket_irregular_diffs_total",
        "broadcasts",
        "presence_diff broadcasts sent as they came (not regular diffs).",
    ),
    "refused_banned": _c(
        "websocket_refused_banned_total",
        "requests",
        "Websocket requests refused because their socket id is banned (also in rejects).",
    ),
    "reserved": _c(
        "websocket_reserved_joins_total",
        "joins",
        "Joins of a reserved topic (bans topic, socket ids) refused (also in join_errors).",
    ),
    "banned": _g("websocket_banned_ids", "ids", "Socket ids banned on this node now."),
    "bans_heard": _c("websocket_bans_heard_total", "bans", "Bans heard from the cluster."),
    "bans_invalid": _c(
        "websocket_bans_invalid_total", "messages", "Malformed ban messages (dropped)."
    ),
    "bans_evicted": _c("websocket_bans_evicted_total", "bans", "Bans forgotten early at max_bans."),
    "expired": _c(
        "websocket_token_expired_closes_total",
        "sockets",
        "Sockets closed at their Socket.expires_at (the standalone node: token exp).",
    ),
}

TABLES: Mapping[str, Mapping[str, Entry]] = {
    "pubsub": _PUBSUB,
    "tracker": _TRACKER,
    "node": _NODE,
    "endpoint": _ENDPOINT,
}
"""The key tables of each source's ``stats()``: ``pubsub``, ``tracker``, ``node`` (the
client endpoint) and ``endpoint`` (websockets)."""

_INFO = {
    "pubsub": "pubsub",
    "tracker": "tracker",
    "node": "tracker_client",
    "endpoint": "websocket",
}

# the metrics made from several keys (the DESIGN's totals, counts of dicts)
_SENT = _c(
    "pubsub_messages_sent_total",
    "messages",
    "Messages sent to peers: broadcasts plus direct messages.",
)
_LOST = _c(
    "pubsub_messages_lost_total",
    "messages",
    "Messages lost on the way (gaps in peers' sequence numbers), all peers.",
)
_PUBSUB_REFUSED = _g(
    "pubsub_refused_version_nodes",
    "nodes",
    "Nodes refused for sharing no pubsub version with this one.",
)
_REPLICAS = Labeled(
    "tracker_replicas",
    "gauge",
    "nodes",
    "Remote nodes the tracker knows, by status (down: some shard sees it down).",
    "status",
)
_REPLICA_UP = Labeled(
    "tracker_replica_up",
    "gauge",
    "boolean",
    "1 while every shard sees the remote node up, else 0.",
    "peer",
)
_TRACKER_REFUSED = _g(
    "tracker_refused_nodes",
    "nodes",
    "Nodes whose tracker messages are refused (no common version).",
)
_LEFT_OUT = _g(
    "tracker_left_out_nodes", "nodes", "Live nodes that cannot read the heartbeats' version."
)
_SHARD_PRESENCES = Labeled(
    "tracker_shard_presences",
    "gauge",
    "presences",
    "Presences visible in each shard.",
    "shard",
)
_PUBSUB_UNREAD = _g(
    "pubsub_unread_partition_nodes",
    "nodes",
    "Live members that read none of some partition this node publishes on (a skipped "
    "re-sharding step; their messages counted in pubsub_dropped_total{reason="
    '"unread_partition"}).',
)
_MISMATCHED = _g(
    "tracker_sharding_mismatched_nodes",
    "nodes",
    "Nodes heard only in a sharding this node does not run (a skipped re-sharding step).",
)
_DERIVED: Mapping[str, tuple[Spec | Labeled, ...]] = {
    "pubsub": (_SENT, _LOST, _PUBSUB_REFUSED, _PUBSUB_UNREAD),
    "tracker": (
        _REPLICAS,
        _REPLICA_UP,
        _TRACKER_REFUSED,
        _LEFT_OUT,
        _SHARD_PRESENCES,
        _MISMATCHED,
    ),
}
DERIVED: tuple[Spec | Labeled, ...] = tuple(s for specs in _DERIVED.values() for s in specs)
"""Metrics computed from several keys (documented with the tables)."""

_Family: TypeAlias = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(*parts: str) -> str:
    return _NAME_BAD.sub("_", "_".join(parts))


class _Builder:
    """Collects samples into families by name while walking the stats."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def family(self, spec: Spec | Labeled, labels: tuple[str, ...]) -> _Family:
        name = spec.name
        family = self.families.get(name)
        if family is None:
            if spec.kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=labels)
            else:
                family = GaugeMetricFamily(name, spec.help, labels=labels)
            self.families[name] = family
        return family

    def add(self, spec: Spec, value: float, labels: dict[str, str]) -> None:
        self.family(spec, tuple(labels)).add_metric(list(labels.values()), value)

    def add_labeled(self, spec: Labeled, counts: Mapping[str, Any], labels: dict[str, str]) -> None:
        family = self.family(spec, (*labels, spec.label))
        for key, value in sorted({**dict.fromkeys(spec.zeros, 0), **counts}.items()):
            if _is_number(value):
                family.add_metric([*labels.values(), str(key)], float(value))

    def unknown(
        self, name: str, path: str, source: str, value: float, labels: dict[str, str]
    ) -> None:
        family = self.families.get(name)
        if family is not None and not isinstance(family, UnknownMetricFamily):
            name += "_unmapped"  # a name a table gives already: never two families of one
            family = self.families.get(name)
        if family is None:
            family = UnknownMetricFamily(
                name,
                f"{source}.stats() key {path} (exported as it is; no specific help yet).",
                labels=tuple(labels),
            )
            self.families[name] = family
        family.add_metric(list(labels.values()), value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


def _walk(
    source: str,
    table: Mapping[str, Entry],
    stats: Mapping[str, Any],
    out: _Builder,
    info: dict[str, str],
    path: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
) -> None:
    labels = labels or {}
    for key, value in stats.items():
        entry = table.get(key)
        where = (*path, key)
        if entry is None:
            _export_unknown(source, where, value, out, labels)
        elif isinstance(entry, Spec):
            if _is_number(value):
                out.add(entry, float(value), labels)
        elif isinstance(entry, Labeled):
            if isinstance(value, Mapping):
                out.add_labeled(entry, value, labels)
        elif isinstance(entry, PerItem):
            if isinstance(value, Mapping):
                for item, fields in sorted(value.items()):
                    if isinstance(fields, Mapping):
                        inner = {**labels, entry.label: str(item)}
                        _walk(source, entry.fields, fields, out, info, where, inner)
        elif isinstance(entry, Info):
            if not labels:
                info[entry.label] = str(value)
        elif isinstance(entry, Skip):
            continue
        elif isinstance(value, Mapping):
            _walk(source, entry, value, out, info, where, labels)


def _export_unknown(
    source: str,
    where: tuple[str, ...],
    value: object,
    out: _Builder,
    labels: dict[str, str],
) -> None:
    """A key no table knows: numbers (in dicts and lists too) still go out, untyped; a
    list's items get an ``index`` label. Strings and None are left out."""
    name = _metric_name(_INFO[source], *where)
    if isinstance(value, bool) or _is_number(value):
        out.unknown(name, ".".join(where), source, float(value), labels)  # type: ignore[arg-type]
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _export_unknown(source, (*where, str(key)), inner, out, labels)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            _export_unknown(source, where, inner, out, {**labels, "index": str(index)})


def unmapped(source: str, stats: Mapping[str, Any]) -> list[str]:
    """The keys of ``stats`` (dotted paths) that ``TABLES[source]`` does not know.

    They are still exported (numbers, untyped, with a generic help); a test asserts this
    is empty for every source, so a key added to a ``stats()`` gets its own entry.

    Args:
        source: ``"pubsub"``, ``"tracker"``, ``"node"`` or ``"endpoint"``.
        stats: What that source's ``stats()`` returned.
    """
    missing: list[str] = []

    def walk(table: Mapping[str, Entry], stats: Mapping[str, Any], path: str) -> None:
        for key, value in stats.items():
            entry = table.get(key)
            where = f"{path}{key}"
            if entry is None:
                missing.append(where)
            elif isinstance(entry, PerItem) and isinstance(value, Mapping):
                for item in value.values():
                    if isinstance(item, Mapping):
                        walk(entry.fields, item, f"{where}.*.")
            elif isinstance(entry, Mapping) and isinstance(value, Mapping):
                walk(entry, value, f"{where}.")

    walk(TABLES[source], stats, "")
    return sorted(set(missing))


def _replica_counts(replicas: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    counts = {"up": 0, "down": 0}
    up: dict[str, int] = {}
    for name, info in replicas.items():
        is_up = isinstance(info, Mapping) and info.get("status") == "up"
        counts["up" if is_up else "down"] += 1
        up[name] = int(is_up)
    return counts, up


class Collector(_Collector):
    """A prometheus_client collector over the ``stats()`` of a node's parts.

    Each scrape calls ``stats()`` once per source given (on the scraping thread: in an
    asyncio app, scrape from the event loop's thread, as :func:`asgi_app` and the node's
    ``--metrics-bind`` server do). Give any of the sources; a
    :class:`~tracker_zmq.Node` stands for its PubSub and Tracker too, a Tracker for its
    PubSub, a :class:`~tracker_zmq.Presence` for its Tracker, and a channels Endpoint
    for its Presence and PubSub.

    Args:
        pubsub: A :class:`~pubsub_zmq.PubSub`.
        tracker: A :class:`~tracker_zmq.Tracker` or a :class:`~tracker_zmq.Presence`.
        node: A :class:`~tracker_zmq.Node` (its client endpoint's ``stats()``).
        endpoint: A :class:`~tracker_zmq.channels.Endpoint` (websockets).

    Raises:
        TypeError: No source given, or one without a ``stats()`` method.
    """

    def __init__(
        self,
        *,
        pubsub: Any = None,
        tracker: Any = None,
        node: Any = None,
        endpoint: Any = None,
    ) -> None:
        if node is not None:
            pubsub = pubsub if pubsub is not None else getattr(node, "pubsub", None)
            tracker = tracker if tracker is not None else getattr(node, "tracker", None)
        if endpoint is not None and tracker is None:
            tracker = getattr(endpoint, "presence", None)
        inner = getattr(tracker, "tracker", None)  # a Presence: its Tracker
        if inner is not None and callable(getattr(inner, "stats", None)):
            tracker = inner
        if tracker is not None and pubsub is None:
            pubsub = getattr(tracker, "pubsub", None)
        if endpoint is not None and pubsub is None:
            pubsub = getattr(endpoint, "pubsub", None)
        sources = {"pubsub": pubsub, "tracker": tracker, "node": node, "endpoint": endpoint}
        self.sources: dict[str, _HasStats] = {}
        """The objects read at each scrape, by source name."""
        for source, obj in sources.items():
            if obj is None:
                continue
            if not callable(getattr(obj, "stats", None)):
                raise TypeError(f"{source} must have a stats() method, not {type(obj).__name__}")
            self.sources[source] = obj
        if not self.sources:
            raise TypeError("give at least one of pubsub, tracker, node, endpoint")

    def describe(self) -> Iterable[Metric]:
        """The fixed metric names (for the registry's duplicate check), without reading
        any ``stats()``."""
        out = _Builder()
        for source in self.sources:
            _describe(TABLES[source], out)
            for spec in _DERIVED.get(source, ()):
                out.family(spec, (spec.label,) if isinstance(spec, Labeled) else ())
        return list(out.families.values())

    def collect(self) -> Iterable[Metric]:
        """Read every source's ``stats()`` once and return the metric families."""
        out = _Builder()
        infos: list[Metric] = []
        for source, obj in self.sources.items():
            stats = obj.stats()
            if source == "tracker":  # totals sum the shards: none (not started) sums to 0
                stats = {**stats, "totals": {**_ZERO_TOTALS, **stats.get("totals", {})}}
            info: dict[str, str] = {}
            _walk(source, TABLES[source], stats, out, info)
            if info:
                family = InfoMetricFamily(
                    _INFO[source], f"Identity of this node's {source}.", labels=tuple(info)
                )
                family.add_metric(list(info.values()), {})
                infos.append(family)
            self._collect_derived(source, stats, out)
        return [*out.families.values(), *infos]

    @staticmethod
    def _collect_derived(source: str, stats: Mapping[str, Any], out: _Builder) -> None:
        if source == "pubsub":
            sent = stats.get("sent", {})
            out.add(_SENT, float(sent.get("broadcasts", 0) + sent.get("directs", 0)), {})
            out.add(_LOST, float(stats.get("dropped", {}).get("lost", 0)), {})
            out.add(_PUBSUB_REFUSED, float(len(stats.get("refused_versions", {}))), {})
            unread = stats.get("partitions", {}).get("unread_by", [])
            out.add(_PUBSUB_UNREAD, float(len(unread)), {})
        elif source == "tracker":
            counts, up = _replica_counts(stats.get("replicas", {}))
            out.add_labeled(_REPLICAS, counts, {})
            out.add_labeled(_REPLICA_UP, up, {})
            versions = stats.get("versions", {})
            out.add(_TRACKER_REFUSED, float(len(versions.get("refused", {}))), {})
            out.add(_LEFT_OUT, float(len(versions.get("left_out", []))), {})
            mismatched = stats.get("sharding", {}).get("mismatched", {})
            out.add(_MISMATCHED, float(len(mismatched)), {})
            shards = {
                str(i): shard.get("visible", shard.get("presences", 0))
                for i, shard in enumerate(stats.get("shards", []))
            }
            out.add_labeled(_SHARD_PRESENCES, shards, {})


def _describe(table: Mapping[str, Entry], out: _Builder, labels: tuple[str, ...] = ()) -> None:
    for entry in table.values():
        if isinstance(entry, Spec):
            out.family(entry, labels)
        elif isinstance(entry, Labeled):
            out.family(entry, (*labels, entry.label))
        elif isinstance(entry, PerItem):
            _describe(entry.fields, out, (*labels, entry.label))
        elif isinstance(entry, Mapping):
            _describe(entry, out, labels)


def register(
    registry: CollectorRegistry | None = None,
    *,
    pubsub: Any = None,
    tracker: Any = None,
    node: Any = None,
    endpoint: Any = None,
) -> Collector:
    """Register a :class:`Collector` of the given sources in ``registry``.

    Args:
        registry: Where (default: prometheus_client's global ``REGISTRY``, which
            ``prometheus_client.start_http_server`` and ``make_asgi_app()`` serve).
        pubsub: A PubSub.
        tracker: A Tracker or a Presence.
        node: A Node.
        endpoint: A channels Endpoint.

    Returns:
        The collector (``registry.unregister(collector)`` removes it).

    Raises:
        TypeError: No source given, or one without ``stats()``.
        ValueError: Its metric names are already registered there (prometheus_client's
            duplicate check): one collector per registry and node.
    """
    collector = Collector(pubsub=pubsub, tracker=tracker, node=node, endpoint=endpoint)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def asgi_app(
    registry: CollectorRegistry | None = None,
    *,
    pubsub: Any = None,
    tracker: Any = None,
    node: Any = None,
    endpoint: Any = None,
) -> Callable[..., Any]:
    """An ASGI app serving the metrics in Prometheus' text format (or OpenMetrics, when
    the scraper asks), for ``app.mount("/metrics", metrics.asgi_app(...))``.

    With sources, a new registry holds a :class:`Collector` of them (the process's
    other metrics, in the global registry, are not in it: pass ``registry=REGISTRY`` to
    serve both from one place); without, ``registry`` (default: the global one) is
    served as it is.

    Args:
        registry: The registry to add the collector to and serve.
        pubsub: A PubSub.
        tracker: A Tracker or a Presence.
        node: A Node.
        endpoint: A channels Endpoint.
    """
    if any(s is not None for s in (pubsub, tracker, node, endpoint)):
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        register(registry, pubsub=pubsub, tracker=tracker, node=node, endpoint=endpoint)
    app: Callable[..., Any] = make_asgi_app(REGISTRY if registry is None else registry)
    return app
