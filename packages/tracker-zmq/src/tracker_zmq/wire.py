"""The tracker's messages and their wire form: Phoenix.Tracker.Shard's, versioned. Pure.

Every message is a dict of plain data with an envelope that says what it is and who
sent it; the Shard encodes it once, to JSON bytes (:func:`encode_json`, or the injected
encoder: the asyncio layer's is orjson, whose bytes pubsub-zmq sends as they are):

========  ==============================================================================
field     meaning
========  ==============================================================================
``v``     protocol version, from :data:`LOWEST_PROTOCOL` to :data:`PROTOCOL`; other
          versions are dropped and counted (see "Versions" below)
``t``     kind: ``hb`` heartbeat, ``treq`` transfer request, ``tack`` transfer answer
          (one part of it), ``perm`` graceful permdown
``from``  the sender's ref ``[node name, vsn]``
``pool``  ``[pool_size, "crc32"]``: the sharding every node must share
========  ==============================================================================

and, by kind:

* ``hb``: ``clock`` (the sender's context without down replicas, ``[[ref, clock], ...]``)
  and ``delta`` (a :class:`crdt_state.Delta` wire form, or None for an empty heartbeat);
* ``treq``: ``id`` (``[ref, counter]``, unique per requester) and ``clock``;
* ``tack``: ``id`` (echoed), ``part`` (its number, from 0) and ``last`` (a large answer
  travels in parts, made one at a time, and is merged once all up to the last have
  arrived), ``kind`` (``snapshot`` or ``delta``) and ``data``
  (the payload's wire form, or one part of it: see :func:`split_payload`);
* ``perm``: nothing more.

:func:`decode` checks all of it and raises :class:`MessageError` for anything else.

Versions. Two protocols are negotiated, each node announcing its range on its PubSub
(:meth:`pubsub_zmq.PubSub.announce`): ``"tracker"``, these messages (``v``, from
:data:`LOWEST_PROTOCOL` to :data:`PROTOCOL`), and ``"transfer"``, the form of a transfer
answer's ``data`` (from :data:`LOWEST_TRANSFER_FORMAT` to :data:`TRANSFER_FORMAT`).
Heartbeats and graceful permdowns go in the version every live node reads, requests
and answers in the highest both ends know (:mod:`pubsub_zmq.versions`); the Shard is told
which (:class:`~tracker_zmq.shard.Versions`). Version 1 of either is what the release
before negotiation sent, byte for byte: that release reads messages with ``dict.get``
and ignores fields it does not know, so a later version may add fields, but nothing is
added at version 1. Transfer format 1 (rows) carries no marker; format 2 (columns: a
topic table and one column group per replica, see :func:`iter_parts`) marks every part
with ``"f": 2`` and is only ever sent to a node whose ``transfer`` range holds it.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from crdt_state import Delta, Snapshot, WireError
from crdt_state.bulk import gc_paused
from crdt_state.wire import PayloadReader, columns_out, iter_records, iter_wire_values, wire_head
from tracker_zmq.errors import MessageError
from tracker_zmq.replica import Ref

__all__ = [
    "HASH_NAME",
    "LOWEST_PROTOCOL",
    "LOWEST_TRANSFER_FORMAT",
    "PROTOCOL",
    "TRANSFER_FORMAT",
    "GracefulPermdown",
    "Heartbeat",
    "Message",
    "MessageError",
    "TransferAck",
    "TransferRequest",
    "UnknownProtocolVersion",
    "check_meta",
    "check_version",
    "decode",
    "encode",
    "encode_json",
    "encode_transfer_ack",
    "iter_parts",
    "join_payload",
    "json_size",
    "sender_of",
    "shard_for",
    "split_payload",
]

PROTOCOL = 1
"""The newest version of the tracker's messages this node speaks (their ``v``)."""

LOWEST_PROTOCOL = 1
"""The oldest version of the tracker's messages this node still reads and writes."""

TRANSFER_FORMAT = 2
"""The newest form of a transfer answer's ``data`` this node speaks."""

LOWEST_TRANSFER_FORMAT = 1
"""The oldest form of a transfer answer's ``data`` this node still speaks."""


class UnknownProtocolVersion(MessageError):
    """A message whose ``v`` is not a version this node speaks (dropped, counted)."""


MAX_PARTS = 100_000
"""Most parts one transfer answer may have."""

HASH_NAME = "crc32"
"""The topic hash shards agree on: ``zlib.crc32`` of the topic's UTF-8 text."""

RequestId = tuple[Ref, int]


def shard_for(topic: str | int, pool_size: int) -> int:
    """The shard of a topic: ``zlib.crc32`` of its text, modulo the pool size.

    Stable across processes and machines (the built-in ``hash`` is salted per process),
    so every node routes a topic to the same-numbered shard.
    """
    return zlib.crc32(str(topic).encode("utf-8")) % pool_size


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A replica's periodic message: its clock and the delta since its last heartbeat."""

    sender: Ref
    clock: dict[Any, int]
    delta: Delta | None


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A request for the state the sender is missing, with its clock."""

    sender: Ref
    request: RequestId
    clock: dict[Any, int]


@dataclass(frozen=True, slots=True)
class TransferAck:
    """One part of a transfer answer; ``data`` is the payload's wire form (or a part)."""

    sender: Ref
    request: RequestId
    part: int
    last: bool
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GracefulPermdown:
    """The sender leaves for good: forget it now."""

    sender: Ref


Message = Heartbeat | TransferRequest | TransferAck | GracefulPermdown

_KINDS = {Heartbeat: "hb", TransferRequest: "treq", TransferAck: "tack", GracefulPermdown: "perm"}


def _ref_out(ref: Ref) -> list[Any]:
    return [ref[0], ref[1]]


def _clock_out(clock: Mapping[Any, int]) -> list[list[Any]]:
    return [[list(r) if isinstance(r, tuple) else r, c] for r, c in clock.items()]


def check_version(version: int, low: int = LOWEST_PROTOCOL, high: int = PROTOCOL) -> int:
    """``version`` if it is an int from ``low`` to ``high``.

    Raises:
        ValueError: It is not (a version this node cannot write).
    """
    if type(version) is not int or not low <= version <= high:
        raise ValueError(f"version {version!r} is not one this node speaks ({low} to {high})")
    return version


def encode(message: Message, pool_size: int, version: int = PROTOCOL) -> dict[str, Any]:
    """The wire form of a message (plain data), with its envelope.

    Args:
        message: The message.
        pool_size: The sender's pool size, which every receiver checks.
        version: The message version, as negotiated (:class:`~tracker_zmq.shard.Versions`).

    Raises:
        ValueError: ``version`` is not from LOWEST_PROTOCOL to PROTOCOL.
    """
    out: dict[str, Any] = {
        "v": check_version(version),
        "t": _KINDS[type(message)],
        "from": _ref_out(message.sender),
        "pool": [pool_size, HASH_NAME],
    }
    if isinstance(message, Heartbeat):
        out["clock"] = _clock_out(message.clock)
        out["delta"] = None if message.delta is None else message.delta.to_wire()
    elif isinstance(message, TransferRequest):
        out["id"] = [_ref_out(message.request[0]), message.request[1]]
        out["clock"] = _clock_out(message.clock)
    elif isinstance(message, TransferAck):
        out["id"] = [_ref_out(message.request[0]), message.request[1]]
        out["part"] = message.part
        out["last"] = message.last
        out["kind"] = message.kind
        out["data"] = message.data
    return out


def _int(value: object, what: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum or value > 2**63 - 1:
        raise MessageError(f"{what} must be an int >= {minimum}, not {value!r:.60}")
    return value


def _ref(value: object, what: str = "a ref") -> Ref:
    if type(value) is not list or len(value) != 2 or type(value[0]) is not str or not value[0]:
        raise MessageError(f"{what} must be [node name, vsn], not {value!r:.60}")
    return (value[0], _int(value[1], "a vsn"))


def _clock(value: object, max_replicas: int) -> dict[Any, int]:
    if type(value) is not list or len(value) > max_replicas:
        raise MessageError(f"a clock must be a list of at most {max_replicas} entries")
    out: dict[Any, int] = {}
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise MessageError(f"a clock entry must be [ref, clock], not {item!r:.60}")
        ref = _ref(item[0])
        if ref in out:
            raise MessageError(f"ref {ref!r:.60} appears twice in a clock")
        out[ref] = _int(item[1], "a clock")
    return out


def _request(value: object) -> RequestId:
    if type(value) is not list or len(value) != 2:
        raise MessageError(f"a request id must be [ref, counter], not {value!r:.60}")
    return (_ref(value[0]), _int(value[1], "a request counter"))


def decode(
    data: object, *, pool_size: int, max_replicas: int = 1024, max_entries: int = 2_000_000
) -> Message:
    """Read and check a message; the payload of a transfer part is checked on assembly.

    Args:
        data: What pubsub delivered.
        pool_size: This node's pool size: a message from a differently sharded node is
            refused.
        max_replicas: Most entries in a clock.
        max_entries: Most values plus cloud tags in a heartbeat's delta.

    Returns:
        The message.

    Raises:
        UnknownProtocolVersion: For a ``v`` not from LOWEST_PROTOCOL to PROTOCOL.
        MessageError: For anything else that is not a valid message of this protocol.
    """
    if type(data) is not dict:
        raise MessageError(f"a message must be a dict, not {type(data).__name__}")
    version = data.get("v")
    if type(version) is not int or not LOWEST_PROTOCOL <= version <= PROTOCOL:
        raise UnknownProtocolVersion(f"unknown protocol version {version!r:.20}")
    pool = data.get("pool")
    if pool != [pool_size, HASH_NAME]:
        raise MessageError(f"sharding {pool!r:.40} differs from ours, [{pool_size}, {HASH_NAME}]")
    kind = data.get("t")
    sender = _ref(data.get("from"), "the sender")
    try:
        if kind == "hb":
            delta = data.get("delta")
            return Heartbeat(
                sender,
                _clock(data.get("clock"), max_replicas),
                None
                if delta is None
                else Delta.from_wire(delta, max_size=max_entries, max_replicas=max_replicas),
            )
        if kind == "treq":
            return TransferRequest(
                sender, _request(data.get("id")), _clock(data.get("clock"), max_replicas)
            )
        if kind == "tack":
            part = _int(data.get("part"), "part")
            if part >= MAX_PARTS:
                raise MessageError(f"part {part}: at most {MAX_PARTS} parts")
            last = data.get("last")
            if type(last) is not bool:
                raise MessageError(f"last must be a bool, not {last!r:.20}")
            payload_kind = data.get("kind")
            if payload_kind not in ("snapshot", "delta"):
                raise MessageError(f"unknown payload kind {payload_kind!r:.20}")
            payload = data.get("data")
            if type(payload) is not dict:
                raise MessageError("a transfer part's data must be a dict")
            return TransferAck(sender, _request(data.get("id")), part, last, payload_kind, payload)
        if kind == "perm":
            return GracefulPermdown(sender)
    except WireError as exc:
        raise MessageError(f"bad payload: {exc}") from exc
    raise MessageError(f"unknown message kind {kind!r:.20}")


def sender_of(data: object) -> Ref | None:
    """The sender's ref of a message, read without checking the rest; None if absent.

    For the Shard to refuse a peer's messages (no common version) before reading them.
    """
    if type(data) is not dict:
        return None
    ref = data.get("from")
    if type(ref) is list and len(ref) == 2 and type(ref[0]) is str and type(ref[1]) is int:
        return (ref[0], ref[1])
    return None


def encode_json(data: object) -> bytes:
    """``data`` as compact UTF-8 JSON: the Shard's default encoder (the stdlib's)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_size(data: object) -> int:
    """The bytes of ``data`` as compact JSON (:func:`encode_json`)."""
    return len(encode_json(data))


def encode_transfer_ack(
    message: TransferAck,
    pool_size: int,
    data: bytes,
    encoder: Callable[[object], bytes],
    version: int = PROTOCOL,
) -> bytes:
    """A transfer part's bytes, its ``data`` spliced in already encoded (never twice).

    Args:
        message: The part; its ``data`` field is ignored.
        pool_size: As for :func:`encode`.
        data: The part's payload, encoded by ``encoder`` (as :func:`iter_parts` yields).
        encoder: Encodes the envelope; ``data`` is its last field.
        version: As for :func:`encode`.
    """
    envelope = encoder(encode(replace(message, data={}), pool_size, version))
    if envelope.endswith(b"{}}"):  # "data": {} closes every JSON encoding of it
        return envelope[:-3] + data + b"}"
    return encoder(encode(replace(message, data=json.loads(data)), pool_size, version))


def iter_parts(
    payload: Snapshot | Delta,
    part_values: int,
    part_bytes: int = 512 * 1024,
    encoder: Callable[[object], bytes] = encode_json,
    transfer_format: int = LOWEST_TRANSFER_FORMAT,
) -> Iterator[tuple[dict[str, Any], bytes, bool]]:
    """A payload's wire form in parts that each fit in one frame, made one at a time.

    Yields ``(part, encoded, last)``: each part is encoded once, by ``encoder``, and
    measured by the length of that encoding. Its values and its cloud tags (a delta has
    one per value, and more) are spread over parts of at most ``part_values`` of each
    and at most ``part_bytes`` bytes (a part too large is cut down until it fits or
    holds a single item); the first part also carries the payload's other fields.
    Nothing is built before the first ``next``, so a caller can spread the work over
    several event-loop turns.

    Format 1 (``transfer_format``): a payload that fits goes whole, as its wire form;
    otherwise each part has ``values`` (rows) and ``cloud`` (tags as ``[replica,
    clock]`` pairs). Format 2 marks every part with ``"f": 2`` and carries the values as
    columns (``topics`` and ``values`` of :func:`crdt_state.wire.columns_out`) and the
    cloud tags grouped by replica (``cloud``: ``[[replica, [clock, ...]], ...]``), even
    when it all fits in one part.
    """
    count = len(payload)
    head = wire_head(payload)
    clouds = head.pop("clouds")
    tags = sum(len(clocks) for _, clocks in clouds)
    pairs = ((r, c) for r, clocks in clouds for c in clocks)
    if transfer_format == 1:
        if count + tags <= part_values:
            data = {**wire_head(payload), "values": list(iter_wire_values(payload))}
            encoded = encoder(data)
            if len(encoded) <= part_bytes:
                yield data, encoded, True
                return
        yield from _parts(
            count,
            tags,
            head,
            iter_wire_values(payload),
            pairs,
            _part_v1,
            part_values,
            part_bytes,
            encoder,
        )
        return
    check_version(transfer_format, LOWEST_TRANSFER_FORMAT, TRANSFER_FORMAT)
    yield from _parts(
        count, tags, head, iter_records(payload), pairs, _part_v2, part_values, part_bytes, encoder
    )


def _part_v1(values: list[Any], pairs: list[tuple[Any, int]]) -> dict[str, Any]:
    return {"values": values, "cloud": [[r, c] for r, c in pairs]}


def _part_v2(records: list[Any], pairs: list[tuple[Any, int]]) -> dict[str, Any]:
    cloud: dict[Any, list[int]] = {}
    for r, c in pairs:
        key = tuple(r) if type(r) is list else r
        found = cloud.get(key)
        if found is None:
            cloud[key] = [c]
        else:
            found.append(c)
    return {
        "f": 2,
        **columns_out(records),
        "cloud": [[list(r) if type(r) is tuple else r, cs] for r, cs in cloud.items()],
    }


def _parts(
    count: int,
    tags: int,
    head: dict[str, Any],
    values: Iterator[Any],
    pairs: Iterator[tuple[Any, int]],
    build: Callable[[list[Any], list[tuple[Any, int]]], dict[str, Any]],
    part_values: int,
    part_bytes: int,
    encoder: Callable[[object], bytes],
) -> Iterator[tuple[dict[str, Any], bytes, bool]]:
    # Parts are built one at a time from the payload, so a large one never sits whole in
    # its wire form; their sizes follow what the measured parts weighed, aiming at 90%
    # of part_bytes, so that a part is seldom measured twice.
    held_values: list[Any] = []
    held_pairs: list[Any] = []
    step = part_values
    first = True
    while first or count or tags:
        with gc_paused():
            held_values += islice(values, max(0, step - len(held_values)))
            held_pairs += islice(pairs, max(0, step - len(held_pairs)))
            vals, cloud = held_values[:step], held_pairs[:step]
            part = build(vals, cloud)
            if first:
                part.update(head)  # the first part carries the other fields
            encoded = encoder(part)
        size = len(encoded)
        fit = max(1, min(part_values, int(step * part_bytes * 0.9 / max(size, 1))))
        if len(vals) + len(cloud) > 1 and size > part_bytes:
            if step > 1:
                step = min(fit, step // 2)
                continue
            cloud = []  # one value and one tag: the value goes alone (whatever its size)
            part = build(vals, cloud)
            if first:
                part.update(head)
            encoded = encoder(part)
        del held_values[: len(vals)]
        del held_pairs[: len(cloud)]
        count -= len(vals)
        tags -= len(cloud)
        first = False
        step = fit
        yield part, encoded, not (count or tags)


def split_payload(
    payload: Snapshot | Delta,
    part_values: int,
    part_bytes: int = 512 * 1024,
    encoder: Callable[[object], bytes] = encode_json,
) -> list[dict[str, Any]]:
    """All of :func:`iter_parts` at once, as a list of parts."""
    return [part for part, _, _ in iter_parts(payload, part_values, part_bytes, encoder)]


class Assembly:
    """A transfer answer put together from its parts, each part checked as it arrives.

    Part data is what :func:`iter_parts` yields, in either transfer format (a part of
    format 2 says so; one answer keeps to one format). A part's values and cloud tags
    are read (and checked) at once, so only the read presences are held, never the
    parts' wire form; the head fields come with part 0 and are checked at
    :meth:`finish`. :meth:`take_values` hands the values read so far to a caller that
    merges them part by part.

    Args:
        kind: ``"snapshot"`` or ``"delta"``.
        max_entries: Most values plus cloud tags in all.
        max_replicas: Most distinct replicas.
    """

    def __init__(self, kind: str, max_entries: int, max_replicas: int | None = None) -> None:
        self.kind = kind
        self._reader = PayloadReader(
            Snapshot if kind == "snapshot" else Delta,
            max_size=max_entries,
            max_replicas=max_replicas,
        )
        self._max_entries = max_entries
        self._max_replicas = max_replicas
        self._head: dict[str, Any] | None = None
        self._whole: dict[str, Any] | None = None
        self._parts = 0
        self._format: int | None = None

    def add(self, index: int, data: dict[str, Any]) -> None:
        """Read part ``index``.

        Raises:
            MessageError: When the part is malformed or does not fit the others.
        """
        self._parts += 1
        if type(data) is not dict:
            raise MessageError(f"a transfer part must be a dict, not {type(data).__name__}")
        fmt = data.get("f", 1)
        if fmt not in (1, 2):
            raise MessageError(f"unknown transfer format {fmt!r:.20}")
        if self._format is None:
            self._format = fmt
        elif fmt != self._format:
            raise MessageError("the parts of one answer differ in transfer format")
        if fmt == 1 and "clouds" in data:  # a payload small enough to go whole
            if index != 0 or self._parts != 1:
                raise MessageError("a whole payload must be the only part")
            self._whole = data
            return
        if self._whole is not None:
            raise MessageError("a whole payload must be the only part")
        if fmt == 1:
            body: tuple[str, ...] = ("values", "cloud")
            values, cloud = data.get("values"), data.get("cloud")
            if type(values) is not list or type(cloud) is not list:
                raise MessageError("a transfer part must carry values and cloud lists")
        else:
            body = ("f", "topics", "values", "cloud")
            values = {"topics": data.get("topics"), "values": data.get("values")}
            cloud = data.get("cloud")
        if index == 0:
            self._head = {k: v for k, v in data.items() if k not in body}
        try:
            # Without the pause, the collector would run several times per part, and
            # each full run walks every presence read so far (records hold a meta dict,
            # so they stay tracked): a million-presence transfer spent most of its time
            # there. Paused, the part's allocations are judged in one run after it.
            with gc_paused():
                if fmt == 1:
                    self._reader.add_values(values)
                    self._reader.add_cloud_tags(cloud)
                else:
                    self._reader.add_columns(values)
                    self._reader.add_clouds(cloud)
        except WireError as exc:
            raise MessageError(f"bad transfer part: {exc}") from exc

    @property
    def size(self) -> int:
        """Values plus cloud tags read so far."""
        return self._reader.size

    def take_values(self, sender: Ref) -> Delta | None:
        """The values read since the last call, as a Delta to merge now, or None.

        See :meth:`crdt_state.wire.PayloadReader.take_values`: the payload from
        :meth:`finish`, merged after, brings its context, clouds and removes.
        """
        return self._reader.take_values(sender)

    def finish(self) -> Snapshot | Delta:
        """The payload, once every part was added.

        Raises:
            MessageError: When the parts do not form a valid payload.
        """
        kind = Snapshot if self.kind == "snapshot" else Delta
        try:
            if self._whole is not None:
                return kind.from_wire(
                    self._whole, max_size=self._max_entries, max_replicas=self._max_replicas
                )
            if self._head is None:
                raise MessageError("part 0 never came")
            return self._reader.finish(self._head)
        except WireError as exc:
            raise MessageError(f"bad transfer payload: {exc}") from exc


def join_payload(kind: str, parts: list[dict[str, Any]], max_entries: int) -> Snapshot | Delta:
    """Assemble and check a payload from all its parts (see :class:`Assembly`).

    Raises:
        MessageError: When the parts do not form a valid payload.
    """
    assembly = Assembly(kind, max_entries)
    for index, part in enumerate(parts):
        assembly.add(index, part)
    return assembly.finish()


def check_meta(meta: object, _depth: int = 0) -> None:
    """Check that a meta is JSON-able plain data, so that it never breaks a heartbeat.

    Raises:
        TypeError: For a meta that is not a dict with str keys holding only None, bool,
            int, finite float, str, list and dict values (100 levels deep at most).
    """
    if type(meta) is not dict:
        raise TypeError(f"a meta must be a dict, not {type(meta).__name__}")
    # _check_value(meta, 0) with its first level inlined: flat metas (the common case)
    # need no call per value.
    for key, value in meta.items():
        if type(key) is not str:
            raise TypeError(f"meta keys must be str, not {type(key).__name__}")
        kind = type(value)
        if kind is not str and kind is not int and kind is not bool and value is not None:
            _check_value(value, 1)


def _check_value(value: object, depth: int) -> None:
    if depth > 100:
        raise TypeError("a meta may nest at most 100 levels")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise TypeError(f"a meta may not hold {value!r}: JSON has no such number")
        return
    if kind is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                raise TypeError(f"meta keys must be str, not {type(k).__name__}")
            _check_value(v, depth + 1)
        return
    if kind is list:
        for v in value:  # type: ignore[attr-defined]
            _check_value(v, depth + 1)
        return
    raise TypeError(f"a meta may not hold a {kind.__name__}: it must encode as JSON")
