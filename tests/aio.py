"""Old import path of ``aio`` (packages/pubsub-zmq/tests/aio.py), kept until
packages/tracker-zmq/tests/test_limits.py imports ``aio``; then delete this file."""

from aio import run, until

__all__ = ["run", "until"]
