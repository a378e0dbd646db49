"""Wire form of Snapshot and Delta: plain data any JSON or msgpack codec carries. Pure.

``to_wire`` writes only lists, dicts, str, int and None; ``from_wire`` reads it back equal
and checks every invariant, raising :class:`~crdt_state.errors.WireError` for anything
else, whatever its shape. A replica that is a tuple travels as a list.

=========  =================================================================
field      form
=========  =================================================================
replica    ``str | int | [str | int, ...]``
context    ``[[replica, clock], ...]`` (Snapshot only; clock >= 0)
clouds     ``[[replica, [clock, ...]], ...]`` (clocks >= 1)
values     ``[[topic, owner, key, meta, [replica, clock]], ...]``
range      ``[context, context]`` (Delta only: start, end; start <= end)
=========  =================================================================

Checked on read: field types; clocks are ints (not bools) in range; no replica, tag or
cloud clock appears twice; every value's tag is covered by the context or the clouds;
a delta's range start does not exceed its end on any replica; the optional caps on
size (values plus cloud tags) and on distinct replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, groupby, repeat
from operator import itemgetter
from typing import Any

from crdt_state._types import Context, Record, Replica, Topic, is_id
from crdt_state.bulk import BULK_SIZE, gc_paused
from crdt_state.errors import WireError
from crdt_state.state import Delta, Snapshot

__all__ = [
    "PayloadReader",
    "columns_out",
    "delta_from_wire",
    "delta_to_wire",
    "iter_records",
    "iter_wire_values",
    "payload_from_wire",
    "payload_to_wire",
    "snapshot_from_wire",
    "snapshot_to_wire",
    "wire_head",
]

_MAX_CLOCK = 2**63 - 1
"""Clocks are bounded so that every codec (msgpack's int64 included) carries them."""

_WireReplica = str | int | list[str | int]

_ID_TYPES = frozenset((str, int))
"""Types of a topic, owner or key (``type(True)`` is bool: not one of them)."""

_STR_ONLY = frozenset((str,))
_INT_ONLY = frozenset((int,))
_DICT_ONLY = frozenset((dict,))


def _replica_out(replica: Replica) -> _WireReplica:
    return list(replica) if type(replica) is tuple else replica  # type: ignore[return-value]


def _context_out(context: Context) -> list[list[Any]]:
    return [[_replica_out(r), c] for r, c in context.items()]


def _clouds_out(clouds: dict[Replica, set[int]]) -> list[list[Any]]:
    return [[_replica_out(r), sorted(cl)] for r, cl in clouds.items() if cl]


def _values_out(values: dict[Replica, dict[int, Record]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    append = out.append
    for r, vals in values.items():
        wire_r = _replica_out(r)
        for c, (topic, owner, key, meta, _, _) in vals.items():
            append([topic, owner, key, meta, [wire_r, c]])
    return out


def iter_wire_values(payload: Snapshot | Delta) -> Iterator[list[Any]]:
    """The ``values`` rows of a payload's wire form, one at a time, in ``to_wire``'s order.

    With :func:`wire_head`, this writes a large payload piece by piece (a transfer in
    parts) instead of building its whole wire form at once. The payload must not change
    while it is iterated (Snapshot and Delta never do).
    """
    for r, vals in payload._values.items():
        wire_r = _replica_out(r)
        for c, (topic, owner, key, meta, _, _) in vals.items():
            yield [topic, owner, key, meta, [wire_r, c]]


def iter_records(payload: Snapshot | Delta) -> Iterator[Record]:
    """The values of a payload as stored records, grouped by replica, in ``to_wire``'s order.

    For :func:`columns_out`, which writes them in the columnar form; the payload must not
    change while it is iterated.
    """
    for vals in payload._values.values():
        yield from vals.values()


_TOPIC, _OWNER, _KEY, _META, _REPLICA, _CLOCK = (itemgetter(i) for i in range(6))


def columns_out(records: Iterable[Record]) -> dict[str, Any]:
    """Value records in the columnar form: a topic table and one column group per replica.

    ``{"topics": [topic, ...], "values": [[replica, clocks, topic_indexes, owners, keys,
    metas], ...]}``: each group holds the consecutive records of one replica (as
    :func:`iter_records` yields them), each column a list of equal length, a topic given
    as its index in the table. Read back by :meth:`PayloadReader.add_columns`. Reading
    columns costs a few C-level passes per column instead of a Python step per row, and
    every record of a topic shares one string.
    """
    topics: dict[Topic, int] = {}
    index = topics.setdefault
    groups: list[list[Any]] = []
    for replica, run in groupby(records, _REPLICA):
        recs = list(run)
        groups.append(
            [
                _replica_out(replica),
                list(map(_CLOCK, recs)),
                [index(topic, len(topics)) for topic in map(_TOPIC, recs)],
                list(map(_OWNER, recs)),
                list(map(_KEY, recs)),
                list(map(_META, recs)),
            ]
        )
    return {"topics": list(topics), "values": groups}


def wire_head(payload: Snapshot | Delta) -> dict[str, Any]:
    """A payload's wire form without its ``values`` (see :func:`iter_wire_values`)."""
    if isinstance(payload, Snapshot):
        return {
            "replica": _replica_out(payload.replica),
            "context": _context_out(payload._context),
            "clouds": _clouds_out(payload._clouds),
        }
    return {
        "replica": _replica_out(payload.replica),
        "clouds": _clouds_out(payload._clouds),
        "range": [_context_out(payload._start), _context_out(payload._end)],
    }


def snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    """Write a Snapshot as plain data (see the module's table)."""
    if len(snapshot) >= BULK_SIZE:
        with gc_paused():
            return _snapshot_to_wire(snapshot)
    return _snapshot_to_wire(snapshot)


def _snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "replica": _replica_out(snapshot.replica),
        "context": _context_out(snapshot._context),
        "clouds": _clouds_out(snapshot._clouds),
        "values": _values_out(snapshot._values),
    }


def delta_to_wire(delta: Delta) -> dict[str, Any]:
    """Write a Delta as plain data (see the module's table)."""
    if len(delta) >= BULK_SIZE:
        with gc_paused():
            return _delta_to_wire(delta)
    return _delta_to_wire(delta)


def _delta_to_wire(delta: Delta) -> dict[str, Any]:
    return {
        "replica": _replica_out(delta.replica),
        "clouds": _clouds_out(delta._clouds),
        "values": _values_out(delta._values),
        "range": [_context_out(delta._start), _context_out(delta._end)],
    }


class _Reader:
    """Reads one payload; interns replicas so that equal ones share one object."""

    def __init__(self, max_size: int | None, max_replicas: int | None) -> None:
        self.replicas: dict[Replica, Replica] = {}
        self.max_size = max_size
        self.max_replicas = max_replicas
        self.size = 0

    def replica(self, data: object) -> Replica:
        if type(data) is list:
            if not data or not all(is_id(part) for part in data):
                raise WireError(f"a replica list must hold str or int parts, not {data!r:.80}")
            replica: Replica = tuple(data)
        elif is_id(data):
            replica = data  # type: ignore[assignment]
        else:
            raise WireError(f"a replica must be a str, an int or a list, not {data!r:.80}")
        known = self.replicas.get(replica)
        if known is not None:
            return known
        if self.max_replicas is not None and len(self.replicas) >= self.max_replicas:
            raise WireError(f"more than {self.max_replicas} replicas")
        self.replicas[replica] = replica
        return replica

    def grow(self, count: int) -> None:
        self.size += count
        if self.max_size is not None and self.size > self.max_size:
            raise WireError(f"more than {self.max_size} values and cloud tags")

    def context(self, data: object, what: str) -> Context:
        pairs = _list(data, what)
        out: Context = {}
        for pair in pairs:
            items = _list(pair, f"a {what} entry")
            if len(items) != 2:
                raise WireError(f"a {what} entry must be [replica, clock], not {pair!r:.80}")
            replica = self.replica(items[0])
            if replica in out:
                raise WireError(f"replica {replica!r:.80} appears twice in the {what}")
            out[replica] = _clock(items[1], minimum=0)
        return out

    def range(self, data: object) -> tuple[Context, Context]:
        ends = _list(data, "range")
        if len(ends) != 2:
            raise WireError("a range must be [start, end]")
        start = self.context(ends[0], "range start")
        end = self.context(ends[1], "range end")
        for r, c in start.items():
            if c > end.get(r, c):
                raise WireError(f"the range of {r!r:.80} starts at {c} after its end")
        return start, end

    def clouds(self, data: object) -> dict[Replica, set[int]]:
        out: dict[Replica, set[int]] = {}
        for pair in _list(data, "clouds"):
            items = _list(pair, "a cloud")
            if len(items) != 2:
                raise WireError(f"a cloud must be [replica, [clock, ...]], not {pair!r:.80}")
            replica = self.replica(items[0])
            if replica in out:
                raise WireError(f"replica {replica!r:.80} has two clouds")
            clocks = _list(items[1], "a cloud's clocks")
            self.grow(len(clocks))
            # checked in C (a heartbeat relays hundreds of tags); the loop names the culprit
            if clocks and (
                not _INT_ONLY.issuperset(map(type, clocks))
                or min(clocks) < 1
                or max(clocks) > _MAX_CLOCK
            ):
                for c in clocks:
                    _clock(c, minimum=1)
            cloud = set(clocks)
            if len(cloud) != len(clocks):
                raise WireError(f"a clock appears twice in the cloud of {replica!r:.80}")
            if cloud:
                out[replica] = cloud
        return out

    def values(
        self, data: object, out: dict[Replica, dict[int, Record]] | None = None
    ) -> dict[Replica, dict[int, Record]]:
        """Read value rows into ``out`` (a new dict by default); a tag already in it raises."""
        rows = _list(data, "values")
        self.grow(len(rows))
        if out is None:
            out = {}
        ids, str_keys = _ID_TYPES, _STR_ONLY
        # Rows of one replica mostly follow each other: its wire form is read once per run.
        last_wire: object = None
        replica: Replica = ""
        held: dict[int, Record] = {}
        for row in rows:
            if type(row) is not list or len(row) != 5:
                raise WireError(
                    f"a value must be [topic, owner, key, meta, [replica, clock]], not {row!r:.80}"
                )
            topic, owner, key, meta, tag = row
            if type(topic) not in ids or type(owner) not in ids or type(key) not in ids:
                raise WireError(f"topic, owner and key must be str or int in {row!r:.80}")
            if type(meta) is not dict or not {*map(type, meta)} <= str_keys:
                raise WireError(f"a meta must be a dict with str keys in {row!r:.80}")
            if type(tag) is not list or len(tag) != 2:
                raise WireError(f"a tag must be [replica, clock], not {tag!r:.80}")
            wire_replica, c = tag
            if type(c) is not int or not 1 <= c <= _MAX_CLOCK:
                _clock(c, minimum=1)  # raises with the message
            # Equal to the last one and made of str and int only (1.0 and True equal 1):
            # the same replica. Otherwise it is read and checked in full.
            kind = type(wire_replica)
            if wire_replica != last_wire or not (
                kind in ids
                or (
                    kind is list
                    and len(wire_replica) == 2
                    and type(wire_replica[0]) in ids
                    and type(wire_replica[1]) in ids
                )
            ):
                replica = self.replica(wire_replica)
                last_wire = wire_replica
                found = out.get(replica)
                if found is None:
                    found = out[replica] = {}
                held = found
            if c in held:
                raise WireError(f"tag {(replica, c)!r:.80} appears twice")
            held[c] = (topic, owner, key, meta, replica, c)
        return out

    def columns(self, data: object) -> dict[Replica, dict[int, Record]]:
        """Read values in the columnar form of :func:`columns_out` into a new dict."""
        fields = _fields(data, ("topics", "values"), "column part")
        topics = _list(fields[0], "topics")
        groups = _list(fields[1], "column groups")
        if not {*map(type, topics)} <= _ID_TYPES:
            raise WireError("topics must be str or int")
        out: dict[Replica, dict[int, Record]] = {}
        for group in groups:
            if type(group) is not list or len(group) != 6:
                raise WireError(
                    "a column group must be [replica, clocks, topics, owners, keys, metas]"
                )
            replica = self.replica(group[0])
            clocks, indexes, owners, keys, metas = (
                _list(column, "a column") for column in group[1:]
            )
            n = len(clocks)
            if not len(indexes) == len(owners) == len(keys) == len(metas) == n:
                raise WireError(f"the columns of {replica!r:.80} differ in length")
            self.grow(n)
            if not n:
                continue
            # Each check is one C-level pass over a column (a bool is not an int here).
            if {*map(type, clocks)} != _INT_ONLY or not (
                min(clocks) >= 1 and max(clocks) <= _MAX_CLOCK
            ):
                raise WireError(f"clocks must be ints from 1 to 2**63-1 in {replica!r:.80}")
            if {*map(type, indexes)} != _INT_ONLY or not (
                min(indexes) >= 0 and max(indexes) < len(topics)
            ):
                raise WireError(f"a topic index is out of the table in {replica!r:.80}")
            if not {*map(type, owners)} <= _ID_TYPES or not {*map(type, keys)} <= _ID_TYPES:
                raise WireError(f"owners and keys must be str or int in {replica!r:.80}")
            if {*map(type, metas)} != _DICT_ONLY or not {
                *map(type, chain.from_iterable(metas))
            } <= _STR_ONLY:
                raise WireError(f"metas must be dicts with str keys in {replica!r:.80}")
            records = zip(
                map(topics.__getitem__, indexes), owners, keys, metas, repeat(replica), clocks
            )
            held = dict(zip(clocks, records, strict=False))
            if len(held) != n:
                raise WireError(f"a tag of {replica!r:.80} appears twice")
            found = out.get(replica)
            if found is None:
                out[replica] = held
            else:
                _absorb(found, held, replica)
        return out


def _absorb(into: dict[int, Record], more: dict[int, Record], replica: Replica) -> None:
    """Add the records of ``more`` to ``into``; a tag in both raises."""
    size = len(into)
    into.update(more)
    if len(into) != size + len(more):
        raise WireError(f"a tag of {replica!r:.80} appears twice")


def _list(data: object, what: str) -> list[Any]:
    if type(data) is not list:
        raise WireError(f"{what} must be a list, not {type(data).__name__}")
    return data


def _clock(data: object, *, minimum: int) -> int:
    if type(data) is not int or not minimum <= data <= _MAX_CLOCK:
        raise WireError(f"a clock must be an int from {minimum} to 2**63-1, not {data!r:.80}")
    return data


def _fields(data: object, names: tuple[str, ...], what: str) -> list[object]:
    if type(data) is not dict:
        raise WireError(f"a {what} must be a dict, not {type(data).__name__}")
    if set(data) != set(names):
        raise WireError(f"a {what} has the fields {sorted(names)}, not {sorted(map(str, data))}")
    return [data[name] for name in names]


def _check_covered(
    values: dict[Replica, dict[int, Record]], context: Context, clouds: dict[Replica, set[int]]
) -> None:
    for replica, held in values.items():
        upto = context.get(replica, 0)
        if not held or max(held) <= upto:
            continue  # all within the context: one C-level pass
        cloud = clouds.get(replica, set())
        for c in held:
            if c > upto and c not in cloud:
                raise WireError(f"value tag {(replica, c)!r:.80} is outside the context and clouds")


def _bulk(data: object) -> bool:
    values = data.get("values") if type(data) is dict else None
    return type(values) is list and len(values) >= BULK_SIZE


def snapshot_from_wire(
    data: object, *, max_size: int | None = None, max_replicas: int | None = None
) -> Snapshot:
    """Read a Snapshot written by :func:`snapshot_to_wire`.

    Raises:
        WireError: For any malformed input.
    """
    if _bulk(data):
        with gc_paused():
            return _snapshot_from_wire(data, max_size, max_replicas)
    return _snapshot_from_wire(data, max_size, max_replicas)


def _snapshot_from_wire(data: object, max_size: int | None, max_replicas: int | None) -> Snapshot:
    try:
        replica, context, clouds, values = _fields(
            data, ("replica", "context", "clouds", "values"), "snapshot"
        )
        reader = _Reader(max_size, max_replicas)
        snap_replica = reader.replica(replica)
        snap_context = reader.context(context, "context")
        snap_clouds = reader.clouds(clouds)
        snap_values = reader.values(values)
        _check_covered(snap_values, snap_context, snap_clouds)
    except WireError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an unhashable oddity
        raise WireError(f"malformed snapshot: {exc}") from exc
    return Snapshot._make(snap_replica, snap_context, snap_clouds, snap_values)


def delta_from_wire(
    data: object, *, max_size: int | None = None, max_replicas: int | None = None
) -> Delta:
    """Read a Delta written by :func:`delta_to_wire`.

    Raises:
        WireError: For any malformed input.
    """
    if _bulk(data):
        with gc_paused():
            return _delta_from_wire(data, max_size, max_replicas)
    return _delta_from_wire(data, max_size, max_replicas)


def _delta_from_wire(data: object, max_size: int | None, max_replicas: int | None) -> Delta:
    try:
        replica, clouds, values, range_ = _fields(
            data, ("replica", "clouds", "values", "range"), "delta"
        )
        reader = _Reader(max_size, max_replicas)
        delta_replica = reader.replica(replica)
        delta_clouds = reader.clouds(clouds)
        delta_values = reader.values(values)
        start, end = reader.range(range_)
        _check_covered(delta_values, {}, delta_clouds)
    except WireError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise WireError(f"malformed delta: {exc}") from exc
    return Delta._make(delta_replica, delta_values, delta_clouds, start, end)


class PayloadReader:
    """Reads a Snapshot or a Delta that arrives in pieces, checking each piece as it comes.

    The pieces are what :func:`iter_wire_values` and :func:`wire_head` write: value rows
    and cloud tags as ``[replica, clock]`` pairs, in any grouping and order, then the
    head (the wire form's other fields, without ``values`` and ``clouds``) at
    :meth:`finish`. Reading a large transfer part by part keeps only the read values,
    never the whole wire form, and spreads the checking over the parts' arrival. Every
    check of :func:`snapshot_from_wire` and :func:`delta_from_wire` applies, across
    pieces (a tag twice in two pieces raises too).

    Args:
        kind: :class:`~crdt_state.Snapshot` or :class:`~crdt_state.Delta`.
        max_size: Most values plus cloud tags in all.
        max_replicas: Most distinct replicas.
    """

    def __init__(
        self,
        kind: type[Snapshot] | type[Delta],
        *,
        max_size: int | None = None,
        max_replicas: int | None = None,
    ) -> None:
        self._kind = kind
        self._reader = _Reader(max_size, max_replicas)
        self._values: dict[Replica, dict[int, Record]] = {}
        self._clouds: dict[Replica, set[int]] = {}
        self._fresh: dict[Replica, dict[int, Record]] = {}

    def add_values(self, rows: object) -> None:
        """Read value rows (``[[topic, owner, key, meta, [replica, clock]], ...]``).

        Raises:
            WireError: For a malformed row, a tag seen before, or a cap exceeded.
        """
        try:
            self._keep(self._reader.values(rows))
        except WireError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"malformed values: {exc}") from exc

    def add_columns(self, data: object) -> None:
        """Read values in the columnar form of :func:`columns_out`.

        Every check of :meth:`add_values` applies, each as a pass over a column.

        Raises:
            WireError: For a malformed column, a tag seen before, or a cap exceeded.
        """
        try:
            self._keep(self._reader.columns(data))
        except WireError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"malformed columns: {exc}") from exc

    def _keep(self, read: dict[Replica, dict[int, Record]]) -> None:
        values, fresh = self._values, self._fresh
        for replica, held in read.items():
            found = values.get(replica)
            if found is None:
                values[replica] = dict(held)
            else:
                _absorb(found, held, replica)
            pending = fresh.get(replica)
            if pending is None:
                fresh[replica] = held
            else:
                pending.update(held)

    @property
    def size(self) -> int:
        """Values plus cloud tags read so far (what ``max_size`` caps)."""
        return self._reader.size

    def take_values(self, replica: Replica) -> Delta | None:
        """The values read since the last call, as a Delta that a State can merge now.

        Its clouds are the values' own tags and its range is empty: merging it admits
        the values as a heartbeat's delta would, and says nothing of any other tag, so
        it is safe to merge before the rest of the payload came (a value removed since
        by its replica is removed again by the later delta that says so, since a tag
        once seen stays seen). The payload from :meth:`finish`, merged after, brings the
        rest: its context, its clouds, and the removes they imply. A State merges the
        values of a large transfer part by part in this way, as the parts arrive.

        Args:
            replica: The replica to name the Delta after (the payload's sender).

        Returns:
            The Delta, or None when no value was read since the last call.
        """
        fresh = self._fresh
        if not fresh:
            return None
        self._fresh = {}
        return Delta._make(replica, fresh, {r: set(held) for r, held in fresh.items()}, {}, {})

    def add_cloud_tags(self, pairs: object) -> None:
        """Read cloud tags as ``[[replica, clock], ...]``.

        Raises:
            WireError: For a malformed pair, a tag seen before, or a cap exceeded.
        """
        reader, clouds = self._reader, self._clouds
        try:
            items = _list(pairs, "cloud tags")
            reader.grow(len(items))
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError(f"a cloud tag must be [replica, clock], not {pair!r:.80}")
                replica = reader.replica(pair[0])
                c = _clock(pair[1], minimum=1)
                cloud = clouds.get(replica)
                if cloud is None:
                    cloud = clouds[replica] = set()
                elif c in cloud:
                    raise WireError(f"cloud tag {(replica, c)!r:.80} appears twice")
                cloud.add(c)
        except WireError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"malformed cloud tags: {exc}") from exc

    def add_clouds(self, groups: object) -> None:
        """Read cloud tags grouped by replica: ``[[replica, [clock, ...]], ...]``.

        The grouped form of :meth:`add_cloud_tags` (a replica may come in several
        groups and pieces; a tag seen before raises).

        Raises:
            WireError: For a malformed group, a tag seen before, or a cap exceeded.
        """
        reader, clouds = self._reader, self._clouds
        try:
            for group in _list(groups, "cloud groups"):
                items = _list(group, "a cloud")
                if len(items) != 2:
                    raise WireError(f"a cloud must be [replica, [clock, ...]], not {group!r:.80}")
                replica = reader.replica(items[0])
                clocks = _list(items[1], "a cloud's clocks")
                reader.grow(len(clocks))
                if not clocks:
                    continue
                if {*map(type, clocks)} != _INT_ONLY or not (
                    min(clocks) >= 1 and max(clocks) <= _MAX_CLOCK
                ):
                    raise WireError(
                        f"cloud clocks must be ints from 1 to 2**63-1, not {clocks!r:.80}"
                    )
                cloud = clouds.get(replica)
                if cloud is None:
                    cloud = clouds[replica] = set()
                size = len(cloud)
                cloud.update(clocks)
                if len(cloud) != size + len(clocks):
                    raise WireError(f"a cloud tag of {replica!r:.80} appears twice")
        except WireError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"malformed clouds: {exc}") from exc

    def finish(self, head: object) -> Snapshot | Delta:
        """The payload, from the pieces read and its head; the reader is spent after.

        Args:
            head: The wire form's fields but ``values`` and ``clouds``: ``replica`` and
                ``context`` for a Snapshot, ``replica`` and ``range`` for a Delta.

        Raises:
            WireError: For a malformed head, or values outside the context and clouds.
        """
        values, clouds, reader = self._values, self._clouds, self._reader
        self._values, self._clouds, self._fresh = {}, {}, {}
        try:
            if issubclass(self._kind, Snapshot):
                replica, context = _fields(head, ("replica", "context"), "snapshot head")
                snap_replica = reader.replica(replica)
                snap_context = reader.context(context, "context")
                _check_covered(values, snap_context, clouds)
                return Snapshot._make(snap_replica, snap_context, clouds, values)
            replica, range_ = _fields(head, ("replica", "range"), "delta head")
            delta_replica = reader.replica(replica)
            start, end = reader.range(range_)
            _check_covered(values, {}, clouds)
            return Delta._make(delta_replica, values, clouds, start, end)
        except WireError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(f"malformed payload head: {exc}") from exc


def payload_to_wire(payload: Snapshot | Delta) -> dict[str, Any]:
    """Write a Snapshot or a Delta (what their ``to_wire`` calls)."""
    if isinstance(payload, Snapshot):
        return snapshot_to_wire(payload)
    return delta_to_wire(payload)


def payload_from_wire(
    kind: type, data: object, *, max_size: int | None = None, max_replicas: int | None = None
) -> Snapshot | Delta:
    """Read a Snapshot or a Delta, as ``kind`` says (what their ``from_wire`` calls).

    Raises:
        WireError: For any malformed input.
    """
    read = snapshot_from_wire if issubclass(kind, Snapshot) else delta_from_wire
    return read(data, max_size=max_size, max_replicas=max_replicas)
