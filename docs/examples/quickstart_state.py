"""The home page's first look: two replicas of the State, no network."""

from crdt_state import State

a, b = State("a"), State("b")
a.replica_up("b")
b.replica_up("a")
a.join("conn-1", "room:42", "alice", {"status": "online"})
joins, leaves = b.merge(a.take_delta())  # what a's next heartbeat carries
assert [(e.key, e.meta) for e in joins] == [("alice", {"status": "online"})]
print(b.get_by_topic("room:42"))  # [('alice', {'status': 'online'})]: b now sees alice
