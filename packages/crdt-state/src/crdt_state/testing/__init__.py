"""Hypothesis strategies, a reference model and a replica state machine for crdt_state.

This module needs the ``testing`` extra (``pip install 'crdt-state[testing]'``), which
brings in `Hypothesis <https://hypothesis.readthedocs.io>`_. ``import crdt_state`` never
imports it: import ``crdt_state.testing`` explicitly, from tests.

It ships what the package's own property tests use, so that code built on
:class:`~crdt_state.State` (a diff handler, a presence view, a transport) is tested the
same way:

* strategies for the parts of a presence (:func:`replicas`, :func:`owners`,
  :func:`topics`, :func:`keys`, :func:`metas`), for local writes (:func:`operations`),
  for whole histories of a small cluster (:func:`scenarios`, whose :class:`Scenario`
  values print as readable programs and rebuild the same States on every
  :meth:`Scenario.build`), and for States built from them (:func:`states`,
  :func:`connected_states`);
* :class:`PresenceModel`, the naive sequential model every replica must converge to:
  per replica, the presences added and not removed, minus permanently down replicas;
* :class:`ReplicaMachine`, a ``RuleBasedStateMachine`` over 3 to 5 replicas with a lossy,
  duplicating, reordering network, partitions, crash-restarts and permanent downs, that
  checks its invariants after every step and, in its teardown, that a full exchange makes
  every replica show exactly the model's presences.

Extend the machine by subclassing it: add ``@invariant`` methods or rules, override
:meth:`ReplicaMachine.check_state` (called for every replica after every step),
:meth:`ReplicaMachine.on_diff` (every visible change a replica reports, local writes
included) and :meth:`ReplicaMachine.on_restart`, or extend
:meth:`ReplicaMachine.final_check`::

    from hypothesis import settings
    from crdt_state.testing import ReplicaMachine

    class MyMachine(ReplicaMachine):
        def check_state(self, slot, state):
            assert my_view_of(state) == expected_view(state.online_list())

    TestMyMachine = MyMachine.TestCase
    TestMyMachine.settings = settings(max_examples=100, stateful_step_count=40,
                                      deadline=None)

The package has four modules, each re-exported here: :mod:`~crdt_state.testing.model`
(comparing presences, local writes and the :class:`PresenceModel`; needs no Hypothesis),
:mod:`~crdt_state.testing.strategies`, :mod:`~crdt_state.testing.scenarios` and
:mod:`~crdt_state.testing.machine`. Import the names from ``crdt_state.testing``.

Every draw goes through Hypothesis (nothing here uses :mod:`random`), so a failure
shrinks and prints as a short program that replays it.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "crdt_state.testing needs Hypothesis: pip install 'crdt-state[testing]'"
    ) from exc

from crdt_state.testing.machine import ReplicaMachine
from crdt_state.testing.model import (
    EntryKey,
    Join,
    Leave,
    LeaveOwner,
    Operation,
    Presence,
    PresenceModel,
    Update,
    apply_operation,
    entry_key,
    freeze_meta,
    presences,
    seen_tags,
    visible_entries,
)
from crdt_state.testing.scenarios import (
    Cluster,
    Compact,
    Down,
    Heartbeat,
    Local,
    Scenario,
    Step,
    Transfer,
    Up,
    connected_states,
    scenarios,
    states,
)
from crdt_state.testing.strategies import keys, metas, operations, owners, replicas, topics

__all__ = [
    "Cluster",
    "Compact",
    "Down",
    "EntryKey",
    "Heartbeat",
    "Join",
    "Leave",
    "LeaveOwner",
    "Local",
    "Operation",
    "Presence",
    "PresenceModel",
    "ReplicaMachine",
    "Scenario",
    "Step",
    "Transfer",
    "Up",
    "Update",
    "apply_operation",
    "connected_states",
    "entry_key",
    "freeze_meta",
    "keys",
    "metas",
    "operations",
    "owners",
    "presences",
    "replicas",
    "scenarios",
    "seen_tags",
    "states",
    "topics",
    "visible_entries",
]
