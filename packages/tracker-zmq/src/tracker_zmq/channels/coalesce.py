"""Coalescing: several ``presence_diff`` payloads of a topic merged into one.

Pure: no I/O, no clock (the endpoint times the windows). Phoenix has no counterpart:
Phoenix sends every socket of a room one ``presence_diff`` per join, so N sockets that
(re)join a room within a second cost N² frames (phoenixframework/phoenix#3510). With
``EndpointOptions(coalesce_diffs=...)`` the endpoint collects a topic's diffs for that
many seconds and fastlanes one merged diff instead.

Theory of operation. The merged diff must leave phoenix.js's ``Presence`` in the state
the sequence would. ``Presence.syncDiff(state, {joins, leaves})`` applies all joins
first, then all leaves, and within one key works by ``phx_ref``:

- a join of ``key`` sets ``state[key]`` to the joined entry (its fields, such as what a
  ``fetch`` adds, replace the old ones) with the key's current metas whose refs are not
  joined in front: a joined ref moves to the end, its meta replaced;
- a leave of ``key`` removes its refs from ``state[key]`` (a ref it does not hold is a
  no-op) and deletes the key when no meta is left.

So for each ``(key, phx_ref)`` the last event of the sequence decides, and the merge
keeps, per key, the joined refs in the order of their last join and the left refs:

- a join of a ref removes it from the left refs (a leave then a join: present);
- a leave of a ref removes it from the joined refs (a join then a leave: absent) and
  keeps the leave: a socket that joined the room during the window got that presence
  in its ``presence_state``, and needs the leave; to every other socket it is a no-op;
- the joined entry's fields are the key's last join's, and the entry stays even when
  all its joined refs left again, with empty ``metas``: the join replaced the key's
  fields in the sequence too (and dropped the ones it did not have); the key's leaves
  then remove it when no meta is left, as they did in the sequence.

Applied to any state, the merged diff gives the state the sequence gives (the same
metas in the same order per key; the order of the keys themselves may differ, as it does
between a ``presence_state`` and the diffs it sums). It also gives that state when
applied to the state after any prefix of the sequence (a socket that joined during the
window). ``tests/test_coalesce_js.py`` checks both against phoenix.js itself.

A payload that is not a regular diff (``joins`` and ``leaves`` objects of entries with
a non-empty ``metas`` list of objects with distinct string ``phx_ref``) is not merged:
:meth:`DiffMerger.add` refuses it, and the endpoint sends what it merged so far, then that
payload as it came.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DiffMerger", "regular_diff"]


def _regular_entries(entries: Any) -> bool:
    if type(entries) is not dict:
        return False
    for key, entry in entries.items():
        if type(key) is not str or type(entry) is not dict:
            return False
        metas = entry.get("metas")
        if type(metas) is not list or not metas:
            return False
        refs = set()
        for meta in metas:
            if type(meta) is not dict:
                return False
            ref = meta.get("phx_ref")
            if type(ref) is not str or ref in refs:
                return False
            refs.add(ref)
    return True


def regular_diff(payload: Any) -> bool:
    """Whether ``payload`` is a ``presence_diff`` payload the merger can take.

    Args:
        payload: A ``presence_diff`` payload.

    Returns:
        True for ``{"joins": {...}, "leaves": {...}}`` whose entries each have a non-empty
        ``metas`` list of objects with distinct string ``phx_ref`` values.
    """
    return (
        type(payload) is dict
        and len(payload) == 2
        and _regular_entries(payload.get("joins"))
        and _regular_entries(payload.get("leaves"))
    )


class _Key:
    # what the merge holds for one key: the last join's fields, the joined metas by
    # ref (in the order of their last join) and the left metas by ref
    __slots__ = ("fields", "joined", "leave_fields", "left")

    def __init__(self) -> None:
        self.fields: dict[str, Any] | None = None
        self.joined: dict[str, dict[str, Any]] = {}
        self.leave_fields: dict[str, Any] = {}
        self.left: dict[str, dict[str, Any]] = {}


class DiffMerger:
    """Merges ``presence_diff`` payloads, in order, into one (see the module's rules).

    ```python
    merger = DiffMerger()
    merger.add({"joins": {"u1": {"metas": [{"phx_ref": "a"}]}}, "leaves": {}})
    merger.add({"joins": {}, "leaves": {"u1": {"metas": [{"phx_ref": "a"}]}}})
    merger.payload()
    # {"joins": {"u1": {"metas": []}}, "leaves": {"u1": {"metas": [{"phx_ref": "a"}]}}}
    ```

    The payloads added are not changed (the metas are shared, not copied).

    Attributes:
        count: The payloads merged so far.
    """

    __slots__ = ("_keys", "count")

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self.count = 0

    def add(self, payload: Any) -> bool:
        """Merge one more diff, after the ones merged so far.

        Args:
            payload: A ``presence_diff`` payload.

        Returns:
            False, merging nothing, when it is not :func:`regular_diff`.
        """
        if not regular_diff(payload):
            return False
        keys = self._keys
        for key, entry in payload["joins"].items():
            state = keys.get(key)
            if state is None:
                state = keys[key] = _Key()
            state.fields = {k: v for k, v in entry.items() if k != "metas"}
            for meta in entry["metas"]:
                ref = meta["phx_ref"]
                state.left.pop(ref, None)
                state.joined.pop(ref, None)  # a joined ref moves to the end
                state.joined[ref] = meta
        for key, entry in payload["leaves"].items():
            state = keys.get(key)
            if state is None:
                state = keys[key] = _Key()
            state.leave_fields = {k: v for k, v in entry.items() if k != "metas"}
            for meta in entry["metas"]:
                ref = meta["phx_ref"]
                state.joined.pop(ref, None)
                state.left[ref] = meta
        self.count += 1
        return True

    def payload(self) -> dict[str, Any]:
        """The merged diff: ``{"joins": {...}, "leaves": {...}}``."""
        joins: dict[str, Any] = {}
        leaves: dict[str, Any] = {}
        for key, state in self._keys.items():
            fields = state.fields
            if fields is not None:
                joins[key] = {**fields, "metas": list(state.joined.values())}
            if state.left:
                leaves[key] = {**state.leave_fields, "metas": list(state.left.values())}
        return {"joins": joins, "leaves": leaves}
