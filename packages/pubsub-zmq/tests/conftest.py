"""Shared helpers of the pubsub-zmq tests: run a coroutine, wait on a condition.

Tests are plain sync functions that run their coroutine with :func:`asyncio.run`
(no pytest-asyncio); the ``run`` fixture also checks that nothing leaked: no task is
left behind once the coroutine returns. The helpers are this folder's ``aio`` module and
the hand-driven member is its ``fake_member``: pytest's ``pythonpath`` puts this folder,
not the repository root, on the path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from aio import run as _run
from aio import until


@pytest.fixture
def run() -> Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]:
    """Run an async test body in a fresh event loop and check that no task leaked."""
    return _run


@pytest.fixture
def wait() -> Callable[..., Awaitable[float]]:
    """``await wait(condition, timeout=5.0, message=...)``: poll until true."""
    return until
