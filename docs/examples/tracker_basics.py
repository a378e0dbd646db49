"""A Tracker embedded in an asyncio app (the tracker-zmq page).

One node in this process, on a free port of 127.0.0.1. The page shows the program and
the two owner examples; the checks between them, and the calls that run the owner
examples, are not shown.
"""

# --8<-- [start:main]
import asyncio
import logging

from pubsub_zmq import PubSub
from tracker_zmq import Tracker


async def on_diff(diff):
    for topic, (joins, leaves) in diff.items():
        for key, meta in joins:
            print(f"{key} joined {topic}: {meta}")
        for key, _meta in leaves:
            print(f"{key} left {topic}")


async def main():
    async with (
        PubSub("node-a", bind="tcp://127.0.0.1:0") as ps,  # port 0: any free port
        Tracker(ps, name="presence", handler=on_diff, log_level=logging.INFO) as tracker,
    ):
        ref = tracker.track("user:1", "room:lobby", "alice", {"status": "online"})
        tracker.update("user:1", "room:lobby", "alice", lambda m: {**m, "status": "away"})
        print(tracker.list("room:lobby"))  # [("alice", {..., "phx_ref_prev": ref})]
        print(tracker.get_by_key("room:lobby", "alice"))  # [("user:1", {...})]
        # --8<-- [end:main]
        [(key, meta)] = tracker.list("room:lobby")
        assert key == "alice"
        assert meta["status"] == "away"
        assert meta["phx_ref_prev"] == ref
        assert tracker.get_by_key("room:lobby", "alice") == [("user:1", meta)]
        tracker.track("user:1", "room:hall", "alice", {})
        # --8<-- [start:untrack]
        tracker.untrack("user:1", "room:lobby", "alice")
        tracker.untrack("user:1")  # every presence of that owner
        # --8<-- [end:untrack]
        assert tracker.list("room:lobby") == []
        assert tracker.list("room:hall") == []
        await check_session(tracker)
        await check_tracking(tracker)


# --8<-- [start:session]
async def session(tracker, user):
    me = asyncio.current_task()
    tracker.track(me, "room:lobby", user, {})
    await serve_user(user)  # the presence leaves when this task ends


# --8<-- [end:session]


# --8<-- [start:tracking]
async def in_the_lobby(tracker):
    async with tracker.tracking("user:1", "room:lobby", "alice", {}) as phx_ref:
        await serve_user("alice")  # untracked when the block ends, also on error
        # --8<-- [end:tracking]
        [(_, meta)] = tracker.list("room:lobby")
        assert meta["phx_ref"] == phx_ref
        raise LookupError("an error in the block")


user_served = asyncio.Event()


async def serve_user(user):
    await user_served.wait()  # stands in for the user's connection


async def until(condition):
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (polled state, no event to wait on)
            await asyncio.sleep(0.01)


async def check_session(tracker):
    task = asyncio.create_task(session(tracker, "bob"))
    await until(lambda: tracker.list("room:lobby") != [])
    [(owner, _)] = tracker.get_by_key("room:lobby", "bob")
    assert owner == tracker.owner_id(task)  # "<node>:<vsn>:<counter>"
    user_served.set()
    await task
    await until(lambda: tracker.list("room:lobby") == [])


async def check_tracking(tracker):
    try:
        await in_the_lobby(tracker)
    except LookupError:
        pass  # the block raised: alice was untracked all the same
    else:
        raise AssertionError("in_the_lobby raised nothing")
    assert tracker.list("room:lobby") == []


# --8<-- [start:run]
asyncio.run(main())
# --8<-- [end:run]
