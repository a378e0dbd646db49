"""Shared helpers of the pubsub-zmq tests: run a coroutine, wait on a condition.

Tests are plain sync functions that run their coroutine with :func:`asyncio.run`
(no pytest-asyncio); the ``run`` fixture also checks that nothing leaked: no task is
left behind once the coroutine returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest


async def until(
    condition: Callable[[], bool],
    timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling, not a cancel scope)
    message: str = "condition",
) -> None:
    """Wait until ``condition()`` is true, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.005)


def _run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        result = await coro_fn()
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks leaked: {leftover}"
        return result

    return asyncio.run(main())


@pytest.fixture
def run() -> Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]:
    """Run an async test body in a fresh event loop and check that no task leaked."""
    return _run


@pytest.fixture
def wait() -> Callable[..., Awaitable[None]]:
    """``await wait(condition, timeout=5.0, message=...)``: poll until true."""
    return until
