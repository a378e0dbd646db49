"""The wire codec: how pubsub_zmq frames look on ZeroMQ sockets.

Pure: no I/O, no clock (struct and orjson only). Phoenix.PubSub relies on Erlang
distribution for framing; over ZeroMQ we need our own, and every frame carries a protocol
version, the sender's name and incarnation, and a per-sender sequence number.

Every frame is one ZeroMQ frame (no multipart, which is slower in pyzmq)::

    offset  size  field
    0       n     topic, UTF-8 (empty for control frames), never containing NUL
    n       1     0x00 separator: a subscription prefix is topic + 0x00, so "room:4"
                  never matches "room:42"
    n+1     1     protocol version: LOWEST..VERSION (see "Versions" below)
    n+2     1     kind: B broadcast batch, D direct batch, H hello, W welcome, G gossip
    n+3     8     sender incarnation, unsigned big-endian
    n+11    8     sequence number, unsigned big-endian
    n+19    1     sender name length L (1..255)
    n+20    L     sender name, UTF-8
    n+20+L  ...   body, JSON (orjson)

Bodies:

* ``B`` / ``D``: a non-empty JSON array of messages of that topic, oldest first. The
  sequence number is the number of the first message in the batch; numbers run per
  sender and topic (broadcast) or per sender and destination node (direct), so a receiver
  counts lost messages as gaps.
* ``H`` / ``W`` / ``G``: an object ``{"node": record, "members": [record, ...],
  "via": endpoint-or-null}`` where a record is ``{"name", "incarnation", "control",
  "pub", "key", "versions"}`` (``key``: the node's Z85 CURVE public key or null;
  ``versions``: ``{protocol: [low, high]}``, every protocol the node speaks with the
  lowest and highest version it reads and writes: ``"pubsub"`` for these frames, and
  whatever a layer above announced, such as ``"tracker"`` and ``"transfer"``), and on a
  node of several partitions (:mod:`pubsub_zmq.partitions`) ``"pubs"`` (the PUB endpoints
  of partitions 1 and up) and ``"pool"`` (how many it reads; 1 without it). Hello
  introduces a node (``via``: the seed endpoint it was sent to, echoed in the welcome
  that answers it); gossip spreads the sender's live members.

Versions. A node reads batch frames (``B``, ``D``) of every version from :data:`LOWEST`
to :data:`VERSION` and rejects the others (:class:`UnknownVersion`). Hello, welcome and
gossip frames carry the negotiation itself, and their body only ever grows by fields
older readers ignore, so they are read whatever their version byte (a body that does not
read as a control body is then an unknown version): a node whose ``pubsub`` range shares
nothing with ours is refused with a logged reason instead of dropped unread. A record
without ``versions`` comes from the release before negotiation, which ignores unknown
record fields: it speaks version 1 of ``pubsub``, ``tracker`` and ``transfer``
(:data:`pubsub_zmq.versions.LEGACY`). Which version a node sends is chosen by
:mod:`pubsub_zmq.versions`; this codec writes whatever version it is given, within its
range.

Any input that is not such a frame makes :func:`decode` raise :class:`WireError` (or its
subclasses :class:`UnknownVersion` and :class:`FrameTooLarge`), never another exception.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, TypeVar

import orjson

from .errors import FrameTooLarge, InvalidTopic, UnknownVersion, WireError
from .versions import LEGACY, MAX_VERSION, Range

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "LOWEST",
    "MAX_MEMBERS",
    "MAX_NAME_BYTES",
    "MAX_PROTOCOLS",
    "MAX_TOPIC_BYTES",
    "OWN_VERSIONS",
    "SEPARATOR",
    "VERSION",
    "VERSIONS",
    "Control",
    "Encoded",
    "Frame",
    "Kind",
    "NodeRecord",
    "batch_frame",
    "check_name",
    "check_protocol",
    "decode",
    "encode_batch",
    "encode_control",
    "head",
    "join_messages",
    "sender_field",
    "topic_prefix",
]

VERSION = 1
"""The newest frame version this codec speaks (reads and writes)."""

LOWEST = 1
"""The oldest frame version this codec still speaks."""

VERSIONS = Range(LOWEST, VERSION)
"""The ``pubsub`` range of this codec: every frame version from LOWEST to VERSION."""

OWN_VERSIONS: tuple[tuple[str, Range], ...] = (("pubsub", VERSIONS),)
"""What a :class:`NodeRecord` announces unless told otherwise: these frames only."""

MAX_PROTOCOLS = 64
"""The most protocols one record may announce."""

MAX_PROTOCOL_CHARS = 64

SEPARATOR = b"\x00"
"""The byte after the topic: subscription prefixes are ``topic + SEPARATOR``."""

MAX_TOPIC_BYTES = 2048
"""The longest topic, in UTF-8 bytes."""

MAX_NAME_BYTES = 255
"""The longest node name, in UTF-8 bytes."""

MAX_ENDPOINT_CHARS = 1024
MAX_MEMBERS = 4096
"""The most member records one hello, welcome or gossip frame may carry."""

DEFAULT_MAX_FRAME_BYTES = 1 << 20
"""The default ``max_frame_bytes`` (1 MiB)."""

_HEAD = struct.Struct("!BBQQ")
_HEAD_SIZE = _HEAD.size
_U64 = 1 << 64
_SCHEMES = ("tcp://", "ipc://", "inproc://")


class Kind(IntEnum):
    """The kind byte of a frame."""

    BROADCAST = 0x42
    DIRECT = 0x44
    HELLO = 0x48
    WELCOME = 0x57
    GOSSIP = 0x47


_DATA_KINDS = frozenset((Kind.BROADCAST, Kind.DIRECT))
_KINDS = {int(k): k for k in Kind}


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node announces about itself (in hello, welcome and gossip).

    Attributes:
        name: the node's unique name.
        incarnation: grows each time a node of that name starts.
        control: the node's ROUTER endpoint (what others list as peers).
        pub: the node's PUB endpoint, for broadcasts.
        key: the node's Z85 CURVE public key, or None without CURVE.
        versions: ``(protocol, Range)`` pairs sorted by protocol: what the node speaks
            (see :meth:`with_versions`). A decoded record without them is
            :data:`~pubsub_zmq.versions.LEGACY`.
        pubs: the PUB endpoints of partitions 1 and up (:mod:`pubsub_zmq.partitions`);
            ``pub`` is partition 0's. Sent as ``pubs`` only when there are any.
        pool_size: how many partitions the node reads (sent as ``pool``; a record
            without it, as every record of the release before partitions, reads 1).
    """

    name: str
    incarnation: int
    control: str
    pub: str
    key: str | None = None
    versions: tuple[tuple[str, Range], ...] = OWN_VERSIONS
    pubs: tuple[str, ...] = ()
    pool_size: int = 1

    def speaks(self, protocol: str) -> Range | None:
        """The versions of ``protocol`` the node announced, or None if it speaks none."""
        for name, versions in self.versions:
            if name == protocol:
                return versions
        return None

    def with_versions(self, versions: Mapping[str, Range]) -> NodeRecord:
        """A copy of the record announcing ``versions`` (``{protocol: Range}``)."""
        return replace(self, versions=tuple(sorted(versions.items())))

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict."""
        return {
            "name": self.name,
            "incarnation": self.incarnation,
            "control": self.control,
            "pub": self.pub,
            "key": self.key,
            "versions": {name: [v.low, v.high] for name, v in self.versions},
            # additive: a node of one partition sends what the release before it sent
            **({"pubs": list(self.pubs), "pool": self.pool_size} if self.pool_size > 1 else {}),
        }


@dataclass(frozen=True, slots=True)
class Control:
    """The body of a hello, welcome or gossip frame.

    Attributes:
        node: the sender's own record.
        members: records of other members the sender knows as live.
        via: in a hello, the endpoint it was sent to; a welcome echoes it.
    """

    node: NodeRecord
    members: tuple[NodeRecord, ...] = ()
    via: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame.

    Attributes:
        topic: the topic ("" for control frames).
        kind: what the frame is.
        incarnation: the sender's incarnation.
        seq: the sequence number (first message of a batch).
        sender: the sender's node name.
        messages: the decoded messages of a batch (empty for control frames).
        control: the body of a control frame (None for batches).
        version: the frame's version byte: within LOWEST..VERSION for a batch; any for
            a control frame (whose sender may speak nothing we speak).
    """

    topic: str
    kind: Kind
    incarnation: int
    seq: int
    sender: str
    messages: list[Any]
    control: Control | None = None
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message already encoded as JSON, to send without encoding it again.

    Pass it to :meth:`~pubsub_zmq.PubSub.broadcast`, ``broadcast_from`` or
    ``direct_broadcast`` in place of the message: its bytes go into the batch as they
    are, and subscribers (local ones too) receive the decoded value, exactly what they
    would have received had the plain message been sent. Useful when the sender needs
    the encoding anyway (to measure it, say) and should not pay for it twice.

    Attributes:
        data: the JSON encoding of one value (what ``orjson.dumps`` returns). It is not
            parsed here: bytes that are not one JSON value make peers drop the whole
            batch they travel in, so build it with :meth:`of` or ``orjson.dumps``.

    Raises:
        TypeError: ``data`` is not a non-empty bytes object.
    """

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise TypeError(f"Encoded data must be non-empty bytes, got {self.data!r:.40}")

    @classmethod
    def of(cls, message: Any) -> Encoded:
        """Encode ``message`` (orjson), as a broadcast would.

        Raises:
            TypeError: the message cannot be encoded as JSON.
        """
        return cls(orjson.dumps(message))


def topic_prefix(topic: str) -> bytes:
    """The subscription prefix of ``topic``: its UTF-8 bytes plus the separator.

    Raises:
        TypeError: ``topic`` is not a str.
        InvalidTopic: it is empty, contains NUL, or is longer than MAX_TOPIC_BYTES.
    """
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, got {type(topic).__name__}")
    if not topic:
        raise InvalidTopic("topic must not be empty")
    data = topic.encode()
    if SEPARATOR in data:
        raise InvalidTopic("topic must not contain NUL")
    if len(data) > MAX_TOPIC_BYTES:
        raise InvalidTopic(f"topic is longer than {MAX_TOPIC_BYTES} bytes")
    return data + SEPARATOR


def check_name(name: str) -> bytes:
    """Validate a node name and return its UTF-8 bytes.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: it is empty or longer than MAX_NAME_BYTES.
    """
    if not isinstance(name, str):
        raise TypeError(f"node name must be a str, got {type(name).__name__}")
    data = name.encode()
    if not 1 <= len(data) <= MAX_NAME_BYTES:
        raise ValueError(f"node name must be 1 to {MAX_NAME_BYTES} UTF-8 bytes")
    return data


def check_protocol(protocol: str) -> str:
    """Validate a protocol name (as announced in a record's ``versions``) and return it.

    Raises:
        TypeError: ``protocol`` is not a str.
        ValueError: it is empty, longer than 64 characters, or not ASCII letters,
            digits, ``-``, ``_`` and ``.``.
    """
    if not isinstance(protocol, str):
        raise TypeError(f"a protocol name must be a str, got {type(protocol).__name__}")
    if not _protocol_ok(protocol):
        raise ValueError(
            f"a protocol name is 1 to {MAX_PROTOCOL_CHARS} ASCII letters, digits, '-', '_' "
            f"or '.', got {protocol!r:.80}"
        )
    return protocol


def _protocol_ok(name: str) -> bool:
    return (
        0 < len(name) <= MAX_PROTOCOL_CHARS
        and name.isascii()
        and name.replace("-", "").replace("_", "").replace(".", "x").isalnum()
    )


def _check_version(version: int) -> int:
    if type(version) is not int or not LOWEST <= version <= VERSION:
        raise ValueError(f"frame version {version!r} is not one this codec speaks ({VERSIONS})")
    return version


def sender_field(name: str) -> bytes:
    """The length-prefixed sender name that follows the fixed header."""
    data = check_name(name)
    return bytes((len(data),)) + data


def head(kind: Kind, incarnation: int, seq: int, version: int = VERSION) -> bytes:
    """The version, kind, incarnation and sequence bytes of a frame.

    Raises:
        ValueError: ``version`` is not within LOWEST..VERSION.
    """
    return _HEAD.pack(_check_version(version), kind, incarnation, seq)


def encode_batch(
    prefix: bytes,
    kind: Kind,
    incarnation: int,
    seq: int,
    sender: bytes,
    body: bytes | bytearray,
    version: int = VERSION,
) -> bytes:
    """Encode a batch of already-encoded messages of one topic.

    Args:
        prefix: :func:`topic_prefix` of the topic.
        kind: BROADCAST or DIRECT.
        incarnation: the sender's incarnation.
        seq: the sequence number of the first message.
        sender: :func:`sender_field` of the sender's name.
        body: the messages as one JSON array (see :func:`join_messages`).
        version: the frame version (chosen by :mod:`pubsub_zmq.versions`).

    Returns:
        The frame.

    Raises:
        ValueError: ``version`` is not within LOWEST..VERSION.
    """
    return b"".join((prefix, head(kind, incarnation, seq, version), sender, body))


def join_messages(parts: list[bytes]) -> bytes:
    """Join messages encoded one by one (orjson) into the JSON array of a batch."""
    return b"[" + b",".join(parts) + b"]"


def batch_frame(
    topic: str,
    messages: Iterable[Any],
    *,
    sender: str,
    incarnation: int,
    seq: int = 0,
    kind: Kind = Kind.BROADCAST,
) -> bytes:
    """Encode a batch frame of message values in one call (each encoded with orjson).

    A node builds its frames in steps (:class:`~pubsub_zmq.outbox.Outbox`); this is for
    tools and tests that play a member.

    Args:
        topic: the topic.
        messages: the messages, oldest first (at least one).
        sender: the sender's node name.
        incarnation: the sender's incarnation.
        seq: the sequence number of the first message.
        kind: BROADCAST or DIRECT.

    Returns:
        The frame.
    """
    body = join_messages([orjson.dumps(m) for m in messages])
    return encode_batch(topic_prefix(topic), kind, incarnation, seq, sender_field(sender), body)


def encode_control(
    kind: Kind,
    incarnation: int,
    seq: int,
    sender: bytes,
    body: Control,
    version: int = VERSION,
) -> bytes:
    """Encode a hello, welcome or gossip frame.

    Raises:
        ValueError: ``version`` is not within LOWEST..VERSION.
    """
    payload = {
        "node": body.node.to_json(),
        "members": [m.to_json() for m in body.members],
        "via": body.via,
    }
    return b"".join(
        (SEPARATOR, head(kind, incarnation, seq, version), sender, orjson.dumps(payload))
    )


BULK_BYTES = 64 * 1024
"""Bodies at least this long are decoded with the cyclic garbage collector paused."""


def _loads(body: memoryview) -> Any:
    """``orjson.loads``, with the collector paused for a large body.

    Decoding a large body allocates many containers, each one counted towards the
    collector's next run, and each run walks everything the process holds: a 512 KiB
    transfer part decodes about five times faster without those runs. No cycle can be
    made by decoding, so none is missed; the counts carry over to the next regular run.
    """
    if len(body) < BULK_BYTES or not gc.isenabled():
        return orjson.loads(body)
    gc.disable()
    try:
        return orjson.loads(body)
    finally:
        gc.enable()


def decode(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Decode and validate one frame.

    Args:
        data: the frame's bytes.
        max_frame_bytes: frames longer than this are rejected unread.

    Returns:
        The frame.

    Raises:
        FrameTooLarge: the frame is longer than ``max_frame_bytes``.
        UnknownVersion: a batch frame's version is not within LOWEST..VERSION, or a
            control frame of such a version does not read as a control frame.
        WireError: anything else wrong (garbage, truncation, bad UTF-8 or JSON, wrong
            shape or value); no other exception escapes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("frame is not bytes")
    size = len(data)
    if size > max_frame_bytes:
        raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame_bytes={max_frame_bytes}")
    data = bytes(data) if not isinstance(data, bytes) else data
    sep = data.find(SEPARATOR, 0, MAX_TOPIC_BYTES + 1)
    if sep < 0:
        raise WireError("no topic separator")
    pos = sep + 1
    if size < pos + _HEAD_SIZE + 2:
        raise WireError("truncated header")
    version, kind_byte, incarnation, seq = _HEAD.unpack_from(data, pos)
    known = LOWEST <= version <= VERSION
    kind = _KINDS.get(kind_byte)
    if kind is None or (not known and kind in _DATA_KINDS):
        if not known:
            raise UnknownVersion(f"unknown protocol version {version}")
        raise WireError(f"unknown frame kind {kind_byte:#x}")
    if not known:
        # a control frame is the negotiation itself: read its records, so that a node
        # speaking nothing we speak is refused with a reason, not dropped unread
        try:
            return _decode_rest(data, sep, pos, kind, incarnation, seq, version)
        except WireError as exc:
            raise UnknownVersion(
                f"unknown protocol version {version} (and not a control frame: {exc})"
            ) from exc
    return _decode_rest(data, sep, pos, kind, incarnation, seq, version)


def _decode_rest(
    data: bytes, sep: int, pos: int, kind: Kind, incarnation: int, seq: int, version: int
) -> Frame:
    size = len(data)
    pos += _HEAD_SIZE
    name_len = data[pos]
    pos += 1
    if name_len == 0 or size < pos + name_len:
        raise WireError("bad sender name length")
    try:
        topic = data[:sep].decode()
        sender = data[pos : pos + name_len].decode()
    except UnicodeDecodeError as exc:
        raise WireError("topic or sender is not UTF-8") from exc
    pos += name_len
    try:
        body = _loads(memoryview(data)[pos:])
    except orjson.JSONDecodeError as exc:
        raise WireError(f"body is not JSON: {exc}") from exc
    if kind in _DATA_KINDS:
        if not topic:
            raise WireError("batch without a topic")
        if type(body) is not list or not body:
            raise WireError("batch body is not a non-empty list")
        if seq + len(body) > _U64:
            raise WireError("sequence number overflows")
        return Frame(topic, kind, incarnation, seq, sender, body, None, version)
    if topic:
        raise WireError("control frame with a topic")
    control = _control(body)
    if control.node.name != sender or control.node.incarnation != incarnation:
        raise WireError("control record does not match the frame's sender")
    return Frame(topic, kind, incarnation, seq, sender, [], control, version)


def _control(body: Any) -> Control:
    if type(body) is not dict:
        raise WireError("control body is not an object")
    members = body.get("members")
    via = body.get("via")
    if type(members) is not list or len(members) > MAX_MEMBERS:
        raise WireError("members is not a list of at most MAX_MEMBERS records")
    if via is not None and not _endpoint_ok(via):
        raise WireError("via is not an endpoint")
    return Control(_record(body.get("node")), tuple(_record(m) for m in members), via)


def _endpoint_ok(value: Any) -> bool:
    return (
        type(value) is str
        and len(value) <= MAX_ENDPOINT_CHARS
        and value.startswith(_SCHEMES)
        and "\x00" not in value
    )


def _record(value: Any) -> NodeRecord:
    if type(value) is not dict:
        raise WireError("record is not an object")
    name = value.get("name")
    incarnation = value.get("incarnation")
    control = value.get("control")
    pub = value.get("pub")
    key = value.get("key")
    if type(name) is not str or not _name_ok(name):
        raise WireError("record name is not a valid node name")
    if type(incarnation) is not int or not 0 <= incarnation < _U64:
        raise WireError("record incarnation is not an unsigned 64-bit int")
    if not _endpoint_ok(control) or not _endpoint_ok(pub):
        raise WireError("record endpoint is not a tcp://, ipc:// or inproc:// address")
    assert isinstance(control, str)
    assert isinstance(pub, str)
    if key is not None and (type(key) is not str or len(key) != 40 or not key.isascii()):
        raise WireError("record key is not a Z85 CURVE public key")
    pubs = value.get("pubs", [])
    pool = value.get("pool", 1)
    if type(pubs) is not list or len(pubs) > _MAX_PUBS or not all(_endpoint_ok(p) for p in pubs):
        raise WireError(f"record pubs is not a list of at most {_MAX_PUBS} endpoints")
    if type(pool) is not int or not 1 <= pool <= _MAX_PUBS + 1:
        raise WireError("record pool is not a partition count")
    return NodeRecord(
        name, incarnation, control, pub, key, _versions(value.get("versions")), tuple(pubs), pool
    )


_MAX_PUBS = 63  # partitions 1 and up: pubsub_zmq.partitions.MAX_PARTITIONS - 1


_LEGACY_PAIRS = tuple(sorted(LEGACY.items()))


def _versions(value: Any) -> tuple[tuple[str, Range], ...]:
    if value is None:  # the release before negotiation: it sends no versions
        return _LEGACY_PAIRS
    if type(value) is not dict or len(value) > MAX_PROTOCOLS:
        raise WireError(f"record versions is not an object of at most {MAX_PROTOCOLS} protocols")
    # every gossip carries every member's record: the few distinct names and ranges
    # of a cluster are checked once and shared, not rebuilt per record
    pairs = []
    for name, bounds in value.items():
        if name not in _PROTOCOLS_SEEN:
            if not _protocol_ok(name):
                raise WireError("record versions holds a bad protocol name")
            _remember(_PROTOCOLS_SEEN, name, name)
        if type(bounds) is not list or len(bounds) != 2:
            raise WireError(f"record versions of {name!r} is not [low, high]")
        low, high = bounds
        versions = _RANGES_SEEN.get((low, high)) if type(low) is type(high) is int else None
        if versions is None:
            if type(low) is not int or type(high) is not int or not 1 <= low <= high <= MAX_VERSION:
                raise WireError(f"record versions of {name!r} is not [low, high]")
            versions = _remember(_RANGES_SEEN, (low, high), Range(low, high))
        pairs.append((name, versions))
    pairs.sort()
    return tuple(pairs)


_PROTOCOLS_SEEN: dict[str, str] = {}
_RANGES_SEEN: dict[tuple[int, int], Range] = {}
_T = TypeVar("_T")


def _remember(cache: dict[Any, _T], key: Any, value: _T) -> _T:
    if len(cache) >= MAX_PROTOCOLS * 16:  # bounded: a hostile peer cannot grow it
        cache.clear()
    cache[key] = value
    return value


def _name_ok(name: str) -> bool:
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        return False
    return 1 <= size <= MAX_NAME_BYTES
