"""Two replicas in a netsplit, step by step (the crdt-state guide's worked example)."""

from crdt_state import State

# Two replicas of one tracker shard. Refs are (node name, incarnation).
a, b = State(("a", 1)), State(("b", 1))
a.replica_up(b.replica)
b.replica_up(a.replica)

# alice connects to a, bob to b; each heartbeat carries the sender's delta.
a.join("conn-1", "room:42", "alice", {"status": "online"})
b.join("conn-2", "room:42", "bob", {"status": "online"})
heartbeat = a.take_delta()
joins, leaves = b.merge(heartbeat)
assert [e.key for e in joins] == ["alice"]
assert b.merge(heartbeat) == ([], [])  # a duplicated heartbeat changes nothing
a.merge(b.take_delta())
assert sorted(key for key, _ in a.get_by_topic("room:42")) == ["alice", "bob"]

# Netsplit: b's heartbeats stop reaching a, and a marks b down after down_period.
# b's presences leave a's view but a keeps them, hidden.
leaves = a.replica_down(b.replica)
assert [e.key for e in leaves] == ["bob"]
assert a.get_by_topic("room:42") == [("alice", {"status": "online"})]

# Both sides go on alone: alice goes away (an update), bob leaves, carol joins b.
a.leave_join("conn-1", "room:42", "alice", {"status": "away"})
b.leave("conn-2", "room:42", "bob")
b.join("conn-3", "room:42", "carol", {"status": "online"})
lost = a.take_delta()  # this heartbeat is lost in the split

# Heal: b is heard again and comes back up: what a held of it reappears.
joins = a.replica_up(b.replica)
assert [e.key for e in joins] == ["bob"]  # stale, until a merges b's news

# Each side is behind the other (its context lags), so each asks for a transfer.
joins, leaves = a.merge(b.extract(*a.clocks()))
assert [e.key for e in joins] == ["carol"]
assert [e.key for e in leaves] == ["bob"]
joins, leaves = b.merge(a.extract(*b.clocks()))
assert [(e.key, e.meta["status"]) for e in joins] == [("alice", "away")]
assert [(e.key, e.meta["status"]) for e in leaves] == [("alice", "online")]

# The lost heartbeat arrives late, and an old one again: nothing comes back.
assert b.merge(lost) == ([], [])

# Converged: both replicas list the same presences.
assert sorted(a.get_by_topic("room:42"), key=str) == sorted(b.get_by_topic("room:42"), key=str)
print(sorted(a.get_by_topic("room:42"), key=str))
