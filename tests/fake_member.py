"""Old import path of ``fake_member`` (packages/pubsub-zmq/tests/fake_member.py), kept
until test_flood.py and test_hostile.py import ``fake_member``; then delete this file."""

from fake_member import FakeMember

__all__ = ["FakeMember"]
