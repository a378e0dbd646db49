"""Socket-free tests of the replica life cycle (tracker_zmq.replica), table by table.

Ports phoenix_pubsub's replica_test (ref, put_heartbeat, detect_down) onto the
:class:`Replicas` table and checks the rules this port adds: the permdowned-vsn memory,
restarts, the max-replicas cap, one status vocabulary, and the transition table.
"""

from __future__ import annotations

import pytest

from tracker_zmq import Replica, ReplicaEvent, Status
from tracker_zmq.replica import TRANSITIONS, Drop, Input, Replicas

DOWN, PERMDOWN = 5.0, 10.0


def table(max_replicas: int = 8) -> Replicas:
    return Replicas(DOWN, PERMDOWN, max_replicas)


def kinds(events: list[ReplicaEvent] | Drop) -> list[tuple[str, tuple[str, int]]]:
    assert not isinstance(events, Drop), events
    return [(e.kind, e.ref) for e in events]


# --------------------------------------------------------- the vocabulary


def test_one_status_vocabulary_with_phoenixs_strings() -> None:
    assert [s.value for s in Status] == ["up", "down", "permdown"]
    assert Status.PERMDOWN == "permdown"
    event = ReplicaEvent(Status.DOWN, ("a", 1))
    assert event.kind == "down"
    assert f"{event.kind}" == "down"


def test_replica_ref_and_initial_status() -> None:
    replica = Replica("a", 7, 3.0)
    assert replica.ref == ("a", 7)
    assert replica.status is Status.UP
    assert replica.last_heartbeat_at == 3.0


def test_the_transition_table_covers_every_status_and_input() -> None:
    # every status a held replica can have, and a name not yet known, meets every input
    # (an unknown name only ever gets a heartbeat)
    held = [Status.UP, Status.DOWN]
    expected = {(s, i) for s in held for i in Input} | {(None, Input.HEARTBEAT)}
    assert set(TRANSITIONS) == expected
    for entered in TRANSITIONS.values():
        # the statuses entered are in life order, permdown only ever last
        assert Status.PERMDOWN not in entered[:-1]


# -------------------------------------------------------- put_heartbeat


def test_put_heartbeat_with_no_previously_tracked_name() -> None:
    replicas = table()
    assert kinds(replicas.put_heartbeat(("new", 3), 1.0)) == [("up", ("new", 3))]
    added = replicas["new"]
    assert (added.name, added.vsn, added.status) == ("new", 3, Status.UP)
    assert added.last_heartbeat_at == 1.0


@pytest.mark.parametrize("status", [Status.UP, Status.DOWN])
def test_put_heartbeat_with_previously_tracked_name(status: Status) -> None:
    replicas = table()
    replicas.put_heartbeat(("existing", 3), 0.0)
    if status is Status.DOWN:
        assert kinds(replicas.detect_down(6.0)) == [("down", ("existing", 3))]
    events = replicas.put_heartbeat(("existing", 3), 7.0)
    # heard again: reported up only if it was down
    assert kinds(events) == ([("up", ("existing", 3))] if status is Status.DOWN else [])
    updated = replicas["existing"]
    assert (updated.vsn, updated.status, updated.last_heartbeat_at) == (3, Status.UP, 7.0)


def test_put_heartbeat_of_an_older_vsn_is_dropped() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 5), 0.0)
    assert replicas.put_heartbeat(("b", 4), 1.0) is Drop.OLDER_INCARNATION
    assert replicas["b"].ref == ("b", 5)
    assert replicas["b"].last_heartbeat_at == 0.0


def test_put_heartbeat_of_a_newer_vsn_is_a_restart() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 1), 0.0)
    events = replicas.put_heartbeat(("b", 2), 1.0)
    assert kinds(events) == [("down", ("b", 1)), ("permdown", ("b", 1)), ("up", ("b", 2))]
    assert replicas["b"].ref == ("b", 2)
    # the old incarnation is remembered: its late messages are refused
    assert not replicas.admit(("b", 1), 1.5, heartbeat=True)
    assert replicas.admit(("b", 2), 1.5, heartbeat=True)


def test_a_restart_of_a_down_replica_is_not_reported_down_again() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 1), 0.0)
    replicas.detect_down(6.0)
    assert kinds(replicas.put_heartbeat(("b", 2), 7.0)) == [
        ("permdown", ("b", 1)),
        ("up", ("b", 2)),
    ]


def test_a_new_name_beyond_max_replicas_is_dropped() -> None:
    replicas = table(max_replicas=2)
    replicas.put_heartbeat(("a", 1), 0.0)
    replicas.put_heartbeat(("b", 1), 0.0)
    assert replicas.put_heartbeat(("c", 1), 0.0) is Drop.TOO_MANY_REPLICAS
    assert set(replicas) == {"a", "b"}
    # known names still restart at the cap
    assert kinds(replicas.put_heartbeat(("b", 2), 1.0))[-1] == ("up", ("b", 2))


# ---------------------------------------------------------- detect_down


def test_detect_down_with_up_node() -> None:
    replicas = table()
    replicas.put_heartbeat(("up", 1), 0.0)
    assert replicas.detect_down(0.0) == []
    assert replicas.detect_down(DOWN) == []  # not yet: silent for more than down_period
    assert replicas["up"].status is Status.UP


def test_detect_down_with_temporarily_downed_node() -> None:
    replicas = table()
    replicas.put_heartbeat(("tempdown", 1), 0.0)
    assert kinds(replicas.detect_down(6.0)) == [("down", ("tempdown", 1))]
    assert replicas["tempdown"].status is Status.DOWN
    assert replicas["tempdown"].vsn == 1
    # down is reported once
    assert replicas.detect_down(7.0) == []


def test_detect_down_with_permanently_downed_node_removes_it() -> None:
    replicas = table()
    replicas.put_heartbeat(("permdown", 1), 0.0)
    assert kinds(replicas.detect_down(11.0)) == [
        ("down", ("permdown", 1)),
        ("permdown", ("permdown", 1)),
    ]
    assert "permdown" not in replicas
    assert replicas.fetch_by_ref(("permdown", 1)) is None


def test_detect_down_of_a_down_node_reports_only_the_permdown() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 1), 0.0)
    replicas.detect_down(6.0)
    assert kinds(replicas.detect_down(11.0)) == [("permdown", ("b", 1))]
    assert replicas == {}


# ------------------------------------------------ permdown and the memory


def test_fetch_by_ref_checks_the_vsn() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 2), 0.0)
    assert replicas.fetch_by_ref(("b", 2)) is replicas["b"]
    assert replicas.fetch_by_ref(("b", 1)) is None
    assert replicas.fetch_by_ref(("c", 2)) is None


def test_graceful_permdown_of_the_current_ref_only() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 2), 0.0)
    assert replicas.permdown(("b", 1), 1.0) == []
    assert kinds(replicas.permdown(("b", 2), 1.0)) == [("down", ("b", 2)), ("permdown", ("b", 2))]
    assert replicas.permdown(("b", 2), 1.0) == []


def test_messages_of_a_permdowned_vsn_are_refused_until_it_is_alive_again() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 2), 0.0)
    replicas.permdown(("b", 2), 1.0)
    for vsn in (1, 2):
        assert not replicas.admit(("b", vsn), 1.5, heartbeat=True)
        assert not replicas.admit(("b", vsn), 1.5, heartbeat=False)
    assert replicas.admit(("b", 3), 1.5, heartbeat=False)
    assert replicas.admit(("c", 1), 1.5, heartbeat=False)
    # the same vsn heartbeating more than down_period later was cut off, not dead
    assert not replicas.admit(("b", 2), 1.0 + DOWN + 1, heartbeat=False)
    assert not replicas.admit(("b", 1), 1.0 + DOWN + 1, heartbeat=True)
    assert replicas.admit(("b", 2), 1.0 + DOWN + 1, heartbeat=True)
    assert replicas.admit(("b", 1), 1.0 + DOWN + 1, heartbeat=False)  # memory cleared


def test_the_memory_of_a_permdown_expires_after_permdown_period() -> None:
    replicas = table()
    replicas.put_heartbeat(("b", 2), 0.0)
    replicas.permdown(("b", 2), 1.0)
    replicas.expire(1.0 + PERMDOWN)
    assert not replicas.admit(("b", 1), 1.0 + PERMDOWN, heartbeat=False)
    replicas.expire(1.0 + PERMDOWN + 0.1)
    assert replicas.admit(("b", 1), 1.0 + PERMDOWN + 0.1, heartbeat=False)
